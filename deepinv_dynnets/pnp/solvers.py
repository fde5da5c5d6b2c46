r"""Certified Plug-and-Play solvers on deepinv's optimisers: :func:`convergent_pnp`."""

from __future__ import annotations

import math
import numbers

import deepinv as dinv
import torch
from torch import nn

from .._validation import check_positive_int, positive_real
from ..models.relaxed_denoiser import RelaxedDenoiser
from .anderson import FixedPointDriver, SafeguardedAnderson
from .certificate import (
    ALGORITHMS,
    PnPCertificate,
    check_conditions,
    fidelity_scale,
)
from .monitor import ConvergenceMonitor
from .physics_norms import operator_sqnorm

__all__ = ["convergent_pnp", "default_parameters"]

_SOLVERS = {
    "PGD": dinv.optim.PGD,
    "HQS": dinv.optim.HQS,
    "DRS": dinv.optim.DRS,
    "ADMM": dinv.optim.ADMM,
}
_GOVERNING = {"PGD": "x", "HQS": "x", "DRS": "z", "ADMM": "x + z"}
# Defaults from benchmarks/pnp_tuning.py (two Set12 crops, Levin kernels 0/2/4/6, noise
# 7.65 and 12.75/255, the shipped grayscale EulerDenoiser; records in benchmarks/results/
# pnp_tuning_gray*.json). PGD: the denoiser at the measurement's noise level (1.5x-2x
# gained <= 0.02 dB at 7.65 and lost 0.3-0.9 dB at 12.75) and 0.95 of the largest
# certified stepsize. HQS: prox weight 8/L with the denoiser at 2x the noise level, the
# best of {2, 8, 16, 32}/L x {0.75, 1, 1.5, 2, 3, 4} over both noise levels (within
# 0.03 dB of the best at 7.65, the best at 12.75). DRS and ADMM were not tuned and keep
# 5/L at 1x. The noise level is floored for nearly noiseless data.
_SIGMA_FACTOR = {"PGD": 1.0, "HQS": 2.0, "DRS": 1.0, "ADMM": 1.0}
_SIGMA_FLOOR = 2 / 255
_PGD_STEP_FRACTION = 0.95
_UNTUNED_PROX_STEP_TIMES_L = 5.0
_PROX_STEP_TIMES_L = {"HQS": 8.0}
# deepinv solver keywords that cannot change the certified iteration; any other keyword
# (params_algo, stepsize, sigma_denoiser, beta, backtracking, anderson_acceleration, DEQ,
# unfold, ...) would replace or alter what the certificate is about, and is refused.
_HARMLESS_KEYWORDS = frozenset(
    {"custom_init", "custom_metrics", "get_output", "has_cost", "verbose", "show_progress_bar"}
)


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
    data_fidelity: dinv.optim.DataFidelity | None = None,
) -> dict[str, float]:
    r"""The parameters :func:`convergent_pnp` uses when none are given.

    With :math:`s_n` the noise level of ``physics.noise_model`` and :math:`L = \|A\|^2/s^2`
    the Lipschitz constant of the gradient of the data fidelity actually used
    (``L2(sigma=s)``; ``None`` is ``L2()``, :math:`s = 1`):

    - ``sigma_denoiser`` :math:`= \max(c\, s_n, 2/255)` with :math:`c = 2` for HQS and
      :math:`c = 1` otherwise;
    - ``stepsize`` :math:`= 0.95 \cdot 2/L` for PGD (close to the most weight on the data
      that the certificate accepts, which gave the best PSNR in our deblurring runs, while
      keeping the iteration map's :math:`\alpha_T` away from 1, which slows convergence),
      :math:`8/L` for HQS, and :math:`5/L` for DRS and ADMM (any positive value is
      certified for these three).

    The PGD and HQS values are the best of a certified grid over the stepsize and the
    denoiser's noise level (``benchmarks/pnp_tuning.py``, grey deblurring at noise 7.65 and
    12.75/255; see :ref:`the tuning table <pnp-defaults>`); DRS and ADMM were not tuned.

    :param deepinv.physics.LinearPhysics physics: the forward operator with its noise model.
    :param str algorithm: ``"PGD"``, ``"HQS"``, ``"DRS"`` or ``"ADMM"``.
    :param tuple | None img_size: the image size, if :func:`operator_sqnorm` needs it.
    :param deepinv.optim.DataFidelity | None data_fidelity: the data fidelity of the run.
        For another fidelity than L2 (no known :math:`L`), HQS, DRS and ADMM use
        :math:`8/\|A\|^2` (HQS) or :math:`5/\|A\|^2`, and PGD has no default.
    :return: ``{"stepsize": ..., "sigma_denoiser": ...}``.
    :raises ValueError: the physics' noise model has no level ``sigma`` to derive the
        denoiser's from, e.g. Poisson noise (pass ``sigma_denoiser``); PGD with a data
        fidelity whose gradient has no known Lipschitz constant (pass ``stepsize``).
        Noiseless physics get the floor.

    :Examples:

        >>> import deepinv as dinv, torch
        >>> from deepinv_dynnets.pnp import default_parameters
        >>> physics = dinv.physics.BlurFFT((1, 16, 16), filter=torch.ones(1, 1, 3, 3) / 9,
        ...                                noise_model=dinv.physics.GaussianNoise(0.05))
        >>> params = default_parameters(physics)
        >>> round(params["stepsize"], 3), round(params["sigma_denoiser"], 3)
        (1.9, 0.05)
    """
    norm = operator_sqnorm(physics, img_size)
    return _default_parameters(physics, str(algorithm).upper(), norm, data_fidelity)


def _default_parameters(
    physics, algorithm: str, norm: tuple[float, str], data_fidelity, g_first: bool = False
) -> dict[str, float]:
    noise = _noise_level(physics)
    if noise is None:
        raise ValueError(
            f"{type(physics).__name__}'s noise model has no noise level sigma: pass "
            f"sigma_denoiser (and stepsize) explicitly"
        )
    sigma = max(_SIGMA_FACTOR[algorithm] * noise, _SIGMA_FLOOR)
    sqnorm, _ = norm
    scale = fidelity_scale(data_fidelity)
    if algorithm == "PGD" and (scale is not None or not g_first):
        if scale is None:
            raise ValueError(
                f"stepsize: PGD's certified stepsize is below 2/L, and the gradient of "
                f"{type(data_fidelity).__name__} has no known Lipschitz constant L: pass "
                f"stepsize, use L2, or g_first=True"
            )
        stepsize = _PGD_STEP_FRACTION * 2 / (sqnorm * scale)
    else:
        times_l = _PROX_STEP_TIMES_L.get(algorithm, _UNTUNED_PROX_STEP_TIMES_L)
        stepsize = times_l / (sqnorm * (1.0 if scale is None else scale))
    return {"stepsize": stepsize, "sigma_denoiser": sigma}


def _check_measurement(physics, img_size, denoiser):
    weights = next(iter(denoiser.parameters()), None)

    def hook(module, args, kwargs):
        y = args[0] if args else kwargs.get("y")
        phys = args[1] if len(args) > 1 else kwargs.get("physics", physics)
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"the measurement y must be a tensor, got {type(y).__name__}")
        if not torch.is_floating_point(y):
            raise ValueError(f"the measurement y must be a real floating tensor, got {y.dtype}")
        if weights is not None and weights.dtype != y.dtype:
            raise ValueError(
                f"the measurement y has dtype {y.dtype} but the denoiser's weights are "
                f"{weights.dtype}: convert one of them (denoiser.to(y.dtype))"
            )
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
    acceleration: bool | SafeguardedAnderson | None = None,
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
    residual behaved as the theorem says). Any deepinv denoiser is accepted; one without a
    certificate (e.g. ``DnCNN``) gives ``certificate.guaranteed = False`` with the reason.
    The model runs as usual, ``model(y, physics, x_gt=x, compute_metrics=True)``, and
    checks the measurement first (finite, shaped for ``physics``).

    The run stops (with ``early_stop``) when the relative fixed-point residual
    :math:`\|Tv_k - v_k\| / \|Tv_k\|` of the governing variable is below ``thres_conv``
    for every image of the batch. A certified run is accelerated by default with the
    safeguarded Anderson scheme of :mod:`deepinv_dynnets.pnp.anderson`, which keeps the
    convergence guarantee. When the certificate rests on a power-iteration *estimate* of
    :math:`\|A\|^2` (verdict ``ESTIMATE``), a PGD step that increases the residual halves
    the stepsize and restarts the check (recorded in the monitor's report).

    Unset ``stepsize`` and ``sigma_denoiser`` come from :func:`default_parameters` (noise
    level and operator norm of ``physics``, and ``data_fidelity``).

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
    :param float thres_conv: relative fixed-point residual at which to stop (with
        ``early_stop``) and that the monitor counts as converged.
    :param bool early_stop: stop at ``thres_conv``.
    :param tuple | None img_size: the image size, if the physics does not carry it and the
        operator norm needs it.
    :param acceleration: ``None`` (default): safeguarded Anderson acceleration when the
        certificate holds (``GUARANTEED`` or ``ESTIMATE``), none otherwise; ``True`` /
        ``False`` to force it on / off; or a
        :class:`~deepinv_dynnets.pnp.SafeguardedAnderson` with its settings.
    :param kwargs: passed to the deepinv solver: only keywords that cannot change the
        certified iteration (``custom_init``, ``custom_metrics``, ``get_output``,
        ``has_cost``, ``verbose``, ``show_progress_bar``).
    :return: ``(model, certificate)``.
    :raises ValueError: unknown algorithm, non-linear physics, a non-positive stepsize,
        ``sigma_denoiser`` or ``relaxation``, a solver keyword that would replace the
        certified parameters (``params_algo``, ``stepsize``, ...) or change the iteration
        (``backtracking``, ``anderson_acceleration``, ...).
    :raises TypeError: a denoiser that is not a module, a data fidelity that is not a
        ``deepinv.optim.DataFidelity``, an ``acceleration`` of another type.

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
        >>> report = model.monitor.report()
        >>> report.monotone, report.converged
        (True, True)
    """
    algorithm = str(algorithm).upper()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if not isinstance(denoiser, nn.Module):
        raise TypeError(f"denoiser must be a torch.nn.Module, got {type(denoiser).__name__}")
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise ValueError(
            f"physics: convergent_pnp needs a linear physics (deepinv.physics.LinearPhysics) "
            f"for its certificate, got {type(physics).__name__}"
        )
    refused = sorted(set(kwargs) - _HARMLESS_KEYWORDS)
    if refused:
        raise ValueError(
            f"{', '.join(refused)}: convergent_pnp sets the solver's parameters itself, so that "
            f"the certificate is about the iteration that runs; pass stepsize, "
            f"sigma_denoiser, beta, relaxation, g_first, data_fidelity or acceleration "
            f"instead (accepted solver keywords: {', '.join(sorted(_HARMLESS_KEYWORDS))})"
        )
    if acceleration is not None and not isinstance(acceleration, bool | SafeguardedAnderson):
        raise TypeError(
            f"acceleration must be None, a bool or a SafeguardedAnderson, got "
            f"{type(acceleration).__name__}"
        )
    fidelity_scale(data_fidelity)  # type check before any work
    max_iter = check_positive_int(max_iter, "max_iter")
    thres_conv = positive_real(thres_conv, "thres_conv")
    beta = positive_real(beta, "beta")
    if relaxation != 1:
        positive_real(relaxation, "relaxation")
    if stepsize is not None:
        stepsize = positive_real(stepsize, "stepsize")
    if sigma_denoiser is not None:
        sigma_denoiser = _nonnegative("sigma_denoiser", sigma_denoiser)
    norm = operator_sqnorm(physics, img_size)
    if stepsize is None or sigma_denoiser is None:
        defaults = _default_parameters(physics, algorithm, norm, data_fidelity, bool(g_first))
        stepsize = defaults["stepsize"] if stepsize is None else stepsize
        sigma_denoiser = defaults["sigma_denoiser"] if sigma_denoiser is None else sigma_denoiser
    sigma_denoiser = _nonnegative("sigma_denoiser", sigma_denoiser)
    stepsize = positive_real(stepsize, "stepsize")
    denoiser = denoiser.eval()
    if relaxation != 1:
        denoiser = RelaxedDenoiser(denoiser, relaxation)
    certificate = check_conditions(
        physics, denoiser, algorithm, stepsize, data_fidelity, beta, g_first, norm, img_size
    )
    options = dict(
        prior=dinv.optim.PnP(denoiser),
        data_fidelity=dinv.optim.L2() if data_fidelity is None else data_fidelity,
        max_iter=max_iter,
        thres_conv=thres_conv,
        early_stop=bool(early_stop),
        crit_conv="residual",
        # every parameter through params_algo: it is the only way to set PGD's and HQS's beta
        params_algo={
            "stepsize": stepsize,
            "g_param": sigma_denoiser,
            "lambda": 1.0,
            "beta": beta,
        },
    )
    if algorithm == "PGD":
        options["g_first"] = bool(g_first)
    model = _SOLVERS[algorithm](**(options | kwargs))
    certified = certificate.guaranteed or certificate.estimated
    if acceleration is None or acceleration is True:
        acceleration = SafeguardedAnderson() if (acceleration or certified) else None
    elif acceleration is False:
        acceleration = None
    model.certificate = certificate
    model.monitor = ConvergenceMonitor(
        variable=_GOVERNING[algorithm],
        alpha=certificate.composite_alpha,
        threshold=thres_conv,
        skip_first=algorithm == "ADMM",
    ).attach(model)
    driver = FixedPointDriver(
        model.fixed_point.iterator.iterator,
        model.monitor,
        acceleration=acceleration,
        threshold=thres_conv,
        solver=model,
        step_safeguard=certificate.estimated and algorithm == "PGD" and not g_first,
    )
    model.fixed_point.iterator = driver
    # deepinv's own rule looks at x; the theorem is about the governing variable's residual
    model.fixed_point.check_conv_fn = driver.check_conv
    model.fixed_point.early_stop = bool(early_stop)
    model.register_forward_pre_hook(
        _check_measurement(physics, img_size, denoiser), with_kwargs=True
    )
    return model, certificate


def _nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real | torch.Tensor):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value
