r"""Whole training runs, as ``dynnets train-sympflow`` and ``dynnets train-denoiser`` do them.

A run checks its arguments and output folder, builds the model, trains it
(:func:`~deepinv_dynnets.training.train_unsupervised`,
:func:`~deepinv_dynnets.training.train_supervised` or
:func:`~deepinv_dynnets.training.train_denoiser`, whose keyword arguments it passes on),
evaluates it, and writes to ``out`` the weights with their model card, the resumable
``checkpoint.pt`` and ``record.json`` (the :class:`~deepinv_dynnets.training.TrainingRecord`).

Started by ``torchrun``, a run trains on all its processes
(:mod:`~deepinv_dynnets.training.distributed`: the process group is opened at the start and
closed at the end) and rank 0 alone evaluates, prints and writes.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from .._validation import check_channels, check_device, check_output_folder, check_positive_int
from .distributed import distributed_run, is_main_process
from .record import TrainingRecord, hardware

__all__ = ["FLOW_MODELS", "DENOISER_MODELS", "run_flow_training", "run_denoiser_training"]

#: The flows ``run_flow_training`` trains: SympFlow, or the PINN baseline.
FLOW_MODELS = ("sympflow", "pinn")
#: The denoisers ``run_denoiser_training`` trains: the Euler denoiser, or DnCNN.
DENOISER_MODELS = ("euler", "dncnn")
_HISTORY_ROWS = 500  # a flow record keeps about this many epochs of its history


def _check_options(function, options: dict, what: str) -> dict:
    """Refuse options that ``function`` does not take, before any work."""
    known = set(inspect.signature(function).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {what} option(s): {', '.join(unknown)}")
    return dict(options)


def _setup(out, threads: int, device) -> tuple[Path, torch.device]:
    out = check_output_folder(out)
    torch.set_num_threads(check_positive_int(threads, "threads"))
    return out, check_device(device)


def run_flow_training(
    system: str,
    out: str | Path = "runs/sympflow",
    model: str = "sympflow",
    supervised: bool = False,
    architecture: dict | None = None,
    data: dict | None = None,
    training: dict | None = None,
    n_eval: int = 200,
    threads: int = 1,
    device: str | torch.device = "cpu",
    command: str | None = None,
) -> TrainingRecord:
    r"""Train a SympFlow (or the PINN baseline) on a Hamiltonian system and save it.

    Unsupervised (residual + Hamiltonian matching on fresh collocation points) or, with
    ``supervised``, on reference trajectory segments
    (:func:`~deepinv_dynnets.training.trajectory_data`). The trained flow is evaluated in
    float64 against the reference solution at :math:`t = 1, 10, 100` on ``n_eval`` initial
    conditions (seed 1234).

    :param str system: a name in :data:`deepinv_dynnets.demo.SYSTEMS`.
    :param out: output folder (``flow.pt`` and its card, ``checkpoint.pt``, ``record.json``).
    :param str model: ``"sympflow"`` or ``"pinn"``.
    :param bool supervised: train on trajectory segments.
    :param dict | None architecture: keyword arguments of the flow's class (``n_layers``,
        ``width``, ``depth``, ``activation``, ``dt``); the class's defaults otherwise.
    :param dict | None data: supervised: keyword arguments of ``trajectory_data``
        (``n_trajectories`` and ``n_times`` are required).
    :param dict | None training: keyword arguments of ``train_unsupervised`` or
        ``train_supervised`` (``epochs``, ``lr``, ``seed``, ``resume``, ...).
    :param int n_eval: initial conditions of the evaluation.
    :param int threads: torch CPU threads.
    :param device: ``"cpu"`` or ``"cuda"`` (under ``torchrun``, each process takes the GPU
        ``LOCAL_RANK``).
    :param str | None command: the command line, recorded in the card.
    :return: the record (also written to ``out/record.json``).
    :raises ValueError: a bad argument, option or output folder (before any work).
    """
    from ..demo import SYSTEMS
    from ..flows import PINNFlow, SympFlow
    from .flow import train_supervised, train_unsupervised
    from .flow_losses import trajectory_data

    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {', '.join(SYSTEMS)}, got {system!r}")
    if model not in FLOW_MODELS:
        raise ValueError(f"model must be one of {', '.join(FLOW_MODELS)}, got {model!r}")
    flow_class = SympFlow if model == "sympflow" else PINNFlow
    architecture = _check_options(flow_class, architecture or {}, f"{model} architecture")
    trainer = train_supervised if supervised else train_unsupervised
    training = _check_options(trainer, training or {}, "training")
    data = _check_options(trajectory_data, data or {}, "trajectory data") if supervised else {}
    n_eval = check_positive_int(n_eval, "n_eval")
    out, device = _setup(out, threads, device)
    with distributed_run(device) as device:
        return _flow_run(
            system, out, flow_class, supervised, architecture, data, training, trainer, n_eval,
            device, command,
        )  # fmt: skip


def _flow_run(
    system, out, flow_class, supervised, architecture, data, training, trainer, n_eval, device,
    command,
) -> TrainingRecord:  # fmt: skip
    from ..demo import SYSTEMS
    from ..flows import SympFlow
    from ..flows.evaluation import flow_errors
    from .flow_losses import trajectory_data

    seed = training.get("seed", inspect.signature(trainer).parameters["seed"].default)
    torch.manual_seed(seed)
    dynamics = SYSTEMS[system]()
    flow = flow_class(dynamics.dim, **architecture).to(device)
    training = {"checkpoint": out / "checkpoint.pt"} | training
    out.mkdir(parents=True, exist_ok=True)
    if not is_main_process():
        training["progress"] = False
    if supervised:
        x0, t, y = trajectory_data(
            dynamics, dt=flow.dt, generator=torch.Generator().manual_seed(seed), **data
        )
        record = trainer(flow, x0.to(device), t.to(device), y.to(device), **training)
    else:
        record = trainer(flow, dynamics, **training)
    if not is_main_process():
        return record
    y0 = dynamics.sample(n_eval, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    metrics = flow_errors(flow.cpu().double(), dynamics, y0, times=(1.0, 10.0, 100.0))
    flow.float()
    record.command, record.hardware = command, hardware(device)
    record.extra |= {"system": system, "evaluation": metrics}
    card = {
        "command": command,
        "system": system,
        "wall_time_s": record.wall_time_s,
        "hardware": record.hardware,
        "torch": record.torch,
        "world_size": record.world_size,
        "evaluation": metrics,
    }
    if isinstance(flow, SympFlow):
        flow.save(out / "flow.pt", **card)
    else:
        from ..pretrained import save_weights

        save_weights(flow, out / "flow.pt", kind="pinn", config=flow.config, **card)
    card_data = record.to_dict()  # the history thinned, seconds per epoch from all of it
    card_data["history"] = record.history[:: max(1, len(record.history) // _HISTORY_ROWS)]
    (out / "record.json").write_text(json.dumps(card_data, indent=2))
    print(
        f"trained {system} in {record.wall_time_s:.1f} s ({record.seconds_per_epoch * 1e3:.1f} ms/epoch)"
    )
    for t_, rel, de in zip(
        metrics["times"], metrics["relative_state_error"], metrics["energy_error"], strict=True
    ):
        print(f"  t = {t_:5g}: mean relative state error {rel:.2e}, mean |dH| {de:.2e}")
    print(f"wrote {out / 'flow.pt'} and {out / 'record.json'}")
    return record


def run_denoiser_training(
    train_folder: str | Path,
    out: str | Path = "runs/denoiser",
    model: str = "euler",
    channels: int = 1,
    architecture: dict | None = None,
    training: dict | None = None,
    threads: int = 1,
    device: str | torch.device = "cpu",
    command: str | None = None,
) -> TrainingRecord:
    r"""Train an averaged Euler denoiser (or the DnCNN baseline) on an image folder; save it.

    An Euler denoiser is calibrated after training and its certificate printed; DnCNN is
    trained by the same loop on the same data.

    :param train_folder: folder of training images.
    :param out: output folder (``model.pt`` and its card, ``checkpoint.pt``,
        ``record.json``).
    :param str model: ``"euler"`` or ``"dncnn"``.
    :param int channels: 1 or 3.
    :param dict | None architecture: keyword arguments of ``EulerDenoiser`` (``width``,
        ``hidden``, ``n_blocks``, ``alpha``, ...) or of ``deepinv.models.DnCNN`` (``nf``,
        ``depth``); their defaults otherwise.
    :param dict | None training: keyword arguments of
        :func:`~deepinv_dynnets.training.train_denoiser` (``epochs``, ``val_folder``, ...).
    :param int threads: torch CPU threads.
    :param device: ``"cpu"`` or ``"cuda"`` (under ``torchrun``, each process takes the GPU
        ``LOCAL_RANK``).
    :param str | None command: the command line, recorded in the card.
    :return: the record (also written to ``out/record.json``).
    :raises ValueError: a bad argument, option or output folder (before any work).
    """
    import deepinv

    from ..models import EulerDenoiser
    from .denoiser import train_denoiser

    if model not in DENOISER_MODELS:
        raise ValueError(f"model must be one of {', '.join(DENOISER_MODELS)}, got {model!r}")
    channels = check_channels(channels)
    model_class = EulerDenoiser if model == "euler" else deepinv.models.DnCNN
    architecture = _check_options(model_class, architecture or {}, f"{model} architecture")
    training = _check_options(train_denoiser, training or {}, "training")
    if not Path(train_folder).is_dir():
        raise ValueError(f"the training folder {str(train_folder)!r} is not a folder")
    out, device = _setup(out, threads, device)
    with distributed_run(device) as device:
        return _denoiser_run(
            train_folder, out, model, channels, architecture, training, device, command
        )


def _denoiser_run(
    train_folder, out, model, channels, architecture, training, device, command
) -> TrainingRecord:
    import deepinv

    from ..lipschitz import certify
    from ..models import EulerDenoiser, save_dncnn
    from .denoiser import train_denoiser

    torch.manual_seed(training.get("seed", 0))
    if model == "euler":
        network = EulerDenoiser(in_channels=channels, **architecture)
    else:
        config = {"in_channels": channels, "out_channels": channels} | architecture
        network = deepinv.models.DnCNN(**config, pretrained=None)
    network = network.to(device)
    out.mkdir(parents=True, exist_ok=True)
    training = {"checkpoint": out / "checkpoint.pt"} | training
    if not is_main_process():
        training["progress"] = False
    record = train_denoiser(network, train_folder, channels=channels, **training)
    if not is_main_process():
        return record
    record.command, record.hardware = command, hardware(device)
    card = {
        "command": command,
        "wall_time_s": record.wall_time_s,
        "hardware": record.hardware,
        "torch": record.torch,
        "world_size": record.world_size,
        "val_psnr": record.val_psnr,
    }
    network = network.cpu()
    if isinstance(network, EulerDenoiser):
        network.save(out / "model.pt", **card)
        print(certify(network))
    else:
        save_dncnn(network, out / "model.pt", config, **card)
    record.to_json(out / "record.json")
    print(f"trained {model} in {record.wall_time_s:.1f} s; validation PSNR: {record.val_psnr}")
    print(f"wrote {out / 'model.pt'} and {out / 'record.json'}")
    return record
