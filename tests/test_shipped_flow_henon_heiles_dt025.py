"""The shipped Hénon–Heiles SympFlow with Delta t = 1/4: card, symplecticity, bounded energy.

Its card reports a mean energy error of about 2.4e-5 from t = 1 to t = 1000 on the
benchmark's 500 initial conditions, none of which leaves the well; here 64 others to
t = 100 (400 compositions) must stay below 7e-5, three times that (measured: 2.3e-5; the
Delta t = 1/2 flow gives 4.0e-5, the Delta t = 1 flow 5.9e-4), where a freshly initialised
flow is off by about 8.
"""

import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.pretrained import SHIPPED, WEIGHTS_DIR, read_card
from deepinv_dynnets.systems import HenonHeiles

NAME = "henon-heiles-dt025"


def test_registered_with_its_card():
    assert SHIPPED["sympflow"][NAME] == "sympflow_henon_heiles_dt025.pt"
    card = read_card(WEIGHTS_DIR / "sympflow_henon_heiles_dt025.pt")
    flow = SympFlow.from_pretrained(NAME)
    assert flow.dt == 0.25 and flow.config == card["config"]
    assert card["command"].startswith("dynnets train-sympflow --system henon-heiles")
    assert "--dt 0.25" in card["command"] and "--no-matching" in card["command"]
    assert card["settings"]["matching"] is False
    assert card["long_time_evaluation"]["times"][-1] == 1000.0
    assert card["long_time_evaluation"]["left_well"] == 0


def test_symplectic_in_float64(jacobian):
    flow = SympFlow.from_pretrained(NAME).double()
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


def test_energy_error_at_t_100_is_small_and_an_untrained_flow_misses_it():
    assert _energy_error_t100(SympFlow.from_pretrained(NAME)) < 7e-5
    torch.manual_seed(0)
    untrained = SympFlow(4, n_layers=3, width=16, dt=0.25)
    assert _energy_error_t100(untrained) > 7e-5
