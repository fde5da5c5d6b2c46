r"""What every learned flow shares: long-time composition and the ``odeint``-shaped call."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from .._validation import check_monotone_grid
from .symplectic import check_phase_space

__all__ = ["NeuralFlow", "check_time_grid"]


def check_time_grid(t: Tensor, y0: Tensor) -> None:
    """Validate an ``odeint``-style time grid for the state ``y0`` (``ValueError`` naming ``t``).

    :param torch.Tensor t: the grid: 1-D, finite, strictly monotone, ``y0``'s dtype and device.
    :param torch.Tensor y0: the initial state.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows.base import check_time_grid
        >>> check_time_grid(torch.tensor([0.0, 1.0, 2.0]), torch.zeros(2))
        >>> check_time_grid(torch.tensor([0.0, 2.0, 1.0]), torch.zeros(2))
        Traceback (most recent call last):
        ...
        ValueError: t must be strictly increasing or strictly decreasing
    """
    check_monotone_grid(t)
    if t.dtype != y0.dtype:
        raise ValueError(
            f"t has dtype {t.dtype} but y0 has dtype {y0.dtype}; pass t.to(y0) to match them"
        )
    if t.device != y0.device:
        raise ValueError(
            f"t is on {t.device} but y0 is on {y0.device}; pass t.to(y0) to match them"
        )


class NeuralFlow(nn.Module, ABC):
    r"""Base class of learned flows :math:`\mathcal N(t, x)` trained on a window :math:`[0, \Delta t]`.

    A subclass sets ``dim`` (phase-space dimension) and ``dt`` (:math:`\Delta t`) and
    implements :meth:`network`, :meth:`network_with_time_derivative` and, if it can,
    :meth:`network_inverse`. This class adds the long-time flow
    :math:`\psi(t) = \mathcal N(t - m\Delta t) \circ \mathcal N(\Delta t)^m`,
    :math:`m = \lfloor t/\Delta t\rfloor`, and the ``odeint``-shaped call.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.flows import NeuralFlow
        >>> flow = SympFlow(dim=2, n_layers=2, width=4)
        >>> isinstance(flow, NeuralFlow), flow(torch.randn(3, 2), torch.linspace(0, 5, 6)).shape
        (True, torch.Size([6, 3, 2]))
    """

    dim: int
    dt: float

    @abstractmethod
    def network(self, t: Tensor | float, x: Tensor) -> Tensor:
        r""":math:`\mathcal N(t, x)`, ``t`` a float or a tensor broadcasting to ``x.shape[:-1]``."""

    @abstractmethod
    def network_with_time_derivative(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\mathcal N(t, x)` and :math:`\partial_t\mathcal N(t, x)`."""

    def network_inverse(self, t: Tensor | float, x: Tensor) -> Tensor:
        r""":math:`\mathcal N(t, \cdot)^{-1}(x)`, for flows that have an explicit inverse."""
        raise ValueError(f"{type(self).__name__} has no explicit inverse: use times >= t[0]")

    def _reduce(self, t: Tensor | float) -> tuple[int, float]:
        t = float(t)
        m = math.floor(t / self.dt)
        return m, t - m * self.dt

    def _power(self, x: Tensor, m: int) -> Tensor:
        r""":math:`\mathcal N(\Delta t)^m x` for any integer ``m``."""
        step = self.network if m >= 0 else self.network_inverse
        for _ in range(abs(m)):
            x = step(self.dt, x)
        return x

    def map(self, t: Tensor | float, x: Tensor) -> Tensor:
        r"""The flow :math:`\psi(t, x)` for any real time ``t`` (a float or 0-d tensor).

        :param t: the time; beyond :math:`[0, \Delta t]` by composition, negative through
            the inverse.
        :param torch.Tensor x: states, shape ``(..., 2n)``.
        """
        check_phase_space(x, "x", self.dim)
        m, r = self._reduce(t)
        x = self._power(x, m)
        return x if r == 0 else self.network(r, x)

    def inverse_map(self, t: Tensor | float, x: Tensor) -> Tensor:
        r"""The inverse :math:`\psi(t, \cdot)^{-1}(x)`."""
        check_phase_space(x, "x", self.dim)
        m, r = self._reduce(t)
        if r != 0:
            x = self.network_inverse(r, x)
        return self._power(x, -m)

    def forward(self, y0: Tensor, t: Tensor) -> Tensor:
        r"""States at the times ``t``, shaped like ``torchdiffeq.odeint(func, y0, t)``.

        The flow starts at ``t[0]``: ``out[i]`` is :math:`\psi(t_i - t_0, y_0)`.

        :param torch.Tensor y0: initial states at time ``t[0]``, shape ``(..., 2n)``.
        :param torch.Tensor t: 1-D strictly monotone grid (any start, either direction), same
            dtype and device as ``y0``.
        :return: tensor of shape ``(len(t), *y0.shape)``.
        """
        check_phase_space(y0, "y0", self.dim)
        check_time_grid(t, y0)
        reduced = [self._reduce(s) for s in (t - t[0]).tolist()]
        batch = (1,) * (y0.dim() - 1)
        pieces, x, current, i = [], y0, 0, 0
        # The grid is monotone, so points sharing m = floor(s / dt) are contiguous: one
        # batched network call per period, and N(dt)^m advanced incrementally.
        while i < len(reduced):
            m = reduced[i][0]
            j = i
            while j < len(reduced) and reduced[j][0] == m:
                j += 1
            x, current = self._power(x, m - current), m
            r = torch.tensor([v[1] for v in reduced[i:j]], dtype=y0.dtype, device=y0.device)
            xs = x.unsqueeze(0).expand(j - i, *x.shape)
            pieces.append(xs if bool((r == 0).all()) else self.network(r.view(-1, *batch), xs))
            i = j
        return torch.cat(pieces)
