r"""The averaged Euler step :math:`x \mapsto x - hA^\top s(Ax + b)` and its step-size control.

With :math:`s` monotone of slope in :math:`[0, 1]` the step's Jacobian
:math:`I - hA^\top DA` is symmetric with spectrum in :math:`[1 - h\|A\|^2, 1]`, so the
step is :math:`h\|A\|^2/2`-averaged (:func:`~deepinv_dynnets.lipschitz.euler_step_alpha`).
The step size is kept below :math:`2\alpha/\|A\|^2` by construction (see
:class:`AveragedEulerStep`); :func:`~deepinv_dynnets.lipschitz.certify` proves it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_positive_int
from ..lipschitz.estimates import conv2d_symbol_power_estimate
from ..lipschitz.operator_norms import ROUNDOFF_MARGIN, conv2d_norm_bound, grid_correction
from .activations import get_activation
from .fields import VectorField
from .linear_spline import MonotoneLinearSpline
from .steps import FlowStep

__all__ = ["ConvRidgeField", "AveragedEulerStep"]

#: Activations of an averaged step: monotone, every slope in [0, 1] ("spline": a learnable
#: :class:`~deepinv_dynnets.dynamics.linear_spline.MonotoneLinearSpline` per hidden channel).
AVERAGING_ACTIVATIONS = ("relu", "leaky_relu", "spline")
# Power iterations used when nu is first estimated, after loading, and when the weights
# changed outside a training forward (after the last optimizer step, a manual edit): from a
# random start, 10 of them reach 0.99 of the grid maximum for 64 x 64 kernels, well inside
# the default safety factor.
REFRESH_ITERS = 10


class ConvRidgeField(VectorField):
    r"""The field :math:`F(x) = -A^\top s(Ax + b_0 + \sigma c)` on feature maps.

    :math:`A` is a stride-1 ``conv2d`` from ``width`` to ``hidden`` channels with zero
    ``"same"`` padding, :math:`A^\top` the transposed convolution with the same weights (its
    exact adjoint), :math:`s` ReLU, LeakyReLU or a learnable monotone linear spline with
    slopes in :math:`[0, 1]` (per hidden channel, its knots scaled with :math:`\sigma`).
    :math:`F = -\nabla U` with the convex potential
    :math:`U(x) = \sum_j \gamma\big((Ax + b)_j\big)`, :math:`\gamma' = s`. The noise level
    :math:`\sigma` enters the bias and the spline only, never :math:`A`.

    :param int width: channels of the state.
    :param int hidden: channels of :math:`Ax`.
    :param int kernel_size: odd kernel size of :math:`A`.
    :param str activation: ``"relu"``, ``"leaky_relu"`` or ``"spline"``.
    :param float negative_slope: LeakyReLU's slope for negative inputs, in :math:`[0, 1]`.
    :param bool sigma_conditioning: add :math:`\sigma c` to the bias.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import ConvRidgeField
        >>> ConvRidgeField(4, 6)(torch.randn(2, 4, 9, 7), torch.tensor(0.1)).shape
        torch.Size([2, 4, 9, 7])
    """

    def __init__(
        self,
        width: int,
        hidden: int,
        kernel_size: int = 3,
        activation: str = "relu",
        negative_slope: float = 0.01,
        sigma_conditioning: bool = True,
    ):
        super().__init__(width, kernel_size)
        if activation not in AVERAGING_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {AVERAGING_ACTIVATIONS}, got {activation!r}"
            )
        if not 0 <= negative_slope <= 1:
            raise ValueError(f"negative_slope must lie in [0, 1], got {negative_slope!r}")
        self.hidden = hidden
        slope = float(negative_slope) if activation == "leaky_relu" else 0.0
        self.negative_slope = slope
        # LeakyReLU of slope 0 is ReLU: one code path for both.
        self._activation = get_activation("leaky_relu" if slope else "relu")
        self._params = {"negative_slope": slope} if slope else {}
        self.spline = MonotoneLinearSpline(hidden) if activation == "spline" else None
        conv = nn.Conv2d(width, hidden, kernel_size)  # borrow PyTorch's default init
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.sigma_weight = nn.Parameter(torch.zeros(hidden)) if sigma_conditioning else None

    def activation(self, z: Tensor, sigma: Tensor | None = None, inplace: bool = False) -> Tensor:
        """:math:`s(z)`; ``inplace`` may overwrite ``z`` (a fresh map no backward needs)."""
        if self.spline is not None:
            return self.spline(z, sigma)
        fn = self._activation.inplace if inplace else self._activation.fn
        return fn(z, **self._params)

    def preactivation(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        r""":math:`Ax + b(\sigma)`, ``x`` holding the first ``c <= width`` channels (the
        others zero), ``sigma`` of shape ``()`` or ``(B,)``."""
        pad = self.kernel_size // 2
        w_in = self.weight[:, : x.shape[1]]
        conditioned = self.sigma_weight is not None and sigma is not None
        if conditioned and sigma.numel() > 1 and bool((sigma != sigma[0]).any()):
            # one bias per image: added to the feature map
            bias = self.bias.view(1, -1, 1, 1) + sigma.view(-1, 1, 1, 1) * self.sigma_weight.view(
                1, -1, 1, 1
            )
            return F.conv2d(x, w_in, padding=pad) + bias
        # one bias for the batch: fused into the convolution
        bias = self.bias + sigma.reshape(-1)[0] * self.sigma_weight if conditioned else self.bias
        return F.conv2d(x, w_in, bias, padding=pad)

    def forward(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        z = self.activation(self.preactivation(x, sigma), sigma)
        return -F.conv_transpose2d(z, self.weight, padding=self.kernel_size // 2)


class AveragedEulerStep(FlowStep):
    r"""Averaged Euler step :math:`x \mapsto x + hF(x) = x - h\,A^\top s(Ax + b)`.

    :math:`F` is a :class:`ConvRidgeField`, so the step is :math:`h\|A\|^2/2`-averaged. The
    step is

    .. math::

        h = \frac{2\alpha\, \operatorname{sigmoid}(\theta)}{\nu}, \qquad
        \nu \approx \kappa\, c_P^2 \max_{j}\|\hat A(\omega_j)\|_2^2 \ \ge\ \kappa\,\|A\|_2^2,

    with :math:`\theta` learnable, :math:`\alpha` the step's target constant,
    :math:`\kappa` = ``safety`` and :math:`c_P` = :func:`~deepinv_dynnets.lipschitz.grid_correction`
    of the :math:`P\times P` frequency grid on which :math:`\nu` is estimated
    (:func:`~deepinv_dynnets.lipschitz.conv2d_symbol_power_estimate`). Then
    :math:`h\nu < 2\alpha` always and :math:`h\|A\|^2 \le 2\alpha/\kappa` whenever the
    estimate is within :math:`\kappa` of the grid maximum. :math:`\nu` is re-estimated at
    every training forward and, in eval mode, only when the weights changed since it was
    computed; for unchanged weights its value is kept, so a :meth:`calibrate`-d (certified)
    :math:`\nu` survives a training-mode forward. An all-zero kernel (:math:`\nu = 0`) gives
    the identity; training cannot leave it (:math:`h` grows as the kernel shrinks, so the
    gradient there is astronomically large), so initialise the kernel randomly.

    The forward is the optimised one: ``x`` may carry only the first ``c <= width``
    channels (the others zero, as after a zero lift) and ``keep`` asks for the first
    ``keep`` output channels only (as before a truncation); both skip the products with the
    zero or discarded channels exactly, and :math:`h` scales the small kernel rather than
    the feature map.

    :param int width: channels of the state.
    :param int hidden: channels of :math:`Ax`.
    :param int kernel_size: odd kernel size of :math:`A`.
    :param float alpha: target averagedness :math:`\alpha \in (0, 1]` of the step.
    :param str activation: ``"relu"``, ``"leaky_relu"`` or ``"spline"``.
    :param float negative_slope: slope of LeakyReLU for negative inputs, in :math:`[0, 1]`.
    :param bool sigma_conditioning: add :math:`\sigma c` to the bias.
    :param float safety: :math:`\kappa \ge 1`.
    :param int n_power_iter: power iterations per training forward.
    :param int power_grid: :math:`P`, the frequency grid of the estimate.
    :param float step_init: initial :math:`\operatorname{sigmoid}(\theta)`, the fraction of
        the largest allowed step, in :math:`(0, 1)`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import AveragedEulerStep
        >>> step = AveragedEulerStep(width=4, hidden=6, kernel_size=3, alpha=0.5)
        >>> step(torch.randn(2, 4, 9, 7)).shape
        torch.Size([2, 4, 9, 7])
    """

    reads_zero_padded = True

    def __init__(
        self,
        width: int,
        hidden: int,
        kernel_size: int = 3,
        alpha: float = 0.5,
        activation: str = "relu",
        negative_slope: float = 0.01,
        sigma_conditioning: bool = True,
        safety: float = 1.05,
        n_power_iter: int = 1,
        power_grid: int | None = None,
        step_init: float = 0.95,
    ):
        field = ConvRidgeField(
            width, hidden, kernel_size, activation, negative_slope, sigma_conditioning
        )
        super().__init__([field], h=None)
        if not 0 < step_init < 1:
            raise ValueError(f"step_init must lie in (0, 1), got {step_init!r}")
        # alpha > 1 would allow h ||A||^2 up to 2 alpha > 2: an expansive step
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
        if not (math.isfinite(safety) and safety >= 1):
            raise ValueError(f"safety must be a finite number >= 1, got {safety!r}")
        n_power_iter = check_positive_int(n_power_iter, "n_power_iter")
        self.width, self.hidden, self.kernel_size = width, hidden, kernel_size
        self.alpha = float(alpha)
        self.negative_slope = field.negative_slope
        self.safety = float(safety)
        self.n_power_iter = int(n_power_iter)
        self.power_grid = int(power_grid or max(8, 32 * (kernel_size - 1)))
        self.nu_factor = self.safety * grid_correction(kernel_size, self.power_grid) ** 2
        # sigmoid(theta) = step_init: start near the largest allowed step; from 1/2 Adam
        # needs thousands of steps to get there (the step is the layer's strength).
        self.theta = nn.Parameter(torch.tensor(math.log(step_init / (1 - step_init))))
        # Per-frequency vectors of the power iteration, kept between calls as real (re, im)
        # pairs so that .to(dtype) works. They are not saved (they would dominate the
        # checkpoint's size): after loading they are "cold" and the next refresh of nu runs
        # REFRESH_ITERS iterations. nu, the running estimate of kappa c_P^2 ||A||^2, is saved.
        n_half = self.power_grid // 2 + 1
        vectors = torch.randn(self.power_grid, n_half, width, 2)
        self.register_buffer("power_vectors", vectors, persistent=False)
        # Until the first forward estimates it (lazily, so that loading a checkpoint costs
        # nothing), nu holds the crude but proven bound ||A|| <= sum_p ||A_p||_F.
        crude = self.weight.detach().square().sum(dim=(0, 1)).sqrt().sum() ** 2
        self.register_buffer("nu", crude * (1 + ROUNDOFF_MARGIN))
        self._seen = None  # fingerprint of the weights nu belongs to; None: estimate it
        self._cold = True  # power vectors not (yet) tuned to the weights

    @property
    def field(self) -> ConvRidgeField:
        """The field :math:`F`."""
        return self.fields[0]

    @property
    def weight(self) -> nn.Parameter:
        """The kernel of :math:`A`."""
        return self.fields[0].weight

    @property
    def bias(self) -> nn.Parameter:
        """:math:`b_0`."""
        return self.fields[0].bias

    @property
    def sigma_weight(self) -> nn.Parameter | None:
        """:math:`c`, or ``None`` without noise-level conditioning."""
        return self.fields[0].sigma_weight

    # -- the step-size control ---------------------------------------------------------
    def _estimate_nu(self, n_iter: int) -> Tensor:
        # In the weights' dtype even under autocast: the step bound must not be rounded.
        with torch.autocast(self.weight.device.type, enabled=False):
            return self.nu_factor * conv2d_symbol_power_estimate(
                self.weight, self.power_vectors, n_iter
            )

    @torch.no_grad()
    def refresh_nu(self, n_iter: int = REFRESH_ITERS) -> None:
        """Recompute :math:`\\nu` from the current weights with ``n_iter`` power iterations."""
        self.nu.copy_(self._estimate_nu(n_iter))
        self._seen = _fingerprint(self.weight)
        self._cold = False

    def _current_nu(self) -> Tensor:
        if self.training:
            nu = self._estimate_nu(REFRESH_ITERS if self._cold else self.n_power_iter)
            seen = _fingerprint(self.weight)
            if _same_fingerprint(self._seen, seen):
                # Same weights as the stored nu (say, a calibrated one): keep its value,
                # with the estimate's gradient, so that a training-mode forward of a
                # loaded model does not change its steps.
                nu = self.nu + (nu - nu.detach())
            self.nu.copy_(nu.detach())
            self._seen = seen
            self._cold = False
            return nu
        self.sync()
        return self.nu

    def sync(self) -> None:
        """Refresh :math:`\\nu` if the weights changed since it was computed.

        That happens after the last optimizer step of a training run, after editing the
        weights by hand, and before the first call. A no-op otherwise (eval mode is a fixed
        map).
        """
        if not _same_fingerprint(self._seen, _fingerprint(self.weight)):
            self.refresh_nu()

    def step_size(self, dtype: torch.dtype | None = None) -> Tensor:
        r"""The step :math:`h = 2\alpha\operatorname{sigmoid}(\theta)/\nu` with the stored :math:`\nu`."""
        dtype = dtype or self.theta.dtype
        return 2 * self.alpha * torch.sigmoid(self.theta.to(dtype)) / _positive(self.nu.to(dtype))

    @torch.no_grad()
    def calibrate(self, method: str = "fourier") -> float:
        r"""Raise :math:`\nu` to the certified bound of :math:`\|A\|^2` if it is below it.

        Afterwards :math:`h \cdot \text{cert} < 2\alpha` is certified. Returns the certified
        :math:`\|A\|^2`.
        """
        self.sync()
        cert = conv2d_norm_bound(self.weight, method) ** 2
        # The extra 1e-6 survives rounding nu to the model's (possibly float32) dtype.
        self.nu.copy_(torch.clamp_min(self.nu, cert * (1 + ROUNDOFF_MARGIN)))
        self._seen = _fingerprint(self.weight)
        return cert

    def get_extra_state(self) -> dict:
        return {"fingerprint": None if self._seen is None else list(self._seen)}

    def set_extra_state(self, state: dict) -> None:
        fp = state.get("fingerprint") if isinstance(state, dict) else None
        if fp is not None and not (
            isinstance(fp, list | tuple)
            and len(fp) == 3
            and all(isinstance(f, int | float) and not isinstance(f, bool) for f in fp)
        ):
            raise ValueError(
                f"corrupt weights: an Euler step's saved fingerprint must be 3 numbers, got {fp!r}"
            )
        self._seen = None if fp is None else tuple(float(f) for f in fp)
        self._cold = True  # the power vectors belong to the weights held before loading

    # -- the step ------------------------------------------------------------------------
    def forward(self, x: Tensor, sigma: Tensor | None = None, keep: int | None = None) -> Tensor:
        """Apply the step; see the class docstring for the zero-padded ``x`` and ``keep``."""
        h = 2 * self.alpha * torch.sigmoid(self.theta) / _positive(self._current_nu())
        field = self.fields[0]
        # z is a fresh tensor that no backward needs: the activation can overwrite it
        z = field.activation(field.preactivation(x, sigma), sigma, inplace=True)
        c, out = x.shape[1], self.width if keep is None else keep
        # h scales the (small) kernel rather than the feature map
        update = F.conv_transpose2d(z, h * self.weight[:, :out], padding=self.kernel_size // 2)
        if c < out:
            return F.pad(x, (0, 0, 0, 0, 0, out - c)).sub_(update)  # a fresh copy of x
        return x[:, :out] - update


def _positive(nu: Tensor) -> Tensor:
    # An all-zero kernel (say, a zero initialisation) has nu = 0: the step is the identity
    # for any h, but h = inf would make it 0 * inf = NaN. The smallest normal number keeps h
    # finite and nu still above ||A||^2 = 0.
    return nu.clamp_min(torch.finfo(nu.dtype).tiny)


def _fingerprint(w: Tensor) -> tuple[float, float, float]:
    # Three float64 statistics that change whenever the weights do (in practice).
    w = w.detach().to(torch.float64).reshape(-1)
    ramp = torch.sin(torch.arange(1, w.numel() + 1, dtype=torch.float64, device=w.device))
    return float(w.sum()), float((w * w).sum()), float((w * ramp).sum())


def _same_fingerprint(a, b) -> bool:
    if a is None or b is None:
        return False
    return all(abs(x - y) <= 1e-10 * (abs(x) + abs(y)) for x, y in zip(a, b, strict=True))
