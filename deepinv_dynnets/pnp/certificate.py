r"""Convergence certificates for Plug-and-Play solvers, computed before the run.

A Plug-and-Play (PnP) solver iterates a fixed map :math:`v_{k+1} = T v_k` built from the
data fidelity :math:`f` and a denoiser :math:`D`. If :math:`T` is :math:`\alpha_T`-averaged
(:math:`T = (1 - \alpha_T) I + \alpha_T R`, :math:`R` 1-Lipschitz, :math:`\alpha_T < 1`),
then by Krasnosel'skii–Mann the iterates converge to a fixed point whenever one exists,
the residual :math:`\|v_{k+1} - v_k\|` is non-increasing and

.. math::

    \|v_{k+1} - v_k\|^2 \le \frac{\alpha_T}{1 - \alpha_T}\,\frac{\|v_0 - v^\star\|^2}{k + 1},
    \qquad \|v_{k+1} - v_k\| = o(1/\sqrt{k}).

With :math:`D` :math:`\alpha`-averaged, :math:`f = \frac1{2s^2}\|Ax - y\|^2` (deepinv's
``L2(sigma=s)``, :math:`L = \|A\|^2/s^2`) and the iterations of ``deepinv.optim``:

- **PGD**, :math:`x \leftarrow D(x - \gamma\nabla f(x))`: needs :math:`0 < \gamma < 2/L` and
  :math:`\alpha < 1`; :math:`\alpha_T = c(\alpha, \gamma L/2)`.
- **PGD** with ``g_first=True``, :math:`x \leftarrow \mathrm{prox}_{\gamma f}(D(x))`: any
  :math:`\gamma > 0`, :math:`\alpha < 1`; :math:`\alpha_T = c(\alpha, 1/2)`.
- **HQS**, :math:`x \leftarrow D(\mathrm{prox}_{\gamma f}(x))`: any :math:`\gamma > 0`,
  :math:`\alpha < 1`; :math:`\alpha_T = c(1/2, \alpha)`.
- **DRS**, :math:`u = \mathrm{prox}_{\gamma f}(z)`, :math:`z \leftarrow z + \beta(D(2u - z) -
  u)`: any :math:`\gamma > 0`, :math:`\alpha \le 1/2`, :math:`0 < \beta < 2`; the map on
  :math:`z` is :math:`\beta/2`-averaged.
- **ADMM**: deepinv's iteration with :math:`\beta = 1` is DRS with :math:`f` and :math:`D`
  exchanged, on :math:`\eta = x + z`: any :math:`\gamma > 0`, :math:`\alpha \le 1/2`,
  :math:`\beta = 1`; :math:`\alpha_T = 1/2`.

where :math:`c` is :func:`~deepinv_dynnets.lipschitz.compose_averaged` (the gradient step
of a convex :math:`L`-smooth :math:`f` is :math:`\gamma L/2`-averaged, a proximal step is
:math:`1/2`-averaged; Combettes and Yamada, 2015). DRS and ADMM need the reflection
:math:`2D - I` to be non-expansive, which is :math:`\alpha \le 1/2` (Ryu et al., 2019;
Hurault et al., 2022). A relaxation :math:`v \leftarrow (1 - \beta)v + \beta T v` of PGD,
PGD (``g_first``) and HQS multiplies :math:`\alpha_T` by :math:`\beta` and needs
:math:`0 < \beta < 1/\alpha_T`. PnP priors ignore ``lambda``, so it plays no role.

:math:`\|A\|^2` comes from :func:`~deepinv_dynnets.pnp.operator_sqnorm`: a proven upper
bound where the physics allows one. When it is only a power-iteration estimate and the
verdict depends on it (PGD's gradient step), the certificate says ``ESTIMATE`` rather than
``GUARANTEED`` (``guaranteed`` is ``False``, ``estimated`` is ``True``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import deepinv as dinv
import torch
from deepinv.distributed.framework import DistributedProcessing
from torch import nn

from .._validation import positive_real
from ..lipschitz.averagedness import compose_averaged
from ..lipschitz.certificates import certify
from .physics_norms import POWER_SAFETY_FACTOR, operator_sqnorm

__all__ = ["ALGORITHMS", "PnPCertificate", "accepts_alpha", "operator_sqnorm", "pnp_certificate"]

#: Algorithms with a certificate, by their ``deepinv.optim`` class name.
ALGORITHMS = ("PGD", "HQS", "DRS", "ADMM")


@dataclass
class PnPCertificate:
    r"""What is proven about a Plug-and-Play run before it starts.

    :param bool guaranteed: all conditions hold, on proven bounds only: the iterates of the
        governing variable converge (to a fixed point, when one exists) with a
        non-increasing residual.
    :param list[str] reasons: one line per condition, each starting with ``"ok:"`` or
        ``"FAILS:"`` (with the fix); failing ones first.
    :param str algorithm: ``"PGD"``, ``"HQS"``, ``"DRS"`` or ``"ADMM"``.
    :param bool g_first: PGD order (denoiser first).
    :param float | None denoiser_alpha: certified averagedness of the denoiser (``None``:
        not certified).
    :param float | None lipschitz_constant: :math:`L = \|A\|^2/s^2` of the data fidelity's
        gradient (``None`` if not smooth or unknown).
    :param float sqnorm: the value of :math:`\|A\|^2` used, and ``sqnorm_method`` how it
        was obtained (``"exact"``, ``"young"``, ``"bound"`` or ``"estimate"``, see
        :func:`~deepinv_dynnets.pnp.operator_sqnorm`).
    :param float stepsize: :math:`\gamma`; ``stepsize_bound`` the largest allowed
        (:math:`2/L` for PGD, ``inf`` otherwise).
    :param float beta: relaxation of the iteration.
    :param float | None composite_alpha: :math:`\alpha_T` of the iteration map (``None`` if
        not averaged).
    :param str governing: the variable the theorem is about (``"x"``, ``"z"`` or ``"x + z"``).
    :param list[str] notes: facts that do not change the verdict (e.g. an inexact prox).
    :param bool estimated: all conditions hold, but one rests on a power-iteration estimate
        of :math:`\|A\|^2` (not a bound): the verdict is ``ESTIMATE``, and
        :func:`~deepinv_dynnets.convergent_pnp` guards the run at run time.

    :Examples:

        >>> from deepinv_dynnets.pnp import PnPCertificate
        >>> cert = PnPCertificate(guaranteed=False, reasons=["FAILS: x"], algorithm="PGD")
        >>> bool(cert), cert.failures
        (False, ['FAILS: x'])
    """

    guaranteed: bool
    reasons: list[str]
    algorithm: str
    g_first: bool = False
    denoiser_alpha: float | None = None
    lipschitz_constant: float | None = None
    sqnorm: float | None = None
    sqnorm_method: str | None = None
    stepsize: float | None = None
    stepsize_bound: float | None = None
    beta: float = 1.0
    composite_alpha: float | None = None
    governing: str = "x"
    notes: list[str] = field(default_factory=list)
    estimated: bool = False

    def __bool__(self) -> bool:
        return self.guaranteed

    @property
    def verdict(self) -> str:
        """``"GUARANTEED"``, ``"ESTIMATE"`` (holds if the estimate of ``||A||^2`` is an upper
        bound) or ``"NOT guaranteed"``."""
        if self.guaranteed:
            return "GUARANTEED"
        return "ESTIMATE" if self.estimated else "NOT guaranteed"

    @property
    def failures(self) -> list[str]:
        """The conditions that fail (empty when :attr:`guaranteed`)."""
        return [r for r in self.reasons if r.startswith("FAILS")]

    def __str__(self) -> str:
        name = self.algorithm + (" (g_first)" if self.g_first else "")
        verdict = self.verdict
        lines = [f"PnP-{name} convergence: {verdict}"]
        lines += [f"  {r}" for r in self.reasons]
        if self.composite_alpha is not None:
            lines.append(
                f"  iteration map on {self.governing} is {self.composite_alpha:.4g}-averaged: "
                f"residual non-increasing, o(1/sqrt(k))"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _tensor_to_float(value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            value = value.max()  # per-image levels: the worst case
        return float(value)
    return float(value)


def accepts_alpha(algorithm: str, alpha: float) -> bool:
    """Whether the algorithm's guarantee holds with an ``alpha``-averaged denoiser.

    PGD and HQS need :math:`\alpha < 1`; DRS and ADMM need a firmly non-expansive
    denoiser, :math:`\alpha \\le 1/2`.

    :param str algorithm: ``"PGD"``, ``"HQS"``, ``"DRS"`` or ``"ADMM"``.
    :param float alpha: the denoiser's averagedness constant.

    :Examples:

        >>> from deepinv_dynnets.pnp import accepts_alpha
        >>> accepts_alpha("PGD", 0.95), accepts_alpha("DRS", 0.95), accepts_alpha("DRS", 0.5)
        (True, False, True)
    """
    return alpha <= 0.5 if algorithm in ("DRS", "ADMM") else alpha < 1


def _denoiser_alpha(
    denoiser: nn.Module | float | None, img_size: tuple[int, ...] | None = None
) -> tuple[float | None, str]:
    if denoiser is None:
        return None, "uncertified"
    if isinstance(denoiser, bool) or not isinstance(denoiser, nn.Module | numbers.Real):
        raise TypeError(
            f"denoiser must be a torch.nn.Module, a number (an averagedness constant) or None, "
            f"got {type(denoiser).__name__}"
        )
    if isinstance(denoiser, numbers.Real):
        alpha = float(denoiser)
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(
                f"denoiser: an averagedness constant must be a finite number > 0, got {alpha!r}"
            )
        return alpha, "given"
    inner = denoiser.denoiser if isinstance(denoiser, dinv.optim.PnP) else denoiser
    if isinstance(inner, DistributedProcessing):
        # deepinv's tiles keep the constant only if they partition the image, which depends
        # on the image size: certify that tiling, or say why not.
        if img_size is None:
            return None, "a deepinv.distributed denoiser, for an unknown image size: pass img_size"
        from ..models.distributed_tiling import certify_distributed

        cert = certify_distributed(inner, (1, *tuple(img_size)))
        return cert.alpha, f"deepinv.distributed tiling, {cert.reason}"
    cert = certify(inner)
    return cert.alpha, type(inner).__name__


def pnp_certificate(
    physics: dinv.physics.LinearPhysics,
    denoiser: nn.Module | float | None,
    algorithm: str = "PGD",
    stepsize: float = 1.0,
    data_fidelity: dinv.optim.DataFidelity | None = None,
    beta: float = 1.0,
    g_first: bool = False,
    img_size: tuple[int, ...] | None = None,
) -> PnPCertificate:
    r"""Check the convergence conditions of a PnP solver (see the module's table).

    :param deepinv.physics.LinearPhysics physics: the forward operator :math:`A`.
    :param denoiser: the denoiser (its :func:`~deepinv_dynnets.certify` constant is used; a
        ``deepinv.optim.PnP`` prior is unwrapped), a number (an averagedness constant you
        vouch for), or ``None`` (uncertified).
    :param str algorithm: ``"PGD"``, ``"HQS"``, ``"DRS"`` or ``"ADMM"``.
    :param float stepsize: :math:`\gamma > 0`, as passed to the deepinv solver.
    :param deepinv.optim.DataFidelity | None data_fidelity: the data fidelity; ``None`` is
        ``deepinv.optim.L2()`` (:math:`s = 1`).
    :param float beta: the solver's relaxation parameter.
    :param bool g_first: PGD with the denoiser first.
    :param tuple | None img_size: image size ``(C, H, W)``, if :func:`operator_sqnorm` needs
        it or the denoiser is tiled by ``deepinv.distributed`` (its certificate depends on it).
    :return: a :class:`PnPCertificate`.
    :raises ValueError: unknown algorithm, a non-linear physics, a stepsize or ``beta`` that
        is not a finite positive number.

    :Examples:

        >>> import deepinv as dinv, torch
        >>> from deepinv_dynnets.pnp import pnp_certificate
        >>> physics = dinv.physics.BlurFFT((1, 16, 16), filter=torch.ones(1, 1, 3, 3) / 9)
        >>> pnp_certificate(physics, 0.5, "PGD", stepsize=1.9).guaranteed
        True
        >>> cert = pnp_certificate(physics, 0.5, "PGD", stepsize=2.5)
        >>> cert.failures
        ['FAILS: stepsize 2.5 exceeds 2/L = 2 (L = ||A||^2/s^2 = 1, ||A||^2 exact): use a stepsize below 2']
    """
    algorithm = str(algorithm).upper()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    stepsize, beta = positive_real(stepsize, "stepsize"), positive_real(beta, "beta")
    fidelity_scale(data_fidelity)  # type check
    if not isinstance(denoiser, nn.Module):
        _denoiser_alpha(denoiser)  # a number or None: checked before any work
    norm = operator_sqnorm(physics, img_size)
    return check_conditions(
        physics, denoiser, algorithm, stepsize, data_fidelity, beta, g_first, norm, img_size
    )


def fidelity_scale(data_fidelity: dinv.optim.DataFidelity | None) -> float | None:
    r""":math:`1/s^2` of deepinv's ``L2(sigma=s)`` (``None``: L2), so that the gradient is
    :math:`L = \|A\|^2/s^2`-Lipschitz; ``None`` for any other data fidelity (no known
    constant). The worst (largest) value of a per-image ``sigma`` is used."""
    if data_fidelity is None:
        return 1.0
    if not isinstance(data_fidelity, dinv.optim.DataFidelity):
        raise TypeError(
            f"data_fidelity must be a deepinv.optim.DataFidelity or None, got "
            f"{type(data_fidelity).__name__}"
        )
    # a subclass that redefines the gradient is not covered by the formula
    if not isinstance(data_fidelity, dinv.optim.L2) or type(data_fidelity).grad is not (
        dinv.optim.L2.grad
    ):
        return None
    scale = _tensor_to_float(data_fidelity.norm)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"data_fidelity: L2's 1/sigma^2 must be finite and > 0, got {scale!r}")
    return scale


def check_conditions(
    physics, denoiser, algorithm, stepsize, data_fidelity, beta, g_first, norm, img_size=None
) -> PnPCertificate:
    # pnp_certificate once its arguments are checked and ||A||^2 is known (norm is
    # operator_sqnorm's (value, method)), so that convergent_pnp computes the norm only once.
    sqnorm, method = norm
    g_first = bool(g_first) and algorithm == "PGD"
    scale = fidelity_scale(data_fidelity)
    fidelity_name = "L2" if data_fidelity is None else type(data_fidelity).__name__
    ok, fails, notes = [], [], []
    alpha, source = _denoiser_alpha(denoiser, img_size or getattr(physics, "img_size", None))
    if alpha is None:
        fails.append(
            f"FAILS: the denoiser ({source}) has no certified averagedness constant: use a "
            f"certified one (deepinv_dynnets.EulerDenoiser) or pass the constant you vouch for"
        )
    elif not math.isfinite(alpha) or alpha <= 0:
        fails.append(
            f"FAILS: the denoiser's ({source}) averagedness constant is {alpha!r}, not a finite "
            f"number in (0, 1): its certificate is broken (non-finite weights?)"
        )
        alpha = None
    elif not accepts_alpha(algorithm, alpha):
        need = (
            "alpha <= 1/2, so that 2D - I is non-expansive"
            if algorithm
            in (
                "DRS",
                "ADMM",
            )
            else "alpha < 1"
        )
        fix = (
            "use PGD or HQS, or a denoiser trained with alpha <= 0.5 (the shipped "
            "EulerDenoiser(alpha=0.5, pretrained='default'))"
            if algorithm in ("DRS", "ADMM") and alpha < 1
            else "use a certified averaged denoiser"
        )
        fails.append(
            f"FAILS: {algorithm} needs an averaged denoiser with {need}; the denoiser "
            f"({source}) is {alpha:.4g}-averaged: {fix}"
        )
    else:
        ok.append(f"ok: denoiser ({source}) is {alpha:.4g}-averaged (certified)")
    accepted = alpha is not None and accepts_alpha(algorithm, alpha)

    lip = None if scale is None else sqnorm * scale
    needs_gradient = algorithm == "PGD" and not g_first
    bound = math.inf
    estimated = False
    if needs_gradient:
        if lip is None:
            fails.append(
                f"FAILS: PGD takes gradient steps on {fidelity_name}, whose gradient Lipschitz "
                f"constant is not known: use L2 or g_first=True"
            )
        else:
            bound = 2 / lip
            where = f"L = ||A||^2/s^2 = {lip:.4g}, ||A||^2 {method}"
            if stepsize < bound:
                ok.append(f"ok: stepsize {stepsize:.4g} < 2/L = {bound:.4g} ({where})")
                estimated = method == "estimate"
            else:
                fails.append(
                    f"FAILS: stepsize {stepsize:.4g} exceeds 2/L = {bound:.4g} ({where}): use "
                    f"a stepsize below {bound:.4g}"
                )
        if method == "estimate":
            notes.append(
                f"||A||^2 is a power-iteration estimate (x {POWER_SAFETY_FACTOR:g}), not a "
                f"proven bound: the stepsize condition rests on it"
            )
    else:
        ok.append(f"ok: stepsize {stepsize:.4g} > 0 (any positive stepsize for a proximal step)")
        if not isinstance(physics, dinv.physics.DecomposablePhysics) and scale is not None:
            notes.append(
                "the prox of the data fidelity is computed by conjugate gradient (inexact): "
                "the guarantee is for the exact prox"
            )

    composite, governing = None, "x"
    if algorithm in ("DRS", "ADMM"):
        governing = "z" if algorithm == "DRS" else "x + z"
        if algorithm == "DRS" and not beta < 2:
            fails.append(f"FAILS: DRS needs beta in (0, 2), got beta = {beta:g}: use beta = 1")
        elif algorithm == "ADMM" and beta != 1:
            fails.append(
                f"FAILS: the ADMM guarantee (equivalence with DRS) holds for beta = 1, got "
                f"{beta:g}: use beta = 1, or DRS"
            )
        else:
            ok.append(f"ok: relaxation beta = {beta:g}")
            if accepted:
                composite = beta / 2 if algorithm == "DRS" else 0.5
    elif accepted and not fails:
        if needs_gradient:
            composite = compose_averaged(alpha, stepsize * lip / 2)
        elif g_first:
            composite = compose_averaged(alpha, 0.5)
        else:
            composite = compose_averaged(0.5, alpha)
        if beta * composite < 1:
            ok.append(f"ok: relaxation beta = {beta:g} < 1/alpha_T = {1 / composite:.4g}")
            composite *= beta
        else:
            fails.append(
                f"FAILS: relaxation beta = {beta:g} is not below 1/alpha_T = "
                f"{1 / composite:.4g}: use beta = 1"
            )
            composite = None

    holds = not fails
    return PnPCertificate(
        guaranteed=holds and not estimated,
        reasons=fails + ok,
        algorithm=algorithm,
        g_first=g_first,
        denoiser_alpha=alpha,
        lipschitz_constant=lip,
        sqnorm=sqnorm,
        sqnorm_method=method,
        stepsize=stepsize,
        stepsize_bound=bound,
        beta=beta,
        composite_alpha=composite if holds else None,
        governing=governing,
        notes=notes,
        estimated=holds and estimated,
    )
