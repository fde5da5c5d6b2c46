"""Resumable training checkpoints, shared by the flow and the denoiser training loops."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn


def save_training_state(
    path: str | Path, model: nn.Module, optimizer, scheduler, record, epoch: int, **extra
) -> None:
    """Write the model, optimiser, scheduler, record (a dataclass) and epoch to ``path``."""
    state = {
        "model": model.state_dict(),
        "config": getattr(model, "config", None),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "record": asdict(record),
        "epoch": epoch,
    }
    torch.save(state | extra, path)


def load_training_state(
    path: str | Path, model: nn.Module, optimizer, scheduler, map_location="cpu"
) -> tuple[dict, int]:
    """Restore a state written by :func:`save_training_state`; return ``(record, epoch)``.

    The file is our own (it holds optimiser state and a record), so it is unpickled in full.
    """
    state = torch.load(Path(path), map_location=map_location, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["record"], int(state["epoch"])
