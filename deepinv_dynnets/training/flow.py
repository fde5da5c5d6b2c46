r"""Training learned flows: unsupervised (residual + Hamiltonian matching) and supervised.

Losses and data: :mod:`~deepinv_dynnets.training.flow_losses`. Unsupervised, for a known Hamiltonian :math:`H` :footcite:p:`canizares2024hamiltonian`:

.. math::

    \mathcal L = \frac1N\sum_i \big\|\partial_t\mathcal N(t_i, x_i) -
    J\nabla H(\mathcal N(t_i, x_i))\big\|^2 + \frac{\lambda}{N}\sum_i
    \big(H_{\mathcal N}(t_i, x_i) - H(x_i)\big)^2,

with collocation points :math:`x_i \sim \Omega` (the system's ``sample``) and
:math:`t_i \sim U[0, \Delta t]` drawn afresh at every epoch. Supervised, on trajectory
segments :math:`(x_0, y_1, \dots, y_M)` at times :math:`t_m \in (0, \Delta t]`:
:math:`\frac1{NM}\sum \|\mathcal N(t_m, x_0) - y_m\|^2`.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._validation import check_positive_int
from ..flows.base import NeuralFlow
from ..flows.hnn import HamiltonianNeuralNetwork
from ..flows.sympflow import SympFlow
from ..systems import HamiltonianSystem
from .distributed import mean_over_processes, objective, shard, shard_weight
from .flow_losses import (
    check_horizon,
    check_trajectories,
    hamiltonian_matching_loss,
    hnn_loss,
    residual_loss,
    supervised_loss,
)
from .loop import check_loop_arguments, fit
from .record import TrainingRecord, world_size

__all__ = ["train_unsupervised", "train_supervised", "train_hnn", "refine_lbfgs"]


def refine_lbfgs(
    flow: NeuralFlow,
    system: HamiltonianSystem,
    steps: int = 500,
    n_points: int = 4000,
    matching: bool = True,
    matching_weight: float = 1.0,
    seed: int = 1,
    progress: bool = True,
) -> list[float]:
    r"""Refine a trained flow with L-BFGS on a fixed collocation set, in float64.

    After Adam on fresh points has found the basin, the loss is a smooth deterministic
    function of the weights on a fixed, large set of points; a quasi-Newton method with a
    strong-Wolfe line search then lowers it by an order of magnitude where Adam's noisy
    steps stall. The flow is returned to its original dtype.

    :param NeuralFlow flow: the flow (modified in place).
    :param HamiltonianSystem system: the true system.
    :param int steps: L-BFGS iterations (in chunks of 20).
    :param int n_points: size of the fixed collocation set.
    :param bool matching: include Hamiltonian matching (SympFlow only).
    :param float matching_weight: its weight.
    :param int seed: seed of the collocation set.
    :param bool progress: show a tqdm progress bar.
    :return: the loss after every chunk of 20 iterations.

    :Examples:

        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> from deepinv_dynnets.training import refine_lbfgs
        >>> flow = SympFlow(dim=2, n_layers=1, width=4)
        >>> losses = refine_lbfgs(flow, HarmonicOscillator(), steps=20, n_points=64, progress=False)
        >>> len(losses)
        1
    """
    if steps < 1 or n_points < 1:
        raise ValueError(f"steps and n_points must be >= 1, got {steps}, {n_points}")
    if matching and not isinstance(flow, SympFlow):
        raise ValueError("matching=True needs a SympFlow (a flow with its own Hamiltonian)")
    param = next(flow.parameters())
    dtype, device = param.dtype, param.device
    flow.double().train()
    generator = torch.Generator().manual_seed(seed)
    x0 = system.sample(n_points, generator=generator, dtype=torch.float64).to(device)
    t = flow.dt * torch.rand(n_points, generator=generator, dtype=torch.float64).to(device)
    chunk = 20

    def new_optimizer() -> torch.optim.LBFGS:
        # Absolute tolerances off: at losses around 1e-6 the defaults stop L-BFGS long
        # before it has converged.
        return torch.optim.LBFGS(
            flow.parameters(),
            lr=1.0,
            max_iter=chunk,
            history_size=50,
            tolerance_grad=0.0,
            tolerance_change=0.0,
            line_search_fn="strong_wolfe",
        )

    optimizer = new_optimizer()

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = residual_loss(flow, system, t, x0)
        if matching:
            loss = loss + matching_weight * hamiltonian_matching_loss(flow, system, t, x0)
        loss.backward()
        return loss

    losses: list[float] = []
    stalls = 0
    for _ in tqdm(range(max(1, steps // chunk)), disable=not progress, desc="L-BFGS"):
        losses.append(float(optimizer.step(closure).detach()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"L-BFGS diverged: loss {losses[-1]}")
        if len(losses) > 1 and losses[-1] >= losses[-2]:
            # No progress: a stale curvature memory; restart it, and stop after two in a row.
            stalls += 1
            if stalls == 2:
                break
            optimizer = new_optimizer()
        else:
            stalls = 0
    flow.to(dtype).eval()
    return losses


def _check_shardable(n: int, name: str) -> None:
    if n < world_size():
        raise ValueError(
            f"{name} = {n} is smaller than the number of processes ({world_size()}): "
            "every process needs a part of each batch"
        )


def _check_val_data(flow: NeuralFlow, val_data) -> tuple[Tensor, Tensor, Tensor]:
    if not isinstance(val_data, (tuple, list)) or len(val_data) != 3:
        raise ValueError("val_data must be a tuple (x0, t, y) of held-out trajectories")
    try:
        check_trajectories(flow, *val_data)
    except ValueError as err:
        raise ValueError(f"val_data: {err}") from err
    return tuple(val_data)


def _check_increasing(t: Tensor, name: str) -> None:
    if bool((t[:, 0] <= 0).any()) or (t.shape[1] > 1 and bool((t.diff(dim=1) <= 0).any())):
        raise ValueError(
            f"{name} must be positive and strictly increasing along each trajectory (finite "
            "differences divide by the gaps)"
        )


def _validation_settings(settings: dict, val_data, val_every: int) -> None:
    if val_data is not None:
        settings["n_val_trajectories"] = val_data[0].shape[0]
        settings["val_every"] = val_every


def _trajectory_batches(kind, model, x0, t, y, epochs, batch_size, lr, seed):
    # The random mini-batches of trajectories and the record's settings, shared by the
    # trainers on (x0, t, y) data: the generator is checkpointed by _fit_flow.
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, x0.shape[0])
    _check_shardable(batch_size, "batch_size")
    settings = dict(
        kind=kind,
        flow=type(model).__name__,
        config=model.config,
        epochs=epochs,
        n_trajectories=x0.shape[0],
        n_times=t.shape[1],
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    )

    def draw() -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.randperm(x0.shape[0], generator=generator)[:batch_size].to(x0.device)
        return x0[idx], t[idx], y[idx]

    return generator, draw, settings


def _fit_flow(
    flow: NeuralFlow,
    draw,
    loss_terms,
    names: tuple[str, ...],
    settings: dict,
    generator,
    find_unused_parameters: bool,
    validate=None,
    val_every: int = 100,
    **loop,
) -> TrainingRecord:
    """:func:`fit` with one Adam step per epoch on the batch that ``draw()`` draws from
    ``generator`` (whose state the checkpoints keep): a tuple of tensors whose first
    dimension runs over the samples. ``loss_terms(flow, *batch)`` returns the loss terms
    ``names`` as one tensor; the loss is their sum. With several processes every process
    draws the whole batch (so the generators stay equal) and trains on its shard.

    With ``validate`` (the held-out loss of a flow, no gradient needed), it is evaluated
    every ``val_every`` epochs and after the last one (history key ``val_loss``), and the
    flow ends with the weights of the lowest value (``record.extra["best_epoch"]``)."""
    evaluate = objective(flow, loss_terms, find_unused_parameters)
    epochs = loop["epochs"]
    best = {"loss": math.inf, "epoch": None, "state": None, "tried": 0, "started": False}

    def consider(epoch: int) -> float:
        flow.eval()
        with torch.no_grad():
            val_loss = float(validate(flow))
        flow.train()
        best["tried"] += 1
        if val_loss < best["loss"]:  # a NaN never counts as the best
            state = {k: v.detach().clone() for k, v in flow.state_dict().items()}
            best.update(loss=val_loss, epoch=epoch, state=state)
        return val_loss

    def run_epoch(epoch: int, step) -> dict:
        if validate is not None and not best["started"] and epoch > 0:
            consider(epoch)  # resumed: the checkpointed weights are the first candidate
        best["started"] = True
        batch = draw()
        n = batch[0].shape[0]
        part = shard(n)
        terms = evaluate(*(b[part] for b in batch))
        if world_size() > 1:
            terms = terms * shard_weight(part.stop - part.start, n)
        total = step(terms.sum())
        values = mean_over_processes(terms)
        entry = {"loss": total} | {k: float(v) for k, v in zip(names, values, strict=True)}
        if validate is not None and ((epoch + 1) % val_every == 0 or epoch + 1 == epochs):
            entry["val_loss"] = consider(epoch + 1)
        return entry

    def keep_best(record: TrainingRecord) -> None:
        if validate is None or not best["tried"]:  # not validating, or nothing left to run
            return
        if best["state"] is None:
            warnings.warn(
                "the validation loss was never finite: the flow keeps its last weights",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        flow.load_state_dict(best["state"])
        record.extra["best_epoch"] = best["epoch"]
        record.extra["best_val_loss"] = best["loss"]

    record = TrainingRecord(settings=settings, world_size=world_size())
    return fit(flow, run_epoch, record, generator=generator, finish=keep_best, **loop)


def train_unsupervised(
    flow: NeuralFlow,
    system: HamiltonianSystem,
    epochs: int = 2000,
    n_points: int = 700,
    lr: float = 5e-3,
    matching: bool = True,
    matching_weight: float = 1.0,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    lbfgs_steps: int = 0,
    lbfgs_points: int = 4000,
    grad_clip: float | None = 1.0,
    checkpoint_minutes: float | None = None,
) -> TrainingRecord:
    r"""Train a flow on the residual (+ Hamiltonian matching) with fresh collocation points.

    Each epoch is one Adam step on ``n_points`` new points :math:`x_i \sim \Omega` and
    times :math:`t_i \sim U[0, \Delta t]`, drawn from a generator seeded by ``seed`` (its
    state is checkpointed, so a resumed run draws the points an uninterrupted one would).
    The loop is :func:`~deepinv_dynnets.training.fit`: the learning rate decays along a
    cosine to ``lr / 100`` and gradients are clipped to norm ``grad_clip``. Optionally, a
    refinement phase follows (:func:`refine_lbfgs`): L-BFGS in float64 on one fixed set of
    ``lbfgs_points`` points, which takes the loss far lower than Adam's noisy steps do.

    :param NeuralFlow flow: a :class:`~deepinv_dynnets.SympFlow` (or the PINN baseline,
        with ``matching=False``), in the dtype and on the device to train in.
    :param HamiltonianSystem system: the true system, giving :math:`J\nabla H`, :math:`H`
        and the sampler of :math:`\Omega`.
    :param int epochs: number of steps.
    :param int n_points: collocation points per step (summed over the processes: with
        several, each draws all of them, so the generators stay equal, and trains on its
        share; see :mod:`~deepinv_dynnets.training.distributed`).
    :param float lr: initial learning rate.
    :param bool matching: add the Hamiltonian-matching term (SympFlow only).
    :param float matching_weight: its weight :math:`\lambda`.
    :param int seed: seed of the collocation sampler.
    :param checkpoint: file to save the run to every ``checkpoint_every`` epochs (and every
        ``checkpoint_minutes``) and at the end, or ``None``.
    :param bool resume: continue from ``checkpoint`` if it exists.
    :param bool progress: show a tqdm progress bar.
    :param int lbfgs_steps: L-BFGS iterations after the Adam phase (0: none).
    :param int lbfgs_points: size of the fixed collocation set of that phase.
    :param float | None grad_clip: maximal gradient norm, ``None`` for no clipping.
    :param float | None checkpoint_minutes: see :func:`~deepinv_dynnets.training.fit`.
    :return: the :class:`~deepinv_dynnets.training.TrainingRecord`.

    :Examples:

        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> from deepinv_dynnets.training import train_unsupervised
        >>> flow = SympFlow(dim=2, n_layers=1, width=8)
        >>> record = train_unsupervised(flow, HarmonicOscillator(), epochs=5, progress=False)
        >>> len(record.history)
        5
    """
    epochs = check_loop_arguments(epochs, lr, grad_clip, checkpoint_every, checkpoint_minutes)
    if matching and not isinstance(flow, SympFlow):
        raise ValueError("matching=True needs a SympFlow (a flow with its own Hamiltonian)")
    if flow.dim != system.dim:
        raise ValueError(f"flow.dim = {flow.dim} does not match system.dim = {system.dim}")
    n_points = check_positive_int(n_points, "n_points")
    _check_shardable(n_points, "n_points")
    if lbfgs_steps:
        check_positive_int(lbfgs_steps, "lbfgs_steps")
        check_positive_int(lbfgs_points, "lbfgs_points")
    param = next(flow.parameters())
    dtype, device = param.dtype, param.device
    generator = torch.Generator().manual_seed(seed)
    settings = dict(
        kind="unsupervised",
        system=type(system).__name__,
        flow=type(flow).__name__,
        config=flow.config,
        epochs=epochs,
        n_points=n_points,
        lr=lr,
        matching=matching,
        matching_weight=matching_weight,
        seed=seed,
        dtype=str(dtype),
        device=str(device),
        lbfgs_steps=lbfgs_steps,
        lbfgs_points=lbfgs_points,
    )

    def draw() -> tuple[Tensor, Tensor]:
        x0 = system.sample(n_points, generator=generator, dtype=dtype).to(device)
        t = flow.dt * torch.rand(n_points, generator=generator, dtype=dtype).to(device)
        return t, x0

    def loss_terms(model: NeuralFlow, t: Tensor, x0: Tensor) -> Tensor:
        terms = [residual_loss(model, system, t, x0)]
        if matching:
            terms.append(matching_weight * hamiltonian_matching_loss(model, system, t, x0))
        return torch.stack(terms)

    names = ("residual", "matching") if matching else ("residual",)
    # without matching, a SympFlow's energy offset gets no gradient
    unused = isinstance(flow, SympFlow) and not matching
    record = _fit_flow(
        flow, draw, loss_terms, names, settings, generator, unused, epochs=epochs, lr=lr,
        grad_clip=grad_clip,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        checkpoint_minutes=checkpoint_minutes, resume=resume, progress=progress,
    )  # fmt: skip
    if lbfgs_steps > 0:
        tic = time.perf_counter()
        record.lbfgs_history = refine_lbfgs(
            flow, system, lbfgs_steps, lbfgs_points, matching, matching_weight, seed + 1, progress
        )
        record.wall_time_s += time.perf_counter() - tic
    return record


def train_supervised(
    flow: NeuralFlow,
    x0: Tensor,
    t: Tensor,
    y: Tensor,
    epochs: int = 1000,
    batch_size: int = 256,
    lr: float = 5e-3,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    grad_clip: float | None = 1.0,
    checkpoint_minutes: float | None = None,
    horizon: float | None = None,
    val_data: tuple[Tensor, Tensor, Tensor] | None = None,
    val_every: int = 100,
) -> TrainingRecord:
    r"""Train a flow on observed trajectories (see :func:`trajectory_data`).

    Trajectory :math:`i` starts at :math:`x_{0,i}` at time 0 and is observed (possibly with
    noise) at its own times ``t[i]``: irregular grids, one per trajectory. The loss is
    :func:`supervised_loss`. By default the times lie in the training window
    :math:`[0, \Delta t]`; with ``horizon`` they may reach it, and the flow is composed
    with itself beyond :math:`\Delta t` (its gradient flows through the compositions).
    For a :class:`~deepinv_dynnets.SympFlow`, the learned system is the flow of its own
    Hamiltonian :math:`H_{\mathcal N}` (:meth:`~deepinv_dynnets.SympFlow.hamiltonian`):
    the discovered energy, up to a function of time.

    Each epoch is one Adam step on a random mini-batch of ``batch_size`` trajectories
    (summed over the processes, like ``n_points`` of :func:`train_unsupervised`), drawn from
    a generator seeded by ``seed``; the loop is :func:`~deepinv_dynnets.training.fit`
    (see :func:`train_unsupervised` for the schedule and checkpoints). The data are
    checked before any work (``ValueError`` naming the argument) and never modified.

    :param NeuralFlow flow: the flow, in the data's dtype and on its device.
    :param torch.Tensor x0: initial states ``(N, 2n)``.
    :param torch.Tensor t: times ``(N, M)``, each row non-decreasing, in
        :math:`[0, \Delta t]` (or :math:`[0, \text{horizon}]`).
    :param torch.Tensor y: observed states ``(N, M, 2n)``, possibly noisy.
    :param float | None horizon: the latest time allowed in ``t`` (and ``val_data``'s);
        ``None`` for ``flow.dt``.
    :param val_data: held-out trajectories ``(x0, t, y)``, shaped and checked like the
        training data. The held-out loss is evaluated every ``val_every`` epochs and after
        the last (history key ``val_loss``) and the flow ends with the weights of its
        lowest value: early stopping, for noisy data that a long run would overfit (see
        ``benchmarks/sympflow_supervised.py``). ``record.extra`` gets ``best_epoch`` and
        ``best_val_loss``. After a resume the candidates are the resumed weights and the
        later evaluations.
    :param int val_every: epochs between two evaluations of the held-out loss.
    :return: the :class:`~deepinv_dynnets.training.TrainingRecord`.

    :Examples:

        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> from deepinv_dynnets.training import trajectory_data, train_supervised
        >>> x0, t, y = trajectory_data(HarmonicOscillator(), 8, 4)
        >>> flow = SympFlow(dim=2, n_layers=1, width=8)
        >>> len(train_supervised(flow, x0, t, y, epochs=3, progress=False).history)
        3
        >>> x0, t, y = trajectory_data(HarmonicOscillator(), 8, 4, dt=3.0, noise_std=0.01)
        >>> record = train_supervised(flow, x0, t, y, epochs=3, horizon=3.0, progress=False)
    """
    epochs = check_loop_arguments(epochs, lr, grad_clip, checkpoint_every, checkpoint_minutes)
    batch_size = check_positive_int(batch_size, "batch_size")
    check_trajectories(flow, x0, t, y)
    horizon = check_horizon(flow, t, horizon)
    val_every = check_positive_int(val_every, "val_every")
    if val_data is not None:
        val_data = _check_val_data(flow, val_data)
        check_horizon(flow, val_data[1], horizon)
    generator, draw, settings = _trajectory_batches(
        "supervised", flow, x0, t, y, epochs, batch_size, lr, seed
    )
    settings["horizon"] = horizon
    _validation_settings(settings, val_data, val_every)

    def loss_terms(model: NeuralFlow, x0_: Tensor, t_: Tensor, y_: Tensor) -> Tensor:
        return supervised_loss(model, x0_, t_, y_).unsqueeze(0)

    validate = None if val_data is None else (lambda model: supervised_loss(model, *val_data))
    # a SympFlow's energy offset changes no flow: it gets no gradient
    return _fit_flow(
        flow, draw, loss_terms, ("mse",), settings, generator, isinstance(flow, SympFlow),
        validate=validate, val_every=val_every, epochs=epochs, lr=lr, grad_clip=grad_clip,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        checkpoint_minutes=checkpoint_minutes, resume=resume, progress=progress,
    )  # fmt: skip


def train_hnn(
    hnn: HamiltonianNeuralNetwork,
    x0: Tensor,
    t: Tensor,
    y: Tensor,
    epochs: int = 1000,
    batch_size: int = 256,
    lr: float = 5e-3,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    grad_clip: float | None = 1.0,
    checkpoint_minutes: float | None = None,
    val_data: tuple[Tensor, Tensor, Tensor] | None = None,
    val_every: int = 100,
) -> TrainingRecord:
    r"""Train a :class:`~deepinv_dynnets.flows.HNN` on the data of :func:`train_supervised`.

    The loss is :func:`hnn_loss` (finite differences of consecutive observations); the
    loop, batches and checkpoints are those of :func:`train_supervised`. The times of a
    trajectory may be any positive, strictly increasing values (there is no window: the
    HNN learns a field, not a map).

    :param HamiltonianNeuralNetwork hnn: the network, in the data's dtype and device.
    :param torch.Tensor x0: initial states ``(N, 2n)`` at time 0.
    :param torch.Tensor t: times ``(N, M)``, each row positive and strictly increasing.
    :param torch.Tensor y: observed states ``(N, M, 2n)``, possibly noisy.
    :param val_data: held-out trajectories ``(x0, t, y)`` for early stopping, as in
        :func:`train_supervised`, the held-out loss being :func:`hnn_loss`.
    :param int val_every: epochs between two evaluations of the held-out loss.
    :return: the :class:`~deepinv_dynnets.training.TrainingRecord`.

    :Examples:

        >>> from deepinv_dynnets.flows import HNN
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> from deepinv_dynnets.training import train_hnn, trajectory_data
        >>> x0, t, y = trajectory_data(HarmonicOscillator(), 8, 4)
        >>> len(train_hnn(HNN(dim=2, width=8), x0, t, y, epochs=3, progress=False).history)
        3
    """
    if not isinstance(hnn, HamiltonianNeuralNetwork):
        raise ValueError(f"hnn must be a HamiltonianNeuralNetwork, got {type(hnn).__name__}")
    epochs = check_loop_arguments(epochs, lr, grad_clip, checkpoint_every, checkpoint_minutes)
    batch_size = check_positive_int(batch_size, "batch_size")
    check_trajectories(hnn, x0, t, y)
    _check_increasing(t, "t")
    val_every = check_positive_int(val_every, "val_every")
    if val_data is not None:
        val_data = _check_val_data(hnn, val_data)
        _check_increasing(val_data[1], "val_data's t")
    generator, draw, settings = _trajectory_batches(
        "hnn", hnn, x0, t, y, epochs, batch_size, lr, seed
    )
    _validation_settings(settings, val_data, val_every)

    def loss_terms(model: HamiltonianNeuralNetwork, x0_: Tensor, t_: Tensor, y_: Tensor):
        return hnn_loss(model, x0_, t_, y_).unsqueeze(0)

    validate = None if val_data is None else (lambda model: hnn_loss(model, *val_data))
    # the energy MLP's time input is always 0: its weights get no gradient
    return _fit_flow(
        hnn, draw, loss_terms, ("finite_difference",), settings, generator, True,
        validate=validate, val_every=val_every, epochs=epochs, lr=lr, grad_clip=grad_clip,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        checkpoint_minutes=checkpoint_minutes, resume=resume, progress=progress,
    )  # fmt: skip
