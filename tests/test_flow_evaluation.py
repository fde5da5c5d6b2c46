"""time_rollout reports evaluation counts and the thread setting beside its timings."""

import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows.evaluation import time_rollout
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
