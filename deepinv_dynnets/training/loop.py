r"""The training loop shared by the denoisers and the flows, and its resumable checkpoints.

Adam, with a learning rate decaying along a cosine from ``lr`` to ``lr / 100`` over the
run, gradients clipped in norm, a checkpoint every few epochs and/or minutes, a tqdm
progress bar and a :class:`~deepinv_dynnets.training.TrainingRecord`. What an epoch does
(data, loss, validation) is the trainer's ``run_epoch``; the loop owns everything that
makes a run resumable, so that a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._validation import check_positive, check_positive_int
from .distributed import is_main_process, mean_over_processes
from .record import TrainingRecord, world_size

__all__ = ["fit", "check_loop_arguments", "save_checkpoint", "load_checkpoint"]

_FORMAT = "deepinv_dynnets training checkpoint"
_VERSION = 1


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    record: TrainingRecord,
    epoch: int,
    generator: torch.Generator | None = None,
) -> None:
    """Write what a run needs to continue: weights, optimiser, schedule, record, epoch and
    the state of the run's random generator. Only tensors and plain Python values, so that
    :func:`load_checkpoint` reads it with ``weights_only=True``; written to a temporary file
    first, so an interrupted write never destroys the previous checkpoint."""
    state = {
        "format": _FORMAT,
        "version": _VERSION,
        "model_class": type(model).__name__,
        "model": model.state_dict(),
        # running state outside the state dict (e.g. the Euler blocks' power-iteration
        # vectors): without it a resumed run would not continue the same computation
        "buffers": dict(model.named_buffers()),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "record": asdict(record),
        "epoch": int(epoch),
        "generator": None if generator is None else generator.get_state(),
    }
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator | None = None,
) -> tuple[TrainingRecord, int]:
    """Restore a state written by :func:`save_checkpoint`; return ``(record, epoch)``.

    :raises ValueError: the file is not a readable training checkpoint, or was written for
        another kind of model or another architecture.
    """
    device = next(model.parameters()).device
    try:
        state = torch.load(Path(path), map_location=device, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        raise ValueError(f"cannot read the training checkpoint {str(path)!r}: {err}") from err
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not a training checkpoint of deepinv_dynnets")
    if state["model_class"] != type(model).__name__:
        raise ValueError(
            f"the checkpoint {str(path)!r} trains a {state['model_class']}, not a "
            f"{type(model).__name__}"
        )
    try:
        model.load_state_dict(state["model"])
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            for name, value in state["buffers"].items():
                buffers[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(
            f"the checkpoint {str(path)!r} was written for another architecture: {err}"
        ) from err
    scheduler.load_state_dict(state["scheduler"])
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    return TrainingRecord(**state["record"]), int(state["epoch"])


def changed_settings(saved: dict, requested: dict) -> dict:
    """``{key: {"before": saved value, "now": requested value}}`` for the differing keys."""
    return {
        key: {"before": saved.get(key), "now": requested.get(key)}
        for key in sorted(set(saved) | set(requested))
        if saved.get(key) != requested.get(key)
    }


def check_loop_arguments(
    epochs: int,
    lr: float,
    grad_clip: float | None,
    checkpoint_every: int,
    checkpoint_minutes: float | None,
) -> int:
    """Check the arguments of :func:`fit` (trainers call it before loading any data);
    return ``epochs`` as an ``int``."""
    check_positive(lr, "lr")
    if grad_clip is not None:
        check_positive(grad_clip, "grad_clip")
    check_positive_int(checkpoint_every, "checkpoint_every")
    if checkpoint_minutes is not None:
        check_positive(checkpoint_minutes, "checkpoint_minutes")
    return check_positive_int(epochs, "epochs")


def fit(
    model: nn.Module,
    run_epoch: Callable[[int, Callable[[Tensor], None]], dict],
    record: TrainingRecord,
    epochs: int,
    lr: float,
    grad_clip: float | None = 1.0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    checkpoint_minutes: float | None = None,
    resume: bool = False,
    progress: bool = True,
    generator: torch.Generator | None = None,
    finish: Callable[[TrainingRecord], None] | None = None,
) -> TrainingRecord:
    r"""Train ``model`` for ``epochs`` epochs; return the record.

    ``run_epoch(epoch, step)`` runs epoch ``epoch`` (0-based): it calls ``step(loss)`` for
    every optimiser step (zero the gradients, back-propagate, clip to norm ``grad_clip``,
    step Adam; ``step`` returns the loss as a float, averaged over the processes) and
    returns the epoch's history entry (at least ``{"loss": ...}``); the loop adds
    ``epoch``, ``lr`` and ``time_s`` (and ``world_size`` with several processes). Its randomness must come from ``generator`` or
    depend only on the epoch: the generator's state is checkpointed, so a resumed run draws
    what an uninterrupted one would have drawn.

    A checkpoint (:func:`save_checkpoint`) is written every ``checkpoint_every`` epochs,
    whenever ``checkpoint_minutes`` have passed since the last one, and at the end, after
    ``finish(record)`` (e.g. a calibration) has run with the model in eval mode. With
    ``resume=True`` and an existing ``checkpoint`` the run continues from its epoch, with
    the record it saved; the record's ``extra["resumes"]`` lists each resume's epoch and
    the settings that differ from the saved ones (e.g. a precision changed on another
    machine), so that a card never claims one setting for the whole run.

    With several processes (:mod:`~deepinv_dynnets.training.distributed`) every process
    runs the loop; ``loss`` is evaluated through
    :func:`~deepinv_dynnets.training.distributed.objective`, so that the gradients are
    averaged before clipping and every process takes the same step. Only rank 0 writes
    checkpoints and shows the progress bar; every process reads the checkpoint when
    resuming (a shared file system), with any number of processes; the record's
    ``world_size`` is that of the latest run.

    :raises FloatingPointError: a loss that is not finite (before the step that would
        spoil the weights).
    :raises ValueError: bad ``epochs``, ``lr``, ``grad_clip``, ``checkpoint_every`` or
        ``checkpoint_minutes``; an unreadable checkpoint.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.training import TrainingRecord, fit
        >>> model = torch.nn.Linear(2, 1)
        >>> x, y = torch.randn(16, 2), torch.randn(16, 1)
        >>> def run_epoch(epoch, step):
        ...     loss = ((model(x) - y) ** 2).mean()
        ...     step(loss)
        ...     return {"loss": loss.item()}
        >>> record = fit(model, run_epoch, TrainingRecord(settings={}), epochs=3, lr=0.01,
        ...              progress=False)
        >>> [h["epoch"] for h in record.history]
        [1, 2, 3]
    """
    epochs = check_loop_arguments(epochs, lr, grad_clip, checkpoint_every, checkpoint_minutes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=lr / 100)
    start = 0
    if checkpoint is not None and resume and Path(checkpoint).is_file():
        requested = record.settings
        record, start = load_checkpoint(checkpoint, model, optimizer, scheduler, generator)
        record.extra.setdefault("resumes", []).append(
            {"epoch": start, "changed_settings": changed_settings(record.settings, requested)}
        )
    processes = world_size()
    record.world_size = processes
    writes = checkpoint is not None and is_main_process()
    progress = progress and is_main_process()

    def save(epoch: int) -> None:
        save_checkpoint(checkpoint, model, optimizer, scheduler, record, epoch, generator)

    current = start

    def step(loss: Tensor) -> float:
        # the mean over the processes: every process sees the same value, so all of them
        # stop together on a non-finite loss
        value = mean_over_processes(loss)
        if not bool(torch.isfinite(value)):
            raise FloatingPointError(f"training diverged at epoch {current + 1}: loss {value}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return float(value)

    model.train()
    last_save = time.perf_counter()
    bar = tqdm(
        range(start, epochs), disable=not progress, desc="epochs", initial=start, total=epochs
    )
    for current in bar:
        tic = time.perf_counter()
        lr_used = optimizer.param_groups[0]["lr"]
        entry = run_epoch(current, step)
        scheduler.step()
        entry = {"epoch": current + 1, "lr": lr_used} | entry
        if processes > 1:
            entry["world_size"] = processes
        entry["time_s"] = time.perf_counter() - tic
        record.wall_time_s += entry["time_s"]
        record.history.append(entry)
        if progress:
            postfix = {"loss": f"{entry['loss']:.3e}"}
            postfix |= {f"psnr{k}": f"{v:.2f}" for k, v in entry.get("val_psnr", {}).items()}
            bar.set_postfix(postfix, refresh=False)
        due = checkpoint_minutes is not None and (
            time.perf_counter() - last_save >= 60 * checkpoint_minutes
        )
        if writes and current + 1 < epochs and ((current + 1) % checkpoint_every == 0 or due):
            save(current + 1)
            last_save = time.perf_counter()
    model.eval()
    if finish is not None:
        finish(record)
    if writes:
        save(epochs)
    if processes > 1:
        torch.distributed.barrier()  # the final checkpoint exists when any process returns
    return record
