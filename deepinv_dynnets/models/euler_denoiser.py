r"""EulerDenoiser: a certified averaged denoiser built from explicit Euler steps."""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import torch
from deepinv.models import Denoiser
from torch import Tensor

from .._validation import check_positive_int, real_array
from ..dynamics.averaged_step import AVERAGING_ACTIVATIONS, AveragedEulerStep
from ..dynamics.network import FlowNetwork, Truncation, ZeroPadLift
from ..lipschitz.averagedness import compose_averaged
from ..lipschitz.operator_norms import grid_correction
from ..pretrained import SHIPPED, load_weights, resolve_weights, save_weights

__all__ = ["EulerDenoiser", "AveragedEulerBlock", "PRETRAINED"]

#: The averaged Euler layer of the denoiser (the dynamics core's step, under its old name).
AveragedEulerBlock = AveragedEulerStep

#: Shipped weights: name -> {in_channels: {alpha: file in ``deepinv_dynnets/weights``}}
#: (a view of :data:`deepinv_dynnets.pretrained.SHIPPED`). ``alpha`` is the model's target
#: averagedness: 1/2 (firmly non-expansive, for every PnP algorithm) or 0.95 (PGD and HQS
#: only, better denoising).
PRETRAINED: dict[str, dict[int, dict[float, str]]] = {
    name: {c: {a: f for (c2, a), f in files.items() if c2 == c} for c, _ in files}
    for name, files in SHIPPED["euler_denoiser"].items()
}

# The images the denoiser is made for lie in [0, 1]; a noise level above 1 is one on the
# 0-255 scale (sigma=25 for 25/255), which would give a wrong answer without an error.
_MAX_SIGMA = 1.0


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


def _real(value, name: str) -> float:
    # Any real number (NumPy scalars included), never a bool.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


class EulerDenoiser(Denoiser):
    r"""Averaged denoiser :math:`\Gamma = P \circ \mathcal N \circ L` built from Euler steps.

    The data path is the dynamics core's
    :class:`~deepinv_dynnets.dynamics.FlowNetwork` (``self.network``): the input's
    :math:`C` channels are lifted to ``width`` by zero padding
    (:class:`~deepinv_dynnets.dynamics.ZeroPadLift`, :math:`L`), ``n_blocks`` averaged
    Euler steps (:class:`~deepinv_dynnets.dynamics.AveragedEulerStep`) are applied,

    .. math::

        x \leftarrow x - h_i A_i^\top s(A_i x + b_i(\sigma)), \qquad i = 1, \dots, n,

    and the first :math:`C` channels are kept
    (:class:`~deepinv_dynnets.dynamics.Truncation`, :math:`P = L^\top`). Each :math:`A_i`
    is a zero-padded ``conv2d`` from ``width`` to ``hidden`` channels, :math:`A_i^\top` the
    transposed convolution with the same weights, :math:`s` ReLU, LeakyReLU or a monotone
    spline of slopes in :math:`[0, 1]`. Each step is
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
    with :math:`\theta_i` learnable and :math:`\nu_i \approx \kappa\|A_i\|^2` a running
    power estimate (see :class:`~deepinv_dynnets.dynamics.AveragedEulerStep`), so
    :math:`h_i\nu_i < 2\alpha_i` holds by construction at every step of training;
    :func:`~deepinv_dynnets.lipschitz.certify` replaces :math:`\nu_i` by a certified bound
    and reports the margin, and :meth:`calibrate` raises any :math:`\nu_i` found too small,
    after which the target is certified. In eval mode the model is a fixed map. The design
    and its measurements are in the user guide (:doc:`/user_guide/averaged_operators`).

    **Inputs.** Images in :math:`[0, 1]` and noise levels on that scale: a ``sigma`` above 1
    (``sigma=25`` meaning 25/255) is refused with a ``ValueError``.

    :param int in_channels: image channels :math:`C \ge 1`.
    :param int width: lifted channels (``>= in_channels``).
    :param int hidden: channels of :math:`A_i x`.
    :param int n_blocks: number of Euler steps :math:`n`.
    :param int kernel_size: odd kernel size of the :math:`A_i`.
    :param float alpha: target averagedness of the whole network, in :math:`(0, 1]`.
    :param str activation: ``"relu"``, ``"leaky_relu"`` or ``"spline"`` (a learnable
        monotone linear spline per hidden channel, slopes in :math:`[0, 1]`, knots scaled
        with :math:`\sigma`: :class:`~deepinv_dynnets.dynamics.linear_spline.MonotoneLinearSpline`).
    :param float negative_slope: LeakyReLU slope, in :math:`[0, 1]`.
    :param bool sigma_conditioning: whether the biases depend on :math:`\sigma`.
    :param float safety: :math:`\kappa \ge 1`.
    :param int n_power_iter: power iterations per training forward (``>= 1``).
    :param int | None power_grid: :math:`P`; ``None`` for :math:`\max(8, 32(k-1))`.
    :param float step_init: initial :math:`\operatorname{sigmoid}(\theta_i)`: each step
        starts at this fraction of its largest allowed value.
    :param str | pathlib.Path | None pretrained: ``None`` (random init), a path to a file
        written by :meth:`save`, or a name in :data:`PRETRAINED` (``"default"``: the shipped
        weights for ``in_channels`` (1 or 3) and ``alpha``: 0.5, firmly non-expansive
        (every PnP algorithm), or 0.95, a better denoiser for PGD and HQS; see the model
        cards. They fix the architecture, so leave the other
        arguments at their defaults). Loading checks that the
        file's architecture is this one, loads with ``strict=True`` and calls ``.eval()``.
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
        in_channels = check_positive_int(in_channels, "in_channels")
        width = check_positive_int(width, "width")
        hidden = check_positive_int(hidden, "hidden")
        n_blocks = check_positive_int(n_blocks, "n_blocks")
        n_power_iter = check_positive_int(n_power_iter, "n_power_iter")
        kernel_size = check_positive_int(kernel_size, "kernel_size")
        if width < in_channels:
            raise ValueError(f"width must be >= in_channels, got {width} < {in_channels}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        alpha = _real(alpha, "alpha")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
        if activation not in AVERAGING_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {AVERAGING_ACTIVATIONS}, got {activation!r}"
            )
        negative_slope = _real(negative_slope, "negative_slope")
        if not 0 <= negative_slope <= 1:
            raise ValueError(f"negative_slope must lie in [0, 1], got {negative_slope!r}")
        safety = _real(safety, "safety")
        if not (math.isfinite(safety) and safety >= 1):
            raise ValueError(f"safety must be a finite number >= 1, got {safety!r}")
        step_init = _real(step_init, "step_init")
        if power_grid is not None:
            power_grid = check_positive_int(power_grid, "power_grid")
            grid_correction(kernel_size, power_grid)  # raises if too coarse
        self.config = {
            "in_channels": in_channels,
            "width": width,
            "hidden": hidden,
            "n_blocks": n_blocks,
            "kernel_size": kernel_size,
            "alpha": alpha,
            "activation": activation,
            "negative_slope": negative_slope,
            "sigma_conditioning": bool(sigma_conditioning),
            "safety": safety,
            "n_power_iter": n_power_iter,
            "power_grid": power_grid,
            "step_init": step_init,
        }
        self.in_channels = in_channels
        self.alpha = alpha
        self.sigma_conditioning = bool(sigma_conditioning)
        self.block_alpha = _block_alpha(alpha, n_blocks)
        steps = [
            AveragedEulerStep(
                width,
                hidden,
                kernel_size,
                self.block_alpha,
                activation,
                negative_slope,
                sigma_conditioning,
                safety,
                n_power_iter,
                power_grid,
                step_init,
            )
            for _ in range(n_blocks)
        ]
        self.network = FlowNetwork(
            steps,
            lift=ZeroPadLift(in_channels, width, dim=-3),
            project=Truncation(in_channels, dim=-3),
        )
        self.register_load_state_dict_pre_hook(_upgrade_state)
        if pretrained is not None:
            self._load(resolve_weights(pretrained, "euler_denoiser", **self._keys()))
            self.eval()
        if device is not None:
            self.to(device)

    def _keys(self) -> dict:
        return {"in_channels": self.in_channels, "alpha": self.alpha}

    @property
    def blocks(self) -> torch.nn.ModuleList:
        """The averaged Euler steps :math:`\\Psi_1, \\dots, \\Psi_n` (``network.steps``)."""
        return self.network.steps

    # -- the map -------------------------------------------------------------------------
    def forward(self, x: Tensor, sigma: float | Tensor | None = None, **kwargs) -> Tensor:
        r"""Denoise ``x`` at noise level ``sigma``.

        :param torch.Tensor x: noisy images ``(B, C, H, W)`` with :math:`B, H, W \ge 1`,
            finite, with the model's dtype; never modified.
        :param float | torch.Tensor | numpy.ndarray sigma: noise level in :math:`[0, 1]`
            (images in :math:`[0, 1]`): a number, a 0-d tensor or array, or one per image,
            shape ``(B,)``. Required when ``sigma_conditioning`` is on, ignored otherwise.
            Extra keyword arguments (passed on by deepinv wrappers) are ignored.
        :return: the denoised images, same shape, dtype and device as ``x``.
        :raises ValueError: for any other input, naming the argument.
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have {self.in_channels} channel(s), got shape {tuple(x.shape)}"
            )
        if x.numel() == 0:
            raise ValueError(f"x must hold at least one pixel, got shape {tuple(x.shape)}")
        dtype = self.blocks[0].weight.dtype
        if x.dtype != dtype:
            raise ValueError(
                f"x has dtype {x.dtype} but the model has dtype {dtype}; "
                f"call model.to({x.dtype}) or pass x.to({dtype})"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf values")
        sigma = self._check_sigma(sigma, x)
        if x.device.type != "cpu":
            return self.network(x, sigma)
        # oneDNN's CPU convolutions are about 1.4x faster on channels-last feature maps (a
        # 321 x 481 colour image: 2.44 s against 3.40 s per call, one thread); the map is
        # the same up to the summation order. The output is given back in x's layout.
        out = self.network(x.contiguous(memory_format=torch.channels_last), sigma)
        return out.contiguous(memory_format=_layout(x))

    def _check_sigma(self, sigma, x: Tensor) -> Tensor | None:
        if sigma is None:
            if self.sigma_conditioning:
                raise ValueError("sigma is required: this EulerDenoiser is noise-level conditioned")
            return None
        batch = x.shape[0]
        if isinstance(sigma, (bool, np.bool_)):
            raise ValueError(f"sigma must be a number or a tensor, got {sigma!r}")
        if isinstance(sigma, numbers.Real):
            s = torch.full((batch,), float(sigma), dtype=x.dtype, device=x.device)
        else:
            if isinstance(sigma, (np.ndarray, np.generic, list, tuple)):
                sigma = real_array(sigma, "sigma")
            if not isinstance(sigma, Tensor):
                raise ValueError(
                    f"sigma must be a number, a tensor or an array, got {type(sigma).__name__}"
                )
            if sigma.is_complex() or sigma.dtype == torch.bool:
                raise ValueError(f"sigma must be real, got dtype {sigma.dtype}")
            s = sigma.detach().to(dtype=x.dtype, device=x.device).squeeze()
            if s.dim() == 0 or s.shape == (1,):
                s = s.reshape(1).expand(batch)
            elif s.shape != (batch,):
                raise ValueError(
                    f"sigma must be a number or have shape () or ({batch},), "
                    f"got shape {tuple(sigma.shape)}"
                )
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError(f"sigma must be finite and non-negative, got {sigma!r}")
        if bool((s > _MAX_SIGMA).any()):
            raise ValueError(
                f"sigma must be a noise level for images in [0, 1] (at most {_MAX_SIGMA:g}), "
                f"got {sigma!r}: pass sigma / 255 for a level on the 0-255 scale"
            )
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

    def sync(self) -> None:
        """Refresh every :math:`\\nu_i` whose weights changed since it was computed."""
        for b in self.blocks:
            b.sync()

    def refresh_nu(self, n_iter: int | None = None) -> None:
        """Re-estimate every :math:`\\nu_i` from the current weights (power iterations)."""
        for b in self.blocks:
            b.refresh_nu() if n_iter is None else b.refresh_nu(n_iter)

    def step_sizes(self) -> Tensor:
        r"""The current steps :math:`(h_1, \dots, h_n)`, float64."""
        self.sync()
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

    # -- weights ---------------------------------------------------------------------------
    def save(self, path: str | Path, **metadata) -> None:
        """Save the weights and a model card with the configuration and JSON-able ``metadata``.

        See :func:`~deepinv_dynnets.pretrained.save_weights` (kind ``"euler_denoiser"``).

        :param str | pathlib.Path path: the weights file (``.pt``); the card goes beside it.
        """
        save_weights(self, path, kind="euler_denoiser", config=self.config, **metadata)

    @classmethod
    def from_pretrained(
        cls,
        name: str | Path,
        in_channels: int = 1,
        alpha: float = 0.5,
        device: torch.device | str | None = None,
    ) -> EulerDenoiser:
        """Build the model stored in a weights file, with the architecture it records.

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
        path = resolve_weights(name, "euler_denoiser", in_channels=in_channels, alpha=alpha)
        state, card = load_weights(path, kind="euler_denoiser")
        if not isinstance(card.get("config"), dict):
            raise ValueError(f"{path} has no EulerDenoiser config in its model card")
        try:
            model = cls(**card["config"])
        except TypeError as err:
            raise ValueError(f"{path} has an invalid EulerDenoiser config: {err}") from err
        model._load_state(state, card, path)
        model.eval()
        if device is not None:
            model.to(device)
        return model

    def _load(self, path: Path) -> None:
        state, card = load_weights(path, kind="euler_denoiser")
        self._load_state(state, card, path)

    def _load_state(self, state: dict, card: dict, path: Path) -> None:
        config = card.get("config") or {}
        diff = {k: (config.get(k), v) for k, v in self.config.items() if config.get(k, v) != v}
        if diff:
            detail = ", ".join(f"{k}: file {a!r} vs model {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{path} holds an EulerDenoiser of a different architecture ({detail}); "
                f"build it with EulerDenoiser.from_pretrained({str(path)!r})"
            )
        try:
            self.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path} holds weights of a different architecture than its config says: {err}"
            ) from err


def _upgrade_state(module, state: dict, prefix: str, *args) -> None:
    """Rename, in place, state-dict keys written before the model was built from the
    dynamics core (``blocks.i.weight``) to today's (``network.steps.i.fields.0.weight``),
    so that older weight files and training checkpoints still load."""
    for key in [k for k in state if k.startswith(prefix + "blocks.")]:
        i, name = key[len(prefix + "blocks.") :].split(".", 1)
        inner = f"fields.0.{name}" if name in ("weight", "bias", "sigma_weight") else name
        state[f"{prefix}network.steps.{i}.{inner}"] = state.pop(key)


def _layout(x: Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    return (
        torch.channels_last if channels_last and not x.is_contiguous() else torch.contiguous_format
    )
