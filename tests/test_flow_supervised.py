"""Supervised flows on noisy, irregularly sampled trajectories (issue 16, item 1)."""

import pytest
import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import PINNFlow
from deepinv_dynnets.flows.evaluation import flow_errors
from deepinv_dynnets.systems import HarmonicOscillator
from deepinv_dynnets.training import supervised_loss, train_supervised, trajectory_data

F64 = torch.float64


@pytest.mark.parametrize("model", ["sympflow", "pinn"])
def test_loss_on_long_irregular_times_is_the_per_sample_rollout(model):
    # Beyond the window the loss composes the flow; its predictions must be the public
    # rollout flow(x0, t) on one grid per trajectory (starting at time 0).
    torch.manual_seed(0)
    if model == "sympflow":
        flow = SympFlow(2, n_layers=2, width=8, dt=0.5).double()
    else:
        flow = PINNFlow(2, width=8, depth=2, dt=0.5).double()
    x0, t, y = trajectory_data(
        HarmonicOscillator(), 5, 4, dt=1.7, generator=torch.Generator().manual_seed(1), dtype=F64
    )
    assert float(t.max()) > 3 * flow.dt  # several compositions
    grid = torch.cat([torch.zeros(1, 5, dtype=F64), t.T])  # (M + 1, N), one grid each
    with torch.no_grad():
        pred = flow(x0, grid)[1:].transpose(0, 1)
        expected = ((pred - y) ** 2).sum(-1).mean()
        torch.testing.assert_close(supervised_loss(flow, x0, t, y), expected, atol=1e-14, rtol=0)


def test_training_on_noisy_irregular_trajectories_recovers_the_oscillator_flow():
    system = HarmonicOscillator()
    data = trajectory_data(
        system,
        64,
        8,
        dt=2.0,
        noise_std=0.01,
        noisy_start=True,
        generator=torch.Generator().manual_seed(0),
        dtype=F64,
    )
    copies = [d.clone() for d in data]
    torch.manual_seed(0)
    flow = SympFlow(2, n_layers=2, width=8, dt=1.0).double()
    with torch.no_grad():
        before = float(supervised_loss(flow, *data))
    record = train_supervised(
        flow, *data, epochs=150, batch_size=64, lr=2e-2, horizon=2.0, progress=False
    )
    with torch.no_grad():
        after = float(supervised_loss(flow, *data))
    assert after < 0.02 * before
    assert record.settings["horizon"] == 2.0
    assert all(torch.equal(a, b) for a, b in zip(data, copies, strict=True))  # not modified
    y0 = system.sample(50, generator=torch.Generator().manual_seed(1), dtype=F64)
    errors = flow_errors(flow, system, y0, times=(1.0, 10.0))
    assert errors["relative_state_error"][0] < 0.05
    assert errors["relative_state_error"][1] < 0.3


def test_noisy_start_adds_noise_to_the_initial_states_only():
    kwargs = dict(noise_std=0.05, dtype=F64)
    clean = trajectory_data(
        HarmonicOscillator(), 50, 3, **kwargs, generator=torch.Generator().manual_seed(4)
    )
    noisy = trajectory_data(
        HarmonicOscillator(),
        50,
        3,
        **kwargs,
        noisy_start=True,
        generator=torch.Generator().manual_seed(4),
    )
    assert torch.equal(clean[1], noisy[1]) and torch.equal(clean[2], noisy[2])
    assert 0.03 < float((noisy[0] - clean[0]).std()) < 0.07


def test_bad_trajectories_are_refused_naming_the_argument():
    x0, t, y = trajectory_data(HarmonicOscillator(), 4, 3, dt=2.0)
    flow = SympFlow(2, n_layers=1, width=4)
    kwargs = dict(epochs=1, progress=False, horizon=2.0)
    with pytest.raises(ValueError, match=r"t\[i\] must be non-decreasing; rows \[1\]"):
        bad = t.clone()
        bad[1] = bad[1].flip(0)
        train_supervised(flow, x0, bad, y, **kwargs)
    with pytest.raises(ValueError, match="expected x0"):
        train_supervised(flow, x0, t.T.contiguous(), y, **kwargs)
    with pytest.raises(ValueError, match="expected x0"):
        train_supervised(flow, x0[:3], t, y, **kwargs)
    for name, index in (("x0", 0), ("t", 1), ("y", 2)):
        data = [x0, t, y]
        data[index] = data[index].clone().fill_(float("nan"))
        with pytest.raises(ValueError, match=f"{name} contains NaN"):
            train_supervised(flow, *data, **kwargs)
    with pytest.raises(ValueError, match=r"t must lie in \[0, flow.dt\].*pass horizon"):
        train_supervised(flow, x0, t, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"t must lie in \[0, horizon\]"):
        train_supervised(flow, x0, t, y, epochs=1, progress=False, horizon=1.5)
    with pytest.raises(ValueError, match="horizon"):
        train_supervised(flow, x0, t, y, epochs=1, progress=False, horizon=-1.0)
    with pytest.raises(ValueError, match="at least one trajectory and one time"):
        train_supervised(flow, x0, t[:, :0], y[:, :0], **kwargs)
    with pytest.raises(ValueError, match="t must be a floating-point"):
        train_supervised(flow, x0, t.long(), y, **kwargs)


def _oscillator_data(n, seed, noise=0.0):
    return trajectory_data(
        HarmonicOscillator(), n, 4, noise_std=noise, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("trainer", ["sympflow", "hnn"])
def test_held_out_loss_keeps_the_best_weights(trainer):
    from deepinv_dynnets.flows import HNN
    from deepinv_dynnets.training import hnn_loss, train_hnn

    torch.manual_seed(0)
    x0, t, y = _oscillator_data(16, 1)
    t = t + 0.05  # positive times, for the HNN's finite differences
    # held-out "trajectories" that stand still: learning the motion makes their loss grow
    vx0, vt, _ = _oscillator_data(8, 2)
    vt = vt + 0.05
    val = (vx0, vt, vx0[:, None].expand(-1, vt.shape[1], -1).clone())
    if trainer == "sympflow":
        flow, train, loss = (
            SympFlow(2, n_layers=1, width=8, dt=1.1),
            train_supervised,
            supervised_loss,
        )
    else:
        flow, train, loss = HNN(dim=2, width=8, dt=0.1), train_hnn, hnn_loss
    record = train(flow, x0, t, y, epochs=30, lr=2e-2, progress=False, val_data=val, val_every=4)
    evaluated = [h for h in record.history if "val_loss" in h]
    assert [h["epoch"] for h in evaluated] == [4, 8, 12, 16, 20, 24, 28, 30]
    losses = [h["val_loss"] for h in evaluated]
    assert losses[-1] > min(losses)  # the run moved away from the held-out data
    best = evaluated[losses.index(min(losses))]
    assert record.extra["best_epoch"] == best["epoch"] < 30
    with torch.no_grad():
        assert float(loss(flow, *val)) == pytest.approx(min(losses), rel=1e-6)
    assert record.settings["n_val_trajectories"] == 8 and record.settings["val_every"] == 4


def test_without_held_out_data_the_last_weights_are_kept():
    torch.manual_seed(0)
    x0, t, y = _oscillator_data(16, 1)
    flow = SympFlow(2, n_layers=1, width=8)
    record = train_supervised(flow, x0, t, y, epochs=5, progress=False)
    assert "best_epoch" not in record.extra
    assert all("val_loss" not in h for h in record.history)


def test_a_resumed_run_starts_its_candidates_from_the_resumed_weights(tmp_path):
    torch.manual_seed(0)
    x0, t, y = _oscillator_data(16, 1)
    vx0, vt, _ = _oscillator_data(8, 2)
    val = (vx0, vt, vx0[:, None].expand(-1, vt.shape[1], -1).clone())
    ckpt = tmp_path / "ckpt.pt"
    flow = SympFlow(2, n_layers=1, width=8)
    common = dict(lr=2e-2, progress=False, checkpoint=ckpt, val_every=100)
    train_supervised(flow, x0, t, y, epochs=10, **common)  # no held-out data yet
    with torch.no_grad():
        resumed_loss = float(supervised_loss(flow, *val))
    record = train_supervised(flow, x0, t, y, epochs=20, resume=True, val_data=val, **common)
    # the only later evaluation (epoch 20) is worse: the resumed epoch-10 weights are kept
    assert record.history[-1]["val_loss"] > resumed_loss
    assert record.extra["best_epoch"] == 10
    assert record.extra["best_val_loss"] == pytest.approx(resumed_loss, rel=1e-6)


@pytest.mark.parametrize(
    "val_data,val_every,match",
    [
        ("xy", 10, "val_data must be a tuple"),
        ((torch.zeros(4, 2), torch.ones(4, 3)), 10, "val_data must be a tuple"),
        ((torch.zeros(4, 3), torch.full((4, 2), 0.5), torch.zeros(4, 2, 3)), 10, "val_data: "),
        ((torch.zeros(4, 2), torch.full((4, 2), 0.5), torch.zeros(5, 2, 2)), 10, "val_data: "),
        ((torch.zeros(4, 2), torch.full((4, 2), 9.0), torch.zeros(4, 2, 2)), 10, "t must lie"),
        (None, 0, "val_every"),
    ],
)
def test_bad_held_out_data_is_refused(val_data, val_every, match):
    x0, t, y = _oscillator_data(4, 1)
    with pytest.raises(ValueError, match=match):
        train_supervised(
            SympFlow(2, n_layers=1, width=4), x0, t, y, epochs=1, progress=False,
            val_data=val_data, val_every=val_every,
        )  # fmt: skip
