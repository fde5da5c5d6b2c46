"""SympFlow: symplecticity, identity at t = 0, inverse, its own Hamiltonian, odeint shapes."""

import pytest
import torch
from torchdiffeq import odeint, odeint_adjoint

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import canonical_J


def _random_flow(dim=4, n_layers=3, width=10, std=0.5, dt=1.0):
    flow = SympFlow(dim, n_layers=n_layers, width=width, dt=dt).double()
    for p in flow.parameters():  # far from the identity
        torch.nn.init.normal_(p, std=std)
    return flow


@pytest.mark.parametrize("t", [0.37, 1.0, 2.5, 7.93, -0.6, -3.2])
@pytest.mark.parametrize("dim", [2, 4, 6])
def test_jacobian_is_symplectic_and_unimodular(t, dim, jacobian):
    flow = _random_flow(dim)
    J = canonical_J(dim // 2, dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(dim, dtype=torch.float64)
        D = jacobian(lambda z: flow.map(t, z), x)
        # round-off in D^T J D grows like |D|^2: the tolerance is relative to it
        scale = max(1.0, torch.linalg.matrix_norm(D, ord=2).item() ** 2)
        assert (D.T @ J @ D - J).abs().max() < 1e-12 * scale
        assert abs(torch.linalg.det(D).item() - 1) < 1e-12 * scale**2
        assert (D - torch.eye(dim, dtype=torch.float64)).abs().max() > 1e-3  # not trivial


def test_an_unstructured_map_fails_the_symplectic_check(jacobian):
    # The same check is able to fail.
    mlp = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)
    ).double()
    D = jacobian(lambda z: z + mlp(z), torch.randn(4, dtype=torch.float64))
    J = canonical_J(2, dtype=torch.float64)
    assert (D.T @ J @ D - J).abs().max() > 1e-3


def test_identity_at_time_zero_exactly():
    flow = _random_flow()
    x = torch.randn(10, 4, dtype=torch.float64)
    assert torch.equal(flow.network(0.0, x), x)
    assert torch.equal(flow.map(0.0, x), x)
    assert torch.equal(flow(x, torch.zeros(1, dtype=torch.float64))[0], x)


@pytest.mark.parametrize("t", [0.3, 1.0, 4.6, -2.2])
def test_inverse_of_forward_is_identity(t):
    flow = _random_flow()
    x = torch.randn(20, 4, dtype=torch.float64)
    torch.testing.assert_close(flow.inverse_map(t, flow.map(t, x)), x, atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.map(t, flow.inverse_map(t, x)), x, atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.network_inverse(t, flow.network(t, x)), x, atol=1e-12, rtol=0)


def test_long_time_flow_composes_the_window_map():
    flow = _random_flow(dt=0.5)
    x = torch.randn(5, 4, dtype=torch.float64)
    once = flow.network(0.5, x)
    expected = flow.network(0.2, flow.network(0.5, once))  # t = 1.2 = 0.2 + 2 * 0.5
    torch.testing.assert_close(flow.map(1.2, x), expected, atol=1e-13, rtol=0)
    # group property across periods: psi(t + dt) = psi(t) o N(dt)
    torch.testing.assert_close(flow.map(1.7, x), flow.map(1.2, once), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        flow.map(-0.3, flow.map(0.5, x)), flow.map(0.2, x), atol=1e-12, rtol=0
    )


def test_time_derivative_matches_autograd():
    flow = _random_flow()
    x = torch.randn(7, 4, dtype=torch.float64)
    t = torch.rand(7, dtype=torch.float64, requires_grad=True)
    y, dy = flow.network_with_time_derivative(t, x)
    for k in range(4):
        (g,) = torch.autograd.grad(flow.network(t, x)[:, k].sum(), t)
        torch.testing.assert_close(dy[:, k], g, atol=1e-12, rtol=0)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.99])
def test_own_hamiltonian_generates_the_flow(t):
    # d/dt N(t, x) = J grad H_N(t, N(t, x)), checked by autograd
    flow = _random_flow()
    x = torch.randn(9, 4, dtype=torch.float64)
    tt = torch.full((9,), t, dtype=torch.float64)
    y, dy = flow.network_with_time_derivative(tt, x)
    z = y.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(flow.hamiltonian(tt, z).sum(), z)
    torch.testing.assert_close(flow.vector_field(tt, z), dy, atol=1e-11, rtol=0)
    torch.testing.assert_close(torch.cat([grad[:, 2:], -grad[:, :2]], -1), dy, atol=1e-11, rtol=0)


def test_vector_field_with_dopri5_recovers_the_map():
    flow = _random_flow(std=0.3)
    x0 = torch.randn(6, 4, dtype=torch.float64) * 0.5
    t = torch.tensor([0.0, 0.4, 0.8], dtype=torch.float64)
    y = odeint(flow.vector_field, x0, t, rtol=1e-10, atol=1e-10, method="dopri5")
    torch.testing.assert_close(y, flow(x0, t), atol=1e-6, rtol=0)


def test_vector_field_works_with_odeint_adjoint():
    flow = SympFlow(2, n_layers=1, width=6).double()
    x0 = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.5], dtype=torch.float64)
    func = flow.vector_field
    y = odeint_adjoint(func, x0, t, rtol=1e-9, atol=1e-9, adjoint_params=tuple(func.parameters()))
    y[-1].sum().backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(y[-1], flow.network(0.5, x0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 5, 4)])
def test_shapes_match_torchdiffeq(shape):
    flow = SympFlow(4, n_layers=2, width=6)
    func = flow.vector_field
    y0 = torch.rand(shape)
    t = torch.linspace(0, 2.5, 6)
    ours = flow(y0, t)
    theirs = odeint(func, y0, torch.linspace(0, 0.5, 6))
    assert ours.shape == theirs.shape == (6, *shape)


def test_grids_with_any_start_and_either_direction():
    flow = _random_flow()
    y0 = torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([5.0, 5.5, 7.25, 12.0], dtype=torch.float64)
    out = flow(y0, t)
    torch.testing.assert_close(out[0], y0)
    for i in range(4):
        torch.testing.assert_close(out[i], flow.map(float(t[i] - t[0]), y0), atol=1e-12, rtol=0)
    back = flow(y0, torch.tensor([0.0, -0.7, -2.1], dtype=torch.float64))
    torch.testing.assert_close(back[2], flow.map(-2.1, y0), atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.inverse_map(-2.1, back[2]), y0, atol=1e-11, rtol=0)


def test_float32_and_float64():
    flow = SympFlow(4, n_layers=2, width=6)
    y32 = flow(torch.rand(3, 4), torch.linspace(0, 1, 3))
    assert y32.dtype == torch.float32
    y64 = flow.double()(
        torch.rand(3, 4, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64)
    )
    assert y64.dtype == torch.float64


def test_runs_on_device(device):
    flow = SympFlow(4, n_layers=1, width=4).to(device)
    y0 = torch.rand(2, 4, device=device)
    assert flow(y0, torch.linspace(0, 2, 3, device=device)).device == y0.device


def test_input_is_not_modified():
    flow = _random_flow()
    y0 = torch.randn(4, 4, dtype=torch.float64)
    copy = y0.clone()
    flow(y0, torch.linspace(0, 3, 4, dtype=torch.float64))
    flow.hamiltonian(0.3, y0)
    assert torch.equal(y0, copy)


def test_bad_input():
    flow = SympFlow(4, n_layers=1, width=4)
    t = torch.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="even"):
        SympFlow(3)
    with pytest.raises(ValueError, match="y0 must have an even last dimension"):
        flow(torch.rand(2, 3), t)
    with pytest.raises(ValueError, match="y0"):
        flow(torch.rand(2, 6), t)
    with pytest.raises(ValueError, match="NaN"):
        flow(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), t)
    with pytest.raises(ValueError, match="Inf"):
        flow(torch.tensor([[0.0, float("inf"), 0.0, 0.0]]), t)
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        flow(torch.rand(2, 4), torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="strictly"):
        flow(torch.rand(2, 4), torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        flow(torch.rand(2, 4), torch.rand(2, 3))
    with pytest.raises(ValueError, match="dtype"):
        flow(torch.rand(2, 4), t.double())
    with pytest.raises(ValueError, match="t contains NaN"):
        flow(torch.rand(2, 4), torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="dt"):
        SympFlow(4, dt=0.0)
