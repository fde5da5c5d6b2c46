"""Training on two gloo processes over the loopback, as ``torchrun`` starts them.

The processes are forked from the test (no new interpreter has to import torch) and get
the environment ``torchrun`` gives its workers (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), so the ``dynnets`` commands detect the launch exactly as
under ``torchrun``. Checked: the losses of a global batch shared by two processes are those
of one process on that batch (float64: equal to round-off; float32 through the command
line: within 1e-4), the record and the model card say ``world_size: 2``, the Euler blocks'
step bounds are the same on both processes, and a run resumes with another number of
processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor

from deepinv_dynnets import SympFlow
from deepinv_dynnets.cli import main
from deepinv_dynnets.dynamics import AveragedEulerStep
from deepinv_dynnets.models import EulerDenoiser
from deepinv_dynnets.systems import HarmonicOscillator
from deepinv_dynnets.training import train_denoiser, train_unsupervised
from deepinv_dynnets.training.distributed import (
    distributed_run,
    launched_by_torchrun,
    mean_over_processes,
    shard,
    shard_weight,
)
from deepinv_dynnets.training.runs import run_denoiser_training, run_flow_training

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available())
    or "fork" not in multiprocessing.get_all_start_methods(),
    reason="needs torch.distributed with gloo and the fork start method",
)

WORLD = 2
# One global batch of 5 patches: shards of 2 and 3 (weighted by shard_weight); the epoch's
# 12 patches make batches of 5, 5 and 2.
DENOISER = dict(batch_size=5, patch_size=16, patches_per_image=4, progress=False)
FLOW = dict(epochs=8, n_points=7, progress=False, seed=3)  # shards of 3 and 4 points
# The same runs through the command line (float32).
CLI_DENOISER = [
    "train-denoiser", "--width", "4", "--hidden", "4", "--n-blocks", "2", "--epochs", "2",
    "--batch-size", "8", "--patch-size", "16", "--patches-per-image", "4", "--quiet",
]  # fmt: skip
CLI_FLOW = [
    "train-sympflow", "--system", "harmonic-oscillator", "--layers", "1", "--width", "4",
    "--epochs", "6", "--n-points", "16", "--n-eval", "2", "--quiet",
]  # fmt: skip
# float32 runs on 1 and 2 processes sum a batch's errors in another order (round-off of
# 1e-7 relative), which the steps carry into the weights; measured: at most 1.2e-7
# relative on these runs. float64 runs agree to 4e-16 (tested at 1e-12).
FLOAT32_RTOL = 1e-5


class _Interrupted(Exception):
    pass


def _make_folder(path, sizes, seed: int) -> str:
    """Smooth grey images of the given (H, W) sizes."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        a, b, c = rng.uniform(1, 4, 3)
        image = 0.5 + 0.4 * np.sin(3 * a * xx + c) * np.cos(3 * b * yy)
        Image.fromarray((255 * image).astype(np.uint8)).save(path / f"img{i}.png")
    return str(path)


def _tiny_euler() -> EulerDenoiser:
    torch.manual_seed(0)
    return EulerDenoiser(in_channels=1, width=4, hidden=4, n_blocks=2).double()


def _interrupt_after(model: torch.nn.Module, n_calls: int) -> None:
    """Make ``model`` raise at training forward ``n_calls + 1``: a run killed mid-epoch."""
    forward, calls = model.forward, [0]

    def failing_forward(x, sigma=None):
        calls[0] += model.training
        if calls[0] > n_calls:
            raise _Interrupted
        return forward(x, sigma)

    model.forward = failing_forward


def _record_step_bounds(model: torch.nn.Module) -> list[Tensor]:
    """The step bounds nu_i each training forward used (a block stores the nu it used)."""
    used = []

    def hook(block, args, output):
        if block.training:
            used.append(block.nu.clone())

    for block in model.modules():
        if isinstance(block, AveragedEulerStep):
            block.register_forward_hook(hook)
    return used


def _flow(dtype=torch.float64) -> SympFlow:
    torch.manual_seed(0)
    return SympFlow(2, n_layers=1, width=4).to(dtype)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _worker(rank: int, ports: list[int], folders: dict) -> None:
    """One process of the two: the environment torchrun gives, then three runs."""
    torch.set_num_threads(1)
    env = dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    os.environ.update(env, MASTER_ADDR="127.0.0.1")
    train, val, tmp = folders["train"], folders["val"], folders["tmp"]

    # 1. the commands, as `torchrun --nproc_per_node 2 -m deepinv_dynnets ...` runs them
    os.environ["MASTER_PORT"] = str(ports[0])
    args = ["--data", train, "--val", val, "--out", f"{tmp}/cli_denoiser"]
    assert main(CLI_DENOISER + args) == 0
    os.environ["MASTER_PORT"] = str(ports[1])
    assert main(CLI_FLOW + ["--out", f"{tmp}/cli_flow"]) == 0

    # 2. the library in float64, in one process group
    os.environ["MASTER_PORT"] = str(ports[2])
    with distributed_run("cpu"):
        # a denoiser run killed in epoch 3 (after 2 checkpointed epochs): its state
        model = _tiny_euler()
        _interrupt_after(model, 7)  # 3 steps per epoch: the 2nd step of epoch 3
        used = _record_step_bounds(model)
        try:
            train_denoiser(model, train, val, epochs=3, checkpoint=f"{tmp}/denoiser.pt", **DENOISER)
        except _Interrupted:
            pass
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        torch.save((model.state_dict(), buffers, used), f"{tmp}/denoiser_rank{rank}.pt")
        # a flow run resumed on two processes from a one-process checkpoint
        flow = _flow()
        record = train_unsupervised(
            flow, HarmonicOscillator(), checkpoint=f"{tmp}/flow.pt", resume=True, **FLOW
        )
        torch.save((flow.state_dict(), record.history), f"{tmp}/flow_rank{rank}.pt")
        # the mean over the processes that the records hold
        torch.save(mean_over_processes(torch.tensor([float(rank)])), f"{tmp}/mean{rank}.pt")


def _run_two_processes(tmp_path, folders: dict) -> None:
    context = torch.multiprocessing.start_processes(
        _worker, args=(_free_ports(3), folders), nprocs=WORLD, join=False, start_method="fork"
    )
    try:
        while not context.join(timeout=120):
            pass
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


class _FailingOscillator(HarmonicOscillator):
    """Raises at call ``fail_at`` of ``sample``: a run killed in the middle."""

    def __init__(self, fail_at: int):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def sample(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise _Interrupted
        return super().sample(*args, **kwargs)


def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path):
    assert not launched_by_torchrun()  # the test itself is a single process
    train = _make_folder(tmp_path / "train", [(37, 31), (33, 41), (40, 35)], seed=0)
    val = _make_folder(tmp_path / "val", [(29, 35), (31, 27)], seed=1)
    # one process, killed in epoch 5 of 8 with a checkpoint at epoch 4: two resume it
    with pytest.raises(_Interrupted):
        train_unsupervised(
            _flow(), _FailingOscillator(5), checkpoint=tmp_path / "flow.pt", checkpoint_every=4,
            **FLOW,
        )  # fmt: skip
    folders = {"train": train, "val": val, "tmp": str(tmp_path)}
    _run_two_processes(tmp_path, folders)

    assert [float(torch.load(tmp_path / f"mean{r}.pt")) for r in range(WORLD)] == [0.5] * WORLD

    # -- the denoiser (float64): two processes = one on the same global batches ----------
    single = _tiny_euler()
    _interrupt_after(single, 7)
    used = _record_step_bounds(single)
    with pytest.raises(_Interrupted):
        train_denoiser(single, train, val, epochs=3, checkpoint=tmp_path / "one.pt", **DENOISER)
    two = torch.load(tmp_path / "denoiser.pt", weights_only=True)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    assert two["epoch"] == one["epoch"] == 2
    assert two["record"]["world_size"] == WORLD and one["record"]["world_size"] == 1
    for a, b in zip(two["record"]["history"], one["record"]["history"], strict=True):
        assert a["world_size"] == WORLD and "world_size" not in b
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
        for level, value in b["val_psnr"].items():  # validation shared by the processes
            assert a["val_psnr"][level] == pytest.approx(value, rel=1e-12)
    # The step bounds nu that every training forward used: the same on both processes
    # (rank 0's vectors, broadcast at every forward, and the same calls on both, validation
    # included) and those of one process; the same for the final buffers.
    (weights0, buffers0, used0), (weights1, buffers1, used1) = (
        torch.load(tmp_path / f"denoiser_rank{r}.pt", weights_only=True) for r in range(WORLD)
    )
    assert len(used0) == len(used1) == len(used) == 7 * 2  # 7 steps, 2 blocks
    for nu0, nu1, nu in zip(used0, used1, used, strict=True):
        assert torch.equal(nu0, nu1)
        torch.testing.assert_close(nu0, nu, rtol=1e-10, atol=0)
    for name, value in buffers0.items():
        assert torch.equal(value, buffers1[name]), name
        torch.testing.assert_close(value, dict(single.named_buffers())[name], rtol=1e-10, atol=0)
    for name, value in weights0.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, weights1[name]), name
            torch.testing.assert_close(value, single.state_dict()[name], rtol=1e-10, atol=1e-12)

    # ... and one process resumes what two began: the uninterrupted run, to the cold start
    # of the power vectors after loading (see test_denoiser_training)
    resumed = _tiny_euler()
    record = train_denoiser(
        resumed, train, val, epochs=3, checkpoint=tmp_path / "denoiser.pt", resume=True,
        **DENOISER,
    )  # fmt: skip
    full = _tiny_euler()
    reference = train_denoiser(full, train, val, epochs=3, **DENOISER)
    assert record.world_size == 1 and [h.get("world_size", 1) for h in record.history] == [2, 2, 1]
    assert record.train_losses == pytest.approx(reference.train_losses, rel=1e-6)
    assert record.certificate["method"] == reference.certificate["method"]
    assert record.certificate["lipschitz"] <= 1 and record.certificate["alpha"] <= 0.5

    # -- the flow (float64): resumed on two processes = the uninterrupted one-process run --
    reference_flow = _flow()
    reference = train_unsupervised(reference_flow, HarmonicOscillator(), **FLOW)
    (weights0, history0), (weights1, history1) = (
        torch.load(tmp_path / f"flow_rank{r}.pt", weights_only=True) for r in range(WORLD)
    )
    assert [h.get("world_size", 1) for h in history0] == [1] * 4 + [2] * 4
    for a, b in zip(history0, reference.history, strict=True):
        for key in ("loss", "residual", "matching"):
            assert a[key] == pytest.approx(b[key], rel=1e-10)
    for name, value in weights0.items():
        assert torch.equal(value, weights1[name]), name
        torch.testing.assert_close(value, reference_flow.state_dict()[name], rtol=1e-9, atol=0)

    # -- the commands (float32): records, cards, losses of one process --------------------
    cli = json.loads((tmp_path / "cli_denoiser" / "record.json").read_text())
    card = json.loads((tmp_path / "cli_denoiser" / "model.json").read_text())
    assert cli["world_size"] == card["world_size"] == WORLD
    one = run_denoiser_training(
        train, tmp_path / "one_denoiser", architecture=dict(width=4, hidden=4, n_blocks=2),
        training=dict(val_folder=val, epochs=2, batch_size=8, patch_size=16,
                      patches_per_image=4, progress=False),
    )  # fmt: skip
    assert [h["loss"] for h in cli["history"]] == pytest.approx(one.train_losses, rel=FLOAT32_RTOL)
    assert cli["certificate"]["method"] == one.certificate["method"]
    assert cli["certificate"]["alpha"] == pytest.approx(one.certificate["alpha"], rel=FLOAT32_RTOL)
    cli = json.loads((tmp_path / "cli_flow" / "record.json").read_text())
    card = json.loads((tmp_path / "cli_flow" / "flow.json").read_text())
    assert cli["world_size"] == card["world_size"] == WORLD
    one = run_flow_training(
        "harmonic-oscillator", tmp_path / "one_flow", architecture=dict(n_layers=1, width=4),
        training=dict(epochs=6, n_points=16, progress=False), n_eval=2,
    )  # fmt: skip
    assert [h["loss"] for h in cli["history"]] == pytest.approx(one.train_losses, rel=FLOAT32_RTOL)


def test_shards_cover_the_batch_and_weights_give_its_mean():
    for n in range(2, 12):
        for processes in (1, 2, 3):
            if n < processes:
                continue
            parts = [shard(n, r, processes) for r in range(processes)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
            # DDP's mean over processes of the weighted shard means = the batch mean
            values = torch.arange(n, dtype=torch.float64) ** 2
            weighted = [
                shard_weight(s, n, processes) * values[p].mean()
                for s, p in zip(sizes, parts, strict=True)
            ]
            assert float(sum(weighted) / processes) == pytest.approx(float(values.mean()))


def test_a_batch_smaller_than_the_processes_is_refused(tmp_path, monkeypatch):
    # world_size() reads the process group; a fake one of 4 processes, for the checks only
    monkeypatch.setattr("deepinv_dynnets.training.denoiser.world_size", lambda: 4)
    monkeypatch.setattr("deepinv_dynnets.training.flow.world_size", lambda: 4)
    train = _make_folder(tmp_path / "train", [(37, 31), (33, 41), (40, 35)], seed=0)
    with pytest.raises(ValueError, match="batch_size 3 is the global batch"):
        train_denoiser(_tiny_euler(), train, epochs=1, batch_size=3, progress=False)
    with pytest.raises(ValueError, match="last batch of an epoch would have 2 patches"):
        train_denoiser(  # 12 patches in batches of 5: a last batch of 2 for 4 processes
            _tiny_euler(), train, epochs=1, batch_size=5, patch_size=16, patches_per_image=4,
        )  # fmt: skip
    with pytest.raises(ValueError, match="num_workers must be 0"):
        train_denoiser(_tiny_euler(), train, epochs=1, batch_size=8, num_workers=1)
    with pytest.raises(ValueError, match="n_points = 3 is smaller than the number of processes"):
        train_unsupervised(_flow(), HarmonicOscillator(), epochs=1, n_points=3)
