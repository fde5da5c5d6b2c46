"""The shipped Hénon–Heiles SympFlows with Delta t = 1/2 and 1/4: card, symplecticity,
bounded energy.

Their cards report mean energy errors of about 4e-5 (Delta t = 1/2, 1 orbit of 500 leaving
the well) and 2.4e-5 (Delta t = 1/4, none) from t = 1 to t = 1000 on the benchmark's 500
initial conditions; here 64 others to t = 100 must stay below three times that (measured:
4.0e-5 and 2.3e-5; the Delta t = 1 flow gives 5.9e-4), where a freshly initialised flow is
off by about 8-10.
"""

import pytest
import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.pretrained import SHIPPED, WEIGHTS_DIR, read_card
from deepinv_dynnets.systems import HenonHeiles

# name, file, Delta t, bound on the mean energy error at t = 100, orbits of the card's
# evaluation that leave the well
FLOWS = [
    ("henon-heiles-dt05", "sympflow_henon_heiles_dt05.pt", 0.5, 1.2e-4, 1),
    ("henon-heiles-dt025", "sympflow_henon_heiles_dt025.pt", 0.25, 7e-5, 0),
]


@pytest.mark.parametrize(("name", "file", "dt", "bound", "left"), FLOWS)
def test_registered_with_its_card(name, file, dt, bound, left):
    assert SHIPPED["sympflow"][name] == file
    card = read_card(WEIGHTS_DIR / file)
    flow = SympFlow.from_pretrained(name)
    assert flow.dt == dt and flow.config == card["config"]
    assert card["command"].startswith("dynnets train-sympflow --system henon-heiles")
    assert f"--dt {dt:g}" in card["command"] and "--no-matching" in card["command"]
    assert card["settings"]["matching"] is False
    assert card["long_time_evaluation"]["times"][-1] == 1000.0
    assert card["long_time_evaluation"]["left_well"] == left


@pytest.mark.parametrize(("name", "file", "dt", "bound", "left"), FLOWS)
def test_symplectic_in_float64(name, file, dt, bound, left, jacobian):
    flow = SympFlow.from_pretrained(name).double()
    n = 2
    omega = torch.zeros(4, 4, dtype=torch.float64)
    omega[:n, n:], omega[n:, :n] = torch.eye(n), -torch.eye(n)
    points = HenonHeiles().sample(
        3, generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )
    for t, y in zip((0.2, 0.5, 3.3), points, strict=True):
        D = jacobian(lambda z, t=t: flow.map(t, z), y)
        torch.testing.assert_close(D.T @ omega @ D, omega, atol=1e-10, rtol=0)


def _energy_error_t100(flow: SympFlow) -> float:
    system = HenonHeiles()
    y0 = system.sample(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = torch.tensor([0.0, 100.0], dtype=torch.float64)
    with torch.no_grad():
        y = flow.double()(y0, grid)[-1]
    return float((system.energy(y) - system.energy(y0)).abs().mean())


@pytest.mark.parametrize(("name", "file", "dt", "bound", "left"), FLOWS)
def test_energy_error_at_t_100_is_small_and_an_untrained_flow_misses_it(
    name, file, dt, bound, left
):
    assert _energy_error_t100(SympFlow.from_pretrained(name)) < bound
    torch.manual_seed(0)
    assert _energy_error_t100(SympFlow(4, n_layers=3, width=16, dt=dt)) > bound
