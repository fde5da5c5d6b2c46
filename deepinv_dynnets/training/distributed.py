r"""Training with several processes: ``torchrun`` and DistributedDataParallel.

A run started by ``torchrun`` (which sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``) trains
one model on :math:`W` processes: :func:`distributed_run` opens the process group (gloo on
a CPU, NCCL on GPUs, one GPU per process) and closes it at the end, and the trainers
evaluate their loss through :func:`objective`, which wraps the model in
``torch.nn.parallel.DistributedDataParallel`` (gradients averaged over the processes at
every backward; buffers, such as the Euler blocks' step bounds :math:`\nu_i` and their
power-iteration vectors, broadcast from rank 0 at every training forward).

The convention is that of a *global* batch: a trainer's ``batch_size`` (or ``n_points``)
is the number of samples of one optimiser step, summed over the processes. Every process
draws the same global batch (the same indices and noise as a single process would), and
keeps its shard :func:`shard`; its loss is weighted (:func:`shard_weight`) so that the
average DDP takes over the processes is the mean over the global batch. A run therefore
computes what a single-process run computes, up to floating-point round-off, and can be
resumed with any number of processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .record import world_size

__all__ = [
    "launched_by_torchrun",
    "distributed_run",
    "rank",
    "is_main_process",
    "shard",
    "shard_weight",
    "mean_over_processes",
    "objective",
]

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK`` are set).

    :Examples:

        >>> from deepinv_dynnets.training.distributed import launched_by_torchrun
        >>> isinstance(launched_by_torchrun(), bool)
        True
    """
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


@contextlib.contextmanager
def distributed_run(device: torch.device | str = "cpu") -> Iterator[torch.device]:
    """Open the process group of a ``torchrun`` launch for the block; yield the device.

    Under ``torchrun``, with no process group open yet: the group is initialised from the
    environment (gloo for ``device="cpu"``, NCCL for ``"cuda"``, where each process takes
    the GPU ``LOCAL_RANK``) and destroyed when the block ends. Otherwise (a single
    process, or a group the caller opened) nothing is opened or closed and the device is
    returned as given.

    :param device: ``"cpu"`` or ``"cuda"``.
    :raises ValueError: ``WORLD_SIZE`` or ``RANK`` is not a valid integer, or a process of
        a CUDA run has no GPU ``LOCAL_RANK``.

    :Examples:

        >>> from deepinv_dynnets.training.distributed import distributed_run
        >>> with distributed_run("cpu") as device:  # no torchrun here: one process
        ...     print(device)
        cpu
    """
    device = torch.device(device)
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield device
        return
    try:
        size, local = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
        int(os.environ["RANK"])
    except ValueError as err:
        raise ValueError(f"bad torchrun environment (RANK, LOCAL_RANK, WORLD_SIZE): {err}") from err
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {size}")
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} has no GPU ({torch.cuda.device_count()} visible): use "
                "--nproc_per_node at most the number of GPUs"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank (0 without a process group).

    :Examples:

        >>> from deepinv_dynnets.training.distributed import rank
        >>> rank()
        0
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return rank() == 0


def shard(n: int, process: int | None = None, processes: int | None = None) -> slice:
    """The contiguous part of ``n`` samples that process ``process`` of ``processes``
    trains on (defaults: this process and the world size); parts differ by at most one.

    :Examples:

        >>> from deepinv_dynnets.training.distributed import shard
        >>> [shard(5, r, 2) for r in range(2)]
        [slice(0, 2, None), slice(2, 5, None)]
    """
    process = rank() if process is None else process
    processes = world_size() if processes is None else processes
    return slice(process * n // processes, (process + 1) * n // processes)


def shard_weight(n_shard: int, n: int, processes: int | None = None) -> float:
    r"""The weight :math:`W n_r / n` of a process's mean loss over its ``n_shard`` samples
    of a global batch of ``n`` (:math:`W` = ``processes``, default the world size): DDP
    averages the processes' gradients, and
    :math:`\frac1W\sum_r \frac{W n_r}{n}\,\mathrm{mean}_r = \mathrm{mean}` (1 when the
    shards are equal, and with one process).

    :Examples:

        >>> from deepinv_dynnets.training.distributed import shard_weight
        >>> shard_weight(2, 5, processes=2), shard_weight(3, 5, processes=2)
        (0.8, 1.2)
    """
    processes = world_size() if processes is None else processes
    return processes * n_shard / n


def mean_over_processes(value: Tensor) -> Tensor:
    """The mean of ``value`` over the processes (``value`` itself with one process); a
    detached copy, ``value`` is not modified.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.training.distributed import mean_over_processes
        >>> mean_over_processes(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """
    value = value.detach().clone()
    if world_size() > 1:
        dist.all_reduce(value)
        value /= world_size()
    return value


class _Objective(nn.Module):
    """``loss(model, *args)`` as a module, so that DDP sees its forward (the flows' losses
    call methods other than ``forward``, which DDP would not see)."""

    def __init__(self, model: nn.Module, loss: Callable[..., Tensor]):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, *args) -> Tensor:
        return self.loss(self.model, *args)


def objective(
    model: nn.Module, loss: Callable[..., Tensor], find_unused_parameters: bool = False
) -> Callable[..., Tensor]:
    """``loss(model, *args)`` as a function of ``args``; with several processes, evaluated
    through ``DistributedDataParallel``, so that the backward of its value averages the
    gradients over the processes.

    The wrapper keeps DDP's defaults: parameters and buffers are broadcast from rank 0 when
    it is built, and buffers again at every call (which keeps the Euler blocks' step bounds
    :math:`\\nu_i` and power-iteration vectors those of rank 0). Build it before loading a
    checkpoint on every process, or after loading it on all of them.

    :param model: the model (its parameters are the ones trained).
    :param loss: ``loss(model, *args)`` returning a scalar tensor.
    :param bool find_unused_parameters: set when some parameters get no gradient from
        ``loss`` (e.g. a SympFlow's energy offset without Hamiltonian matching).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.training.distributed import objective
        >>> model = torch.nn.Linear(2, 1)
        >>> mse = objective(model, lambda m, x, y: ((m(x) - y) ** 2).mean())
        >>> mse(torch.zeros(3, 2), model.bias.detach().expand(3, 1)).item()
        0.0
    """
    if world_size() == 1:
        return lambda *args: loss(model, *args)
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        _Objective(model, loss),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )
