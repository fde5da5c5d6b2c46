"""What a training run did: one record, which is also the model card of shipped weights."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

__all__ = ["TrainingRecord", "cpu_name", "hardware", "world_size", "relative_path"]


def cpu_name() -> str:
    """The CPU's model name (for the hardware line of records and benchmarks).

    :Examples:

        >>> from deepinv_dynnets.training import cpu_name
        >>> isinstance(cpu_name(), str)
        True
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device | str = "cpu") -> str:
    """The hardware line of a record: the CPU and its torch threads, or the GPU's name.

    :Examples:

        >>> from deepinv_dynnets.training import hardware
        >>> "thread" in hardware("cpu")
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (GPU), host {cpu_name()}"
    return f"{cpu_name()}, {torch.get_num_threads()} thread(s)"


def world_size() -> int:
    """The number of training processes (``torch.distributed``'s world size, else 1)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def relative_path(path: str | Path | None, root: str | Path | None) -> str | None:
    """``path`` relative to ``root`` (POSIX separators), for records that do not name the
    machine they were made on; a path outside ``root`` keeps only its last part.

    :Examples:

        >>> from deepinv_dynnets.training import relative_path
        >>> relative_path("/data/train/bsd400", "/data"), relative_path("/elsewhere/x", "/data")
        ('train/bsd400', 'x')
    """
    if path is None:
        return None
    resolved = Path(os.path.abspath(path))
    if root is not None:
        try:
            return resolved.relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            pass
    return resolved.name


@dataclass
class TrainingRecord:
    r"""What a training run did; written as JSON beside the weights it made (their card).

    :param dict settings: the arguments of the training function, the data sizes, and data
        folders relative to the data folder (see :func:`relative_path`).
    :param list[dict] history: per epoch: ``epoch`` (1-based), ``loss``, ``lr`` (learning
        rate used), ``time_s``, and what the trainer adds (loss terms, ``val_psnr`` as
        ``{"15": dB, ...}``).
    :param float wall_time_s: training time, summed over resumes.
    :param dict | None certificate: for networks with certified constants, the summary of
        :func:`~deepinv_dynnets.certify` after training.
    :param list[float] lbfgs_history: losses of an L-BFGS refinement (flows).
    :param str | None command: the command that made the run, to reproduce it.
    :param str | None hardware: see :func:`hardware`.
    :param int world_size: number of training processes.
    :param str torch: the PyTorch version.
    :param dict extra: anything else the card states (e.g. an evaluation).

    :Examples:

        >>> from deepinv_dynnets.training import TrainingRecord
        >>> record = TrainingRecord(settings={}, wall_time_s=3.0, history=[
        ...     {"epoch": 1, "loss": 0.01, "val_psnr": {"25": 27.0}},
        ...     {"epoch": 2, "loss": 0.005, "val_psnr": {"25": 28.0}}])
        >>> record.val_psnr, record.seconds_per_epoch
        ([{'25': 27.0}, {'25': 28.0}], 1.5)
    """

    settings: dict
    history: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    certificate: dict | None = None
    lbfgs_history: list[float] = field(default_factory=list)
    command: str | None = None
    hardware: str | None = None
    world_size: int = 1
    torch: str = str(torch.__version__)
    extra: dict = field(default_factory=dict)

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall time of one epoch."""
        return self.wall_time_s / max(len(self.history), 1)

    @property
    def train_losses(self) -> list[float]:
        """The training loss of every epoch."""
        return [e["loss"] for e in self.history]

    @property
    def val_psnr(self) -> list[dict[str, float]]:
        """The validation PSNRs of every epoch (empty without validation)."""
        return [e["val_psnr"] for e in self.history if "val_psnr" in e]

    def to_dict(self) -> dict:
        """The record as plain JSON-able data (``extra`` merged at the top level)."""
        data = asdict(self)
        extra = data.pop("extra")
        return data | {"seconds_per_epoch": self.seconds_per_epoch} | extra

    def to_json(self, path: str | Path) -> None:
        """Write the record as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, data: dict) -> TrainingRecord:
        """The record of :meth:`to_dict` (unknown keys go to ``extra``)."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names and k != "extra"}
        extra = {k: v for k, v in data.items() if k not in names and k != "seconds_per_epoch"}
        return cls(**known, extra=dict(data.get("extra", {})) | extra)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainingRecord:
        """Read a record written by :meth:`to_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
