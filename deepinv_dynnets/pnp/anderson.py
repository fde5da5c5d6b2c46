r"""Safeguarded Anderson acceleration of a certified fixed-point iteration.

A PnP solver iterates an averaged map :math:`T` on its governing variable :math:`v`
(``x`` for PGD and HQS, ``z`` for DRS, ``x + z`` for ADMM). Write
:math:`g(v) = Tv - v` for the fixed-point residual. Anderson acceleration (type II, memory
:math:`m`) extrapolates from the last :math:`m + 1` iterates: with
:math:`\Delta V = [v_{j+1} - v_j]`, :math:`\Delta G = [g_{j+1} - g_j]` and

.. math::

    \gamma = \arg\min_\gamma \|g_k - \Delta G\,\gamma\|^2 + \eta\,\|\Delta G\|_F^2\,\|\gamma\|^2,

the candidate is :math:`v_{AA} = v_k + \beta g_k - (\Delta V + \beta\,\Delta G)\gamma`
(:math:`\beta` the mixing, 1 by default). It is **accepted** only if its residual, computed
at the next iteration, satisfies the safeguard

.. math::

    \|g(v_{AA})\| \le \|g(v_k)\| \quad\text{and}\quad
    \|g(v_{AA})\| \le D\,\|g(v_0)\|\,(n_{AA} + 1)^{-(1 + \epsilon)},

(:math:`n_{AA}` the number of steps accepted so far); otherwise the iteration falls back on
the plain averaged step :math:`v_{k+1} = T v_k`. This is the safeguard of Zhang,
O'Donoghue and Boyd (2020) and of Fu, Zhang and Boyd (2020) for Douglas–Rachford, with the
extra condition that an accepted step never increases the residual. Their theorem: for a
nonexpansive (here averaged) :math:`T` with a fixed point, the safeguarded iterates
converge to a fixed point, whatever the extrapolations proposed, because accepted steps
have summable residuals and every other step is a Krasnosel'skii–Mann step. With both
conditions the residual of the accepted iterates is non-increasing, which the
:class:`~deepinv_dynnets.pnp.ConvergenceMonitor` checks step by step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["SafeguardedAnderson"]


@dataclass(frozen=True)
class SafeguardedAnderson:
    r"""Settings of the safeguarded Anderson acceleration (see the module's text).

    :param int memory: :math:`m`, the number of past differences used (>= 1).
    :param float regularization: :math:`\eta \ge 0`, Tikhonov weight relative to
        :math:`\|\Delta G\|_F^2`, which bounds the coefficients.
    :param float safeguard: :math:`D > 0` of the safeguard.
    :param float epsilon: :math:`\epsilon > 0` of the safeguard.
    :param float mixing: :math:`\beta > 0`; values far from 1 propose poor steps, which the
        safeguard rejects (the run stays convergent, only slower).

    :Examples:

        >>> from deepinv_dynnets.pnp import SafeguardedAnderson
        >>> SafeguardedAnderson(memory=3).memory
        3
    """

    memory: int = 5
    regularization: float = 1e-10
    safeguard: float = 1e6
    epsilon: float = 1e-6
    mixing: float = 1.0

    def __post_init__(self):
        if isinstance(self.memory, bool) or not isinstance(self.memory, numbers.Integral):
            raise TypeError(f"memory must be an integer, got {type(self.memory).__name__}")
        if self.memory < 1:
            raise ValueError(f"memory must be >= 1, got {self.memory}")
        for name, low_ok in (
            ("regularization", True),
            ("safeguard", False),
            ("epsilon", False),
            ("mixing", False),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
            if not math.isfinite(value) or value < 0 or (value == 0 and not low_ok):
                bound = ">= 0" if low_ok else "> 0"
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def governing(state: dict, variable: str) -> Tensor:
    """The variable the theorem is about, from a deepinv state dict."""
    est = state["est"]
    if variable == "x":
        return est[0]
    if variable == "z":
        return est[1]
    return est[0] + est[1]


def _merge(take: Tensor, new: dict, old: dict) -> dict:
    # per image: new state where take is True, old otherwise
    def pick(a, b):
        if not isinstance(a, Tensor) or a.dim() == 0 or a.shape[0] != take.shape[0]:
            return a
        mask = take.to(a.device).view(-1, *([1] * (a.dim() - 1)))
        return torch.where(mask, a, b)

    est = tuple(pick(a, b) for a, b in zip(new["est"], old["est"], strict=True))
    return {**new, "est": est}


class FixedPointDriver(nn.Module):
    """Wraps a deepinv ``OptimIterator``: records the residual in a monitor, and optionally
    accelerates (:class:`SafeguardedAnderson`), stops on the relative fixed-point residual,
    and halves the PGD stepsize when a plain step increases the residual (a run whose
    certificate rests on an estimate of ``||A||^2``)."""

    def __init__(
        self,
        iterator: nn.Module,
        monitor,
        algorithm: str | None = None,
        acceleration: SafeguardedAnderson | None = None,
        threshold: float | None = None,
        solver: nn.Module | None = None,
        step_safeguard: bool = False,
    ):
        super().__init__()
        self.iterator = iterator
        self._monitor = [monitor]  # lists: not registered as submodules
        self._solver = [solver]
        self.algorithm = algorithm
        self.acceleration = acceleration
        self.threshold = threshold
        self.step_safeguard = step_safeguard
        if acceleration is not None:
            monitor.safeguard = (acceleration.safeguard, acceleration.epsilon)
        self.reset()

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.iterator, name)

    def reset(self) -> None:
        """Forget the run (called before every call of the solver)."""
        self.converged = False
        self._calls = 0
        self._history: list[tuple[Tensor, Tensor]] = []
        self._pending: dict | None = None  # the plain step T v_k, fallback of a candidate
        self._previous_residual: Tensor | None = None
        self._first_residual: Tensor | None = None
        self._accepted: Tensor | None = None

    def check_conv(self, it, X_prev, X) -> bool:
        """deepinv's ``check_conv_fn``: the relative fixed-point residual is below the
        threshold."""
        return self.converged

    def _lift(self, v: Tensor, plain: dict, prior, params) -> dict:
        # a state of the deepinv iterator whose governing variable is v
        est = list(plain["est"])
        monitor = self._monitor[0]
        if monitor.variable == "x":
            est[0] = v
        elif monitor.variable == "z":
            est[1] = v
        else:  # ADMM: x_k = D(x_k + z_k) (prox_f with g_first), z_k = eta - x_k
            zeros = torch.zeros_like(v)
            if self.iterator.g_first:
                x = self.iterator.f_step(v, zeros, *self._fidelity_args)
            else:
                x = self.iterator.g_step(v, zeros, prior, params)
            est[0], est[1] = x, v - x
        return {**plain, "est": tuple(est)}

    def forward(self, X, cur_data_fidelity, cur_prior, cur_params, *args, **kwargs):
        monitor = self._monitor[0]
        self._calls += 1
        step = lambda state, params=cur_params: self.iterator(  # noqa: E731
            state, cur_data_fidelity, cur_prior, params, *args, **kwargs
        )
        self._fidelity_args = (cur_data_fidelity, cur_params, *args)
        TX = step(X)
        if monitor.skip_first and self._calls == 1:
            return TX  # ADMM: the initial state is not yet an iterate of the averaged map
        residual = monitor.residual(X, TX)
        accepted = torch.zeros_like(residual, dtype=torch.bool)
        proposed = self._pending is not None
        if proposed:
            budget = (
                self._first_residual
                * self.acceleration.safeguard
                * (self._accepted + 1).pow(-(1 + self.acceleration.epsilon))
            )
            accepted = (residual <= self._previous_residual) & (residual <= budget)
            if not bool(accepted.all()):  # fall back on the plain step for those images
                fallback = self._pending
                X = _merge(accepted, X, fallback)
                TX = _merge(accepted, TX, step(fallback))
                residual = monitor.residual(X, TX)
            self._accepted = self._accepted + accepted
        restart = None
        if (
            self.step_safeguard
            and self._previous_residual is not None
            and bool((~accepted & monitor.increased(self._previous_residual, residual, TX)).any())
        ):
            # the map is not averaged at this stepsize: the estimate of ||A||^2 was low
            solver = self._solver[0]
            old = float(cur_params["stepsize"])
            solver.params_algo["stepsize"] = [old / 2]
            cur_params = {**cur_params, "stepsize": old / 2}
            TX = step(X, cur_params)
            residual = monitor.residual(X, TX)
            self._history, self._first_residual = [], None
            self._accepted = torch.zeros_like(residual)
            restart = (old, old / 2)
        monitor.record_step(X, TX, residual, accepted, restart, proposed)
        if self._first_residual is None:
            self._first_residual = residual
            self._accepted = torch.zeros_like(residual)
        self._previous_residual = residual
        self._pending = None
        relative = residual / monitor.last_norm.clamp_min(1e-12)
        if self.threshold is not None and float(relative.max()) < self.threshold:
            self.converged = True
            return TX
        if self.acceleration is None:
            return TX
        return self._accelerate(X, TX, cur_prior, cur_params)

    def _accelerate(self, X, TX, prior, params) -> dict:
        variable = self._monitor[0].variable
        v = governing(X, variable).detach()
        g = governing(TX, variable).detach() - v
        batch = v.shape[0]
        self._history.append((v.reshape(batch, -1), g.reshape(batch, -1)))
        self._history = self._history[-(self.acceleration.memory + 1) :]
        if len(self._history) < 2:
            return TX
        vs = torch.stack([h[0] for h in self._history], 1)
        gs = torch.stack([h[1] for h in self._history], 1)
        dv, dg = vs.diff(dim=1), gs.diff(dim=1)  # (batch, m, d)
        gram = torch.bmm(dg, dg.transpose(1, 2)).to(torch.float64)
        trace = gram.diagonal(dim1=1, dim2=2).sum(-1, keepdim=True).unsqueeze(-1)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        gram = gram + self.acceleration.regularization * trace * eye + 1e-300 * eye
        rhs = torch.bmm(dg, gs[:, -1:].transpose(1, 2)).to(torch.float64)
        gamma = torch.linalg.solve(gram, rhs).to(v.dtype)  # (batch, m, 1)
        mixing = self.acceleration.mixing
        step = (dv + mixing * dg).transpose(1, 2) @ gamma
        candidate = (vs[:, -1] + mixing * gs[:, -1] - step[..., 0]).reshape(v.shape)
        finite = torch.isfinite(candidate.reshape(batch, -1)).all(1)
        candidate = torch.where(finite.view(-1, *([1] * (v.dim() - 1))), candidate, v + g)
        self._pending = TX
        return self._lift(candidate, TX, prior, params)
