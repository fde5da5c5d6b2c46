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

With the safeguarded Anderson acceleration (:mod:`deepinv_dynnets.pnp.anderson`) the
theorem changes: what is promised, and checked step by step, is that every accepted
Anderson step does not increase the residual and respects the safeguard's budget
:math:`D\,r_0\,(n+1)^{-(1+\epsilon)}`, and that every other step is a plain averaged step
(non-increasing up to round-off). The :math:`O(1/\sqrt{k})` envelope is only reported for
plain runs. When the PGD stepsize had to be halved at run time (a certificate resting on an
estimate of :math:`\|A\|^2`), the check restarts there and the report lists the change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .anderson import FixedPointDriver, governing

__all__ = ["ConvergenceMonitor", "MonitorReport"]


@dataclass
class MonitorReport:
    r"""Summary of one monitored run (worst case over the images of the batch).

    :param bool converged: the last relative residual is below the threshold.
    :param int iterations: iterations run.
    :param float final_residual: last relative residual :math:`r_k / \|v_{k+1}\|`, averaged
        over the images of the batch (as deepinv's stopping rule does).
    :param bool monotone: the residual did what the theorem says at every step, for every
        image: non-increasing across plain steps (up to the tolerance), and within the
        safeguard across accepted Anderson steps.
    :param list[dict] violations: ``iteration``, ``image``, ``residual``, ``previous``,
        ``step`` (``"plain"`` or ``"anderson"``).
    :param float | None envelope_ratio: :math:`\max_k \sqrt{k+1}\,r_k` divided by
        :math:`\sqrt{\alpha_T/(1-\alpha_T)}\,\|v_0 - v_K\|` (the last iterate standing in for
        the fixed point), worst image: at most about 1 for a converged averaged iteration;
        ``None`` without :math:`\alpha_T`, or for an accelerated or restarted run.
    :param float threshold: relative residual that counts as converged.
    :param int accepted: accepted Anderson steps (summed over the images).
    :param int rejected: Anderson candidates rejected by the safeguard, replaced by plain
        averaged steps.
    :param list[dict] restarts: stepsize changes at run time: ``iteration``, ``old``,
        ``new``.

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
    accepted: int = 0
    rejected: int = 0
    restarts: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Converged with a residual that behaved as the theorem says."""
        return self.converged and self.monotone

    def __str__(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        lines = [
            f"{state} after {self.iterations} iterations: relative residual "
            f"{self.final_residual:.3g} (threshold {self.threshold:g})",
        ]
        what = (
            "residual as the theorem says"
            if self.accepted or self.rejected
            else ("residual non-increasing")
        )
        lines.append(
            f"{what}: yes"
            if self.monotone
            else f"{what}: NO, {len(self.violations)} violation(s), first at "
            f"iteration {self.violations[0]['iteration']}"
        )
        if self.accepted or self.rejected:
            lines.append(
                f"safeguarded Anderson: {self.accepted} accepted step(s), none increasing the "
                f"residual; {self.rejected} rejected, replaced by plain averaged steps"
            )
        for event in self.restarts:
            lines.append(
                f"residual increased at iteration {event['iteration']}: stepsize halved "
                f"{event['old']:.4g} -> {event['new']:.4g} and the check restarted there"
            )
        if self.envelope_ratio is not None:
            lines.append(
                f"o(1/sqrt(k)) envelope: max sqrt(k+1) r_k is {self.envelope_ratio:.3g} x the bound"
            )
        return "\n".join(lines)


class ConvergenceMonitor:
    r"""Record and check the fixed-point residual of a deepinv solver while it runs.

    :meth:`attach` it to a ``deepinv.optim`` solver (``PGD``, ``HQS``, ``DRS``, ``ADMM``,
    ...); every call of the solver then records the residual :math:`r_k` of the governing
    variable per image, and :meth:`report` says whether the run converged, whether the
    residual behaved as the theorem says (up to a round-off tolerance) and how it compares
    with the :math:`O(1/\sqrt{k})` envelope.

    A plain step counts as a violation when
    :math:`r_{k+1} > r_k (1 + \text{rtol}) + \text{atol}\cdot\|v_{k+1}\|`, the second term
    covering the round-off of evaluating :math:`T` (default
    :math:`\text{atol} = 100\,\epsilon` of the dtype, about :math:`10^{-5}` relative in
    float32, :math:`2 \cdot 10^{-14}` in float64). An accepted Anderson step counts as one
    when :math:`r_{k+1} > r_k` or the safeguard's budget is exceeded (no tolerance: the
    safeguard compares the same numbers).

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
        self.safeguard: tuple[float, float] | None = None  # (D, epsilon) of an accelerated run
        self.reset()

    def reset(self) -> None:
        """Forget the recorded run."""
        self.residuals: list[Tensor] = []  # r_k per image, float64
        self.norms: list[Tensor] = []  # ||v_{k+1}|| per image
        self.accelerated: list[Tensor] = []  # v_k was an accepted Anderson step, per image
        self.proposed: list[bool] = []  # an Anderson candidate was checked at step k
        self.restarts: list[dict] = []
        self.start: Tensor | None = None  # v_0
        self.last: Tensor | None = None  # v_K
        self.last_norm: Tensor | None = None
        self._dtype: torch.dtype | None = None
        self._steps = 0

    def attach(self, solver: nn.Module) -> ConvergenceMonitor:
        """Monitor ``solver`` (a ``deepinv.optim.BaseOptim``); returns the monitor.

        A solver reports to one monitor: attaching this monitor again changes nothing, and
        another monitor is refused (the solvers of
        :func:`~deepinv_dynnets.pnp.convergent_pnp` already have theirs, ``solver.monitor``).
        """
        fixed_point = getattr(solver, "fixed_point", None)
        if fixed_point is None or not hasattr(fixed_point, "iterator"):
            raise ValueError(
                f"can only monitor deepinv.optim solvers (with .fixed_point.iterator), got "
                f"{type(solver).__name__}"
            )
        iterator = fixed_point.iterator
        if isinstance(iterator, FixedPointDriver):
            if iterator._monitor[0] is self:  # already attached: keep its driver as it is
                return self
            # Taking over would leave the first monitor silently empty and drop the driver's
            # acceleration, stopping rule and step-size safeguard (convergent_pnp's solvers).
            raise ValueError(
                f"this {type(solver).__name__} already reports to another ConvergenceMonitor "
                "(solver.monitor for the solvers of convergent_pnp); a solver reports to one "
                "monitor: read that one, or build a new solver"
            )
        fixed_point.iterator = FixedPointDriver(iterator, self)

        def reset(module, args):
            self.reset()
            fixed_point.iterator.reset()

        solver.register_forward_pre_hook(reset)
        return self

    def residual(self, previous: dict, current: dict) -> Tensor:
        r""":math:`\|v_{k+1} - v_k\|` per image (float64, on the CPU)."""
        v_prev = governing(previous, self.variable).detach()
        v = governing(current, self.variable).detach()
        diff = (v - v_prev).reshape(v.shape[0], -1).to(torch.float64)
        return torch.linalg.vector_norm(diff, dim=1).cpu()

    def _atol(self, dtype: torch.dtype) -> float:
        eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
        return 100 * eps if self.atol is None else float(self.atol)

    def increased(self, previous: Tensor, residual: Tensor, current: dict) -> Tensor:
        """Per image: ``residual`` exceeds ``previous`` beyond the plain-step tolerance."""
        v = governing(current, self.variable).detach()
        norm = torch.linalg.vector_norm(v.reshape(v.shape[0], -1).to(torch.float64), dim=1)
        return residual > previous * (1 + self.rtol) + self._atol(v.dtype) * norm.cpu()

    def record(self, previous: dict, current: dict) -> None:
        """Record one plain step from the solver's state dicts."""
        self._steps += 1
        if self.skip_first and self._steps == 1:
            return
        residual = self.residual(previous, current)
        self.record_step(previous, current, residual, torch.zeros_like(residual, dtype=torch.bool))

    def record_step(
        self,
        previous: dict,
        current: dict,
        residual: Tensor,
        accepted: Tensor,
        restart: tuple[float, float] | None = None,
        proposed: bool = False,
    ) -> None:
        """Record the residual :math:`r_k` of the iterate :math:`v_k` (``previous``) whose
        image under the map is ``current``; ``accepted``: per image, :math:`v_k` is an
        accepted Anderson step; ``restart``: the ``(old, new)`` stepsize if the step was
        recomputed with a smaller stepsize; ``proposed``: an Anderson candidate was checked."""
        v_prev = governing(previous, self.variable).detach()
        v = governing(current, self.variable).detach()
        if self.start is None:
            self.start = v_prev.clone()
        self._dtype = v.dtype
        self.residuals.append(residual)
        self.last_norm = torch.linalg.vector_norm(
            v.reshape(v.shape[0], -1).to(torch.float64), dim=1
        ).cpu()
        self.norms.append(self.last_norm)
        self.accelerated.append(accepted.cpu())
        self.proposed.append(bool(proposed))
        if restart is not None:
            old, new = restart
            self.restarts.append({"iteration": len(self.residuals) - 1, "old": old, "new": new})
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
        accelerated = torch.stack(self.accelerated)
        restarted = torch.zeros(r.shape[0], dtype=torch.bool)
        for event in self.restarts:
            restarted[event["iteration"]] = True
        plain_allowed = r[:-1] * (1 + self.rtol) + self._atol(self._dtype) * norms[1:]
        bad_plain = ~accelerated[1:] & (r[1:] > plain_allowed)
        bad_anderson = accelerated[1:] & (r[1:] > r[:-1])
        if self.safeguard is not None and bool(accelerated.any()):
            # the budget D r_0 (n + 1)^-(1 + eps), with r_0 and n counted since the last restart
            scale, eps = self.safeguard
            segment = torch.cumsum(restarted.long(), 0)
            first = torch.stack([r[(segment == segment[k]).nonzero()[0, 0]] for k in range(len(r))])
            counts = torch.zeros_like(r)
            for k in range(1, r.shape[0]):
                counts[k] = 0 if restarted[k] else counts[k - 1] + accelerated[k - 1].double()
            budget = scale * first * (counts + 1).pow(-(1 + eps))
            bad_anderson |= accelerated[1:] & (r[1:] > budget[1:])
        bad = (bad_plain | bad_anderson) & ~restarted[1:, None]
        violations = [
            {
                "iteration": k + 1,
                "image": i,
                "residual": float(r[k + 1, i]),
                "previous": float(r[k, i]),
                "step": "anderson" if bool(accelerated[k + 1, i]) else "plain",
            }
            for k, i in bad.nonzero().tolist()
        ]
        relative = r[-1] / norms[-1].clamp_min(1e-12)
        final = float(relative.mean())
        envelope = None
        plain_run = not bool(accelerated.any()) and not self.restarts and not any(self.proposed)
        if self.alpha is not None and plain_run:
            k = torch.arange(1, r.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
            distance = torch.linalg.vector_norm(
                (self.start - self.last).reshape(r.shape[1], -1).to(torch.float64).cpu(), dim=1
            )
            bound = math.sqrt(self.alpha / (1 - self.alpha)) * distance
            ratio = (k.sqrt() * r).max(dim=0).values / bound.clamp_min(1e-300)
            envelope = float(ratio.max())
        proposed = torch.tensor(self.proposed)
        rejected = int((proposed[:, None] & ~accelerated).sum())
        return MonitorReport(
            converged=final < self.threshold,
            iterations=int(r.shape[0]),
            final_residual=final,
            monotone=not violations,
            violations=violations,
            envelope_ratio=envelope,
            threshold=self.threshold,
            accepted=int(accelerated.sum()),
            rejected=rejected,
            restarts=list(self.restarts),
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
