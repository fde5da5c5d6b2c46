r"""Learnable monotone linear-spline activations with slopes in :math:`[0, 1]`."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MonotoneLinearSpline"]

_INITS = ("relu", "identity")


class MonotoneLinearSpline(nn.Module):
    r"""Per-channel learnable linear spline :math:`s_c` with every slope in :math:`[0, 1]`.

    On channel :math:`c` the activation is

    .. math::

        s_c(z;\sigma) = g_c(\sigma)\,\varphi_c\!\big(z / g_c(\sigma)\big), \qquad
        g_c(\sigma) = e^{\rho_c}\,(1 + \sigma/\sigma_{\mathrm{ref}}),

    where :math:`\varphi_c` is continuous, piecewise linear with knots
    :math:`t_k = (k - m)\Delta`, :math:`k = 0, \dots, K-1`, :math:`K = 2m + 1`
    (``n_knots``), :math:`\Delta = R/m` (``knot_range`` :math:`R`), :math:`\varphi_c(0) = 0`,
    and slope

    .. math::

        a_{c,j} = \operatorname{sigmoid}(\gamma\,\theta_{c,j}) \in (0, 1)

    on its interval :math:`j \in \{0, \dots, K\}` (interval 0 is :math:`(-\infty, t_0]`,
    interval :math:`K` is :math:`[t_{K-1}, \infty)`, the tails are linear). The slope bound
    holds by construction, for every value of the parameters :math:`\theta` (learnable),
    :math:`\rho_c` (learnable log-scale) and every :math:`\sigma \ge 0`: rescaling
    :math:`z \mapsto g\varphi(z/g)` keeps the slopes. So :math:`s` is monotone and
    1-Lipschitz, and an Euler block :math:`x - hA^\top s(Ax + b)` has Jacobian
    :math:`I - hA^\top DA` with :math:`D` diagonal in :math:`[0, 1]`: it keeps the
    certificate of a ReLU block.

    The gain :math:`\gamma` (``logit_gain``) multiplies the effective Adam learning rate of
    the slopes (Adam's steps are invariant to the scale of the gradient); with the default
    10 a learning rate of :math:`10^{-3}` moves a slope logit by up to 0.01 per step.

    Evaluation is one table look-up, no loop over knots: with the interval index
    :math:`j(u) = \min(K, \max(0, \lfloor u/\Delta\rfloor + m + 1))`,
    :math:`\varphi_c(u) = a_{c,j} u + b_{c,j}`, where the intercepts :math:`b_{c,j}` come from
    a cumulative sum of the slopes (continuity at the knots). The look-up runs in float32
    (float64 for float64 inputs) and the result is returned in the dtype of ``z``, so
    bfloat16 inputs do not misplace the knots.

    ``init="relu"`` starts near ReLU (slopes :math:`\operatorname{sigmoid}(\mp 4) \approx
    0.018, 0.982` left and right of 0), so that the spline can replace a ReLU of a trained
    network; ``init="identity"`` starts at slope :math:`\operatorname{sigmoid}(4)` everywhere.
    ReLU is positively homogeneous, so the ReLU initialisation does not depend on
    :math:`g_c(\sigma)`.

    :param int channels: number of channels :math:`C` (dimension 1 of the input).
    :param int n_knots: odd number of knots :math:`K \ge 3`.
    :param float knot_range: half-width :math:`R > 0` of the knot grid at scale 1.
    :param float | None sigma_ref: :math:`\sigma_{\mathrm{ref}} > 0`; ``None`` ignores
        :math:`\sigma` (:math:`g_c = e^{\rho_c}`).
    :param str init: ``"relu"`` or ``"identity"``.
    :param float logit_gain: :math:`\gamma > 0`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics.linear_spline import MonotoneLinearSpline
        >>> spline = MonotoneLinearSpline(channels=3, n_knots=11)
        >>> z = torch.linspace(-2, 2, 5).view(1, 1, 5, 1).expand(2, 3, 5, 1)
        >>> out = spline(z, sigma=torch.tensor([0.1, 0.2]))
        >>> out.shape
        torch.Size([2, 3, 5, 1])
        >>> bool((out - torch.relu(z)).abs().max() < 0.05)  # close to ReLU at init
        True
        >>> slopes = spline.slopes()
        >>> bool(((slopes > 0) & (slopes < 1)).all())
        True
    """

    def __init__(
        self,
        channels: int,
        n_knots: int = 21,
        knot_range: float = 1.0,
        sigma_ref: float | None = 0.1,
        init: str = "relu",
        logit_gain: float = 10.0,
    ):
        super().__init__()
        if isinstance(channels, bool) or int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if isinstance(n_knots, bool) or int(n_knots) != n_knots or n_knots < 3 or n_knots % 2 == 0:
            raise ValueError(f"n_knots must be an odd integer >= 3, got {n_knots!r}")
        if not (math.isfinite(knot_range) and knot_range > 0):
            raise ValueError(f"knot_range must be a finite number > 0, got {knot_range!r}")
        if sigma_ref is not None and not (math.isfinite(sigma_ref) and sigma_ref > 0):
            raise ValueError(f"sigma_ref must be None or a finite number > 0, got {sigma_ref!r}")
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}")
        if not (math.isfinite(logit_gain) and logit_gain > 0):
            raise ValueError(f"logit_gain must be a finite number > 0, got {logit_gain!r}")
        self.channels, self.n_knots = int(channels), int(n_knots)
        self.knot_range = float(knot_range)
        self.sigma_ref = None if sigma_ref is None else float(sigma_ref)
        self.logit_gain = float(logit_gain)
        self.center = self.n_knots // 2  # m: the knot at 0
        self.spacing = self.knot_range / self.center  # Delta
        # Interval j spans [t_{j-1}, t_j]; intervals 0..m lie left of 0.
        logit = 4.0 / self.logit_gain
        left = -logit if init == "relu" else logit
        theta = torch.full((self.channels, self.n_knots + 1), logit)
        theta[:, : self.center + 1] = left
        self.slope_logits = nn.Parameter(theta)
        self.log_scale = nn.Parameter(torch.zeros(self.channels))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, n_knots={self.n_knots}, knot_range={self.knot_range}, "
            f"sigma_ref={self.sigma_ref}, logit_gain={self.logit_gain}"
        )

    def slopes(self) -> Tensor:
        r"""The slopes :math:`a_{c,j}`, shape ``(C, K + 1)``, each in :math:`[0, 1]`."""
        return torch.sigmoid(self.logit_gain * self.slope_logits)

    def knots(self) -> Tensor:
        r"""The knots :math:`t_k` of :math:`\varphi` (scale 1), shape ``(K,)``."""
        p = self.slope_logits
        k = torch.arange(self.n_knots, dtype=p.dtype, device=p.device)
        return (k - self.center) * self.spacing

    def _tables(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        # phi(u) = a_j u + b_j on interval j, with phi continuous and phi(0) = 0.
        a = self.slopes().to(dtype)
        knots = self.knots().to(device=a.device, dtype=dtype)
        # phi at the knots: phi(t_k) = Delta * sum of the inner slopes between 0 and t_k
        steps = self.spacing * a[:, 1 : self.n_knots]  # phi(t_k) - phi(t_{k-1}), k = 1..K-1
        rises = torch.cat((torch.zeros_like(a[:, :1]), steps.cumsum(1)), 1)
        values = rises - rises[:, self.center : self.center + 1]
        # interval j is anchored at knot max(j - 1, 0)
        anchor = torch.clamp(torch.arange(self.n_knots + 1, device=a.device) - 1, min=0)
        b = values[:, anchor] - a * knots[anchor]
        return a, b

    def forward(self, z: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        r"""Apply :math:`s_c(\cdot;\sigma)` channel-wise.

        :param torch.Tensor z: pre-activations ``(B, C, ...)``.
        :param float | torch.Tensor | None sigma: noise level :math:`\ge 0`: a float, a 0-d
            tensor or one per sample, shape ``(B,)``; ``None`` means :math:`\sigma = 0`.
        :return: a new tensor of the shape and dtype of ``z``.
        """
        if not isinstance(z, Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        if z.dim() < 2 or z.shape[1] != self.channels:
            raise ValueError(
                f"z must have shape (B, {self.channels}, ...), got shape {tuple(z.shape)}"
            )
        work = torch.float64 if z.dtype == torch.float64 else torch.float32
        scale = self._scale(sigma, z, work)
        a, b = self._tables(work)
        return _SplineLookup.apply(z.to(work), scale, a, b, self.spacing, self.center).to(z.dtype)

    def _scale(self, sigma, z: Tensor, dtype: torch.dtype) -> Tensor:
        shape = (1, self.channels) + (1,) * (z.dim() - 2)
        scale = torch.exp(self.log_scale.to(dtype)).view(shape)
        if sigma is None or self.sigma_ref is None:
            return scale
        s = torch.as_tensor(sigma, dtype=dtype, device=z.device)
        if s.dim() == 0:
            s = s.expand(z.shape[0])
        if s.shape != (z.shape[0],):
            raise ValueError(
                f"sigma must be a float or a tensor of shape () or ({z.shape[0]},), "
                f"got shape {tuple(s.shape)}"
            )
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError("sigma must be finite and non-negative")
        return scale * (1 + s / self.sigma_ref).view((-1,) + (1,) * (z.dim() - 1))


class _SplineLookup(torch.autograd.Function):
    r"""``a_j z + g b_j`` with ``j`` the interval of ``u = z / g``: one gather per table.

    The hand-written backward sums the table gradients with ``bincount`` (the autograd of
    ``gather`` on an expanded table scatters into a ``(B, C, K + 1)`` buffer, several times
    slower on CPU). The feature map's gradient is ``a_j`` times the incoming one; the
    interval index carries none (the spline is continuous).
    """

    @staticmethod
    def forward(ctx, z, scale, a, b, spacing, center):
        batch, channels, n_int = z.shape[0], a.shape[0], a.shape[1]
        # memory-bound on CPU: as few passes over the feature map as possible
        index = torch.mul(z, 1 / (scale * spacing)).add_(center + 1).floor_()
        index = index.clamp_(0, n_int - 1).long()
        flat = index.view(batch, channels, -1)
        # the intercepts times the scale: a (B, C, K + 1) table, not a feature map
        scaled_b = b * scale.reshape(-1, channels, 1)
        a_z = torch.gather(a.expand(batch, -1, -1), 2, flat).view_as(z)
        scaled_b_z = torch.gather(scaled_b.expand(batch, -1, -1), 2, flat).view_as(z)
        ctx.save_for_backward(z, scale, index, a_z)
        ctx.n_table = (channels, n_int)
        ctx.b_table = b.detach()
        return torch.addcmul(scaled_b_z, a_z, z)

    @staticmethod
    def backward(ctx, grad):
        z, scale, index, a_z = ctx.saved_tensors
        channels, n_int = ctx.n_table
        grad_z = grad_scale = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_z = grad * a_z
        # row c of the tables is read by channel c: offset the indices per channel
        offset = torch.arange(channels, device=z.device).view((1, -1) + (1,) * (z.dim() - 2))
        cells = (index + offset * n_int).reshape(-1)
        size = channels * n_int
        if ctx.needs_input_grad[2]:
            weights = (grad * z).reshape(-1)
            grad_a = torch.bincount(cells, weights, size).to(z.dtype).view(channels, n_int)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            # per (sample, channel, interval) sums of the incoming gradient: both the scale's
            # and the intercepts' gradients are small contractions of them
            batch = z.shape[0]
            sample = torch.arange(batch, device=z.device).view((-1,) + (1,) * (z.dim() - 1))
            per_sample = torch.bincount(
                (cells.view(z.shape) + sample * size).reshape(-1), grad.reshape(-1), batch * size
            )
            per_sample = per_sample.to(z.dtype).view(batch, channels, n_int)
            if ctx.needs_input_grad[3]:
                grad_b = (per_sample * scale.reshape(-1, channels, 1)).sum(0)
            if ctx.needs_input_grad[1]:
                grad_scale = (per_sample * ctx.b_table).sum(2)
                grad_scale = grad_scale.view(batch, channels, *([1] * (z.dim() - 2)))
                grad_scale = grad_scale.sum_to_size(scale.shape)
        return grad_z, grad_scale, grad_a, grad_b, None, None
