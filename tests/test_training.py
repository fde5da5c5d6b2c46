"""Training loops: losses go down, checkpoints resume, the PINN baseline trains too."""

import json

import pytest
import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import NeuralFlow, PINNFlow
from deepinv_dynnets.flows.training import (
    hamiltonian_matching_loss,
    residual_loss,
    train_supervised,
    train_unsupervised,
    trajectory_data,
)
from deepinv_dynnets.systems import HarmonicOscillator, HenonHeiles


def test_residual_is_zero_for_the_exact_flow():
    # The harmonic oscillator's flow is a rotation: a flow that is exact has residual 0,
    # and one that is off by a little has a residual of the expected size.
    class Rotation(NeuralFlow):
        dim, dt = 2, 1.0

        def __init__(self, speed):
            super().__init__()
            self.speed = speed

        def network(self, t, x):
            return self.network_with_time_derivative(t, x)[0]

        def network_with_time_derivative(self, t, x):
            w = self.speed * torch.as_tensor(t, dtype=x.dtype).expand(x.shape[:-1])
            c, s = torch.cos(w), torch.sin(w)
            q, p = x[..., 0], x[..., 1]
            y = torch.stack([c * q + s * p, c * p - s * q], -1)
            return y, self.speed * torch.stack([y[..., 1], -y[..., 0]], -1)

    x0 = torch.randn(50, 2, dtype=torch.float64)
    t = torch.rand(50, dtype=torch.float64)
    assert residual_loss(Rotation(1.0), HarmonicOscillator(), t, x0) < 1e-28
    # a 1 % faster rotation: residual = 0.01^2 |y|^2 on average
    expected = (1e-2 * x0.norm(dim=-1)) ** 2
    torch.testing.assert_close(
        residual_loss(Rotation(1.01), HarmonicOscillator(), t, x0), expected.mean()
    )


def test_unsupervised_training_reduces_both_losses():
    torch.manual_seed(0)
    system = HarmonicOscillator()
    flow = SympFlow(2, n_layers=2, width=8)
    x0 = system.sample(256, generator=torch.Generator().manual_seed(5))
    t = torch.rand(256)
    before = (
        residual_loss(flow, system, t, x0).item(),
        hamiltonian_matching_loss(flow, system, t, x0).item(),
    )
    record = train_unsupervised(flow, system, epochs=300, n_points=256, lr=1e-2, progress=False)
    after = (
        residual_loss(flow, system, t, x0).item(),
        hamiltonian_matching_loss(flow, system, t, x0).item(),
    )
    assert after[0] < before[0] / 20 and after[1] < before[1] / 5
    assert len(record.history) == 300 and {"residual", "matching"} <= set(record.history[-1])


def test_pinn_baseline_trains_with_the_same_loop():
    torch.manual_seed(0)
    system = HarmonicOscillator()
    pinn = PINNFlow(2, width=16, depth=2)
    x0 = system.sample(128, generator=torch.Generator().manual_seed(5))
    t = torch.rand(128)
    before = residual_loss(pinn, system, t, x0).item()
    train_unsupervised(
        pinn, system, epochs=150, n_points=128, lr=1e-2, matching=False, progress=False
    )
    assert residual_loss(pinn, system, t, x0).item() < before / 5
    assert torch.equal(pinn.network(0.0, x0), x0)  # N(0, x0) = x0 exactly


def test_supervised_training_on_noisy_segments():
    torch.manual_seed(0)
    system = HarmonicOscillator()
    x0, t, y = trajectory_data(
        system, 64, 5, noise_std=0.01, generator=torch.Generator().manual_seed(1)
    )
    assert (t > 0).all() and (t <= 1).all()
    flow = SympFlow(2, n_layers=2, width=8)
    first = train_supervised(flow, x0, t, y, epochs=300, batch_size=64, lr=1e-2, progress=False)
    assert first.history[-1]["mse"] < first.history[0]["mse"] / 10


def test_checkpoint_resume_continues_the_same_run(tmp_path):
    system = HarmonicOscillator()
    ckpt = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    full = SympFlow(2, n_layers=1, width=4)
    torch.manual_seed(0)
    half = SympFlow(2, n_layers=1, width=4)
    train_unsupervised(full, system, epochs=20, n_points=32, progress=False)
    train_unsupervised(
        half, system, epochs=10, n_points=32, progress=False, checkpoint=ckpt, checkpoint_every=10
    )
    # a new run resuming from the checkpoint picks up at epoch 10
    torch.manual_seed(0)
    resumed = SympFlow(2, n_layers=1, width=4)
    record = train_unsupervised(
        resumed, system, epochs=20, n_points=32, progress=False, checkpoint=ckpt, resume=True
    )
    assert len(record.history) == 20
    assert [h["epoch"] for h in record.history] == list(range(1, 21))


def test_record_to_json(tmp_path):
    record = train_unsupervised(
        SympFlow(2, n_layers=1, width=4),
        HarmonicOscillator(),
        epochs=3,
        n_points=16,
        progress=False,
    )
    record.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["settings"]["epochs"] == 3 and data["seconds_per_epoch"] > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="matching=True needs a SympFlow"):
        train_unsupervised(PINNFlow(2), HarmonicOscillator(), epochs=1, progress=False)
    with pytest.raises(ValueError, match="does not match"):
        train_unsupervised(SympFlow(2), HenonHeiles(), epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train_unsupervised(SympFlow(2), HarmonicOscillator(), epochs=0, progress=False)
    x0, t, y = trajectory_data(HarmonicOscillator(), 4, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, flow.dt\]"):
        train_supervised(SympFlow(2, dt=0.5), x0, t, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="expected x0"):
        train_supervised(SympFlow(2), x0, t[:, :2], y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="noise_std"):
        trajectory_data(HarmonicOscillator(), 4, 3, noise_std=-1)


def test_trajectory_data_matches_the_exact_oscillator_solution():
    x0, t, y = trajectory_data(
        HarmonicOscillator(), 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    q0, p0 = x0[:, :1], x0[:, 1:]
    exact = torch.stack(
        [q0 * torch.cos(t) + p0 * torch.sin(t), p0 * torch.cos(t) - q0 * torch.sin(t)], -1
    )
    torch.testing.assert_close(y, exact, atol=1e-8, rtol=0)


def test_lbfgs_refinement_lowers_the_loss_and_keeps_the_dtype():
    torch.manual_seed(0)
    system = HarmonicOscillator()
    flow = SympFlow(2, n_layers=1, width=8)
    train_unsupervised(flow, system, epochs=100, n_points=128, lr=1e-2, progress=False)
    from deepinv_dynnets.flows.training import refine_lbfgs

    losses = refine_lbfgs(flow, system, steps=60, n_points=256, progress=False)
    assert losses[-1] < losses[0] and next(flow.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="matching=True needs a SympFlow"):
        refine_lbfgs(PINNFlow(2), system, steps=20, progress=False)


def test_pinn_time_derivative_matches_autograd():
    pinn = PINNFlow(4, width=8, depth=2).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64, requires_grad=True)
    _, dy = pinn.network_with_time_derivative(t, x)
    for k in range(4):
        (g,) = torch.autograd.grad(pinn.network(t, x)[:, k].sum(), t)
        torch.testing.assert_close(dy[:, k], g, atol=1e-12, rtol=0)
