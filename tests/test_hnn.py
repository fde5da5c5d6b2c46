"""The HNN baseline: implicit midpoint flow of a learned energy, and its training."""

import pytest
import torch
from torch.autograd.functional import jacobian

from deepinv_dynnets.flows import HNN, HamiltonianNeuralNetwork, NeuralFlow
from deepinv_dynnets.flows.symplectic import apply_J, canonical_J
from deepinv_dynnets.systems import HarmonicOscillator
from deepinv_dynnets.training import hnn_loss, train_hnn, trajectory_data

F64 = torch.float64


def _random_hnn(dim=4, dt=0.2, std=0.5):
    torch.manual_seed(0)
    hnn = HNN(dim, width=16, depth=2, dt=dt).double()
    for p in hnn.parameters():  # far from a quadratic energy
        torch.nn.init.normal_(p, std=std)
    return hnn


def _symplectic_defect(step, x, n):
    J = canonical_J(n, dtype=F64)
    D = jacobian(step, x)
    return float((D.T @ J @ D - J).abs().max() / (1 + D.norm() ** 2))


@pytest.mark.parametrize("h", [0.05, 0.2, -0.13])
def test_midpoint_step_is_symplectic_and_its_euler_counterpart_is_not(h):
    hnn = _random_hnn()
    for x in 0.7 * torch.randn(4, 4, dtype=F64):
        assert _symplectic_defect(lambda z: hnn.network(h, z), x, 2) < 1e-13
        # the same check fails for an explicit Euler step of the same field
        assert _symplectic_defect(lambda z: z + h * hnn.field(z), x, 2) > 1e-5


def test_inverse_is_the_step_backward_and_per_sample_steps_match_single_ones():
    hnn = _random_hnn()
    x = 0.7 * torch.randn(5, 4, dtype=F64)
    h = torch.tensor([0.2, 0.05, 0.13, 0.0, 0.17], dtype=F64)
    y = hnn.network(h, x)
    torch.testing.assert_close(hnn.network_inverse(h, y), x, atol=1e-13, rtol=0)
    for b in range(5):
        torch.testing.assert_close(
            y[b], hnn.network(float(h[b]), x[b : b + 1])[0], atol=1e-14, rtol=0
        )
    assert torch.equal(y[3], x[3])  # a step of size 0 is the identity


def test_step_solves_the_midpoint_equation_and_time_derivative_matches_differences():
    hnn = _random_hnn()
    x = 0.7 * torch.randn(3, 4, dtype=F64)
    y = hnn.network(0.15, x)
    torch.testing.assert_close(y, x + 0.15 * hnn.field((x + y) / 2), atol=1e-13, rtol=0)
    y2, dy = hnn.network_with_time_derivative(0.15, x)
    torch.testing.assert_close(y2, y, atol=0, rtol=0)
    eps = 1e-6
    fd = (hnn.network(0.15 + eps, x) - hnn.network(0.15 - eps, x)) / (2 * eps)
    torch.testing.assert_close(dy, fd, atol=1e-8, rtol=0)


def test_field_is_J_grad_energy_and_the_rollout_keeps_the_learned_energy_close():
    hnn = _random_hnn(std=0.3)
    x = (0.7 * torch.randn(6, 4, dtype=F64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(hnn.energy(x).sum(), x)
    torch.testing.assert_close(hnn.field(x), apply_J(grad), atol=1e-14, rtol=0)
    with torch.no_grad():
        out = hnn(x.detach(), torch.linspace(0, 20, 101, dtype=F64))
        drift = (hnn.energy(out) - hnn.energy(x.detach())).abs().max()
    assert isinstance(hnn, NeuralFlow) and out.shape == (101, 6, 4)
    assert drift < 1e-2  # symplectic: bounded energy error, O(h^2)


def test_per_sample_grids_and_starts_between_steps():
    hnn = _random_hnn()
    y0 = 0.5 * torch.randn(2, 4, dtype=F64)
    t = torch.tensor([[0.3, -0.1], [0.9, -0.7], [1.35, -1.0]], dtype=F64)
    out = hnn(y0, t)
    for b in range(2):
        torch.testing.assert_close(out[:, b], hnn(y0[b : b + 1], t[:, b])[:, 0], atol=1e-13, rtol=0)
        torch.testing.assert_close(
            out[2, b], hnn.map(float(t[2, b]), y0[b], t0=float(t[0, b])), atol=1e-13, rtol=0
        )


def test_loss_vanishes_on_the_networks_own_midpoint_steps():
    # The loss is the defect of one midpoint step between observations: zero on data the
    # HNN's own integrator produced, with irregular gaps per trajectory.
    hnn = _random_hnn(std=0.3)
    x0 = 0.5 * torch.randn(3, 4, dtype=F64)
    t = torch.tensor([[0.1, 0.15, 0.3], [0.05, 0.2, 0.25], [0.2, 0.22, 0.4]], dtype=F64)
    states, current = [], x0
    previous = torch.zeros(3, dtype=F64)
    for m in range(3):
        current = hnn.network(t[:, m] - previous, current)
        previous = t[:, m]
        states.append(current)
    y = torch.stack(states, dim=1).detach()
    with torch.no_grad():
        assert float(hnn_loss(hnn, x0, t, y)) < 1e-24
        assert float(hnn_loss(hnn, x0, t, y + 1e-3)) > 1e-8


def test_training_on_noisy_irregular_oscillator_data_learns_its_field():
    data = trajectory_data(
        HarmonicOscillator(),
        64,
        6,
        dt=1.5,
        noise_std=0.01,
        noisy_start=True,
        generator=torch.Generator().manual_seed(0),
        dtype=F64,
    )
    copies = [d.clone() for d in data]
    torch.manual_seed(1)
    hnn = HNN(2, width=16, dt=0.1).double()
    before = float(hnn_loss(hnn, *data).detach())
    record = train_hnn(hnn, *data, epochs=300, batch_size=64, lr=1e-2, progress=False)
    after = float(hnn_loss(hnn, *data).detach())
    assert after < 0.05 * before and record.history[-1]["finite_difference"] > 0
    assert all(torch.equal(a, b) for a, b in zip(data, copies, strict=True))
    x = HarmonicOscillator().sample(200, generator=torch.Generator().manual_seed(2), dtype=F64)
    with torch.no_grad():
        error = (hnn.field(x) - apply_J(x)).norm(dim=-1).mean() / x.norm(dim=-1).mean()
    assert error < 0.1


def test_bad_arguments():
    x0, t, y = trajectory_data(HarmonicOscillator(), 4, 3)
    hnn = HNN(2, width=8)
    with pytest.raises(ValueError, match="strictly increasing"):
        train_hnn(hnn, x0, t.clone().index_fill_(1, torch.tensor([0]), 0.0), y, epochs=1)
    with pytest.raises(ValueError, match=r"t\[i\] must be non-decreasing"):
        train_hnn(hnn, x0, t.flip(1), y, epochs=1)
    with pytest.raises(ValueError, match="expected x0"):
        train_hnn(hnn, x0, t[:, :2], y, epochs=1)
    with pytest.raises(ValueError, match="y contains NaN"):
        train_hnn(hnn, x0, t, y.clone().fill_(float("nan")), epochs=1)
    with pytest.raises(ValueError, match="hnn must be a HamiltonianNeuralNetwork"):
        from deepinv_dynnets import SympFlow

        train_hnn(SympFlow(2), x0, t, y, epochs=1)
    with pytest.raises(ValueError, match="dim"):
        HNN(3)
    with pytest.raises(ValueError, match="activation"):
        HNN(2, activation="relu")
    with pytest.raises(ValueError, match="dt"):
        HNN(2, dt=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        HNN(2, max_iter=0)
    assert HamiltonianNeuralNetwork is HNN


def test_a_step_too_large_to_converge_raises():
    hnn = _random_hnn(std=3.0)
    with pytest.raises(RuntimeError, match="did not converge"):
        hnn.network(50.0, torch.randn(4, 4, dtype=F64))


def test_float32_rollout_converges_and_keeps_the_learned_energy():
    # the fixed-point tolerance follows the dtype: float32 steps must converge too
    torch.manual_seed(0)
    hnn = HNN(4, width=32, dt=0.2)
    with torch.no_grad():
        y = hnn(0.5 * torch.rand(8, 4), torch.linspace(0, 50, 51))
        drift = (hnn.energy(y) - hnn.energy(y[0])).abs().max()
    assert y.dtype == torch.float32 and bool(torch.isfinite(y).all()) and drift < 1e-4
