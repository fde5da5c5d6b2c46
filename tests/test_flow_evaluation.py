"""The timers report evaluation counts, CPU time and the thread setting beside wall times."""

import torch
from torchdiffeq import odeint

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows.evaluation import time_long_rollout, time_odeint, time_rollout
from deepinv_dynnets.flows.fast_rollout import kernel_available
from deepinv_dynnets.systems import HarmonicOscillator


def test_time_rollout_counts_the_work_of_both_sides():
    flow = SympFlow(2, n_layers=1, width=4, dt=0.5)
    calls = []

    class Spy(HarmonicOscillator):
        def forward(self, t, y):
            calls.append(1)
            return super().forward(t, y)

    timing = time_rollout(flow, Spy(), torch.rand(20, 2, dtype=torch.float64), T=3.0)
    assert timing["compositions"] == 6
    assert timing["odeint_evaluations"] == len(calls) > 0
    assert timing["threads"] == torch.get_num_threads()
    assert timing["flow_s"] > 0 and timing["odeint_s"] > 0
    assert timing["flow_cpu_s"] >= 0 and timing["odeint_cpu_s"] >= 0


def test_time_odeint_returns_the_solution_it_timed():
    system = HarmonicOscillator()
    y0 = torch.rand(5, 2, dtype=torch.float64)
    t = torch.linspace(0, 4, 5, dtype=torch.float64)
    loose, states = time_odeint(system, y0, t, rtol=1e-4)
    tight, _ = time_odeint(system, y0, t, rtol=1e-9)
    assert torch.equal(states, odeint(system, y0, t, rtol=1e-4, atol=1e-9))
    assert 0 < loose["odeint_evaluations"] < tight["odeint_evaluations"]
    assert loose["threads"] == torch.get_num_threads()


def test_time_long_rollout_reports_what_ran():
    flow = SympFlow(2, n_layers=1, width=4)
    y0 = torch.rand(8, 2)
    with torch.no_grad():
        expected = flow(y0, torch.arange(0, 31, dtype=torch.float32))[-1]
    timing = time_long_rollout(flow, HarmonicOscillator(), y0, T=30.0)
    assert timing["compositions"] == 30 and timing["states"] == 8
    assert timing["compiled"] == kernel_available()  # tanh, CPU, 8 states, no graph
    energy = (HarmonicOscillator().energy(expected) - HarmonicOscillator().energy(y0)).abs()
    assert timing["energy_error"] == energy.mean().item()
