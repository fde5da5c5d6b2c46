r"""Certificates: proven Lipschitz and averagedness constants of a trained network.

A network that exposes its averaged Euler layers (the ``averaged_blocks()`` protocol, see
:func:`certify`) is certified layer by layer: each layer
:math:`x \mapsto x - h A^\top s(Ax + b)` with :math:`s` monotone of slope in :math:`[0, 1]`
has a symmetric Jacobian :math:`I - hA^\top D A` with spectrum in
:math:`[1 - h\|A\|^2, 1]`. With :math:`\beta \ge \|A\|^2` a certified bound
(:func:`~deepinv_dynnets.lipschitz.conv2d_norm_bound`),

.. math::

    \operatorname{Lip} \le \max(1, h\beta - 1), \qquad
    \alpha = h\beta/2 \ \text{ when } h\beta \le 2,

and the constants of the network follow by composition
(:func:`~deepinv_dynnets.lipschitz.compose_averaged`; Lipschitz constants multiply).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .._validation import check_int_pair
from .averagedness import compose_averaged
from .operator_norms import ROUNDOFF_MARGIN, conv2d_norm_bound, linear_norm_bound

__all__ = ["Certificate", "certify"]


@dataclass
class Certificate:
    r"""Certified constants of a network (upper bounds, proven up to :attr:`roundoff`).

    :param float lipschitz: certified upper bound of the Lipschitz constant (``math.inf``
        when nothing is certified).
    :param float | None alpha: certified averagedness constant: the network is
        :math:`(1-\alpha)I + \alpha R` with :math:`R` 1-Lipschitz; ``None`` when not
        certified (unknown module, or a layer with :math:`h\beta > 2`).
    :param list[dict] blocks: per layer: ``sqnorm`` (certified :math:`\beta \ge \|A\|^2`),
        ``h``, ``alpha`` (:math:`h\beta/2`), ``alpha_target``, ``margin``
        (:math:`2\alpha_{\text{target}} - h\beta`, :math:`\ge 0` when the target holds) and
        ``lipschitz`` (:math:`\max(1, h\beta - 1)`).
    :param str method: how the operator norms were bounded.
    :param float | None margin: smallest per-layer margin (``None`` without layers).
    :param float | None alpha_target: the target constant the network was built for.
    :param str | None reason: why nothing (or only a Lipschitz bound) is certified.
    :param float roundoff: relative round-off margin multiplied into every norm bound.

    :Examples:

        >>> import math
        >>> from deepinv_dynnets.lipschitz.certificates import Certificate
        >>> Certificate(lipschitz=math.inf, alpha=None, reason="not certified").certified
        False
    """

    lipschitz: float
    alpha: float | None
    blocks: list[dict] = field(default_factory=list)
    method: str = "none"
    margin: float | None = None
    alpha_target: float | None = None
    reason: str | None = None
    roundoff: float = ROUNDOFF_MARGIN

    @property
    def certified(self) -> bool:
        """Whether a finite Lipschitz bound is certified."""
        return math.isfinite(self.lipschitz)

    def __str__(self) -> str:
        lines = [f"Certificate (norm bounds: {self.method}, round-off margin {self.roundoff:g})"]
        if self.reason:
            lines.append(f"  {self.reason}")
        alpha = "not certified" if self.alpha is None else f"<= {self.alpha:.6g}"
        target = "" if self.alpha_target is None else f" (target {self.alpha_target:.6g})"
        lines.append(f"  Lipschitz <= {self.lipschitz:.6g}    alpha {alpha}{target}")
        if self.margin is not None:
            lines.append(f"  smallest margin 2*alpha_i - h_i*||A_i||^2 = {self.margin:.3g}")
        if self.blocks:
            head = ("block", "||A||^2 <=", "h", "alpha_i", "target_i", "margin", "Lip")
            lines.append("  " + "".join(f"{c:>12}" for c in head))
            for i, b in enumerate(self.blocks):
                row = (
                    b["sqnorm"],
                    b["h"],
                    b["alpha"],
                    b["alpha_target"],
                    b["margin"],
                    b["lipschitz"],
                )
                lines.append("  " + f"{i:>12}" + "".join(f"{v:>12.5g}" for v in row))
        return "\n".join(lines)


# Certified bounds by (method, options, exact bytes of the weight): certifying the same
# weights again (each PnP set-up, every benchmark run) costs nothing.
_BOUND_CACHE: dict[tuple, float] = {}
_BOUND_CACHE_SIZE = 256


def _sqnorm_bound(weight, method: str, **kwargs) -> float:
    if weight.dim() == 4:
        data = weight.detach().cpu().contiguous()
        key = (
            method,
            tuple(sorted(kwargs.items())),
            tuple(data.shape),
            str(data.dtype),
            # A uint8 view hashes every dtype; numpy has no bfloat16.
            hashlib.sha256(data.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest(),
        )
        if key not in _BOUND_CACHE:
            if len(_BOUND_CACHE) >= _BOUND_CACHE_SIZE:
                _BOUND_CACHE.pop(next(iter(_BOUND_CACHE)))
            _BOUND_CACHE[key] = conv2d_norm_bound(weight, method, **kwargs) ** 2
        return _BOUND_CACHE[key]
    if weight.dim() == 2:
        return linear_norm_bound(weight) ** 2
    raise ValueError(
        f"averaged_blocks() returned a weight of unsupported shape {tuple(weight.shape)}"
    )


def _certify_layer(module: nn.Module, method: str, **kwargs) -> Certificate | None:
    if isinstance(module, nn.Linear):
        lip = linear_norm_bound(module.weight)
    elif (
        isinstance(module, nn.Conv2d)
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode in ("zeros", "circular")
    ):
        # Any zero padding (or circular) is a compression of the convolution on Z^2.
        lip = conv2d_norm_bound(module.weight, method, **kwargs)
    else:
        return None
    return Certificate(
        lipschitz=lip,
        alpha=None,
        method=method if isinstance(module, nn.Conv2d) else "svd",
        reason="a single linear layer: Lipschitz bound only (the bias does not change it)",
    )


def certify(module: nn.Module, method: str = "fourier", **kwargs) -> Certificate:
    r"""Certified Lipschitz and averagedness constants of ``module``.

    Supported:

    - networks of averaged Euler layers, such as
      :class:`~deepinv_dynnets.models.EulerDenoiser`: ``module.averaged_blocks()`` returns
      one dict per layer :math:`x \mapsto x - hA^\top s(Ax + b)`, applied in order, with
      ``weight`` (:math:`A`: a stride-1 zero- or circular-padded conv kernel, or a dense
      matrix), ``h`` and ``alpha`` (the layer's target), and the module may set ``alpha``
      (its target); the map between the layers and the network's input and output must be
      a lifting :math:`L` with :math:`L^\top L = I` and its adjoint, which keep the
      constants. Then, with :math:`\beta_i` the certified bound of :math:`\|A_i\|^2`,

      .. math::

          \operatorname{Lip} \le \prod_i \max(1, h_i\beta_i - 1), \qquad
          \alpha = \operatorname{compose}(h_1\beta_1/2, \dots, h_n\beta_n/2)
          \ \text{ if every } h_i\beta_i \le 2;

    - a relaxation :math:`(1 - \lambda)I + \lambda D` exposing ``averaged_relaxation()``
      (returning :math:`D` and :math:`\lambda`, e.g.
      :class:`~deepinv_dynnets.models.RelaxedDenoiser`): :math:`\alpha = \lambda\alpha_D`
      (if :math:`\le 1`; then :math:`\operatorname{Lip} \le 1`), otherwise
      :math:`\operatorname{Lip} \le |1 - \lambda| + \lambda \operatorname{Lip}(D)`;
    - a denoiser applied on non-overlapping tiles, exposing ``block_diagonal_of()``
      (returning :math:`D` and the tile size, e.g.
      :class:`~deepinv_dynnets.models.TiledDenoiser`): block-diagonal with copies of
      :math:`D`, so :math:`D`'s constants (``"circulant"``: only with an ``input_size`` at
      least the tile size);
    - a single ``nn.Linear`` or stride-1 ``nn.Conv2d``: its norm bound (no :math:`\alpha`);
    - anything else (e.g. ``deepinv.models.DnCNN``): a certificate with
      ``lipschitz = inf``, ``alpha = None`` and a ``reason``.

    The step :math:`h_i` is taken in float64 from the stored parameters, so the certificate
    is for the network in exact arithmetic; evaluating it in float32 adds round-off of
    relative order :math:`10^{-7}`.

    :param torch.nn.Module module: the network.
    :param str method: ``"fourier"`` or ``"gram"`` (see
        :func:`~deepinv_dynnets.lipschitz.conv2d_norm_bound`; ``"circulant"`` with
        ``input_size`` certifies one image size only).
    :param kwargs: passed to :func:`~deepinv_dynnets.lipschitz.conv2d_norm_bound`.
    :return: a :class:`Certificate`; ``print`` it for a table.

    :Examples:

        >>> import deepinv as dinv
        >>> from deepinv_dynnets.lipschitz.certificates import certify
        >>> from deepinv_dynnets.models import EulerDenoiser
        >>> cert = certify(EulerDenoiser(width=4, hidden=4, n_blocks=2))
        >>> cert.lipschitz, cert.margin > 0
        (1.0, True)
        >>> certify(dinv.models.DnCNN(1, 1, depth=3, pretrained=None)).reason
        'not certified: DnCNN exposes no averaged_blocks() and is not a single linear layer'
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    tiled_of = getattr(module, "block_diagonal_of", None)
    if callable(tiled_of):
        return _certify_tiled(*tiled_of(), method, **kwargs)
    relaxation_of = getattr(module, "averaged_relaxation", None)
    if callable(relaxation_of):
        inner, lam = relaxation_of()
        base = certify(inner, method, **kwargs)
        alpha = None if base.alpha is None or lam * base.alpha > 1 else lam * base.alpha
        lipschitz = abs(1 - lam) + lam * base.lipschitz
        if alpha is not None:  # an averaged map is non-expansive: the sharper bound
            lipschitz = min(lipschitz, 1.0)
        target = None if base.alpha_target is None else lam * base.alpha_target
        return replace(
            base,
            lipschitz=lipschitz,
            alpha=alpha,
            alpha_target=None if target is None or target > 1 else target,
            reason=f"relaxation (1 - {lam:g}) I + {lam:g} D of: {base.reason or 'certified'}",
        )
    blocks_of = getattr(module, "averaged_blocks", None)
    if not callable(blocks_of):
        single = _certify_layer(module, method, **kwargs)
        if single is not None:
            return single
        return Certificate(
            lipschitz=math.inf,
            alpha=None,
            reason=f"not certified: {type(module).__name__} exposes no averaged_blocks() "
            f"and is not a single linear layer",
        )
    rows = []
    for layer in blocks_of():
        beta = _sqnorm_bound(layer["weight"], method, **kwargs)
        h, target = float(layer["h"]), float(layer["alpha"])
        hb = h * beta
        rows.append(
            {
                "sqnorm": beta,
                "h": h,
                "alpha": hb / 2,
                "alpha_target": target,
                "margin": 2 * target - hb,
                "lipschitz": max(1.0, hb - 1),
            }
        )
    lipschitz = math.prod(r["lipschitz"] for r in rows) if rows else 1.0
    averaged = all(r["alpha"] <= 1 for r in rows)
    alpha = compose_averaged(*(r["alpha"] for r in rows)) if rows and averaged else None
    target = getattr(module, "alpha", None)
    return Certificate(
        lipschitz=lipschitz,
        alpha=alpha,
        blocks=rows,
        method=method,
        margin=min((r["margin"] for r in rows), default=None),
        alpha_target=None if target is None else float(target),
        reason=None if averaged else "some layer has h * ||A||^2 > 2: Lipschitz bound only",
    )


def _certify_tiled(
    inner: nn.Module, tile_size: tuple[int, int], method: str, **kwargs
) -> Certificate:
    # D applied on non-overlapping tiles is block-diagonal with copies of D, so it keeps
    # every constant of D that holds on images of every size (a tile is a smaller image).
    if method == "circulant" and "input_size" in kwargs:
        size = check_int_pair(kwargs["input_size"], "input_size", 1)
        if size[0] < tile_size[0] or size[1] < tile_size[1]:
            raise ValueError(
                f"input_size {size} of method='circulant' must be at least the tile size "
                f"{tuple(tile_size)}: its bound holds for images up to that size only"
            )
    base = certify(inner, method, **kwargs)
    th, tw = tile_size
    return replace(
        base,
        reason=f"non-overlapping {th}x{tw} tiles (block-diagonal) of: "
        f"{base.reason or type(inner).__name__ + ', certified'}",
    )
