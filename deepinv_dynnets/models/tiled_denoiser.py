r"""Certified tiled denoising: a denoiser applied on a partition of the image into tiles.

Large images are denoised tile by tile (to bound memory, or to spread the tiles over
processes with ``deepinv.distributed``). How the tiles are cut decides whether the
certificate of the denoiser survives.

**Non-overlapping tiles keep the constants exactly.** Let the tiles :math:`\Omega_1, \dots,
\Omega_m` partition the pixel grid, :math:`P_i` restrict an image to :math:`\Omega_i`
(all batch entries and channels kept) and

.. math::

    T(x) = \sum_i P_i^\top D(P_i x),

the denoiser applied to each tile as an image of its own. The :math:`P_i` have orthogonal
ranges that sum to the identity, :math:`\sum_i P_i^\top P_i = I`. If :math:`D` is
:math:`\alpha`-averaged on images of *every* size, :math:`D = (1 - \alpha)I + \alpha R`
with :math:`R` 1-Lipschitz on each tile, then :math:`T = (1 - \alpha)I + \alpha \bar R` with
:math:`\bar R(x) = \sum_i P_i^\top R(P_i x)` and

.. math::

    \|\bar R x - \bar R y\|^2 = \sum_i \|R(P_i x) - R(P_i y)\|^2
    \le \sum_i \|P_i(x - y)\|^2 = \|x - y\|^2,

so :math:`T` is :math:`\alpha`-averaged; in the same way :math:`\operatorname{Lip}(T) \le
\operatorname{Lip}(D)`. The premise "on every image size" holds for
:func:`~deepinv_dynnets.certify` of :class:`~deepinv_dynnets.EulerDenoiser` (methods
``"fourier"`` and ``"gram"``): each layer :math:`x - hA^\top s(Ax + b)` is certified from
:math:`\beta \ge S(K)^2`, the supremum of the kernel's symbol, which bounds the zero-padded
convolution on every :math:`H \times W` image
(:mod:`~deepinv_dynnets.lipschitz.operator_norms`), its adjoint is the transposed
convolution on the same image, the biases are per-channel constants and the lift and
projection act on channels only. Nothing in the certificate depends on the image size,
so the tiled map has the *same* certified :math:`\alpha` and Lipschitz bound
(:meth:`TiledDenoiser.certificate`).

**Overlapping tiles do not.** A tile read with a halo (``deepinv.distributed``'s
``overlap > 0``) or a last tile shifted back to keep a uniform size makes two tiles read
the same input pixels: :math:`\sum_i \|W_i(x - y)\|^2` then exceeds :math:`\|x - y\|^2`
by up to the number of windows covering a pixel, and padding by reflection copies pixels,
so no constant survives in general. :func:`~deepinv_dynnets.models.distributed_tiling.certify_tiling` tells which of deepinv's
tilings are exact partitions (certified) and which are not.

**Seams.** A tiled denoiser sees no context across tile borders, which can leave seams.
:class:`AlternatingTiledDenoiser` alternates two partitions shifted by half a tile, so
that every border of one lies inside the tiles of the other; each call is a certified
block-diagonal map, and two consecutive Plug-and-Play steps compose two averaged maps
(:meth:`AlternatingTiledDenoiser.two_step_alpha`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from deepinv.distributed.strategies import DistributedSignalStrategy
from deepinv.models import Denoiser
from torch import Tensor, nn

from .._validation import check_int_pair, real_array
from ..lipschitz.averagedness import compose_averaged
from ..lipschitz.certificates import Certificate, certify

__all__ = ["TiledDenoiser", "AlternatingTiledDenoiser", "tile_partition"]

Tile = tuple[slice, slice]


def _cuts(length: int, tile: int, offset: int) -> list[slice]:
    # Tile borders at offset + k * tile (offset taken modulo tile), inside (0, length).
    first = offset % tile or tile
    borders = [0, *range(first, length, tile), length]
    return [slice(a, b) for a, b in zip(borders[:-1], borders[1:], strict=True) if b > a]


def tile_partition(
    height: int,
    width: int,
    tile_size: int | tuple[int, int],
    offset: int | tuple[int, int] = (0, 0),
) -> list[Tile]:
    r"""The tiles of a ``height`` x ``width`` image: a partition into rectangles.

    Tile borders lie at :math:`o + k t` (rows: :math:`o` the offset modulo the tile size
    :math:`t`, :math:`k \in \mathbb Z`), so the tiles are :math:`t \times t` except along
    the image border, where they may be smaller.

    :param int height: image height :math:`\ge 1`.
    :param int width: image width :math:`\ge 1`.
    :param int | tuple[int, int] tile_size: :math:`t` or :math:`(t_h, t_w)`, positive.
    :param int | tuple[int, int] offset: shift of the borders, non-negative.
    :return: ``(rows, cols)`` slices, row-major; they cover every pixel exactly once.

    :Examples:

        >>> from deepinv_dynnets.models.tiled_denoiser import tile_partition
        >>> [(r.start, r.stop, c.start, c.stop) for r, c in tile_partition(5, 4, 3, (1, 0))]
        [(0, 1, 0, 3), (0, 1, 3, 4), (1, 4, 0, 3), (1, 4, 3, 4), (4, 5, 0, 3), (4, 5, 3, 4)]
    """
    height, width = check_int_pair((height, width), "image size", 1)
    th, tw = check_int_pair(tile_size, "tile_size", 1)
    oh, ow = check_int_pair(offset, "offset", 0)
    return [(r, c) for r in _cuts(height, th, oh) for c in _cuts(width, tw, ow)]


def _per_tile_sigma(sigma, batch: int, n_tiles: int):
    # Tiles are stacked tile-major along the batch: a per-image noise level is repeated.
    if isinstance(sigma, (np.ndarray, list, tuple)):
        sigma = real_array(sigma, "sigma")
    if not isinstance(sigma, Tensor) or sigma.numel() <= 1:
        return sigma
    if sigma.numel() != batch:
        raise ValueError(
            f"sigma must be a number or hold one level per image ({batch}), got shape "
            f"{tuple(sigma.shape)}"
        )
    return sigma.reshape(batch).repeat(n_tiles)


def _denoise_tiles(
    denoiser: nn.Module, tiles: list[Tensor], sigma, max_batch: int | None = None, **kwargs
) -> list[Tensor]:
    """Denoise ``tiles`` (each ``(B, C, h, w)``): one call per group of equal shapes (of at
    most ``max_batch`` tiles)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, tile in enumerate(tiles):
        groups.setdefault(tuple(tile.shape), []).append(i)
    chunks = [
        members[k : k + (max_batch or len(members))]
        for members in groups.values()
        for k in range(0, len(members), max_batch or len(members))
    ]
    out: list[Tensor | None] = [None] * len(tiles)
    for members in chunks:
        batch = tiles[members[0]].shape[0]
        stacked = torch.cat([tiles[i] for i in members], dim=0)
        result = denoiser(stacked, _per_tile_sigma(sigma, batch, len(members)), **kwargs)
        for j, i in enumerate(members):
            out[i] = result[j * batch : (j + 1) * batch]
    return out


def _check_image(x, in_channels: int | None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.numel() == 0:
        raise ValueError(
            f"x must have shape (B, C, H, W) with B, C, H, W >= 1, got {tuple(x.shape)}"
        )
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(
            f"x must have {in_channels} channel(s) (the wrapped denoiser's), got shape "
            f"{tuple(x.shape)}"
        )


class _PartitionStrategy(DistributedSignalStrategy):
    """A ``deepinv.distributed`` strategy whose tiles are an exact partition of the image.

    Built for one image shape. All local tiles go to the processor in one list, which
    batches the tiles of equal shape itself (deepinv's default batching needs one shape).
    """

    def __init__(self, img_size: torch.Size, tiles: list[Tile]):
        super().__init__(img_size)
        self.tiles = tiles

    def get_num_patches(self) -> int:
        return len(self.tiles)

    def get_local_patches(self, x: Tensor, local_indices: list[int]) -> list[tuple[int, Tensor]]:
        return [(i, x[..., self.tiles[i][0], self.tiles[i][1]]) for i in local_indices]

    def apply_batching(self, patches: list[Tensor], max_batch_size: int | None = None):
        return [patches] if patches else []

    def unpack_batched_results(self, processed_batches: list, num_patches: int) -> list[Tensor]:
        return [p for batch in processed_batches for p in batch]

    def reduce_patches(self, out_tensor: Tensor, local_pairs: list[tuple[int, Tensor]]) -> None:
        for i, patch in local_pairs:
            out_tensor[..., self.tiles[i][0], self.tiles[i][1]] = patch


class TiledDenoiser(Denoiser):
    r"""A denoiser applied on non-overlapping tiles: a certified block-diagonal map.

    :math:`T(x) = \sum_i P_i^\top D(P_i x)` over the tiles :math:`\Omega_i` of
    :func:`tile_partition` (``tile_size`` x ``tile_size`` tiles, smaller along the border;
    ``offset`` shifts the borders). Because the tiles partition the image, :math:`T` is
    :math:`\alpha`-averaged with the *same* certified :math:`\alpha` as :math:`D` and its
    Lipschitz constant is at most :math:`D`'s (the module docstring has the proof, and
    why it holds for :class:`~deepinv_dynnets.EulerDenoiser` on tiles of any size).
    :meth:`certificate` returns the wrapped denoiser's :func:`~deepinv_dynnets.certify`
    certificate and :meth:`averaged_constant` its :math:`\alpha`, the number to give
    :func:`~deepinv_dynnets.pnp_certificate`; :meth:`block_diagonal_of` names the wrapped
    denoiser for a certifier.

    Tiles of equal shape are stacked along the batch dimension and denoised in one call
    (a per-image ``sigma`` of shape ``(B,)`` is repeated per tile). With a
    ``deepinv.distributed.DistributedContext`` that holds a process group, the tiles are
    spread over the processes by deepinv's ``DistributedProcessing`` (round robin) and
    summed with an all-reduce: every process must call the model with the same ``x``, and
    each gets the whole result (each pixel is written by one process, the others add exact
    zeros), the single-process one up to round-off (the tiles are batched differently).

    :param torch.nn.Module denoiser: ``denoiser(x, sigma)`` on ``(B, C, h, w)`` images of
        any size.
    :param int | tuple[int, int] tile_size: tile side :math:`t` or :math:`(t_h, t_w)`,
        positive integers.
    :param int | tuple[int, int] offset: shift of the tile borders, non-negative integers.
    :param deepinv.distributed.DistributedContext | None ctx: distribute the tiles over
        the processes of this (entered) context; ``None``: one process.
    :param int | None max_batch: at most this many tiles per call of the denoiser (bounds
        the memory); ``None``: all the tiles of a shape in one call.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import EulerDenoiser
        >>> from deepinv_dynnets.models.tiled_denoiser import TiledDenoiser
        >>> base = EulerDenoiser(width=4, hidden=4, n_blocks=2).eval()
        >>> tiled = TiledDenoiser(base, tile_size=8)
        >>> x = torch.rand(1, 1, 20, 13)
        >>> y = tiled(x, 0.1)
        >>> torch.allclose(y[..., 8:16, 8:13], base(x[..., 8:16, 8:13], 0.1))
        True
        >>> from deepinv_dynnets import certify
        >>> tiled.averaged_constant() == certify(base).alpha
        True
    """

    def __init__(
        self,
        denoiser: nn.Module,
        tile_size: int | tuple[int, int],
        offset: int | tuple[int, int] = (0, 0),
        ctx=None,
        max_batch: int | None = None,
    ):
        super().__init__()
        if not isinstance(denoiser, nn.Module):
            raise TypeError(f"denoiser must be a torch.nn.Module, got {type(denoiser).__name__}")
        self.tile_size = check_int_pair(tile_size, "tile_size", 1)
        self.offset = check_int_pair(offset, "offset", 0)
        if ctx is not None and not hasattr(ctx, "use_dist"):
            raise TypeError(
                f"ctx must be a deepinv.distributed.DistributedContext or None, got "
                f"{type(ctx).__name__}"
            )
        if max_batch is not None:
            if isinstance(max_batch, (bool, np.bool_)) or not isinstance(
                max_batch, numbers.Integral
            ):
                raise TypeError(f"max_batch must be a positive integer or None, got {max_batch!r}")
            if max_batch < 1:
                raise ValueError(f"max_batch must be a positive integer or None, got {max_batch!r}")
            max_batch = int(max_batch)
        self.denoiser = denoiser
        self.ctx = ctx
        self.max_batch = max_batch
        self._engines: dict[torch.Size, nn.Module] = {}

    def tiles(self, height: int, width: int) -> list[Tile]:
        """The tiles of a ``height`` x ``width`` image (:func:`tile_partition`)."""
        return tile_partition(height, width, self.tile_size, self.offset)

    # -- certificate ---------------------------------------------------------------------
    def block_diagonal_of(self) -> tuple[nn.Module, tuple[int, int]]:
        """The denoiser :math:`D` this map applies on each tile, and the tile size (the
        protocol :func:`~deepinv_dynnets.certify` reads: the map is block-diagonal with
        copies of :math:`D`, so it has :math:`D`'s certified constants)."""
        return self.denoiser, self.tile_size

    def certificate(self, method: str = "fourier", **kwargs) -> Certificate:
        r""":func:`~deepinv_dynnets.certify` of the tiled map: the wrapped denoiser's
        constants, unchanged (block-diagonal, non-overlapping tiles).

        :param str method: ``"fourier"`` or ``"gram"`` (bounds for every image size), or
            ``"circulant"`` with ``input_size`` at least the tile size: a zero-padded
            convolution on a tile is a compression of the one on any larger image (zero
            extension, then restriction), so that image's bound holds on every tile.
        :param kwargs: passed to :func:`~deepinv_dynnets.certify`.
        :raises ValueError: ``"circulant"`` with an ``input_size`` smaller than a tile.
        """
        return certify(self, method, **kwargs)

    def averaged_constant(self) -> float | None:
        """The certified averagedness constant of the tiled map (``None``: not certified)."""
        return self.certificate().alpha

    # -- the map -------------------------------------------------------------------------
    def forward(self, x: Tensor, sigma: float | Tensor | None = None, **kwargs) -> Tensor:
        r"""Denoise ``x`` tile by tile.

        :param torch.Tensor x: images ``(B, C, H, W)``; never modified.
        :param sigma: noise level, passed to the wrapped denoiser (a per-image ``(B,)``
            level is repeated for each tile).
        :return: the denoised images, a new tensor of the shape of ``x``.
        """
        _check_image(x, getattr(self.denoiser, "in_channels", None))
        tiles = self.tiles(x.shape[-2], x.shape[-1])
        if self.ctx is not None and self.ctx.use_dist:
            return self._distributed(x, tiles, sigma, **kwargs)
        patches = [x[..., r, c] for r, c in tiles]
        out = torch.empty_like(x)
        denoised = _denoise_tiles(self.denoiser, patches, sigma, self.max_batch, **kwargs)
        for (r, c), patch in zip(tiles, denoised, strict=True):
            out[..., r, c] = patch
        return out

    def _distributed(self, x: Tensor, tiles: list[Tile], sigma, **kwargs) -> Tensor:
        from deepinv.distributed.framework import DistributedProcessing

        engine = self._engines.get(x.shape)
        if engine is None:

            def process(patches, sigma, **kw):
                return _denoise_tiles(self.denoiser, patches, sigma, self.max_batch, **kw)

            engine = DistributedProcessing(
                self.ctx, process, strategy=_PartitionStrategy(x.shape, tiles)
            )
            self._engines = {x.shape: engine}  # keep the engine of the last shape only
        return engine(x, sigma, **kwargs)


class AlternatingTiledDenoiser(Denoiser):
    r"""Two tilings used in turn: call :math:`k` applies partition :math:`k \bmod 2`.

    By default the second partition is the first shifted by half a tile in both
    directions, so every tile border of one partition crosses the interior of the other's
    tiles and seams do not stay in one place along a Plug-and-Play run.

    Each call is a :class:`TiledDenoiser`, a block-diagonal map with the wrapped
    denoiser's certified :math:`\alpha` (:meth:`averaged_constant`). In a PnP scheme whose
    step :math:`T_k` (built with the denoiser of call :math:`k`) is
    :math:`\alpha_T`-averaged for both tilings, two consecutive steps
    :math:`S = T_2 \circ T_1` form a fixed averaged map with constant
    :meth:`two_step_alpha` :math:`= c(\alpha_T, \alpha_T)`
    (:func:`~deepinv_dynnets.lipschitz.compose_averaged`). By Krasnosel'skii–Mann the
    even iterates :math:`v_{2j} = S^j v_0` converge to a fixed point of :math:`S` (when
    one exists) with :math:`\|v_{2j+2} - v_{2j}\|` non-increasing; the odd ones converge
    to its image by :math:`T_1`. The guarantee needs strict alternation, one call per
    step (no acceleration or line search that calls the denoiser again within a step), and
    :meth:`reset` before a new run (``phase`` says which partition the next call uses).
    It deliberately exposes no ``block_diagonal_of()``: a certifier of one fixed
    iteration map (and a monitor of one-step residuals) does not apply to it; judge
    convergence by the two-step residual :math:`\|v_{k+2} - v_k\|`.

    :param torch.nn.Module denoiser: ``denoiser(x, sigma)`` on images of any size.
    :param int | tuple[int, int] tile_size: tile side, positive integers.
    :param sequence offsets: the two offsets; default ``((0, 0), (t_h // 2, t_w // 2))``.
    :param deepinv.distributed.DistributedContext | None ctx: as in :class:`TiledDenoiser`.
    :param int | None max_batch: as in :class:`TiledDenoiser`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import EulerDenoiser
        >>> from deepinv_dynnets.models.tiled_denoiser import AlternatingTiledDenoiser
        >>> base = EulerDenoiser(width=4, hidden=4, n_blocks=2).eval()
        >>> alt = AlternatingTiledDenoiser(base, tile_size=8)
        >>> x = torch.rand(1, 1, 16, 16)
        >>> first, second = alt(x, 0.1), alt(x, 0.1)
        >>> torch.equal(first, alt.tilings[0](x, 0.1)), torch.equal(second, alt.tilings[1](x, 0.1))
        (True, True)
        >>> alt.phase, alt.two_step_alpha(0.5)
        (0, 0.6666666666666666)
    """

    def __init__(
        self,
        denoiser: nn.Module,
        tile_size: int | tuple[int, int],
        offsets: Sequence | None = None,
        ctx=None,
        max_batch: int | None = None,
    ):
        super().__init__()
        th, tw = check_int_pair(tile_size, "tile_size", 1)
        if offsets is None:
            offsets = ((0, 0), (th // 2, tw // 2))
        if not isinstance(offsets, Sequence) or len(offsets) != 2:
            raise ValueError(f"offsets must hold two offsets, got {offsets!r}")
        self.tilings = nn.ModuleList(
            TiledDenoiser(denoiser, (th, tw), offset, ctx, max_batch) for offset in offsets
        )
        self.denoiser = denoiser
        self.phase = 0

    def reset(self) -> None:
        """Start again from the first partition (call before each new run)."""
        self.phase = 0

    def certificate(self, method: str = "fourier", **kwargs) -> Certificate:
        """The certificate of one call (either partition): :meth:`TiledDenoiser.certificate`."""
        return self.tilings[0].certificate(method, **kwargs)

    def averaged_constant(self) -> float | None:
        """Certified averagedness constant of each call (``None``: not certified)."""
        return self.certificate().alpha

    @staticmethod
    def two_step_alpha(step_alpha: float) -> float:
        r"""Constant of two consecutive PnP steps, each :math:`\alpha_T`-averaged:
        :math:`c(\alpha_T, \alpha_T) = 2\alpha_T/(1 + \alpha_T)`.

        :param float step_alpha: :math:`\alpha_T \in [0, 1]` of one step (e.g. the
            ``composite_alpha`` of :func:`~deepinv_dynnets.pnp_certificate`).
        """
        return compose_averaged(step_alpha, step_alpha)

    def forward(self, x: Tensor, sigma: float | Tensor | None = None, **kwargs) -> Tensor:
        """Apply the partition of the current phase, then switch to the other one."""
        out = self.tilings[self.phase](x, sigma, **kwargs)
        self.phase = 1 - self.phase
        return out
