"""Learned flows and time: the flow from t[0] (torchdiffeq semantics), d/dt, per-sample grids."""

import math

import pytest
import torch
from torchdiffeq import odeint

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import PINNFlow

F64 = torch.float64


def _random_flow(dim=4, n_layers=2, width=8, std=0.3, dt=1.0):
    flow = SympFlow(dim, n_layers=n_layers, width=width, dt=dt).double()
    for p in flow.parameters():  # far from the identity
        torch.nn.init.normal_(p, std=std)
    return flow


def _odeint_reference(flow, y0, t):
    """dopri5 on the flow's own (dt-periodic, hence jumping) field, told where it jumps."""
    lo, hi = float(t.min()), float(t.max())
    jumps = flow.dt * torch.arange(math.floor(lo / flow.dt) + 1, math.ceil(hi / flow.dt), dtype=F64)
    return odeint(
        flow.vector_field,
        y0,
        t,
        rtol=1e-12,
        atol=1e-12,
        method="dopri5",
        options={"jump_t": jumps},
    )


@pytest.mark.parametrize(("t0", "direction"), [(0.0, 1.0), (0.3, -1.0), (2.7, 1.0), (-1.5, -1.0)])
def test_call_agrees_with_odeint_of_its_own_field_from_any_start(t0, direction):
    # y0 is the state at time t[0]; the learned field is time-dependent, so this only holds
    # if the flow is propagated from t[0] (before, it started at 0: gaps of 5e-4).
    flow = _random_flow()
    y0 = 0.5 * torch.randn(2, 4, dtype=F64)
    t = t0 + direction * torch.tensor([0.0, 0.4, 1.3], dtype=F64)  # across a multiple of dt
    ours = flow(y0, t)
    assert torch.equal(ours[0], y0)
    torch.testing.assert_close(ours, _odeint_reference(flow, y0, t), atol=1e-9, rtol=0)


def test_map_from_t0_is_a_two_time_flow():
    flow = _random_flow(dt=0.5)
    x = torch.randn(5, 4, dtype=F64)
    # psi(t <- s) o psi(s <- r) = psi(t <- r), and psi(t <- s) inverts psi(s <- t)
    torch.testing.assert_close(
        flow.map(2.9, flow.map(0.8, x, t0=-0.35), t0=0.8),
        flow.map(2.9, x, t0=-0.35),
        atol=1e-12,
        rtol=0,
    )
    torch.testing.assert_close(
        flow.inverse_map(2.9, flow.map(2.9, x, t0=0.8), t0=0.8), x, atol=1e-12, rtol=0
    )
    torch.testing.assert_close(flow.map(0.8, x, t0=0.8), x, atol=1e-13, rtol=0)


def test_gradient_with_respect_to_the_times():
    # d out[i]/d t[i] = f(t[i], out[i]); d/d t[0] through the flow's inverse (finite
    # differences). Before, the gradient was silently None.
    flow = _random_flow()
    y0 = 0.5 * torch.randn(3, 4, dtype=F64)
    t = torch.tensor([0.3, 1.0, 2.0, 2.6], dtype=F64, requires_grad=True)
    out = flow(y0, t)
    v = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * v).sum(), t)
    field = flow.vector_field
    for i in range(1, 4):
        expected = (v[i] * field(t[i].detach(), out[i].detach())).sum()
        torch.testing.assert_close(grad[i], expected, atol=1e-12, rtol=0)

    def objective(t0):
        grid = t.detach().clone()
        grid[0] = t0
        return (flow(y0, grid) * v).sum()

    h = 1e-6
    fd = (objective(0.3 + h) - objective(0.3 - h)) / (2 * h)
    torch.testing.assert_close(grad[0], fd, atol=1e-7, rtol=0)
    # map: d/dt psi(t, x) = f(t, psi(t, x))
    s = torch.tensor(2.4, dtype=F64, requires_grad=True)
    y = flow.map(s, y0)
    (g,) = torch.autograd.grad((y * v[0]).sum(), s)
    torch.testing.assert_close(g, (v[0] * field(2.4, y.detach())).sum(), atol=1e-12, rtol=0)


def test_per_sample_grids_match_one_call_per_sample():
    flow = _random_flow()
    y0 = 0.5 * torch.randn(3, 4, dtype=F64)
    t = torch.tensor(
        [[0.0, 0.3, 2.7], [0.5, -0.4, 3.7], [2.5, -2.0, 3.9], [4.0, -3.7, 9.1]], dtype=F64
    )  # column b: the grid of y0[b], each its own start and direction
    out = flow(y0, t)
    assert out.shape == (4, 3, 4)
    for b in range(3):  # each agrees with odeint, by the test above
        torch.testing.assert_close(out[:, b], flow(y0[b], t[:, b]), atol=1e-12, rtol=0)


def test_per_sample_grids_with_batch_shape_and_gradient():
    flow = _random_flow()
    y0 = 0.5 * torch.randn(2, 3, 4, dtype=F64)
    t = (0.3 * torch.rand(5, 2, 3, dtype=F64) + 0.1).cumsum(0) - 0.7
    t.requires_grad_(True)
    out = flow(y0, t)
    assert out.shape == (5, 2, 3, 4)
    torch.testing.assert_close(
        out[:, 1, 2], flow(y0[1, 2], t[:, 1, 2].detach()), atol=1e-12, rtol=0
    )
    v = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * v).sum(), t)
    expected = (v[3] * flow.vector_field(t[3].detach(), out[3].detach())).sum(-1)
    torch.testing.assert_close(grad[3], expected, atol=1e-12, rtol=0)


def test_per_sample_grid_errors():
    flow = _random_flow()
    y0 = torch.randn(3, 4, dtype=F64)
    with pytest.raises(ValueError, match=r"t must be a 1-D grid, or one grid per initial state"):
        flow(y0, torch.rand(5, 2, dtype=F64))
    bad = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 1.0], [2.0, -2.0, 0.5]], dtype=F64)
    with pytest.raises(ValueError, match=r"each grid t\[:, b\] must be strictly"):
        flow(y0, bad)
    with pytest.raises(ValueError, match="t contains NaN"):
        flow(y0, torch.tensor([[0.0] * 3, [1.0, float("nan"), 1.0]], dtype=F64))
    with pytest.raises(ValueError, match="dtype"):
        flow(y0, torch.zeros(2, 3))


def test_flows_without_inverse_refuse_what_needs_one():
    pinn = PINNFlow(dim=2, width=8, depth=1).double()
    y0 = torch.randn(4, 2, dtype=F64)
    out = pinn(y0, torch.tensor([2.0, 2.5, 4.0], dtype=F64))  # from a multiple of dt: fine
    torch.testing.assert_close(out[-1], pinn.map(4.0, y0, t0=2.0), atol=1e-13, rtol=0)
    with pytest.raises(ValueError, match="only start at a multiple of its dt"):
        pinn(y0, torch.tensor([0.3, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="cannot run backward"):
        pinn(y0, torch.tensor([2.0, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="cannot run backward"):
        pinn(y0, torch.tensor([[1.0] * 4, [0.0, 2.0, 3.0, 4.0]], dtype=F64))
