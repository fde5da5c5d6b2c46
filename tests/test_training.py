"""Training loops: losses go down, checkpoints resume, the PINN baseline trains too."""

import json

import pytest
import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import NeuralFlow, PINNFlow
from deepinv_dynnets.systems import HarmonicOscillator, HenonHeiles
from deepinv_dynnets.training import (
    hamiltonian_matching_loss,
    refine_lbfgs,
    residual_loss,
    train_supervised,
    train_unsupervised,
    trajectory_data,
)


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


class _Interrupted(Exception):
    pass


class _FailingOscillator(HarmonicOscillator):
    """Raises at the given call of ``sample``: a run killed in the middle."""

    def __init__(self, fail_at: int):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def sample(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise _Interrupted
        return super().sample(*args, **kwargs)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_resumed_unsupervised_run_equals_the_uninterrupted_one(tmp_path):
    # Killed during epoch 15 of 20 with a checkpoint at epoch 10; the resumed run starts
    # from other initial weights, so it must restore the weights, the optimiser, the
    # schedule and the sampler's generator to end exactly where the uninterrupted run ends.
    system, ckpt = HarmonicOscillator(), tmp_path / "ckpt.pt"
    common = dict(epochs=20, n_points=32, progress=False, seed=3)
    torch.manual_seed(0)
    full = SympFlow(2, n_layers=1, width=4)
    reference = train_unsupervised(full, system, **common)
    torch.manual_seed(0)
    killed = SympFlow(2, n_layers=1, width=4)
    with pytest.raises(_Interrupted):
        train_unsupervised(
            killed, _FailingOscillator(15), checkpoint=ckpt, checkpoint_every=10, **common
        )
    assert torch.load(ckpt, weights_only=True)["epoch"] == 10
    torch.manual_seed(1)
    resumed = SympFlow(2, n_layers=1, width=4)
    record = train_unsupervised(resumed, system, checkpoint=ckpt, resume=True, **common)
    assert [h["epoch"] for h in record.history] == list(range(1, 21))
    assert [h["loss"] for h in record.history] == [h["loss"] for h in reference.history]
    _assert_same_weights(resumed, full)


def test_resumed_supervised_run_equals_the_uninterrupted_one(tmp_path):
    x0, t, y = trajectory_data(
        HarmonicOscillator(), 32, 3, generator=torch.Generator().manual_seed(1)
    )
    ckpt = tmp_path / "ckpt.pt"
    common = dict(epochs=12, batch_size=8, progress=False, checkpoint_every=5)
    torch.manual_seed(0)
    full = SympFlow(2, n_layers=1, width=4)
    train_supervised(full, x0, t, y, **common)
    torch.manual_seed(0)
    first = SympFlow(2, n_layers=1, width=4)
    train_supervised(first, x0, t, y, checkpoint=ckpt, **common)
    # rewind the finished run's file to its epoch-10 state by training again to epoch 10
    torch.manual_seed(0)
    partial = SympFlow(2, n_layers=1, width=4)
    steps = {"n": 0}
    forward = partial.network

    def failing_network(*args):
        steps["n"] += 1
        if steps["n"] > 10:
            raise _Interrupted
        return forward(*args)

    partial.network = failing_network
    with pytest.raises(_Interrupted):
        train_supervised(partial, x0, t, y, checkpoint=ckpt, **common)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 10
    torch.manual_seed(7)
    resumed = SympFlow(2, n_layers=1, width=4)
    train_supervised(resumed, x0, t, y, checkpoint=ckpt, resume=True, **common)
    _assert_same_weights(resumed, full)
    _assert_same_weights(first, full)


def test_corrupt_or_foreign_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    flow = SympFlow(2, n_layers=1, width=4)
    with pytest.raises(ValueError, match="cannot read the training checkpoint"):
        train_unsupervised(flow, HarmonicOscillator(), epochs=2, checkpoint=bad, resume=True)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        train_unsupervised(flow, HarmonicOscillator(), epochs=2, checkpoint=foreign, resume=True)
    other = tmp_path / "other.pt"
    train_unsupervised(
        SympFlow(2, n_layers=1, width=6), HarmonicOscillator(), epochs=1, n_points=8,
        checkpoint=other, progress=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="another architecture"):
        train_unsupervised(flow, HarmonicOscillator(), epochs=2, checkpoint=other, resume=True)
    with pytest.raises(ValueError, match="trains a SympFlow, not a PINNFlow"):
        train_unsupervised(
            PINNFlow(2), HarmonicOscillator(), epochs=2, matching=False, checkpoint=other,
            resume=True,
        )  # fmt: skip


def test_checkpoint_every_few_minutes(tmp_path, monkeypatch):
    # a clock that advances one minute per reading: every epoch is "due"
    from deepinv_dynnets.training import loop

    clock = iter(range(0, 10_000, 60))
    monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(clock)))
    saved = []
    monkeypatch.setattr(loop, "save_checkpoint", lambda *a: saved.append(a[5]))
    train_unsupervised(
        SympFlow(2, n_layers=1, width=4), HarmonicOscillator(), epochs=4, n_points=8,
        checkpoint=tmp_path / "c.pt", checkpoint_every=100, checkpoint_minutes=1.0,
        progress=False,
    )  # fmt: skip
    assert saved == [1, 2, 3, 4]


def test_diverging_loss_stops_before_the_step():
    flow = SympFlow(2, n_layers=1, width=4)
    before = [p.detach().clone() for p in flow.parameters()]

    class Exploding(HarmonicOscillator):
        def energy(self, y):
            return super().energy(y) * float("nan")

    with pytest.raises(FloatingPointError, match="diverged at epoch 1"):
        train_unsupervised(flow, Exploding(), epochs=3, n_points=8, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(flow.parameters(), before, strict=True))


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


def test_training_record_round_trip_and_card_fields(tmp_path):
    from deepinv_dynnets.training import TrainingRecord, relative_path

    record = TrainingRecord(
        settings={"train_folder": relative_path(tmp_path / "data" / "train", tmp_path / "data")},
        history=[{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}],
        wall_time_s=4.0,
        command="dynnets train-sympflow --system pendulum",
        hardware="some CPU, 1 thread(s)",
        extra={"system": "pendulum"},
    )
    record.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["system"] == "pendulum" and data["seconds_per_epoch"] == 2.0
    assert data["world_size"] == 1 and data["settings"]["train_folder"] == "train"
    assert TrainingRecord.from_json(tmp_path / "r.json") == record
    assert record.train_losses == [0.5, 0.25]
    # a folder outside the data folder keeps only its name, never the machine's path
    assert relative_path("/home/someone/images", "/work/data") == "images"
