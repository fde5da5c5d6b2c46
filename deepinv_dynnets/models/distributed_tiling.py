r"""Which of ``deepinv.distributed``'s tilings keep a denoiser's certificate.

``deepinv.distributed.distribute(denoiser, ctx, patch_size=..., overlap=...)`` denoises an
image window by window. The map is block-diagonal, and so keeps the denoiser's
averagedness constant and Lipschitz bound exactly, only when the windows partition the
image (see :mod:`~deepinv_dynnets.models.tiled_denoiser` for the argument): no halo
(``overlap=0``) and no last window moved back over its neighbour. The tiling depends on the
image size, so these certificates are for one image size.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .._validation import check_int_pair
from ..lipschitz.certificates import Certificate, certify

__all__ = ["TilingCertificate", "certify_tiling", "certify_distributed"]


@dataclass
class TilingCertificate:
    r"""Whether a ``deepinv.distributed`` tiling keeps the denoiser's certificate.

    :param bool certified: the tiles partition the image and each output tile is the
        denoiser applied to exactly that tile: block-diagonal, the denoiser's constants hold.
    :param str reason: why, in one line.
    :param int n_tiles: number of tiles (windows) deepinv processes.
    :param int overlap: the halo width requested.

    :Examples:

        >>> from deepinv_dynnets.models.distributed_tiling import certify_tiling
        >>> bool(certify_tiling((1, 1, 64, 64), patch_size=32, overlap=0))
        True
        >>> certify_tiling((1, 1, 64, 64), patch_size=32, overlap=8).certified
        False
    """

    certified: bool
    reason: str
    n_tiles: int
    overlap: int | tuple[int, ...]

    def __bool__(self) -> bool:
        return self.certified


def certify_tiling(
    img_size: Sequence[int],
    patch_size: int | tuple[int, ...],
    overlap: int | tuple[int, ...] = 0,
    strategy=None,
    tiling_dims: int | tuple[int, ...] = (-2, -1),
) -> TilingCertificate:
    r"""Check whether deepinv's tiling of an image is an exact partition (certified).

    The tiling is probed through deepinv's own strategy (by default the ``TilingStrategy``
    that ``deepinv.distributed.distribute(denoiser, ctx, patch_size=..., overlap=...)``
    builds): it is applied to an image holding each pixel's index. It is certified when the
    windows fed to the denoiser are pairwise disjoint, read no padding, and each writes
    back exactly its own pixels; the processed map is then
    :math:`\sum_i P_i^\top D(P_i x)`, with the denoiser's constants (module docstring).
    Otherwise some pixel is read by two windows (a halo, ``overlap > 0``; or deepinv's
    last tile moved back to keep a uniform size when ``patch_size`` does not divide the
    image) or read from padding, and no constant is certified. In practice: deepinv's
    tiling is certified exactly when ``overlap == 0`` and ``patch_size`` divides the
    tiled sides; :class:`TiledDenoiser` is certified for every size.

    :param Sequence[int] img_size: the image shape ``(B, C, H, W)``.
    :param int | tuple patch_size: deepinv's ``patch_size``.
    :param int | tuple overlap: deepinv's ``overlap`` (halo), non-negative.
    :param strategy: a deepinv ``DistributedSignalStrategy`` for ``(1, 1, H, W)`` images
        to probe instead of the default one (``patch_size`` and ``overlap`` then only
        label the result).
    :param int | tuple tiling_dims: deepinv's ``tiling_dims``: spatial dimensions only
        (a tile of some channels is no image for the denoiser).
    :return: a :class:`TilingCertificate`.
    :raises ValueError: ``img_size`` not 4 positive integers, or deepinv refusing the
        tiling (e.g. a patch larger than the image).

    :Examples:

        >>> from deepinv_dynnets.models.distributed_tiling import certify_tiling
        >>> print(certify_tiling((1, 1, 48, 40), patch_size=16).reason)  # doctest: +ELLIPSIS
        not certified: ... read by 2 windows ...
    """
    if isinstance(img_size, Tensor) or not isinstance(img_size, Sequence) or len(img_size) != 4:
        raise ValueError(f"img_size must be (B, C, H, W), got {img_size!r}")
    check_int_pair(tuple(img_size[:2]), "img_size", 1)
    height, width = check_int_pair(tuple(img_size[2:]), "img_size", 1)
    if strategy is None:
        from deepinv.distributed.strategies import create_strategy

        for v in overlap if isinstance(overlap, Sequence) else (overlap,):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"overlap must be non-negative integer(s), got {overlap!r}")
        dims = (tiling_dims,) if isinstance(tiling_dims, numbers.Integral) else tiling_dims
        if not isinstance(dims, Sequence) or not dims or any(d not in (-2, -1, 2, 3) for d in dims):
            raise ValueError(f"tiling_dims must be spatial (-2, -1, 2 or 3), got {tiling_dims!r}")
        strategy = create_strategy(
            (1, 1, height, width), tiling_dims=tuple(dims), patch_size=patch_size, overlap=overlap
        )
    n = strategy.get_num_patches()
    # Pixel indices + 1 in float64 (exact below 2**53): 0 marks zero padding.
    index = torch.arange(1, height * width + 1, dtype=torch.float64).reshape(1, 1, height, width)
    windows = strategy.get_local_patches(index, list(range(n)))
    owner = torch.full((height * width,), -1, dtype=torch.long)
    for i, window in windows:
        read = window.reshape(-1)
        if bool((read == 0).any()) or read.unique().numel() != read.numel():
            return TilingCertificate(
                False, f"not certified: window {i} reads padding (overlap {overlap})", n, overlap
            )
        pixels = read.long() - 1
        if bool((owner[pixels] >= 0).any()):
            j = int(owner[pixels][owner[pixels] >= 0][0])
            return TilingCertificate(
                False,
                f"not certified: pixels read by 2 windows ({j} and {i}; overlap {overlap}, "
                f"patch_size {patch_size} for a {height}x{width} image): not block-diagonal",
                n,
                overlap,
            )
        owner[pixels] = i
    if bool((owner < 0).any()):
        return TilingCertificate(
            False, "not certified: some pixel is read by no window", n, overlap
        )
    # Each window must write back exactly the pixels it read, in place. Windows are disjoint,
    # so a value can only be right where its reader put it; a window writing elsewhere is
    # the last writer there in one of the two orders, and leaves a wrong value.
    for order in (windows, windows[::-1]):
        written = torch.zeros_like(index)
        strategy.reduce_patches(written, order)
        if not torch.equal(written, index):
            return TilingCertificate(
                False,
                "not certified: some window does not write back exactly its pixels",
                n,
                overlap,
            )
    return TilingCertificate(
        True,
        f"certified: {n} disjoint windows partition the {height}x{width} image (block-diagonal)",
        n,
        overlap,
    )


def certify_distributed(
    module: nn.Module, img_size: Sequence[int], method: str = "fourier", **kwargs
) -> Certificate:
    r"""Certificate of a denoiser distributed by deepinv, for images of one size.

    For the ``DistributedProcessing`` that ``deepinv.distributed.distribute(denoiser, ctx,
    patch_size=..., overlap=..., tiling_dims=...)`` returns: when its tiling of
    ``img_size`` is an exact partition (:func:`certify_tiling`, e.g. ``overlap=0`` and a
    ``patch_size`` dividing the image), the map is block-diagonal and the certificate is
    :func:`~deepinv_dynnets.certify` of the denoiser; otherwise nothing is certified
    (``lipschitz = inf``, ``alpha = None``) and ``reason`` says why. The tiling depends on
    the image size, so the certificate does too.

    :param torch.nn.Module module: a ``deepinv.distributed`` ``DistributedProcessing``.
    :param Sequence[int] img_size: ``(B, C, H, W)`` of the images it will process.
    :param str method: passed to :func:`~deepinv_dynnets.certify`.
    :param kwargs: passed to :func:`~deepinv_dynnets.certify`.
    :return: a :class:`~deepinv_dynnets.lipschitz.Certificate`.
    :raises TypeError: ``module`` is not a ``DistributedProcessing``.

    :Examples:

        >>> import torch
        >>> from deepinv.distributed import DistributedContext, distribute
        >>> from deepinv_dynnets import EulerDenoiser
        >>> from deepinv_dynnets.models.distributed_tiling import certify_distributed
        >>> model = EulerDenoiser(width=4, hidden=4, n_blocks=2)
        >>> with DistributedContext(device_mode="cpu") as ctx:
        ...     exact = distribute(model, ctx, patch_size=16, overlap=0, tiling_dims=(-2, -1))
        ...     halo = distribute(model, ctx, patch_size=16, overlap=4, tiling_dims=(-2, -1))
        >>> certify_distributed(exact, (1, 1, 64, 48)).alpha <= 0.5
        True
        >>> print(certify_distributed(halo, (1, 1, 64, 48)).reason)
        not certified: window 0 reads padding (overlap 4)
    """
    from deepinv.distributed.framework import DistributedProcessing

    if not isinstance(module, DistributedProcessing):
        raise TypeError(
            f"module must be a deepinv.distributed DistributedProcessing, got "
            f"{type(module).__name__}"
        )
    options = dict(module.strategy_kwargs)
    tiling = certify_tiling(
        img_size,
        options.get("patch_size"),
        options.get("overlap", 0),
        strategy=module.strategy,
        tiling_dims=options.get("tiling_dims") or (-2, -1),
    )
    if not tiling.certified:
        return Certificate(lipschitz=math.inf, alpha=None, reason=tiling.reason)
    if not isinstance(module.processor, nn.Module):
        return Certificate(
            lipschitz=math.inf,
            alpha=None,
            reason=f"not certified: the processor is a {type(module.processor).__name__}, "
            f"not a module",
        )
    base = certify(module.processor, method, **kwargs)
    return replace(
        base, reason=f"deepinv tiling, {tiling.reason}; {base.reason or 'denoiser certified'}"
    )
