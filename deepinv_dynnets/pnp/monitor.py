r"""A runtime monitor for deepinv's fixed-point solvers: residual, monotonicity, envelope.

For an :math:`\alpha_T`-averaged iteration map :math:`v_{k+1} = T v_k` the residual
:math:`r_k = \|v_{k+1} - v_k\|` is non-increasing (a theorem: a violation beyond round-off
means the certificate's premises are false or the numerics broke) and, with
:math:`v^\star` a fixed point,

.. math::

    \sqrt{k + 1}\; r_k \le \sqrt{\frac{\alpha_T}{1 - \alpha_T}}\, \|v_0 - v^\star\|,
    \qquad \sqrt{k + 1}\; r_k \to 0.

The monitor records :math:`r_k` for the variable the theorem is about (``x`` for PGD and
HQS, ``z`` for DRS, ``x + z`` for ADMM), per image of the batch, by wrapping the solver's
iterator; it is reset at the start of every call of the solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["ConvergenceMonitor", "MonitorReport"]


@dataclass
class MonitorReport:
    r"""Summary of one monitored run (worst case over the images of the batch).

    :param bool converged: the last relative residual is below the threshold.
    :param int iterations: iterations run.
    :param float final_residual: last relative residual :math:`r_k / \|v_{k+1}\|`, averaged
        over the images of the batch (as deepinv's stopping rule does).
    :param bool monotone: no violation of :math:`r_{k+1} \le r_k` beyond the tolerance, for
        any image of the batch.
    :param list[dict] violations: ``iteration``, ``image``, ``residual``, ``previous``.
    :param float | None envelope_ratio: :math:`\max_k \sqrt{k+1}\,r_k` divided by
        :math:`\sqrt{\alpha_T/(1-\alpha_T)}\,\|v_0 - v_K\|` (the last iterate standing in for
        the fixed point), worst image: at most about 1 for a converged averaged iteration;
        ``None`` without :math:`\alpha_T`.
    :param float threshold: relative residual that counts as converged.

    :Examples:

        >>> from deepinv_dynnets.pnp import MonitorReport
        >>> MonitorReport(True, 10, 1e-6, True, [], 0.4, 1e-5).ok
        True
    """

    converged: bool
    iterations: int
    final_residual: float
    monotone: bool
    violations: list[dict] = field(default_factory=list)
    envelope_ratio: float | None = None
    threshold: float = 1e-5

    @property
    def ok(self) -> bool:
        """Converged with a monotone residual."""
        return self.converged and self.monotone

    def __str__(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        lines = [
            f"{state} after {self.iterations} iterations: relative residual "
            f"{self.final_residual:.3g} (threshold {self.threshold:g})",
            "residual non-increasing: yes"
            if self.monotone
            else f"residual non-increasing: NO, {len(self.violations)} violation(s), first at "
            f"iteration {self.violations[0]['iteration']}",
        ]
        if self.envelope_ratio is not None:
            lines.append(
                f"o(1/sqrt(k)) envelope: max sqrt(k+1) r_k is {self.envelope_ratio:.3g} x the bound"
            )
        return "\n".join(lines)


def _governing(state: dict, variable: str) -> Tensor:
    est = state["est"]
    if variable == "x":
        return est[0]
    if variable == "z":
        return est[1]
    return est[0] + est[1]


class _MonitoredIterator(nn.Module):
    # Wraps a deepinv OptimIterator: same call, records the residual after each step.
    def __init__(self, iterator: nn.Module, monitor: ConvergenceMonitor):
        super().__init__()
        self.iterator = iterator
        self._monitor = [monitor]  # a list: not registered as a submodule

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.iterator, name)

    def forward(self, X, *args, **kwargs):
        new = self.iterator(X, *args, **kwargs)
        self._monitor[0].record(X, new)
        return new


class ConvergenceMonitor:
    r"""Record and check the fixed-point residual of a deepinv solver while it runs.

    :meth:`attach` it to a ``deepinv.optim`` solver (``PGD``, ``HQS``, ``DRS``, ``ADMM``,
    ...); every call of the solver then records the residual :math:`r_k` of the governing
    variable per image, and :meth:`report` says whether the run converged, whether the
    residual stayed non-increasing (up to a round-off tolerance) and how it compares with
    the :math:`O(1/\sqrt{k})` envelope.

    A step counts as a violation when
    :math:`r_{k+1} > r_k (1 + \text{rtol}) + \text{atol}\cdot\|v_{k+1}\|`, the second term
    covering the round-off of evaluating :math:`T` (default
    :math:`\text{atol} = 100\,\epsilon` of the dtype, about :math:`10^{-5}` relative in
    float32).

    :param str variable: ``"x"`` (PGD, HQS), ``"z"`` (DRS) or ``"x + z"`` (ADMM).
    :param float | None alpha: :math:`\alpha_T` of the iteration map, for the envelope.
    :param float threshold: relative residual counted as converged.
    :param float rtol: relative tolerance of the monotonicity check.
    :param float | None atol: absolute tolerance relative to :math:`\|v\|` (``None``: 100
        machine epsilons of the iterates' dtype).
    :param bool skip_first: ignore the first step (ADMM: its first ``x + z`` is not yet an
        iterate of the averaged map).

    :Examples:

        >>> import deepinv as dinv, torch
        >>> from deepinv_dynnets.pnp import ConvergenceMonitor
        >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
        >>> solver = dinv.optim.PGD(prior=dinv.optim.PnP(dinv.models.TVDenoiser(n_it_max=20)),
        ...                         data_fidelity=dinv.optim.L2(), stepsize=1.0,
        ...                         sigma_denoiser=0.1, max_iter=5)
        >>> monitor = ConvergenceMonitor().attach(solver)
        >>> _ = solver(torch.rand(1, 1, 8, 8), physics)
        >>> len(monitor.residuals)
        5
    """

    def __init__(
        self,
        variable: str = "x",
        alpha: float | None = None,
        threshold: float = 1e-5,
        rtol: float = 1e-3,
        atol: float | None = None,
        skip_first: bool = False,
    ):
        if variable not in ("x", "z", "x + z"):
            raise ValueError(f"variable must be 'x', 'z' or 'x + z', got {variable!r}")
        if alpha is not None and not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1) or None, got {alpha!r}")
        self.variable = variable
        self.alpha = alpha
        self.threshold = float(threshold)
        self.rtol = float(rtol)
        self.atol = atol
        self.skip_first = bool(skip_first)
        self.reset()

    def reset(self) -> None:
        """Forget the recorded run."""
        self.residuals: list[Tensor] = []  # r_k per image, float64
        self.norms: list[Tensor] = []  # ||v_{k+1}|| per image
        self.start: Tensor | None = None  # v_0
        self.last: Tensor | None = None  # v_K
        self._dtype: torch.dtype | None = None
        self._steps = 0

    def attach(self, solver: nn.Module) -> ConvergenceMonitor:
        """Monitor ``solver`` (a ``deepinv.optim.BaseOptim``); returns the monitor."""
        fixed_point = getattr(solver, "fixed_point", None)
        if fixed_point is None or not hasattr(fixed_point, "iterator"):
            raise ValueError(
                f"can only monitor deepinv.optim solvers (with .fixed_point.iterator), got "
                f"{type(solver).__name__}"
            )
        iterator = fixed_point.iterator
        if isinstance(iterator, _MonitoredIterator):
            iterator = iterator.iterator
        fixed_point.iterator = _MonitoredIterator(iterator, self)
        solver.register_forward_pre_hook(lambda module, args: self.reset())
        return self

    def record(self, previous: dict, current: dict) -> None:
        """Record one step from the solver's state dicts (called by the wrapped iterator)."""
        self._steps += 1
        if self.skip_first and self._steps == 1:
            return
        v_prev = _governing(previous, self.variable).detach()
        v = _governing(current, self.variable).detach()
        if self.start is None:
            self.start = v_prev.clone()
        self._dtype = v.dtype
        batch = v.shape[0]
        diff = (v - v_prev).reshape(batch, -1).to(torch.float64)
        self.residuals.append(torch.linalg.vector_norm(diff, dim=1).cpu())
        self.norms.append(
            torch.linalg.vector_norm(v.reshape(batch, -1).to(torch.float64), dim=1).cpu()
        )
        self.last = v.clone()

    def relative_residuals(self) -> Tensor:
        """:math:`r_k / \\|v_{k+1}\\|`, shape ``(iterations, batch)``."""
        if not self.residuals:
            return torch.zeros(0, 0, dtype=torch.float64)
        return torch.stack(self.residuals) / torch.stack(self.norms).clamp_min(1e-12)

    def report(self) -> MonitorReport:
        """The :class:`MonitorReport` of the last run."""
        if not self.residuals:
            raise RuntimeError("nothing recorded: run the monitored solver first")
        r = torch.stack(self.residuals)
        norms = torch.stack(self.norms)
        eps = torch.finfo(self._dtype).eps if self._dtype.is_floating_point else 0.0
        atol = 100 * eps if self.atol is None else float(self.atol)
        allowed = r[:-1] * (1 + self.rtol) + atol * norms[1:]
        bad = (r[1:] > allowed).nonzero().tolist()
        violations = [
            {
                "iteration": k + 1,
                "image": i,
                "residual": float(r[k + 1, i]),
                "previous": float(r[k, i]),
            }
            for k, i in bad
        ]
        relative = r[-1] / norms[-1].clamp_min(1e-12)
        final = float(relative.mean())
        envelope = None
        if self.alpha is not None:
            k = torch.arange(1, r.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
            distance = torch.linalg.vector_norm(
                (self.start - self.last).reshape(r.shape[1], -1).to(torch.float64).cpu(), dim=1
            )
            bound = math.sqrt(self.alpha / (1 - self.alpha)) * distance
            ratio = (k.sqrt() * r).max(dim=0).values / bound.clamp_min(1e-300)
            envelope = float(ratio.max())
        return MonitorReport(
            converged=final < self.threshold,
            iterations=int(r.shape[0]),
            final_residual=final,
            monotone=not violations,
            violations=violations,
            envelope_ratio=envelope,
            threshold=self.threshold,
        )

    def plot(self, ax=None, label: str | None = None):
        """Plot the relative residual against the iteration (log scale); returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        rel = self.relative_residuals().numpy()
        k = range(1, rel.shape[0] + 1)
        for i in range(rel.shape[1]):
            ax.semilogy(k, rel[:, i], label=label if i == 0 else None)
        ax.set_xlabel("iteration k")
        ax.set_ylabel(f"||{self.variable}_(k+1) - {self.variable}_k|| / ||{self.variable}_(k+1)||")
        if label is not None:
            ax.legend()
        return ax
