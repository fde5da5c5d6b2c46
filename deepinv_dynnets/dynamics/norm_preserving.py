r"""Norm preservation, both ways of the talk: by architecture and by a regulariser."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_finite

__all__ = ["NormPreservingNet", "norm_preservation_loss"]


class NormPreservingNet(nn.Module):
    r"""Restricted architecture :math:`\mathcal N(x) = \|x\|\,\tilde{\mathcal N}(x)/\|\tilde{\mathcal N}(x)\|`.

    The output has exactly the norm of the input. Where the formula is undefined the
    value is fixed: :math:`\mathcal N(0) = 0`, and :math:`\mathcal N(x) = x` where
    :math:`\tilde{\mathcal N}(x) = 0` (any vector of norm :math:`\|x\|` would do; the
    identity is the continuous choice for a network close to zero).

    :param nn.Module base: the unconstrained network :math:`\tilde{\mathcal N}`, mapping
        ``x`` to a tensor of the same shape.
    :param int | tuple[int, ...] dim: the axes over which the norm is taken (``-1`` for
        vectors, ``(-3, -2, -1)`` for whole feature maps).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import NormPreservingNet
        >>> net = NormPreservingNet(torch.nn.Linear(3, 3)).double()
        >>> x = torch.randn(8, 3, dtype=torch.float64)
        >>> bool(torch.allclose(net(x).norm(dim=-1), x.norm(dim=-1)))
        True
    """

    def __init__(self, base: nn.Module, dim: int | tuple[int, ...] = -1):
        super().__init__()
        self.base = base
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        check_finite(x)
        y = self.base(x)
        if y.shape != x.shape:
            raise ValueError(
                f"base must return a tensor of the input's shape {tuple(x.shape)}, "
                f"got {tuple(y.shape)}"
            )
        r = torch.linalg.vector_norm(x, dim=self.dim, keepdim=True)
        s = torch.linalg.vector_norm(y, dim=self.dim, keepdim=True)
        ok = s > 0
        # The safe denominator keeps gradients finite on the branch torch.where discards.
        scaled = y * (r / torch.where(ok, s, torch.ones_like(s)))
        return torch.where(ok, scaled, x)


def norm_preservation_loss(x: Tensor, y: Tensor, dim: int | tuple[int, ...] = -1) -> Tensor:
    r"""The regulariser :math:`\frac1N\sum_i (\|x_i\| - \|\mathcal N(x_i)\|)^2`.

    Added to a training loss, it pushes any network towards norm preservation without
    restricting the architecture (the guarantee is then only approximate).

    :param torch.Tensor x: inputs :math:`x_i`.
    :param torch.Tensor y: outputs :math:`\mathcal N(x_i)`, same shape as ``x``.
    :param int | tuple[int, ...] dim: the axes of one sample's norm.
    :return: a 0-d tensor.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import norm_preservation_loss
        >>> x = torch.tensor([[3.0, 4.0]])
        >>> norm_preservation_loss(x, 2 * x)
        tensor(25.)
    """
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    nx = torch.linalg.vector_norm(x, dim=dim)
    ny = torch.linalg.vector_norm(y, dim=dim)
    return ((nx - ny) ** 2).mean()
