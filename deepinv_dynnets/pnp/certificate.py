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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import deepinv as dinv
import torch
from torch import nn

from ..lipschitz.averagedness import compose_averaged
from ..lipschitz.certificates import certify

__all__ = ["ALGORITHMS", "PnPCertificate", "operator_sqnorm", "pnp_certificate"]

#: Algorithms with a certificate, by their ``deepinv.optim`` class name.
ALGORITHMS = ("PGD", "HQS", "DRS", "ADMM")
# Relative margin on power-iteration estimates of ||A||^2 (they approach from below).
_POWER_MARGIN = 1e-2


@dataclass
class PnPCertificate:
    r"""What is proven about a Plug-and-Play run before it starts.

    :param bool guaranteed: all conditions hold: the iterates of the governing variable
        converge (to a fixed point, when one exists) with a non-increasing residual.
    :param list[str] reasons: one line per condition, each starting with ``"ok:"`` or
        ``"FAILS:"`` (with the fix); failing ones first.
    :param str algorithm: ``"PGD"``, ``"HQS"``, ``"DRS"`` or ``"ADMM"``.
    :param bool g_first: PGD order (denoiser first).
    :param float | None denoiser_alpha: certified averagedness of the denoiser (``None``:
        not certified).
    :param float | None lipschitz_constant: :math:`L = \|A\|^2/s^2` of the data fidelity's
        gradient (``None`` if not smooth or unknown).
    :param float sqnorm: the bound of :math:`\|A\|^2` used, and ``sqnorm_method`` how it
        was obtained (``"exact"``, ``"young"``: :math:`\|k\|_1^2` for a blur, or
        ``"power iteration"`` times :math:`1 + 10^{-2}`).
    :param float stepsize: :math:`\gamma`; ``stepsize_bound`` the largest allowed
        (:math:`2/L` for PGD, ``inf`` otherwise).
    :param float beta: relaxation of the iteration.
    :param float | None composite_alpha: :math:`\alpha_T` of the iteration map (``None`` if
        not averaged).
    :param str governing: the variable the theorem is about (``"x"``, ``"z"`` or ``"x + z"``).
    :param list[str] notes: facts that do not change the verdict (e.g. an inexact prox).

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

    def __bool__(self) -> bool:
        return self.guaranteed

    @property
    def failures(self) -> list[str]:
        """The conditions that fail (empty when :attr:`guaranteed`)."""
        return [r for r in self.reasons if r.startswith("FAILS")]

    def __str__(self) -> str:
        name = self.algorithm + (" (g_first)" if self.g_first else "")
        verdict = "GUARANTEED" if self.guaranteed else "NOT guaranteed"
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


def _positive(name: str, value) -> float:
    value = _tensor_to_float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _accepts_alpha(algorithm: str, alpha: float) -> bool:
    """Whether the algorithm's guarantee holds with an ``alpha``-averaged denoiser."""
    return alpha <= 0.5 if algorithm in ("DRS", "ADMM") else alpha < 1


def operator_sqnorm(
    physics: dinv.physics.LinearPhysics, img_size: tuple[int, ...] | None = None
) -> tuple[float, str]:
    r"""An upper bound of :math:`\|A\|_2^2` for a linear ``physics``, and how it was found.

    Exact for ``Denoising`` (1), ``Inpainting`` (largest squared mask value) and ``BlurFFT``
    (largest squared modulus of the filter's transfer function); for ``Blur`` with
    ``"valid"``, ``"circular"`` or zero (``"constant"``) padding, Young's inequality
    :math:`\|A\| \le \max_c \|k_c\|_1`; otherwise deepinv's power iteration
    (``physics.compute_sqnorm``, which needs ``img_size`` when the physics does not know
    it) times :math:`1 + 10^{-2}`, an estimate rather than a bound.

    :param deepinv.physics.LinearPhysics physics: the forward operator.
    :param tuple | None img_size: ``(C, H, W)`` of the images, for the power iteration.
    :return: ``(sqnorm, method)``.
    :raises ValueError: ``physics`` is not a ``deepinv.physics.LinearPhysics``, or the power
        iteration is needed and no image size is known.

    :Examples:

        >>> import deepinv as dinv, torch
        >>> from deepinv_dynnets.pnp import operator_sqnorm
        >>> kernel = torch.ones(1, 1, 3, 3) / 9
        >>> sqnorm, method = operator_sqnorm(dinv.physics.BlurFFT((1, 16, 16), filter=kernel))
        >>> round(sqnorm, 6), method
        (1.0, 'exact')
    """
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise ValueError(
            f"the certificate needs a linear physics (deepinv.physics.LinearPhysics), got "
            f"{type(physics).__name__}"
        )
    if type(physics) is dinv.physics.Denoising:
        return 1.0, "exact"
    if isinstance(physics, dinv.physics.Inpainting):
        return float(physics.mask.detach().abs().max()) ** 2, "exact"
    if isinstance(physics, dinv.physics.BlurFFT):
        # the singular values are |FFT(filter)|: recomputed in float64 from the filter
        symbol = dinv.physics.functional.filter_fft(
            physics.filter.detach().to(torch.float64), physics.img_size, real_fft=True
        )
        return float(symbol.abs().max()) ** 2, "exact"
    if isinstance(physics, dinv.physics.Blur) and physics.padding in (
        "valid",
        "circular",
        "constant",
    ):
        taps = physics.filter.detach().to(torch.float64).abs().flatten(2).sum(-1)
        return float(taps.max()) ** 2, "young"
    size = img_size or getattr(physics, "img_size", None) or getattr(physics, "imsize", None)
    if size is None:
        raise ValueError(
            f"cannot bound ||A||^2 of {type(physics).__name__} without the image size: pass "
            f"img_size=(C, H, W)"
        )
    x0 = torch.randn((1, *tuple(size)), generator=torch.Generator().manual_seed(0))
    sqnorm = physics.compute_sqnorm(x0, max_iter=200, tol=1e-6, verbose=False)
    return float(sqnorm) * (1 + _POWER_MARGIN), "power iteration"


def _denoiser_alpha(denoiser: nn.Module | float | None) -> tuple[float | None, str]:
    if denoiser is None:
        return None, "uncertified"
    if isinstance(denoiser, int | float):
        return float(denoiser), "given"
    inner = denoiser.denoiser if isinstance(denoiser, dinv.optim.PnP) else denoiser
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
    :param tuple | None img_size: image size, if :func:`operator_sqnorm` needs it.
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
    return _check_conditions(
        physics,
        denoiser,
        algorithm,
        _positive("stepsize", stepsize),
        data_fidelity,
        _positive("beta", beta),
        g_first,
        operator_sqnorm(physics, img_size),
    )


def _check_conditions(
    physics, denoiser, algorithm, stepsize, data_fidelity, beta, g_first, norm
) -> PnPCertificate:
    # pnp_certificate once its arguments are checked and ||A||^2 is known (norm is
    # operator_sqnorm's (value, method)), so that convergent_pnp computes the norm only once.
    sqnorm, method = norm
    g_first = bool(g_first) and algorithm == "PGD"
    data_fidelity = dinv.optim.L2() if data_fidelity is None else data_fidelity
    ok, fails, notes = [], [], []
    alpha, source = _denoiser_alpha(denoiser)
    if alpha is None:
        fails.append(
            f"FAILS: the denoiser ({source}) has no certified averagedness constant: use a "
            f"certified one (deepinv_dynnets.EulerDenoiser) or pass the constant you vouch for"
        )
    else:
        ok.append(f"ok: denoiser ({source}) is {alpha:.4g}-averaged (certified)")

    is_l2 = isinstance(data_fidelity, dinv.optim.L2)
    lip = sqnorm * float(data_fidelity.norm) if is_l2 else None
    needs_gradient = algorithm == "PGD" and not g_first
    bound = math.inf
    if needs_gradient:
        if lip is None:
            fails.append(
                f"FAILS: PGD takes gradient steps on {type(data_fidelity).__name__}, whose "
                f"gradient Lipschitz constant is not known: use L2 or g_first=True"
            )
        else:
            bound = 2 / lip
            where = f"L = ||A||^2/s^2 = {lip:.4g}, ||A||^2 {method}"
            if stepsize < bound:
                ok.append(f"ok: stepsize {stepsize:.4g} < 2/L = {bound:.4g} ({where})")
            else:
                fails.append(
                    f"FAILS: stepsize {stepsize:.4g} exceeds 2/L = {bound:.4g} ({where}): use "
                    f"a stepsize below {bound:.4g}"
                )
    else:
        ok.append(f"ok: stepsize {stepsize:.4g} > 0 (any positive stepsize for a proximal step)")
        if not isinstance(physics, dinv.physics.DecomposablePhysics) and is_l2:
            notes.append(
                "the prox of the data fidelity is computed by conjugate gradient (inexact): "
                "the guarantee is for the exact prox"
            )
    if method == "power iteration":
        notes.append("||A||^2 is a power-iteration estimate (x 1.01), not a proven bound")

    composite, governing = None, "x"
    if algorithm in ("DRS", "ADMM"):
        governing = "z" if algorithm == "DRS" else "x + z"
        if alpha is not None and not _accepts_alpha(algorithm, alpha):
            fails.append(
                f"FAILS: {algorithm} needs a firmly non-expansive denoiser (alpha <= 1/2, so "
                f"that 2D - I is non-expansive), got alpha = {alpha:.4g}: use PGD or HQS, or "
                f"a denoiser trained with alpha <= 0.5 (the shipped "
                f"EulerDenoiser(alpha=0.5, pretrained='default'))"
            )
        if algorithm == "DRS" and not beta < 2:
            fails.append(f"FAILS: DRS needs beta in (0, 2), got beta = {beta:g}: use beta = 1")
        elif algorithm == "ADMM" and beta != 1:
            fails.append(
                f"FAILS: the ADMM guarantee (equivalence with DRS) holds for beta = 1, got "
                f"{beta:g}: use beta = 1, or DRS"
            )
        else:
            ok.append(f"ok: relaxation beta = {beta:g}")
        if alpha is not None and _accepts_alpha(algorithm, alpha):
            composite = beta / 2 if algorithm == "DRS" else 0.5
    elif alpha is not None and _accepts_alpha(algorithm, alpha):
        if needs_gradient:
            composite = compose_averaged(alpha, stepsize * lip / 2) if bound > stepsize else None
        elif g_first:
            composite = compose_averaged(alpha, 0.5)
        else:
            composite = compose_averaged(0.5, alpha)
        if composite is not None:
            if beta * composite < 1:
                ok.append(f"ok: relaxation beta = {beta:g} < 1/alpha_T = {1 / composite:.4g}")
                composite *= beta
            else:
                fails.append(
                    f"FAILS: relaxation beta = {beta:g} is not below 1/alpha_T = "
                    f"{1 / composite:.4g}: use beta = 1"
                )
                composite = None
    elif alpha is not None:
        fails.append(f"FAILS: the denoiser is {alpha:g}-averaged: alpha < 1 is needed")

    guaranteed = not fails
    return PnPCertificate(
        guaranteed=guaranteed,
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
        composite_alpha=composite if guaranteed else None,
        governing=governing,
        notes=notes,
    )
