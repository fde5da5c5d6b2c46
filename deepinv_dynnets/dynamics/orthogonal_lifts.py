r"""Orthogonal changes of resolution: the orthonormal 2x2 Haar transform and its adjoint.

If :math:`Q` is orthogonal (:math:`Q^\top Q = QQ^\top = I`) and :math:`T` is
:math:`\alpha`-averaged, :math:`T = (1-\alpha)I + \alpha R` with :math:`R` non-expansive,
then :math:`Q^\top T Q = (1-\alpha)I + \alpha\,Q^\top R Q` with :math:`Q^\top RQ`
non-expansive: conjugation keeps the averagedness constant exactly, so averaged blocks can
run on a coarser grid (:math:`4C` channels at half resolution) inside a certified network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HaarAnalysis", "HaarSynthesis"]


def _haar_matrix(dtype: torch.dtype, device: torch.device) -> Tensor:
    # Rows: the average and the horizontal, vertical and diagonal details of a 2x2 block
    # (a, b; c, d) read in the order (a, b, c, d) of pixel_unshuffle. Symmetric, orthogonal.
    return 0.5 * torch.tensor(
        [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]],
        dtype=dtype,
        device=device,
    )


def _check_image(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")


class HaarAnalysis(nn.Module):
    r"""One level of the orthonormal 2-D Haar transform, :math:`Q: (C, H, W) \to (4C, H/2, W/2)`.

    Output channel :math:`4c + i` holds band :math:`i` (average, horizontal, vertical,
    diagonal detail) of input channel :math:`c`: each non-overlapping :math:`2\times2` block
    :math:`(a, b; c, d)` is mapped by the symmetric orthogonal matrix
    :math:`\tfrac12\begin{psmallmatrix}1&1&1&1\\1&-1&1&-1\\1&1&-1&-1\\1&-1&-1&1\end{psmallmatrix}`.
    :math:`Q` is orthogonal, :math:`Q^\top` is :class:`HaarSynthesis` (:meth:`adjoint`).
    ``H`` and ``W`` must be even (a ValueError otherwise). No parameters.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics.orthogonal_lifts import HaarAnalysis
        >>> haar = HaarAnalysis()
        >>> x = torch.randn(2, 3, 6, 4, dtype=torch.float64)
        >>> y = haar(x)
        >>> y.shape
        torch.Size([2, 12, 3, 2])
        >>> bool(torch.allclose(y.norm(), x.norm())), bool(torch.allclose(haar.adjoint(y), x))
        (True, True)
    """

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, "x")
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            raise ValueError(
                f"x must have even height and width for the 2x2 Haar transform, "
                f"got shape {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        blocks = F.pixel_unshuffle(x, 2).view(b, c, 4, h // 2, w // 2)
        bands = torch.einsum("ij,bcjhw->bcihw", _haar_matrix(x.dtype, x.device), blocks)
        return bands.reshape(b, 4 * c, h // 2, w // 2)

    def adjoint(self, y: Tensor) -> Tensor:
        """:math:`Q^\\top y`, which is also :math:`Q^{-1} y`."""
        return HaarSynthesis()(y)


class HaarSynthesis(nn.Module):
    r"""The inverse (and adjoint) of :class:`HaarAnalysis`: :math:`(4C, H, W) \to (C, 2H, 2W)`.

    The number of channels must be a multiple of 4 (a ValueError otherwise).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics.orthogonal_lifts import HaarAnalysis, HaarSynthesis
        >>> y = torch.randn(1, 8, 3, 5, dtype=torch.float64)
        >>> bool(torch.allclose(HaarAnalysis()(HaarSynthesis()(y)), y))
        True
    """

    def forward(self, y: Tensor) -> Tensor:
        _check_image(y, "y")
        if y.shape[1] % 4:
            raise ValueError(
                f"y must have a multiple of 4 channels (4 Haar bands per channel), "
                f"got shape {tuple(y.shape)}"
            )
        b, c4, h, w = y.shape
        bands = y.view(b, c4 // 4, 4, h, w)
        # the matrix is symmetric and orthogonal: its transpose is itself
        blocks = torch.einsum("ij,bcjhw->bcihw", _haar_matrix(y.dtype, y.device), bands)
        return F.pixel_shuffle(blocks.reshape(b, c4, h, w), 2)

    def adjoint(self, x: Tensor) -> Tensor:
        """:math:`Q x`, the Haar analysis."""
        return HaarAnalysis()(x)
