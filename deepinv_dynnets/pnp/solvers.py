r"""Certified Plug-and-Play solvers on deepinv's optimisers: :func:`convergent_pnp`."""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import nn

from ..models.relaxed_denoiser import RelaxedDenoiser
from .certificate import (
    ALGORITHMS,
    PnPCertificate,
    _check_conditions,
    _positive,
    operator_sqnorm,
)
from .monitor import ConvergenceMonitor

__all__ = ["convergent_pnp", "default_parameters"]

_SOLVERS = {
    "PGD": dinv.optim.PGD,
    "HQS": dinv.optim.HQS,
    "DRS": dinv.optim.DRS,
    "ADMM": dinv.optim.ADMM,
}
_GOVERNING = {"PGD": "x", "HQS": "x", "DRS": "z", "ADMM": "x + z"}
# Defaults from a small tuning run (two Set12 crops, Levin kernel 0, noise 12.75/255, a
# grayscale EulerDenoiser checkpoint): the denoiser's noise level is the measurement's
# (0.5x-2x changed the PSNR by < 0.15 dB; floored for nearly noiseless data), PGD takes
# 0.95 of its largest certified stepsize, the others a prox weight of 5/L.
_SIGMA_FACTOR = 1.0
_SIGMA_FLOOR = 2 / 255
_PGD_STEP_FRACTION = 0.95
_PROX_STEP_TIMES_L = 5.0


def _noise_level(physics) -> float | None:
    noise_model = getattr(physics, "noise_model", None)
    if noise_model is None or isinstance(noise_model, dinv.physics.ZeroNoise):
        return 0.0
    sigma = getattr(noise_model, "sigma", None)
    if sigma is None:
        return None
    sigma = sigma.detach().max() if isinstance(sigma, torch.Tensor) else sigma
    return float(sigma)


def default_parameters(
    physics: dinv.physics.LinearPhysics,
    algorithm: str = "PGD",
    img_size: tuple[int, ...] | None = None,
) -> dict[str, float]:
    r"""The parameters :func:`convergent_pnp` uses when none are given.

    With :math:`s_n` the noise level of ``physics.noise_model`` and :math:`L = \|A\|^2`
    (data fidelity ``L2()``):

    - ``sigma_denoiser`` :math:`= \max(s_n, 2/255)`;
    - ``stepsize`` :math:`= 0.95 \cdot 2/L` for PGD (close to the most weight on the data
      that the certificate accepts, which gave the best PSNR in our deblurring runs, while
      keeping the iteration map's :math:`\alpha_T` away from 1, which slows convergence),
      and :math:`5/L` for HQS, DRS and ADMM (any positive value is certified; 5/L was the
      best of 0.5, 2, 5, 10, 20 over L for HQS in our tuning run, and is used untuned for
      DRS and ADMM).

    :param deepinv.physics.LinearPhysics physics: the forward operator with its noise model.
    :param str algorithm: ``"PGD"``, ``"HQS"``, ``"DRS"`` or ``"ADMM"``.
    :param tuple | None img_size: the image size, if :func:`operator_sqnorm` needs it.
    :return: ``{"stepsize": ..., "sigma_denoiser": ...}``.
    :raises ValueError: the physics' noise model has no level ``sigma`` to derive the
        denoiser's from, e.g. Poisson noise (pass ``sigma_denoiser``). Noiseless physics
        get the floor.

    :Examples:

        >>> import deepinv as dinv, torch
        >>> from deepinv_dynnets.pnp import default_parameters
        >>> physics = dinv.physics.BlurFFT((1, 16, 16), filter=torch.ones(1, 1, 3, 3) / 9,
        ...                                noise_model=dinv.physics.GaussianNoise(0.05))
        >>> params = default_parameters(physics)
        >>> round(params["stepsize"], 3), round(params["sigma_denoiser"], 3)
        (1.9, 0.05)
    """
    return _default_parameters(physics, str(algorithm).upper(), operator_sqnorm(physics, img_size))


def _default_parameters(physics, algorithm: str, norm: tuple[float, str]) -> dict[str, float]:
    noise = _noise_level(physics)
    if noise is None:
        raise ValueError(
            f"{type(physics).__name__}'s noise model has no noise level sigma: pass "
            f"sigma_denoiser (and stepsize) explicitly"
        )
    sigma = max(_SIGMA_FACTOR * noise, _SIGMA_FLOOR)
    sqnorm, _ = norm
    if algorithm == "PGD":
        stepsize = _PGD_STEP_FRACTION * 2 / sqnorm
    else:
        stepsize = _PROX_STEP_TIMES_L / sqnorm
    return {"stepsize": stepsize, "sigma_denoiser": sigma}


def _check_measurement(physics, img_size):
    def hook(module, args, kwargs):
        y = args[0] if args else kwargs.get("y")
        phys = args[1] if len(args) > 1 else kwargs.get("physics", physics)
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"the measurement y must be a tensor, got {type(y).__name__}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("the measurement y contains NaN or Inf")
        size = img_size or getattr(phys, "img_size", None)
        try:
            x = phys.A_adjoint(y)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"measurement of shape {tuple(y.shape)} does not fit the physics "
                f"{type(phys).__name__}: {err}"
            ) from err
        if size is not None and tuple(x.shape[1:]) != tuple(size):
            raise ValueError(
                f"measurement of shape {tuple(y.shape)} does not fit the physics: its adjoint "
                f"has shape {tuple(x.shape[1:])}, the physics expects images of shape "
                f"{tuple(size)}"
            )

    return hook


def convergent_pnp(
    physics: dinv.physics.LinearPhysics,
    denoiser: nn.Module,
    algorithm: str = "PGD",
    *,
    stepsize: float | None = None,
    sigma_denoiser: float | None = None,
    relaxation: float = 1.0,
    beta: float = 1.0,
    g_first: bool = False,
    data_fidelity: dinv.optim.DataFidelity | None = None,
    max_iter: int = 300,
    thres_conv: float = 1e-5,
    early_stop: bool = True,
    img_size: tuple[int, ...] | None = None,
    **kwargs,
) -> tuple[dinv.optim.BaseOptim, PnPCertificate]:
    r"""A deepinv Plug-and-Play solver with its convergence certificate and a monitor.

    Builds ``deepinv.optim.<algorithm>`` with ``prior = deepinv.optim.PnP(denoiser)``
    (relaxed to :math:`(1 - \lambda)I + \lambda D` when ``relaxation`` :math:`= \lambda
    \ne 1`: a strength control that keeps the certificate, see
    :class:`~deepinv_dynnets.models.RelaxedDenoiser`), checks the conditions of
    :func:`~deepinv_dynnets.pnp.pnp_certificate` and attaches a
    :class:`~deepinv_dynnets.pnp.ConvergenceMonitor` (``model.monitor``; its
    :meth:`~deepinv_dynnets.pnp.ConvergenceMonitor.report` after a run says whether the
    residual stayed non-increasing). Any deepinv denoiser is accepted; one without a
    certificate (e.g. ``DnCNN``) gives ``certificate.guaranteed = False`` with the reason.
    The model runs as usual, ``model(y, physics, x_gt=x, compute_metrics=True)``, and
    checks the measurement first (finite, shaped for ``physics``).

    Unset ``stepsize`` and ``sigma_denoiser`` come from :func:`default_parameters` (noise
    level and operator norm of ``physics``).

    :param deepinv.physics.LinearPhysics physics: the forward operator and noise model.
    :param torch.nn.Module denoiser: ``denoiser(x, sigma)``, e.g.
        :class:`~deepinv_dynnets.EulerDenoiser` (put in eval mode here).
    :param str algorithm: ``"PGD"`` (default), ``"HQS"``, ``"DRS"`` or ``"ADMM"``.
    :param float | None stepsize: :math:`\gamma`.
    :param float | None sigma_denoiser: the denoiser's noise level.
    :param float relaxation: :math:`\lambda > 0` of the relaxed denoiser.
    :param float beta: the solver's relaxation parameter.
    :param bool g_first: PGD with the denoiser step first.
    :param deepinv.optim.DataFidelity | None data_fidelity: default ``deepinv.optim.L2()``.
    :param int max_iter: iteration cap.
    :param float thres_conv: relative residual at which to stop (with ``early_stop``) and
        that the monitor counts as converged.
    :param bool early_stop: stop at ``thres_conv``.
    :param tuple | None img_size: the image size, if the physics does not carry it and the
        operator norm needs a power iteration.
    :param kwargs: passed to the deepinv solver.
    :return: ``(model, certificate)``.
    :raises ValueError: unknown algorithm, non-linear physics, a non-positive stepsize,
        ``sigma_denoiser`` or ``relaxation``, a denoiser that is not a module.

    :Examples:

        >>> import deepinv as dinv, torch
        >>> from deepinv_dynnets import EulerDenoiser, convergent_pnp
        >>> x = torch.rand(1, 1, 16, 16)
        >>> physics = dinv.physics.BlurFFT((1, 16, 16), filter=torch.ones(1, 1, 3, 3) / 9,
        ...                                noise_model=dinv.physics.GaussianNoise(0.05))
        >>> y = physics(x)
        >>> model, cert = convergent_pnp(physics, EulerDenoiser(width=4, hidden=4, n_blocks=2))
        >>> cert.guaranteed
        True
        >>> x_hat, metrics = model(y, physics, x_gt=x, compute_metrics=True)
        >>> model.monitor.report().monotone
        True
    """
    algorithm = str(algorithm).upper()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if not isinstance(denoiser, nn.Module):
        raise ValueError(f"denoiser must be a torch.nn.Module, got {type(denoiser).__name__}")
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise ValueError(
            f"convergent_pnp needs a linear physics (deepinv.physics.LinearPhysics) for its "
            f"certificate, got {type(physics).__name__}"
        )
    norm = operator_sqnorm(physics, img_size)
    if stepsize is None or sigma_denoiser is None:
        defaults = _default_parameters(physics, algorithm, norm)
        stepsize = defaults["stepsize"] if stepsize is None else stepsize
        sigma_denoiser = defaults["sigma_denoiser"] if sigma_denoiser is None else sigma_denoiser
    sigma_denoiser = float(sigma_denoiser)
    if not math.isfinite(sigma_denoiser) or sigma_denoiser < 0:
        raise ValueError(f"sigma_denoiser must be a finite number >= 0, got {sigma_denoiser!r}")
    denoiser = denoiser.eval()
    if relaxation != 1:
        denoiser = RelaxedDenoiser(denoiser, relaxation)
    stepsize, beta = _positive("stepsize", stepsize), _positive("beta", beta)
    certificate = _check_conditions(
        physics, denoiser, algorithm, stepsize, data_fidelity, beta, g_first, norm
    )
    options = dict(
        prior=dinv.optim.PnP(denoiser),
        data_fidelity=dinv.optim.L2() if data_fidelity is None else data_fidelity,
        max_iter=int(max_iter),
        thres_conv=float(thres_conv),
        early_stop=bool(early_stop),
        crit_conv="residual",
        # every parameter through params_algo: it is the only way to set PGD's and HQS's beta
        params_algo={
            "stepsize": float(stepsize),
            "g_param": sigma_denoiser,
            "lambda": 1.0,
            "beta": float(beta),
        },
    )
    if algorithm == "PGD":
        options["g_first"] = bool(g_first)
    model = _SOLVERS[algorithm](**(options | kwargs))
    model.certificate = certificate
    model.monitor = ConvergenceMonitor(
        variable=_GOVERNING[algorithm],
        alpha=certificate.composite_alpha,
        threshold=thres_conv,
        skip_first=algorithm == "ADMM",
    ).attach(model)
    model.register_forward_pre_hook(_check_measurement(physics, img_size), with_kwargs=True)
    return model, certificate
