"""Learned flows and systems refuse bad input before any work, with errors naming it."""

import pytest
import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import base
from deepinv_dynnets.systems import Kepler

F64 = torch.float64


@pytest.fixture
def flow():
    return SympFlow(4, n_layers=1, width=4)


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -float("inf")])
def test_map_refuses_non_finite_times(flow, bad):
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="t must be a finite time"):
        flow.map(bad, x)
    with pytest.raises(ValueError, match="t must be a finite time"):
        flow.map(torch.tensor(bad), x)
    with pytest.raises(ValueError, match="t0 must be a finite time"):
        flow.map(1.0, x, t0=bad)
    with pytest.raises(ValueError, match="t must be a finite time"):
        flow.inverse_map(bad, x)


def test_map_refuses_times_that_are_not_one_real_number(flow):
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match=r"t must be a single time, got a tensor of shape \(2,\)"):
        flow.map(torch.tensor([1.0, 2.0]), x)
    with pytest.raises(ValueError, match="t must be a real"):
        flow.map("1.0", x)
    with pytest.raises(ValueError, match="t must be a real floating-point time"):
        flow.map(torch.tensor(1), x)


def test_dtype_mismatch_with_the_flow_is_a_clear_type_error(flow):
    y0 = torch.rand(2, 4, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    with pytest.raises(TypeError, match=r"y0 has dtype torch.float64 but the SympFlow's"):
        flow(y0, t)
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        flow.map(1.0, y0)
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        flow.hamiltonian(0.5, y0)
    with pytest.raises(TypeError, match="y has dtype torch.float64"):
        flow.vector_field(torch.tensor(0.5, dtype=F64), y0)
    # after converting, it runs
    assert flow.double()(y0, t).dtype == F64


@pytest.mark.parametrize("shape", [(2, 3), (2, 6), (5,)])
def test_vector_field_and_hamiltonian_refuse_wrong_state_shapes(flow, shape):
    y = torch.rand(shape)
    with pytest.raises(ValueError, match="y must have last dimension 4"):
        flow.vector_field(torch.tensor(0.5), y)
    with pytest.raises(ValueError, match="x must have"):
        flow.hamiltonian(0.5, y)


def test_vector_field_and_hamiltonian_refuse_wrong_time_shapes(flow):
    y = torch.rand(3, 4)
    with pytest.raises(ValueError, match=r"t must be a number or a tensor broadcasting"):
        flow.vector_field(torch.rand(2), y)
    with pytest.raises(ValueError, match=r"t must be a number or a tensor broadcasting"):
        flow.hamiltonian(torch.rand(5), y)
    with pytest.raises(ValueError, match=r"t must be a number or a tensor broadcasting"):
        flow.hamiltonian(torch.rand(1, 3), y)  # would broadcast the output to (1, 3)
    with pytest.raises(ValueError, match="t must be a real number or a tensor"):
        flow.hamiltonian("0.5", y)
    with pytest.raises(ValueError, match="t contains NaN"):
        flow.hamiltonian(float("nan"), y)
    with pytest.raises(ValueError, match="y must be a floating-point"):
        flow.vector_field(torch.tensor(0.5), torch.ones(3, 4, dtype=torch.int64))
    assert flow.hamiltonian(torch.rand(3), y).shape == (3,)  # one time per state is fine


def test_odd_phase_space_dimensions_are_refused():
    with pytest.raises(ValueError, match="dim must be an even phase-space dimension"):
        SympFlow(5)
    flow = SympFlow(2, n_layers=1, width=4)
    with pytest.raises(ValueError, match="even last dimension"):
        flow(torch.rand(4, 3), torch.linspace(0, 1, 2))
    with pytest.raises(ValueError, match="even last dimension"):
        flow.map(0.5, torch.rand(3))


def test_kepler_at_the_collision_is_an_error_not_nan():
    kepler = Kepler()
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.3, 0.0]], dtype=F64)
    with pytest.raises(ValueError, match="q = 0"):
        kepler.energy(y)
    with pytest.raises(ValueError, match="q = 0"):
        kepler(torch.tensor(0.0), y)
    with pytest.raises(ValueError, match="q = 0"):
        kepler.reference_trajectory(y, torch.linspace(0, 1, 3, dtype=F64))
    assert torch.isfinite(kepler.energy(y[:1])).all()


def test_long_rollouts_show_a_progress_bar(flow, monkeypatch, capsys):
    y0, t = torch.rand(2, 4), torch.tensor([0.0, 30.0])
    flow(y0, t)
    assert "rollout" not in capsys.readouterr().err  # short: no bar
    monkeypatch.setattr(base, "PROGRESS_MIN_STEPS", 20)
    flow(y0, t)
    err = capsys.readouterr().err
    assert "SympFlow rollout" in err and "/30 " in err
    flow.map(25.0, y0)
    assert "/25 " in capsys.readouterr().err
    flow(y0, t, progress=False)
    assert "rollout" not in capsys.readouterr().err
    monkeypatch.setattr(base, "PROGRESS_MIN_STEPS", 10_000)
    flow(y0, torch.tensor([[0.0, 0.0], [3.0, 5.0]]), progress=True)  # per-sample grids
    assert "/5 " in capsys.readouterr().err


def test_nothing_the_user_passes_is_modified_in_place():
    flow = SympFlow(4, n_layers=2, width=6).double()
    y0 = torch.randn(3, 4, dtype=F64)
    grids = [
        torch.tensor([0.3, 1.7, 4.2], dtype=F64),
        torch.tensor([2.5, 0.2, -1.1], dtype=F64, requires_grad=True),
        torch.tensor([[0.3, 0.0, 1.0], [1.5, -2.0, 1.5]], dtype=F64),
    ]
    copies = [y0.clone()] + [g.detach().clone() for g in grids]
    for t in grids:
        flow(y0, t)
    flow.map(2.3, y0, t0=0.7)
    flow.inverse_map(2.3, y0, t0=0.7)
    flow.hamiltonian(grids[0], y0)
    flow.vector_field(grids[0], y0)
    for original, copy in zip([y0, *grids], copies, strict=True):
        assert torch.equal(original.detach(), copy)
