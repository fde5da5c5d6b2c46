r"""Measuring a learned flow against the true system: accuracy, energy, speed."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor
from torchdiffeq import odeint

from ..systems import HamiltonianSystem
from .base import NeuralFlow

__all__ = ["flow_errors", "time_odeint", "time_rollout", "time_long_rollout"]


@torch.no_grad()
def flow_errors(
    flow: NeuralFlow,
    system: HamiltonianSystem,
    y0: Tensor,
    times: Sequence[float] = (1.0, 10.0, 100.0),
    reference: Tensor | None = None,
) -> dict[str, list[float]]:
    r"""Mean relative state error and mean absolute energy error of the flow at ``times``.

    The reference is ``system.reference_trajectory`` (float64, rtol = atol = 1e-10) on the
    grid ``[0, *times]``, unless given. The flow runs in float64 on a float64 copy of
    ``y0``.

    :param NeuralFlow flow: the learned flow (float64 recommended).
    :param HamiltonianSystem system: the true system.
    :param torch.Tensor y0: initial states ``(N, 2n)``.
    :param times: increasing positive evaluation times.
    :param torch.Tensor reference: optional precomputed reference ``(1 + len(times), N, 2n)``.
    :return: ``{"times", "relative_state_error", "energy_error", "energy_error_max"}``, one
        entry per time, where the state error is
        :math:`\mathrm{mean}_i\|\psi(t, y_i) - y_i(t)\|/\|y_i(t)\|` and the energy error
        :math:`\mathrm{mean}_i|H(\psi(t, y_i)) - H(y_i)|`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> from deepinv_dynnets.flows.evaluation import flow_errors
        >>> flow = SympFlow.from_pretrained("harmonic-oscillator").double()
        >>> y0 = HarmonicOscillator().sample(10, dtype=torch.float64)
        >>> sorted(flow_errors(flow, HarmonicOscillator(), y0, times=(1.0,)))
        ['energy_error', 'energy_error_max', 'relative_state_error', 'times']
    """
    y0 = y0.to(torch.float64)
    grid = torch.tensor([0.0, *times], dtype=torch.float64, device=y0.device)
    if reference is None:
        reference = system.reference_trajectory(y0, grid)
    out = flow(y0, grid)
    e0 = system.energy(y0)
    result: dict[str, list[float]] = {
        "times": list(times),
        "relative_state_error": [],
        "energy_error": [],
        "energy_error_max": [],
    }
    for k in range(1, len(grid)):
        rel = (out[k] - reference[k]).norm(dim=-1) / reference[k].norm(dim=-1)
        de = (system.energy(out[k]) - e0).abs()
        result["relative_state_error"].append(rel.mean().item())
        result["energy_error"].append(de.mean().item())
        result["energy_error_max"].append(de.max().item())
    return result


@torch.no_grad()
def time_odeint(
    system: HamiltonianSystem,
    y0: Tensor,
    t: Tensor,
    rtol: float = 1e-8,
    atol: float = 1e-9,
    method: str = "dopri5",
) -> tuple[dict[str, float], Tensor]:
    r"""Wall time, CPU time and vector-field evaluations of ``torchdiffeq.odeint`` on the
    true system.

    The whole batch ``y0`` is integrated at once in its dtype (so an adaptive solver takes
    one step size for all states); ``atol`` defaults to torchdiffeq's own.

    :param HamiltonianSystem system: the true system (its ``forward`` is the ``func``).
    :param torch.Tensor y0: initial states ``(N, 2n)``.
    :param torch.Tensor t: the output times, as for ``odeint``.
    :return: ``({"odeint_s", "odeint_cpu_s", "odeint_evaluations", "threads"}, states)``:
        the process's CPU time beside the wall time (on a loaded machine the wall time
        grows, the CPU time of a one-thread run much less), the number of (batched)
        evaluations of the vector field, PyTorch's thread setting, and the states
        ``(len(t), N, 2n)``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> from deepinv_dynnets.flows.evaluation import time_odeint
        >>> y0 = torch.rand(10, 2, dtype=torch.float64)
        >>> timing, ys = time_odeint(HarmonicOscillator(), y0, torch.linspace(0, 1, 3).double())
        >>> ys.shape, timing["odeint_evaluations"] > 0
        (torch.Size([3, 10, 2]), True)
    """
    counted = _CountingField(system)
    tic, cpu = time.perf_counter(), time.process_time()
    states = odeint(counted, y0, t, rtol=rtol, atol=atol, method=method)
    timing = {
        "odeint_s": time.perf_counter() - tic,
        "odeint_cpu_s": time.process_time() - cpu,
        "odeint_evaluations": counted.evaluations,
        "threads": torch.get_num_threads(),
    }
    return timing, states


@torch.no_grad()
def time_rollout(
    flow: NeuralFlow,
    system: HamiltonianSystem,
    y0: Tensor,
    T: float = 100.0,
    rtol: float = 1e-8,
    atol: float = 1e-9,
    method: str = "dopri5",
    flow_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    r"""Wall time of the flow's rollout to ``T`` against ``torchdiffeq.odeint`` on the true field.

    Both produce the states at the integer multiples of the flow's :math:`\Delta t` up to
    ``T`` for all of ``y0`` at once, measured in the same call: ``odeint`` in ``y0``'s dtype
    (``atol`` defaults to torchdiffeq's own), the flow in ``flow_dtype`` (default: ``y0``'s;
    the flow is converted in place).

    :return: ``{"flow_s", "flow_cpu_s", "odeint_s", "odeint_cpu_s", "speedup",
        "compositions", "odeint_evaluations", "threads", "max_state_gap"}``: the CPU times
        are the process's (see :func:`time_odeint`), ``compositions`` counts the flow's
        applications of :math:`\mathcal N(\Delta t)` (each on the whole batch),
        ``odeint_evaluations`` the solver's (batched) evaluations of the true vector field,
        ``threads`` PyTorch's thread setting during the call, and the gap is the largest
        distance between the two rollouts at ``T``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> from deepinv_dynnets.flows.evaluation import time_rollout
        >>> flow = SympFlow.from_pretrained("harmonic-oscillator")
        >>> timing = time_rollout(flow, HarmonicOscillator(), torch.rand(100, 2), T=5.0)
        >>> timing["compositions"], timing["odeint_evaluations"] > 0
        (5, True)
    """
    steps = int(round(T / flow.dt))
    grid = flow.dt * torch.arange(steps + 1, dtype=y0.dtype, device=y0.device)
    dtype = flow_dtype or y0.dtype
    flow.to(dtype)
    x0, flow_grid = y0.to(dtype), grid.to(dtype)
    flow(x0[:2], flow_grid[:2])  # warm-up outside the timing
    tic, cpu = time.perf_counter(), time.process_time()
    ours = flow(x0, flow_grid)
    flow_s, flow_cpu_s = time.perf_counter() - tic, time.process_time() - cpu
    solver, theirs = time_odeint(system, y0, grid, rtol=rtol, atol=atol, method=method)
    return {
        "flow_s": flow_s,
        "flow_cpu_s": flow_cpu_s,
        **solver,
        "speedup": solver["odeint_s"] / flow_s,
        "compositions": steps,
        "max_state_gap": (ours[-1].to(theirs) - theirs[-1]).norm(dim=-1).max().item(),
    }


@torch.no_grad()
def time_long_rollout(
    flow: NeuralFlow, system: HamiltonianSystem, y0: Tensor, T: float = 1e5
) -> dict[str, float]:
    r"""Wall time of the flow's rollout of a few states to a long horizon ``T``.

    The states are recorded at every multiple of the flow's :math:`\Delta t` (the flow in
    ``y0``'s dtype; no progress bar), as for an energy or phase-portrait plot.

    :return: ``{"flow_s", "flow_cpu_s", "compositions", "states", "threads", "compiled",
        "energy_error"}``: wall and process CPU time, ``compositions`` applications of
        :math:`\mathcal N(\Delta t)` per state, whether the compiled loop ran (``compiled``),
        and the mean
        :math:`|H(\psi(T, y_i)) - H(y_i)|` of the true system.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> from deepinv_dynnets.flows.evaluation import time_long_rollout
        >>> flow = SympFlow.from_pretrained("harmonic-oscillator")
        >>> timing = time_long_rollout(flow, HarmonicOscillator(), torch.rand(8, 2), T=50.0)
        >>> timing["compositions"], timing["states"]
        (50, 8)
    """
    steps = int(round(T / flow.dt))
    grid = flow.dt * torch.arange(steps + 1, dtype=y0.dtype, device=y0.device)
    flow.to(y0.dtype)
    flow(y0, grid[:2], progress=False)  # warm-up (and the compiled loop's first build)
    tic, cpu = time.perf_counter(), time.process_time()
    out = flow(y0, grid, progress=False)
    flow_s, flow_cpu_s = time.perf_counter() - tic, time.process_time() - cpu
    use_kernel = getattr(flow, "_use_kernel", None)
    return {
        "flow_s": flow_s,
        "flow_cpu_s": flow_cpu_s,
        "compositions": steps,
        "states": y0.shape[0] if y0.dim() > 1 else 1,
        "threads": torch.get_num_threads(),
        "compiled": bool(use_kernel(y0)) if use_kernel is not None else False,
        "energy_error": (system.energy(out[-1]) - system.energy(y0)).abs().mean().item(),
    }


class _CountingField(torch.nn.Module):
    """A vector field that counts its evaluations."""

    def __init__(self, field: torch.nn.Module):
        super().__init__()
        self.field, self.evaluations = field, 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.evaluations += 1
        return self.field(t, y)
