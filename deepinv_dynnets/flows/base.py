r"""What every learned flow shares: long-time composition and the ``odeint``-shaped call."""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._validation import check_monotone_grid, check_positive
from .symplectic import check_phase_space

__all__ = ["NeuralFlow", "check_time_grid", "check_sample_time_grids", "PROGRESS_MIN_STEPS"]

#: Rollouts of at least this many compositions of :math:`\mathcal N(\Delta t)` show a
#: tqdm progress bar (with its time estimate) unless ``progress=False``.
PROGRESS_MIN_STEPS = 10_000


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
    _check_like(t, y0)


def _check_like(t: Tensor, y0: Tensor) -> None:
    if t.dtype != y0.dtype:
        raise ValueError(
            f"t has dtype {t.dtype} but y0 has dtype {y0.dtype}; pass t.to(y0) to match them"
        )
    if t.device != y0.device:
        raise ValueError(
            f"t is on {t.device} but y0 is on {y0.device}; pass t.to(y0) to match them"
        )


def check_sample_time_grids(t: Tensor, y0: Tensor) -> None:
    """Validate per-sample time grids: ``t`` of shape ``(T, *y0.shape[:-1])``, each column
    ``t[:, b]`` finite and strictly monotone (``ValueError`` naming ``t``).

    :param torch.Tensor t: the grids, ``y0``'s dtype and device.
    :param torch.Tensor y0: the initial states, shape ``(*batch, 2n)``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows.base import check_sample_time_grids
        >>> check_sample_time_grids(torch.tensor([[0.0, 5.0], [1.0, 4.0]]), torch.zeros(2, 2))
        >>> check_sample_time_grids(torch.tensor([[0.0, 5.0], [1.0, 5.0]]), torch.zeros(2, 2))
        Traceback (most recent call last):
        ...
        ValueError: each grid t[:, b] must be strictly increasing or strictly decreasing
    """
    if t.dim() < 2 or tuple(t.shape[1:]) != tuple(y0.shape[:-1]):
        raise ValueError(
            f"t must be a 1-D grid, or one grid per initial state of shape "
            f"(T, *y0.shape[:-1]) = (T, {', '.join(map(str, y0.shape[:-1]))}), "
            f"got shape {tuple(t.shape)} for y0 of shape {tuple(y0.shape)}"
        )
    if t.shape[0] == 0:
        raise ValueError(f"t must hold at least one time per grid, got shape {tuple(t.shape)}")
    if t.is_complex() or not torch.is_floating_point(t):
        raise ValueError(f"t must be a real floating-point tensor, got dtype {t.dtype}")
    _check_like(t, y0)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t contains NaN or Inf values")
    if t.shape[0] > 1:
        step = (t[1:] - t[:-1]).flatten(1)
        if not bool(((step > 0).all(0) | (step < 0).all(0)).all()):
            raise ValueError("each grid t[:, b] must be strictly increasing or strictly decreasing")


def _check_time_value(t: Tensor | float, name: str = "t") -> float:
    """The value of a scalar time, or a ``ValueError`` naming it (not finite, not scalar)."""
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(
                f"{name} must be a single time, got a tensor of shape {tuple(t.shape)}"
            )
        if t.is_complex() or not torch.is_floating_point(t):
            raise ValueError(f"{name} must be a real floating-point time, got dtype {t.dtype}")
    elif isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise ValueError(f"{name} must be a real number or a one-element tensor, got {t!r}")
    value = float(t.detach() if isinstance(t, Tensor) else t)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite time, got {value}")
    return value


def check_flow_config(dim: object, dt: object) -> tuple[int, float]:
    r"""Return ``(dim, dt)`` of a flow if ``dim`` is an even phase-space dimension
    :math:`2n \ge 2` and ``dt`` a finite number > 0, else raise a ``ValueError``."""
    if isinstance(dim, bool) or int(dim) != dim or dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even phase-space dimension 2n >= 2 (q then p), got {dim}")
    check_positive(dt, "dt")
    return int(dim), float(dt)


class NeuralFlow(nn.Module, ABC):
    r"""Base class of learned flows :math:`\mathcal N(t, x)` trained on a window :math:`[0, \Delta t]`.

    A subclass sets ``dim`` (phase-space dimension) and ``dt`` (:math:`\Delta t`) and
    implements :meth:`network`, :meth:`network_with_time_derivative` and, if it can,
    :meth:`network_inverse` (then it sets ``invertible = True``). This class adds the
    long-time flow from time :math:`0`,

    .. math::

        \psi(t) = \mathcal N(t - m\Delta t) \circ \mathcal N(\Delta t)^m,
        \qquad m = \lfloor t/\Delta t\rfloor,

    the flow of the :math:`\Delta t`-periodic extension of the learned time-dependent
    system, and the flow from time :math:`s` to time :math:`t`,
    :math:`\psi(t) \circ \psi(s)^{-1} =
    \mathcal N(r_t) \circ \mathcal N(\Delta t)^{m_t - m_s} \circ \mathcal N(r_s)^{-1}`
    (:math:`t = m_t\Delta t + r_t`, :math:`s = m_s\Delta t + r_s`), which is what the
    ``odeint``-shaped call returns: ``flow(y0, t)`` propagates the state ``y0`` *at time*
    ``t[0]``, as ``torchdiffeq.odeint`` does with a time-dependent ``func``.

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
    #: whether :meth:`network_inverse` exists (needed to start between multiples of
    #: :math:`\Delta t` or to run backward in time).
    invertible: bool = False

    @abstractmethod
    def network(self, t: Tensor | float, x: Tensor) -> Tensor:
        r""":math:`\mathcal N(t, x)`, ``t`` a float or a tensor broadcasting to ``x.shape[:-1]``."""

    @abstractmethod
    def network_with_time_derivative(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\mathcal N(t, x)` and :math:`\partial_t\mathcal N(t, x)`."""

    def network_inverse(self, t: Tensor | float, x: Tensor) -> Tensor:
        r""":math:`\mathcal N(t, \cdot)^{-1}(x)`, for flows that have an explicit inverse."""
        raise ValueError(
            f"{type(self).__name__} has no explicit inverse: it can only run forward in time "
            "from a multiple of its dt"
        )

    # -- checks --------------------------------------------------------------------------
    def _check_state(self, x: Tensor, name: str) -> None:
        """Shape, finiteness, and dtype/device of ``x`` against the parameters."""
        check_phase_space(x, name, self.dim)
        self._check_state_dtype(x, name)

    def _check_state_dtype(self, x: Tensor, name: str) -> None:
        """A ``TypeError`` if ``x``'s dtype is not the parameters' (``ValueError`` for device)."""
        param = next(self.parameters(), None)
        if param is None:
            return
        if x.dtype != param.dtype:
            raise TypeError(
                f"{name} has dtype {x.dtype} but the {type(self).__name__}'s parameters are "
                f"{param.dtype}: convert one of them, e.g. flow.to({x.dtype}) or "
                f"{name}.to({param.dtype})"
            )
        if x.device != param.device:
            raise ValueError(
                f"{name} is on {x.device} but the {type(self).__name__}'s parameters are on "
                f"{param.device}: move one of them, e.g. flow.to({name}.device)"
            )

    def _check_reachable(self, starts_on_multiple: bool, goes_backward: bool) -> None:
        """Flows without an inverse can only run forward from a multiple of ``dt``."""
        if self.invertible:
            return
        if not starts_on_multiple:
            raise ValueError(
                f"{type(self).__name__} has no inverse, so it can only start at a multiple of "
                f"its dt = {self.dt}: t starts elsewhere"
            )
        if goes_backward:
            raise ValueError(
                f"{type(self).__name__} has no inverse, so it cannot run backward in time: "
                "t must not go below its start"
            )

    def _rollout_threads(self, x: Tensor) -> int | None:
        """PyTorch threads for a rollout of the states ``x``; ``None`` leaves the setting."""
        return None

    @contextmanager
    def _thread_policy(self, x: Tensor) -> Iterator[None]:
        """Run a rollout with :meth:`_rollout_threads` threads, restoring the setting after."""
        wanted, before = self._rollout_threads(x), torch.get_num_threads()
        if wanted is None or wanted == before:
            yield
            return
        torch.set_num_threads(wanted)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    # -- composition ---------------------------------------------------------------------
    def _reduce(self, t: Tensor | float) -> tuple[int, Tensor | float]:
        r""":math:`m = \lfloor t/\Delta t\rfloor` and :math:`r = t - m\Delta t`.

        ``r`` is computed in float64 from the value of ``t``; when ``t`` is a tensor that
        requires grad, ``r`` is a tensor with that value and the gradient of ``t``.
        """
        value = float(t.detach() if isinstance(t, Tensor) else t)
        m = math.floor(value / self.dt)
        r = value - m * self.dt
        if isinstance(t, Tensor) and t.requires_grad:
            return m, (t - t.detach()).reshape(()) + r
        return m, r

    @staticmethod
    def _is_identity(r: Tensor | float) -> bool:
        """``N(r)`` with ``r = 0`` is skipped, unless ``r`` carries a gradient (``d/dt`` at 0)."""
        return not isinstance(r, Tensor) and r == 0

    def _power(self, x: Tensor, m: int, bar: tqdm | None = None) -> Tensor:
        r""":math:`\mathcal N(\Delta t)^m x` for any integer ``m``."""
        step = self.network if m >= 0 else self.network_inverse
        for _ in range(abs(m)):
            x = step(self.dt, x)
            if bar is not None:
                bar.update(1)
        return x

    def _progress(self, steps: int, progress: bool | None) -> tqdm | nullcontext:
        show = steps >= PROGRESS_MIN_STEPS if progress is None else bool(progress)
        if not show:
            return nullcontext()
        return tqdm(total=steps, desc=f"{type(self).__name__} rollout", unit="step", leave=False)

    def _transition(
        self, t: Tensor | float, x: Tensor, t0: Tensor | float, progress: bool | None
    ) -> Tensor:
        """The flow from ``t0`` to ``t`` (both checked by the caller)."""
        (m0, r0), (m, r) = self._reduce(t0), self._reduce(t)
        self._check_reachable(float(r0) == 0, m < m0)
        if not self._is_identity(r0):
            x = self.network_inverse(r0, x)
        with self._progress(abs(m - m0), progress) as bar:
            x = self._power(x, m - m0, bar)
        return x if self._is_identity(r) else self.network(r, x)

    def map(
        self,
        t: Tensor | float,
        x: Tensor,
        t0: Tensor | float = 0.0,
        *,
        progress: bool | None = None,
    ) -> Tensor:
        r"""The flow from time ``t0`` to time ``t``: :math:`\psi(t)\circ\psi(t_0)^{-1}(x)`.

        With the default ``t0 = 0`` this is :math:`\psi(t, x)`. Times are any finite reals
        (floats or one-element tensors; a tensor that requires grad gets its exact
        derivative); beyond :math:`[0, \Delta t]` by composition, backward through the inverse.

        :param t: the final time.
        :param torch.Tensor x: states at time ``t0``, shape ``(..., 2n)``.
        :param t0: the time at which ``x`` is given.
        :param progress: tqdm progress bar; ``None`` shows one from
            :data:`PROGRESS_MIN_STEPS` compositions.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets import SympFlow
            >>> flow = SympFlow(dim=2, n_layers=2, width=4).double()
            >>> x = torch.randn(3, 2, dtype=torch.float64)
            >>> bool(torch.allclose(flow.map(2.7, flow.map(0.4, x), t0=0.4), flow.map(2.7, x)))
            True
        """
        self._check_state(x, "x")
        _check_time_value(t, "t")
        _check_time_value(t0, "t0")
        with self._thread_policy(x):
            return self._transition(t, x, t0, progress)

    def inverse_map(
        self,
        t: Tensor | float,
        x: Tensor,
        t0: Tensor | float = 0.0,
        *,
        progress: bool | None = None,
    ) -> Tensor:
        r"""The inverse of :meth:`map`, :math:`\psi(t_0)\circ\psi(t)^{-1}(x)`: the flow from ``t``
        back to ``t0``.

        :param t: the time at which ``x`` is given.
        :param torch.Tensor x: states, shape ``(..., 2n)``.
        :param t0: the time to go back to.
        :param progress: as in :meth:`map`.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets import SympFlow
            >>> flow = SympFlow(dim=2, n_layers=2, width=4).double()
            >>> x = torch.randn(3, 2, dtype=torch.float64)
            >>> y = flow.map(3.5, x, t0=0.2)
            >>> bool(torch.allclose(flow.inverse_map(3.5, y, t0=0.2), x))
            True
        """
        self._check_state(x, "x")
        _check_time_value(t, "t")
        _check_time_value(t0, "t0")
        with self._thread_policy(x):
            return self._transition(t0, x, t, progress)

    def forward(self, y0: Tensor, t: Tensor, *, progress: bool | None = None) -> Tensor:
        r"""States at the times ``t``, shaped like ``torchdiffeq.odeint(func, y0, t)``.

        ``y0`` is the state at time ``t[0]`` and ``out[i]`` the flow from ``t[0]`` to
        ``t[i]`` (:meth:`map` with ``t0 = t[0]``), which agrees with
        ``odeint(flow.vector_field, y0, t)`` up to the solver's tolerance.

        ``t`` may also hold one grid per initial state: shape ``(T, *y0.shape[:-1])``, each
        ``t[:, b]`` strictly monotone (its own start and direction); then ``out[i, b]`` is
        the state of ``y0[b]`` at ``t[i, b]``.

        :param torch.Tensor y0: initial states at time ``t[0]``, shape ``(..., 2n)``.
        :param torch.Tensor t: 1-D strictly monotone grid (any start, either direction), or
            per-sample grids ``(T, *y0.shape[:-1])``; same dtype and device as ``y0``. If it
            requires grad, the output has the exact derivative in ``t``.
        :param progress: tqdm progress bar; ``None`` shows one from
            :data:`PROGRESS_MIN_STEPS` compositions.
        :return: tensor of shape ``(len(t), *y0.shape)``.
        """
        self._check_state(y0, "y0")
        if isinstance(t, Tensor) and t.dim() >= 2:
            check_sample_time_grids(t, y0)
            with self._thread_policy(y0):
                return self._forward_per_sample(y0, t, progress)
        check_time_grid(t, y0)
        with self._thread_policy(y0):
            return self._forward_grid(y0, t, progress)

    def _forward_grid(self, y0: Tensor, t: Tensor, progress: bool | None) -> Tensor:
        """``forward`` on a 1-D grid (checked)."""
        # m = floor(t / dt) and r = t - m dt in float64: the same operations as _reduce.
        t64 = t.detach().to(device="cpu", dtype=torch.float64)
        m = torch.floor(t64 / self.dt)
        r_value = t64 - m * self.dt
        m = m.long()
        m0, m_last, r0 = int(m[0]), int(m[-1]), float(r_value[0])
        self._check_reachable(r0 == 0, m_last < m0)
        grad_t = t.requires_grad
        r = r_value.to(dtype=y0.dtype, device=y0.device)
        if grad_t:  # the values computed in float64 above, the gradient of t
            r = r + (t - t.detach())
        x = y0 if (r0 == 0 and not grad_t) else self.network_inverse(r[0], y0)
        # The grid is monotone, so the points sharing m are contiguous: the states
        # N(dt)^(m - m0) x are computed once per m, then N(r) in one batched call.
        periods, period_of = torch.unique_consecutive(m, return_inverse=True)
        with self._progress(abs(m_last - m0), progress) as bar:
            states = self._powers(x, periods - m0, bar)
        xs, r = states[period_of[1:].to(y0.device)], r[1:]
        batch = (1,) * (y0.dim() - 1)
        if grad_t:
            xs = self.network(r.view(-1, *batch), xs)
        else:
            moved = (r != 0).nonzero().squeeze(1)
            if len(moved):
                xs = xs.index_copy(0, moved, self.network(r[moved].view(-1, *batch), xs[moved]))
        return torch.cat([y0.unsqueeze(0), xs])  # out[0] is y0 itself

    def _forward_per_sample(self, y0: Tensor, t: Tensor, progress: bool | None) -> Tensor:
        """``forward`` with one grid per initial state, ``t`` of shape ``(T, *batch)``."""
        x0 = y0.reshape(-1, self.dim)
        grid = t.reshape(t.shape[0], -1)
        with torch.no_grad():
            m = torch.floor(grid.double() / self.dt)
            r_value = (grid.double() - m * self.dt).to(y0.dtype)
        steps = (m - m[0]).long()  # compositions from each start, (T, B)
        self._check_reachable(not bool(r_value[0].any()), bool((steps < 0).any()))
        r = r_value + (grid - grid.detach()) if grid.requires_grad else r_value
        x = x0
        if grid.requires_grad or bool(r_value[0].any()):
            x = self.network_inverse(r[0], x0)
        if len(grid) == 1:
            return y0.unsqueeze(0)
        moves = int(steps.diff(dim=0).abs().amax(1).sum())
        with self._progress(moves, progress) as bar:
            states = self._powers(x, steps[1:], bar)
        out = self.network(r[1:], states)
        return torch.cat([x0.unsqueeze(0), out]).reshape(len(grid), *y0.shape)

    def _powers(self, x: Tensor, marks: Tensor, bar: tqdm | None) -> Tensor:
        r"""``out[g]`` :math:`= \mathcal N(\Delta t)^{k_g} x` for integer powers ``marks[g]``:
        shape ``(G,)``, monotone, or ``(G, *x.shape[:-1])``, one sequence per state."""
        outs, current = [], marks.new_zeros(marks.shape[1:])
        for mark in marks:
            if mark.dim() == 0:
                x = self._power(x, int(mark - current), bar)
            else:
                x = self._advance(x, mark - current, bar)
            current = mark
            outs.append(x)
        return torch.stack(outs) if outs else x.new_empty(0, *x.shape)

    def _advance(self, x: Tensor, k: Tensor, bar: tqdm | None) -> Tensor:
        """Apply :math:`\\mathcal N(\\Delta t)^{k_b}` to each state ``x[b]`` (``k`` integer)."""
        while bool(k.any()):
            forward, backward = k > 0, k < 0
            for mask, step, change in (
                (forward, self.network, -1),
                (backward, self.network_inverse, 1),
            ):
                if bool(mask.all()):
                    x = step(self.dt, x)
                elif bool(mask.any()):
                    idx = mask.nonzero().squeeze(1)
                    x = x.index_copy(0, idx, step(self.dt, x[idx]))
                k = k + change * mask
            if bar is not None:
                bar.update(1)
        return x
