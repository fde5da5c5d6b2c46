r"""EulerDenoiser: a certified averaged denoiser built from explicit Euler steps."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from deepinv.models import Denoiser
from torch import Tensor, nn

from ..lipschitz.averagedness import compose_averaged
from ..lipschitz.operator_norms import ROUNDOFF_MARGIN, conv2d_norm_bound, grid_correction

__all__ = ["EulerDenoiser", "AveragedEulerBlock", "PRETRAINED"]

_FORMAT = "deepinv_dynnets.EulerDenoiser"
_FORMAT_VERSION = 1
_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
#: Shipped weights: name -> {in_channels: {alpha: file in ``deepinv_dynnets/weights``}}.
#: ``alpha`` is the model's target averagedness: 1/2 (firmly non-expansive, for every PnP
#: algorithm) or 0.95 (PGD and HQS only, better denoising). Shipping a set of weights is
#: adding its file there (saved with :meth:`EulerDenoiser.save`).
PRETRAINED = {
    "default": {
        1: {0.5: "euler_denoiser_gray.pt", 0.95: "euler_denoiser_gray_a095.pt"},
        3: {0.5: "euler_denoiser_color.pt", 0.95: "euler_denoiser_color_a095.pt"},
    }
}

_ACTIVATIONS = ("relu", "leaky_relu")
# Power iterations used when nu is first estimated, after loading, and when the weights
# changed outside a training forward (after the last optimizer step, a manual edit): from a
# random start, 10 of them reach 0.99 of the grid maximum for 64 x 64 kernels, well inside
# the default safety factor.
_REFRESH_ITERS = 10


def _block_alpha(alpha: float, n_blocks: int) -> float:
    r"""Largest :math:`a` (to bisection accuracy) with ``compose_averaged(a, ..., a) <= alpha``."""
    if alpha >= 1 or n_blocks == 1:
        return alpha
    lo, hi = 0.0, alpha  # compose_averaged is increasing in each argument
    for _ in range(100):
        mid = (lo + hi) / 2
        if compose_averaged(*([mid] * n_blocks)) <= alpha:
            lo = mid
        else:
            hi = mid
    return lo


def _fingerprint(w: Tensor) -> tuple[float, float, float]:
    # Three float64 statistics that change whenever the weights do (in practice).
    w = w.detach().to(torch.float64).reshape(-1)
    ramp = torch.sin(torch.arange(1, w.numel() + 1, dtype=torch.float64, device=w.device))
    return float(w.sum()), float((w * w).sum()), float((w * ramp).sum())


def _same_fingerprint(a, b) -> bool:
    if a is None or b is None:
        return False
    return all(abs(x - y) <= 1e-10 * (abs(x) + abs(y)) for x, y in zip(a, b, strict=True))


class AveragedEulerBlock(nn.Module):
    r"""One averaged Euler layer :math:`x \mapsto x - h\,A^\top s(Ax + b)` on feature maps.

    :math:`A` is a stride-1 ``conv2d`` from ``width`` to ``hidden`` channels with zero
    ``"same"`` padding, :math:`A^\top` the transposed convolution with the same weights (its
    exact adjoint), :math:`s` ReLU or LeakyReLU (monotone, slope in :math:`[0, 1]`). The
    Jacobian :math:`I - hA^\top D A` is symmetric with spectrum in :math:`[1 - h\|A\|^2, 1]`,
    so the layer is :math:`h\|A\|^2/2`-averaged. The step is

    .. math::

        h = \frac{2\alpha\, \operatorname{sigmoid}(\theta)}{\nu}, \qquad
        \nu \approx \kappa\, c_P^2 \max_{j}\|\hat A(\omega_j)\|_2^2 \ \ge\ \kappa\,\|A\|_2^2,

    with :math:`\theta` learnable, :math:`\alpha` the block's target constant,
    :math:`\kappa` = ``safety`` and :math:`c_P` = :func:`~deepinv_dynnets.lipschitz.grid_correction`
    of the :math:`P\times P` frequency grid on which :math:`\nu` is estimated (see
    :class:`EulerDenoiser`). Then :math:`h\nu < 2\alpha` always and
    :math:`h\|A\|^2 \le 2\alpha/\kappa` whenever the estimate is within :math:`\kappa` of
    the grid maximum.

    The noise level enters through the bias only, :math:`b(\sigma) = b_0 + \sigma c`, so the
    bound holds for every :math:`\sigma`.

    :param int width: channels of the state.
    :param int hidden: channels of :math:`Ax`.
    :param int kernel_size: odd kernel size of :math:`A`.
    :param float alpha: target averagedness :math:`\alpha \in (0, 1]` of the block.
    :param str activation: ``"relu"`` or ``"leaky_relu"``.
    :param float negative_slope: slope of LeakyReLU for negative inputs, in :math:`[0, 1]`.
    :param bool sigma_conditioning: add :math:`\sigma c` to the bias.
    :param float safety: :math:`\kappa \ge 1`.
    :param int n_power_iter: power iterations per training forward.
    :param int power_grid: :math:`P`, the frequency grid of the estimate.
    :param float step_init: initial :math:`\operatorname{sigmoid}(\theta)`, the fraction of
        the largest allowed step, in :math:`(0, 1)`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.models import AveragedEulerBlock
        >>> block = AveragedEulerBlock(width=4, hidden=6, kernel_size=3, alpha=0.5)
        >>> block(torch.randn(2, 4, 9, 7)).shape
        torch.Size([2, 4, 9, 7])
    """

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
        super().__init__()
        if not 0 < step_init < 1:
            raise ValueError(f"step_init must lie in (0, 1), got {step_init!r}")
        self.width, self.hidden, self.kernel_size = width, hidden, kernel_size
        self.alpha = float(alpha)
        self.negative_slope = float(negative_slope) if activation == "leaky_relu" else 0.0
        self.safety = float(safety)
        self.n_power_iter = int(n_power_iter)
        self.power_grid = int(power_grid or max(8, 32 * (kernel_size - 1)))
        self.nu_factor = self.safety * grid_correction(kernel_size, self.power_grid) ** 2

        conv = nn.Conv2d(width, hidden, kernel_size)  # borrow PyTorch's default init
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.sigma_weight = nn.Parameter(torch.zeros(hidden)) if sigma_conditioning else None
        # sigmoid(theta) = step_init: start near the largest allowed step; from 1/2 Adam
        # needs thousands of steps to get there (the step is the layer's strength).
        self.theta = nn.Parameter(torch.tensor(math.log(step_init / (1 - step_init))))
        # Per-frequency vectors of the power iteration, kept between calls as real (re, im)
        # pairs so that .to(dtype) works. They are not saved (they would dominate the
        # checkpoint's size): after loading they are "cold" and the next refresh of nu runs
        # _REFRESH_ITERS iterations. nu, the running estimate of kappa c_P^2 ||A||^2, is saved.
        n_half = self.power_grid // 2 + 1
        vectors = torch.randn(self.power_grid, n_half, width, 2)
        self.register_buffer("power_vectors", vectors, persistent=False)
        # Until the first forward estimates it (lazily, so that loading a checkpoint costs
        # nothing), nu holds the crude but proven bound ||A|| <= sum_p ||A_p||_F.
        crude = self.weight.detach().square().sum(dim=(0, 1)).sqrt().sum() ** 2
        self.register_buffer("nu", crude * (1 + ROUNDOFF_MARGIN))
        self._seen = None  # fingerprint of the weights nu belongs to; None: estimate it
        self._cold = True  # power vectors not (yet) tuned to the weights

    # -- the step-size control ---------------------------------------------------------
    def _estimate_nu(self, n_iter: int) -> Tensor:
        # In the weights' dtype even under autocast: the step bound must not be rounded.
        with torch.autocast(self.weight.device.type, enabled=False):
            return self._power_estimate(n_iter)

    def _power_estimate(self, n_iter: int) -> Tensor:
        """kappa c_P^2 times the per-frequency power estimate of max_j ||A(w_j)||^2.

        The iterations run under no_grad; the returned value is differentiable in the
        weight (vectors fixed), as in spectral normalisation. The symbol is never formed:
        A(w) v = sum_t exp(-i w.t) A_t v is one real matrix product with the stacked taps
        A_t for all frequencies at once (batched
        complex products and autograd through an FFT are slow on CPU); only the maximising
        frequency carries a gradient.
        """
        p, k = self.power_grid, self.kernel_size
        out_ch, in_ch = self.weight.shape[:2]
        taps = torch.arange(k, dtype=self.weight.dtype, device=self.weight.device)
        rows = torch.arange(p, dtype=taps.dtype, device=taps.device)
        cols = torch.arange(p // 2 + 1, dtype=taps.dtype, device=taps.device)
        # angle[j, t] = 2 pi (j1 a + j2 b) / P for frequency j = (j1, j2) and tap t = (a, b)
        angle = (2 * math.pi / p) * (
            rows.view(-1, 1, 1, 1) * taps.view(1, 1, k, 1)
            + cols.view(1, -1, 1, 1) * taps.view(1, 1, 1, k)
        ).reshape(-1, k * k, 1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        with torch.no_grad():
            weight = self.weight.detach()
            forward_taps = weight.permute(2, 3, 0, 1).reshape(k * k * out_ch, in_ch).T
            adjoint_taps = weight.permute(0, 2, 3, 1).reshape(out_ch, k * k * in_ch)
            n_freq = angle.shape[0]

            def apply(vr, vi, taps_matrix, sign):
                # sum_t exp(sign * i angle_t) A_t v, A_t taken from taps_matrix
                av = (torch.cat((vr, vi)) @ taps_matrix).view(2, n_freq, k * k, -1)
                return (
                    (cos * av[0] - sign * sin * av[1]).sum(1),
                    (cos * av[1] + sign * sin * av[0]).sum(1),
                )

            vr, vi = self.power_vectors.to(weight.dtype).reshape(n_freq, in_ch, 2).unbind(-1)
            for _ in range(n_iter):
                wr, wi = apply(*apply(vr, vi, forward_taps, -1), adjoint_taps, 1)
                n = (wr.square() + wi.square()).sum(dim=1, keepdim=True).sqrt()
                keep = n > 0
                n = n.clamp_min(torch.finfo(n.dtype).tiny)
                vr, vi = torch.where(keep, wr / n, vr), torch.where(keep, wi / n, vi)
            n = (vr.square() + vi.square()).sum(dim=1, keepdim=True).sqrt()
            n = n.clamp_min(torch.finfo(n.dtype).tiny)
            vr, vi = vr / n, vi / n
            self.power_vectors.copy_(torch.stack((vr, vi), -1).view_as(self.power_vectors))
            ur, ui = apply(vr, vi, forward_taps, -1)
            j = int((ur.square() + ui.square()).sum(dim=1).argmax())
        # The same value at frequency j, as a differentiable function of the weight.
        w = self.weight.reshape(out_ch, in_ch, k * k)
        re, im = w @ cos[j, :, 0], -(w @ sin[j, :, 0])
        value = (re @ vr[j] - im @ vi[j]).square().sum() + (re @ vi[j] + im @ vr[j]).square().sum()
        return self.nu_factor * value

    @torch.no_grad()
    def refresh_nu(self, n_iter: int = _REFRESH_ITERS) -> None:
        """Recompute :math:`\\nu` from the current weights with ``n_iter`` power iterations."""
        self.nu.copy_(self._estimate_nu(n_iter))
        self._seen = _fingerprint(self.weight)
        self._cold = False

    def _current_nu(self) -> Tensor:
        if self.training:
            nu = self._estimate_nu(_REFRESH_ITERS if self._cold else self.n_power_iter)
            self.nu.copy_(nu.detach())
            self._seen = _fingerprint(self.weight)
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
        return 2 * self.alpha * torch.sigmoid(self.theta.to(dtype)) / self.nu.to(dtype)

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
        self._seen = None if fp is None else tuple(float(f) for f in fp)
        self._cold = True  # the power vectors belong to the weights held before loading

    # -- the layer -----------------------------------------------------------------------
    def forward(self, x: Tensor, sigma: Tensor | None = None, keep: int | None = None) -> Tensor:
        """Apply the layer.

        ``x`` may carry only the first ``c <= width`` channels, the others being zero (as
        after a zero lift), and ``keep`` asks for the first ``keep`` output channels only:
        both skip the products with the zero or discarded channels, exactly.
        """
        h = 2 * self.alpha * torch.sigmoid(self.theta) / self._current_nu()
        pad = self.kernel_size // 2
        c = x.shape[1]
        w_in = self.weight[:, :c]
        conditioned = self.sigma_weight is not None and sigma is not None
        if conditioned and sigma.numel() > 1 and bool((sigma != sigma[0]).any()):
            # one bias per image: added to the feature map
            bias = self.bias.view(1, -1, 1, 1) + sigma.view(-1, 1, 1, 1) * self.sigma_weight.view(
                1, -1, 1, 1
            )
            z = F.conv2d(x, w_in, padding=pad) + bias
        else:  # one bias for the batch: fused into the convolution
            bias = (
                self.bias + sigma.reshape(-1)[0] * self.sigma_weight if conditioned else self.bias
            )
            z = F.conv2d(x, w_in, bias, padding=pad)
        # z is a fresh tensor that no backward needs: the activation can overwrite it
        if self.negative_slope:
            z = F.leaky_relu(z, self.negative_slope, inplace=True)
        else:
            z = F.relu(z, inplace=True)
        out = self.width if keep is None else keep
        # h scales the (small) kernel rather than the feature map
        update = F.conv_transpose2d(z, h * self.weight[:, :out], padding=pad)
        if c < out:
            return F.pad(x, (0, 0, 0, 0, 0, out - c)).sub_(update)  # a fresh copy of x
        return x[:, :out] - update


class EulerDenoiser(Denoiser):
    r"""Averaged denoiser :math:`\Gamma = P \circ \mathcal N \circ L` built from Euler steps.

    The input's :math:`C` channels are lifted to ``width`` by zero padding (:math:`L`),
    ``n_blocks`` averaged Euler steps are applied,

    .. math::

        x \leftarrow x - h_i A_i^\top s(A_i x + b_i(\sigma)), \qquad i = 1, \dots, n,

    and the first :math:`C` channels are kept (:math:`P = L^\top`). Each :math:`A_i` is a
    zero-padded ``conv2d`` from ``width`` to ``hidden`` channels, :math:`A_i^\top` the
    transposed convolution with the same weights, :math:`s` ReLU or LeakyReLU. Each step is
    :math:`h_i\|A_i\|^2/2`-averaged, so by composition (Combettes and Yamada, 2015) and since
    :math:`P\,\mathcal N\,L = (1 - \alpha)I + \alpha\, P T L` with :math:`P T L`
    non-expansive, the network is averaged with

    .. math::

        \alpha_\Gamma = \operatorname{compose}\big(h_1\|A_1\|^2/2, \dots, h_n\|A_n\|^2/2\big)
        \le \alpha,

    where ``alpha`` is the target chosen here (default :math:`1/2`: firmly non-expansive,
    the constant that PGD, HQS and Douglas–Rachford Plug-and-Play all accept) and every
    block gets the same share :math:`\alpha_i`, the largest with
    :func:`~deepinv_dynnets.lipschitz.compose_averaged` :math:`(\alpha_i, \dots, \alpha_i)
    \le \alpha` (for :math:`\alpha < 1`, :math:`\alpha_i = \alpha/(n - (n-1)\alpha)`). The
    noise level only enters the biases, :math:`b_i(\sigma) = b_{i,0} + \sigma c_i`, so the
    guarantee holds for every :math:`\sigma`. Use :func:`~deepinv_dynnets.lipschitz.certify`
    for the certified constants of a given set of weights.

    **Step-size control.** :math:`h_i = 2\alpha_i\operatorname{sigmoid}(\theta_i)/\nu_i`
    with :math:`\theta_i` learnable and :math:`\nu_i` a running upper estimate of
    :math:`\|A_i\|^2`, so :math:`h_i\nu_i < 2\alpha_i` holds by construction, at every
    step of training. :math:`\nu_i` is refreshed at every training forward, *before* it is
    used, from the current weights: a per-frequency power iteration with persistent vectors
    (``n_power_iter`` steps per forward, run under ``no_grad``) gives
    :math:`\lambda_j \approx \|\hat A_i(\omega_j)\|_2^2` on a :math:`P\times P` grid of
    frequencies, and

    .. math::

        \nu_i = \kappa\, c_P^2 \max_j \lambda_j \ \ge\ \kappa\, \|A_i\|_2^2
        \quad\text{once the iteration has converged,}

    by the rigorous grid correction :math:`c_P` (:func:`~deepinv_dynnets.lipschitz.grid_correction`,
    1.0098 for :math:`3\times3` kernels and the default :math:`P = 32(k-1)`); the safety
    factor :math:`\kappa` (``safety``, default 1.05) absorbs the power iteration's
    lag behind weights that move during training. The estimate is differentiable in the
    weights, so the loss sees that a larger :math:`\|A_i\|` shrinks :math:`h_i`. Why this
    scheme: a clamp of a learnable :math:`h` has zero gradient once active, and adaptive
    sub-steps change the depth during training; the sigmoid parametrisation keeps every
    :math:`h_i` in :math:`(0, 2\alpha_i/\nu_i)` smoothly, costs one small FFT and a
    batched matrix-vector product per block and step, and is exact in the sense that the
    only approximation (the power iteration) is measurable:
    :func:`~deepinv_dynnets.lipschitz.certify` replaces
    :math:`\nu_i` by a certified bound and reports the margin, and :meth:`calibrate` raises
    any :math:`\nu_i` found too small, after which the target is certified. In eval mode
    :math:`\nu_i` is frozen, except that it is refreshed once if the weights changed since
    it was computed (e.g. after the last optimizer step), so eval mode is a fixed map.
    :math:`\nu_i` is saved with the weights; the power vectors are not (they would dominate
    the file), so the first refresh after loading runs 10 iterations. Before the first
    call, :math:`\nu_i` holds the crude proven bound :math:`(\sum_p \|A_{i,p}\|_F)^2`
    (:math:`A_{i,p}` the taps) and is estimated lazily, so that building a model to load
    weights into costs nothing.

    :param int in_channels: image channels :math:`C \ge 1`.
    :param int width: lifted channels (``>= in_channels``).
    :param int hidden: channels of :math:`A_i x`.
    :param int n_blocks: number of Euler steps :math:`n`.
    :param int kernel_size: odd kernel size of the :math:`A_i`.
    :param float alpha: target averagedness of the whole network, in :math:`(0, 1]`.
    :param str activation: ``"relu"`` or ``"leaky_relu"``.
    :param float negative_slope: LeakyReLU slope, in :math:`[0, 1]`.
    :param bool sigma_conditioning: whether the biases depend on :math:`\sigma`.
    :param float safety: :math:`\kappa \ge 1`.
    :param int n_power_iter: power iterations per training forward (``>= 1``).
    :param int | None power_grid: :math:`P`; ``None`` for :math:`\max(8, 32(k-1))`.
    :param float step_init: initial :math:`\operatorname{sigmoid}(\theta_i)`: each step
        starts at this fraction of its largest allowed value (default 0.95; starting at 1/2
        left the trained steps near 0.63 after 800 Adam steps and cost about 0.9 dB of
        training loss after 40 steps in our measurements).
    :param str | pathlib.Path | None pretrained: ``None`` (random init), a path to a file
        written by :meth:`save`, or a name in :data:`PRETRAINED` (``"default"``: the shipped
        weights for ``in_channels`` (1 or 3) and ``alpha``: 0.5, firmly non-expansive
        (every PnP algorithm), or 0.95, a better denoiser for PGD and HQS; see the model
        cards. They fix the architecture, so leave the other
        arguments at their defaults). Loading checks that the
        checkpoint's architecture is this one, loads with ``strict=True`` and calls
        ``.eval()``.
    :param torch.device | str | None device: where to put the model.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.lipschitz.certificates import certify
        >>> from deepinv_dynnets.models import EulerDenoiser
        >>> model = EulerDenoiser(in_channels=1, width=4, hidden=6, n_blocks=3).eval()
        >>> x = torch.rand(2, 1, 9, 7)
        >>> model(x, 0.1).shape
        torch.Size([2, 1, 9, 7])
        >>> cert = certify(model)
        >>> cert.lipschitz, cert.alpha <= 0.5
        (1.0, True)
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        hidden: int = 64,
        n_blocks: int = 8,
        kernel_size: int = 3,
        alpha: float = 0.5,
        activation: str = "relu",
        negative_slope: float = 0.01,
        sigma_conditioning: bool = True,
        safety: float = 1.05,
        n_power_iter: int = 1,
        power_grid: int | None = None,
        step_init: float = 0.95,
        pretrained: str | Path | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("width", width),
            ("hidden", hidden),
            ("n_blocks", n_blocks),
            ("n_power_iter", n_power_iter),
        ):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if width < in_channels:
            raise ValueError(f"width must be >= in_channels, got {width} < {in_channels}")
        if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
            raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if not 0 <= negative_slope <= 1:
            raise ValueError(f"negative_slope must lie in [0, 1], got {negative_slope!r}")
        if not (math.isfinite(safety) and safety >= 1):
            raise ValueError(f"safety must be a finite number >= 1, got {safety!r}")
        if power_grid is not None:
            grid_correction(kernel_size, power_grid)  # raises if too coarse
        self.config = {
            "in_channels": int(in_channels),
            "width": int(width),
            "hidden": int(hidden),
            "n_blocks": int(n_blocks),
            "kernel_size": int(kernel_size),
            "alpha": float(alpha),
            "activation": activation,
            "negative_slope": float(negative_slope),
            "sigma_conditioning": bool(sigma_conditioning),
            "safety": float(safety),
            "n_power_iter": int(n_power_iter),
            "power_grid": None if power_grid is None else int(power_grid),
            "step_init": float(step_init),
        }
        self.in_channels = int(in_channels)
        self.alpha = float(alpha)
        self.sigma_conditioning = bool(sigma_conditioning)
        self.block_alpha = _block_alpha(self.alpha, int(n_blocks))
        self.blocks = nn.ModuleList(
            AveragedEulerBlock(
                int(width),
                int(hidden),
                int(kernel_size),
                self.block_alpha,
                activation,
                negative_slope,
                sigma_conditioning,
                safety,
                n_power_iter,
                power_grid,
                step_init,
            )
            for _ in range(int(n_blocks))
        )

        if pretrained is not None:
            self._load(_resolve_pretrained(pretrained, self.in_channels, self.alpha))
            self.eval()
        if device is not None:
            self.to(device)

    # -- the map -------------------------------------------------------------------------
    def forward(self, x: Tensor, sigma: float | Tensor | None = None, **kwargs) -> Tensor:
        r"""Denoise ``x`` at noise level ``sigma``.

        :param torch.Tensor x: noisy images ``(B, C, H, W)``, finite, with the model's dtype.
        :param float | torch.Tensor sigma: noise level :math:`\ge 0`: a float, a 0-d tensor
            or one per image, shape ``(B,)``. Required when ``sigma_conditioning`` is on,
            ignored otherwise. Extra keyword arguments (passed on by deepinv wrappers) are
            ignored.
        :return: the denoised images, same shape, dtype and device as ``x``.
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have {self.in_channels} channel(s), got shape {tuple(x.shape)}"
            )
        dtype = self.blocks[0].weight.dtype
        if x.dtype != dtype:
            raise ValueError(
                f"x has dtype {x.dtype} but the model has dtype {dtype}; "
                f"call model.to({x.dtype}) or pass x.to({dtype})"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf values")
        sigma = self._check_sigma(sigma, x)
        # P N L x without multiplying by the lift's zero channels or computing the channels
        # that P discards: the first block reads C channels, the last one writes C.
        z, last = x, len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            z = block(z, sigma, keep=self.in_channels if i == last else None)
        return z

    def _check_sigma(self, sigma, x: Tensor) -> Tensor | None:
        if sigma is None:
            if self.sigma_conditioning:
                raise ValueError("sigma is required: this EulerDenoiser is noise-level conditioned")
            return None
        try:
            s = self._handle_sigma(sigma, batch_size=x.shape[0], device=x.device, dtype=x.dtype)
        except (TypeError, RuntimeError) as err:
            raise ValueError(
                f"sigma must be a float or a tensor of shape () or (B,): {err}"
            ) from err
        if s.dim() != 1 or s.shape[0] != x.shape[0]:
            raise ValueError(
                f"sigma must be a float or a tensor of shape () or ({x.shape[0]},), "
                f"got shape {tuple(torch.as_tensor(sigma).shape)}"
            )
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError(f"sigma must be finite and non-negative, got {sigma!r}")
        return s

    # -- certificates ----------------------------------------------------------------------
    def averaged_blocks(self) -> list[dict]:
        r"""The averaged layers, for :func:`~deepinv_dynnets.lipschitz.certify`.

        One dict per block: ``weight`` (:math:`A_i`, a stride-1 zero-padded conv kernel),
        ``h`` (the step :math:`h_i` in float64, as the model uses it) and ``alpha`` (the
        target :math:`\alpha_i`). The lifting and projection are :math:`L` and
        :math:`L^\top` with :math:`L^\top L = I`, which keep the constant.
        """
        for b in self.blocks:
            b.sync()
        return [
            {"weight": b.weight, "h": float(b.step_size(torch.float64).detach()), "alpha": b.alpha}
            for b in self.blocks
        ]

    def step_sizes(self) -> Tensor:
        r"""The current steps :math:`(h_1, \dots, h_n)`, float64."""
        for b in self.blocks:
            b.sync()
        return torch.stack([b.step_size(torch.float64).detach() for b in self.blocks])

    @torch.no_grad()
    def calibrate(self, method: str = "fourier") -> list[float]:
        r"""Raise each :math:`\nu_i` to the certified :math:`\|A_i\|^2` where it is below it.

        Afterwards :func:`~deepinv_dynnets.lipschitz.certify` certifies the target
        ``alpha`` (the map changes only if some :math:`\nu_i` was too small). Returns the
        certified :math:`\|A_i\|^2`.

        :param str method: bound of :func:`~deepinv_dynnets.lipschitz.conv2d_norm_bound`.
        """
        return [b.calibrate(method) for b in self.blocks]

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, path: str | Path, **metadata) -> None:
        """Save the format tag, configuration, weights and any JSON-able ``metadata``.

        :param str | pathlib.Path path: file to write.
        """
        torch.save(
            {
                "format": _FORMAT,
                "version": _FORMAT_VERSION,
                "config": dict(self.config),
                "state_dict": _cpu_state(self.state_dict()),
                "metadata": metadata,
            },
            path,
        )

    @classmethod
    def from_pretrained(
        cls,
        name: str | Path,
        in_channels: int = 1,
        alpha: float = 0.5,
        device: torch.device | str | None = None,
    ) -> EulerDenoiser:
        """Build the model stored in a checkpoint, with the architecture it records.

        :param str | pathlib.Path name: a path written by :meth:`save`, or a name in
            :data:`PRETRAINED`.
        :param int in_channels: for a name, which channel count's weights to load.
        :param float alpha: for a name, which averagedness constant's weights to load.
        :param torch.device | str | None device: where to put the model.

        :Examples:

            >>> import tempfile, pathlib
            >>> from deepinv_dynnets.models import EulerDenoiser
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.pt"
            >>> EulerDenoiser(width=4, hidden=4, n_blocks=2).save(path)
            >>> EulerDenoiser.from_pretrained(path).config["width"]
            4
        """
        ckpt = _read_checkpoint(_resolve_pretrained(name, in_channels, alpha))
        model = cls(**ckpt["config"])
        model._load(ckpt)
        model.eval()
        if device is not None:
            model.to(device)
        return model

    def _load(self, ckpt: dict | Path) -> None:
        if not isinstance(ckpt, dict):
            path = ckpt
            ckpt = _read_checkpoint(path)
        else:
            path = ckpt.get("_path", "checkpoint")
        config = ckpt["config"]
        diff = {k: (config.get(k), v) for k, v in self.config.items() if config.get(k, v) != v}
        if diff:
            detail = ", ".join(f"{k}: file {a!r} vs model {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{path} holds an EulerDenoiser of a different architecture ({detail}); "
                f"build it with EulerDenoiser.from_pretrained({str(path)!r})"
            )
        try:
            self.load_state_dict(ckpt["state_dict"], strict=True)
        except (RuntimeError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path} holds weights of a different architecture than its config says: {err}"
            ) from err


def _cpu_state(state: dict) -> dict:
    return {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in state.items()}


def _resolve_pretrained(pretrained: str | Path, in_channels: int, alpha: float) -> Path:
    if isinstance(pretrained, str) and pretrained in PRETRAINED:
        files = PRETRAINED[pretrained]
        if in_channels not in files:
            raise ValueError(
                f"pretrained={pretrained!r} has weights for in_channels in "
                f"{sorted(files)}, not {in_channels}: pass pretrained=None and train the "
                f"model, or the path of a checkpoint written by EulerDenoiser.save"
            )
        if alpha not in files[in_channels]:
            raise ValueError(
                f"pretrained={pretrained!r} has {in_channels}-channel weights for alpha in "
                f"{sorted(files[in_channels])}, not {alpha:g}: pick one of those, or train "
                f"a model with this alpha (dynnets train-denoiser --alpha)"
            )
        path = _WEIGHTS / files[in_channels][alpha]
        if not path.is_file():
            raise ValueError(f"the shipped weights {path} are missing: reinstall the package")
        return path
    if not isinstance(pretrained, (str, Path)):
        raise ValueError(f"pretrained must be None, a name or a path, got {pretrained!r}")
    path = Path(pretrained)
    if not path.is_file():
        raise ValueError(
            f"pretrained must be None, one of {sorted(PRETRAINED)} or the path of a "
            f"checkpoint file, got {str(pretrained)!r}"
        )
    return path


def _read_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and EOF errors all mean the same to a user
        raise ValueError(f"{path} is not a readable EulerDenoiser checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path} is not an EulerDenoiser checkpoint (no {_FORMAT!r} format tag)")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path} is not an EulerDenoiser checkpoint (no config or state_dict)")
    if ckpt.get("version", _FORMAT_VERSION) > _FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer deepinv-dynnets (format version "
            f"{ckpt['version']} > {_FORMAT_VERSION})"
        )
    ckpt["_path"] = str(path)
    return ckpt
