r"""Image quality metrics.

:func:`psnr` is deepinv's ``deepinv.loss.metric.PSNR(max_pixel=1)`` without its floor:
deepinv computes :math:`-10\log_{10}(\mathrm{MSE} + 10^{-8})`, which caps identical
images at 80 dB and lowers a 26 dB PSNR by about :math:`2\times10^{-5}` dB (measured in
``tests/test_data.py``). The benchmarks' numbers are computed by :func:`psnr`, so it is
kept; the two agree to :math:`10^{-4}` dB below 40 dB.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["psnr"]


def psnr(x: Tensor, y: Tensor) -> Tensor:
    r"""Peak signal-to-noise ratio of each image, for images in :math:`[0, 1]` (peak 1).

    .. math::

        \operatorname{PSNR}(x, y) = -10\log_{10}\Big(\frac1{CHW}\|x - y\|_2^2\Big)
        \ \text{dB},

    computed in float64; ``inf`` for identical images. No clipping is applied to ``x``.

    :param torch.Tensor x: images ``(B, C, H, W)`` (or ``(C, H, W)``).
    :param torch.Tensor y: references, same shape.
    :return: PSNR in dB in the dtype of ``x``, shape ``(B,)`` (a 0-d tensor for a single
        image).
    :raises ValueError: ``x`` and ``y`` differ in shape.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.metrics import psnr
        >>> x = torch.zeros(1, 1, 4, 4)
        >>> psnr(x + 0.1, x).round(decimals=3)
        tensor([20.])
    """
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    dims = tuple(range(x.dim() - 3, x.dim())) if x.dim() >= 3 else tuple(range(x.dim()))
    mse = (x.double() - y.double()).square().mean(dim=dims)
    return (-10 * torch.log10(mse)).to(x.dtype)
