r"""Training image denoisers on patches: :class:`~deepinv_dynnets.EulerDenoiser` and baselines.

A denoiser :math:`D_\theta(y, \sigma)` is trained on clean patches :math:`x_i` drawn from a
folder of images, with Gaussian noise of a level drawn afresh for every image of every
batch, by minimising the mean squared error

.. math::

    \mathcal L(\theta) = \frac1B\sum_{i=1}^B \frac1{CHW}
    \big\|D_\theta(x_i + \sigma_i\varepsilon_i, \sigma_i) - x_i\big\|_2^2,
    \qquad \sigma_i \sim U[\sigma_{\min}, \sigma_{\max}],\ \varepsilon_i \sim \mathcal N(0, I).

The same loop trains any ``deepinv.models.Denoiser`` with ``forward(x, sigma)``, e.g. the
``deepinv.models.DnCNN`` baseline (which ignores :math:`\sigma`). Images are in
:math:`[0, 1]`, so noise levels are on that scale (:math:`25/255` for "sigma 25").
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._validation import check_positive_int
from ..data import ImagePatches, load_images
from ..metrics import psnr
from .distributed import objective, rank, shard, shard_weight
from .loop import check_loop_arguments, fit
from .record import TrainingRecord, relative_path, world_size

__all__ = ["DEFAULT_VAL_SIGMAS", "evaluate_psnr", "train_denoiser"]

#: Default validation noise levels: 15, 25 and 50 on the 0-255 scale.
DEFAULT_VAL_SIGMAS = (15 / 255, 25 / 255, 50 / 255)
_VAL_NOISE_SEED = 2024  # fixed: the same noisy validation images at every epoch and run


@torch.no_grad()
def evaluate_psnr(
    model: nn.Module,
    images: Sequence[Tensor],
    sigmas: Sequence[float] = DEFAULT_VAL_SIGMAS,
    seed: int = _VAL_NOISE_SEED,
) -> dict[str, float]:
    r"""Mean PSNR of ``model`` denoising full ``images`` at each noise level (fixed noise).

    Each image is processed on its own (the images may differ in size), in eval mode; the
    model's training flag is restored afterwards. The noise of image :math:`j` at level
    :math:`\sigma` is :math:`\sigma\varepsilon_j` with :math:`\varepsilon_j` drawn from a
    generator seeded by ``seed``, the same for every level and every call.

    :param torch.nn.Module model: a denoiser ``model(x, sigma)``.
    :param images: clean images ``(C, H, W)`` in :math:`[0, 1]`.
    :param sigmas: noise levels on the :math:`[0, 1]` scale.
    :param int seed: seed of the noise.
    :return: ``{"15": mean PSNR, ...}``, keyed by :math:`255\sigma` (``"%g"``), in dB.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.training import evaluate_psnr
        >>> class Identity(torch.nn.Module):
        ...     def forward(self, x, sigma):
        ...         return x
        >>> model = Identity()
        >>> model.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
        >>> psnrs = evaluate_psnr(model, [torch.rand(1, 32, 32)], sigmas=[0.1])
        >>> round(psnrs["25.5"])  # the noisy input: 20 dB for sigma = 0.1
        20
    """
    sums = _psnr_sums(model, images, sigmas, seed, range(len(images)))
    return {f"{255 * float(s):g}": v / len(images) for s, v in zip(sigmas, sums, strict=True)}


@torch.no_grad()
def _psnr_sums(model: nn.Module, images, sigmas, seed: int, indices) -> list[float]:
    """Per noise level, the sum of the PSNRs of the images ``indices`` (the noise of every
    image is drawn, so that an image's noise does not depend on which images are summed)."""
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    indices = set(indices)
    was_training = model.training
    model.eval()
    try:
        sums = []
        for sigma in sigmas:
            g = torch.Generator().manual_seed(seed)
            values = []
            for j, image in enumerate(images):
                noise = torch.randn((1, *image.shape), generator=g)
                if j not in indices:
                    continue
                x = image.unsqueeze(0).to(device=device, dtype=dtype)
                noise = noise.to(device=device, dtype=dtype)
                s = torch.full((1,), float(sigma), device=device, dtype=dtype)
                values.append(float(psnr(model(x + sigma * noise, s), x)[0]))
            sums.append(sum(values))
        return sums
    finally:
        model.train(was_training)


def _distributed_psnr(model: nn.Module, images, sigmas, seed: int, device) -> dict[str, float]:
    """:func:`evaluate_psnr` with the images shared among the processes. Every process
    evaluates at least one image: the first evaluation after a step refreshes the Euler
    blocks' step bounds, which must happen on all processes alike."""
    processes = world_size()
    mine = range(rank(), len(images), processes) if len(images) >= processes else range(len(images))
    sums = torch.tensor(_psnr_sums(model, images, sigmas, seed, mine), dtype=torch.float64)
    if len(images) >= processes:
        sums = sums.to(device)
        torch.distributed.all_reduce(sums)
    return {
        f"{255 * float(s):g}": float(v) / len(images) for s, v in zip(sigmas, sums, strict=True)
    }


def _certificate_summary(model: nn.Module) -> dict | None:
    if not callable(getattr(model, "averaged_blocks", None)):
        return None
    from ..lipschitz import certify

    cert = certify(model)
    return {
        "lipschitz": float(cert.lipschitz),
        "alpha": None if cert.alpha is None else float(cert.alpha),
        "alpha_target": cert.alpha_target,
        "margin": cert.margin,
        "method": cert.method,
    }


def _noise_levels(sigma_range, sigmas) -> tuple[float, float, list[float] | None]:
    if sigmas is not None:
        levels = [float(s) for s in sigmas]
        if not levels or any(not math.isfinite(s) or s < 0 for s in levels):
            raise ValueError(f"sigmas must be non-empty, finite and >= 0, got {sigmas!r}")
        return min(levels), max(levels), levels
    lo, hi = (float(s) for s in sigma_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"sigma_range must be (lo, hi) with 0 <= lo <= hi, got {sigma_range!r}")
    return lo, hi, None


def cpu_supports_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 instructions (oneDNN's check; without them
    bfloat16 convolutions are emulated, many times slower than float32)."""
    # a private PyTorch function: no public one answers this (torch.backends.cpu only
    # names the vector capability); if it disappears, assume support and do not warn
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return True if check is None else bool(check())


def train_denoiser(
    model: nn.Module,
    train_folder: str | Path,
    val_folder: str | Path | None = None,
    channels: int = 1,
    epochs: int = 50,
    batch_size: int = 32,
    patch_size: int = 40,
    patches_per_image: int = 16,
    lr: float = 1e-3,
    sigma_range: tuple[float, float] = (0.0, 55 / 255),
    sigmas: Sequence[float] | None = None,
    val_sigmas: Sequence[float] = DEFAULT_VAL_SIGMAS,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool = True,
    max_val_images: int | None = None,
    grad_clip: float | None = 1.0,
    num_workers: int = 0,
    holdout: Sequence[str] = (),
    val_only: Sequence[str] | None = None,
    autocast: torch.dtype | None = None,
    checkpoint_minutes: float | None = None,
    data_root: str | Path | None = None,
) -> TrainingRecord:
    r"""Train a denoiser on noisy/clean patches with the MSE loss.

    Every epoch visits ``patches_per_image`` random, augmented patches of every training
    image (:class:`~deepinv_dynnets.data.ImagePatches`) in a shuffled order, in mini-batches of ``batch_size``.
    Each image :math:`i` of a batch gets its own noise level :math:`\sigma_i`, uniform in
    ``sigma_range`` (or uniform among the fixed levels ``sigmas``), passed to the model as a
    ``(B,)`` tensor, ``model(x + sigma * noise, sigma)``. The loop is
    :func:`~deepinv_dynnets.training.fit`: Adam with a cosine decay from ``lr`` to
    ``lr / 100``, gradients clipped to norm ``grad_clip``, resumable checkpoints. After
    every epoch, with validation images, the mean PSNR on the full images is recorded at
    every level of ``val_sigmas`` (:func:`evaluate_psnr`, fixed noise). Patches, batch
    order and noise of an epoch depend only on ``seed`` and the epoch, so a resumed run
    ends with the weights of an uninterrupted one.

    The model is left in eval mode. If it has a ``calibrate()`` method
    (:meth:`EulerDenoiser.calibrate <deepinv_dynnets.EulerDenoiser.calibrate>`: raise
    each step bound :math:`\nu_i` to the certified :math:`\|A_i\|^2`), it is called after
    training, and for networks with certified constants the summary of
    :func:`~deepinv_dynnets.certify` is stored in the record.

    With several processes (started by ``torchrun``, see
    :mod:`~deepinv_dynnets.training.distributed`), ``batch_size`` is the global batch:
    every process draws the batches, noise levels and noise of a single-process run and
    trains on its shard of each batch (about ``batch_size / world_size`` patches), DDP
    averaging the gradients; the validation images are shared among the processes. The
    run computes what one process computes, up to round-off, and resumes with any number
    of processes.

    :param torch.nn.Module model: a denoiser ``model(x, sigma)`` with ``sigma`` of shape
        ``(B,)``, e.g. :class:`~deepinv_dynnets.EulerDenoiser` or
        ``deepinv.models.DnCNN(in_channels=c, out_channels=c, pretrained=None)``; trained
        in its own dtype and on its own device.
    :param str | pathlib.Path train_folder: folder of training images.
    :param str | pathlib.Path | None val_folder: folder of validation images, or ``None``.
    :param int channels: 1 (grayscale) or 3 (RGB); must match the model.
    :param int epochs: number of epochs (the total, when resuming).
    :param int batch_size: patches per batch (per optimiser step, summed over the
        processes).
    :param int patch_size: side of the patches.
    :param int patches_per_image: patches of each training image per epoch.
    :param float lr: initial learning rate.
    :param tuple sigma_range: :math:`(\sigma_{\min}, \sigma_{\max})` on the :math:`[0, 1]`
        scale (default :math:`[0, 55/255]`).
    :param sigmas: fixed noise levels to draw from instead of ``sigma_range``, or ``None``.
    :param val_sigmas: validation noise levels (default 15, 25, 50 over 255).
    :param int seed: seed of patches, batch order and noise.
    :param checkpoint: file to save the run to, or ``None``.
    :param int checkpoint_every: epochs between checkpoints.
    :param bool resume: continue from ``checkpoint`` if it exists.
    :param bool progress: show tqdm progress bars.
    :param int | None max_val_images: use only the first validation images.
    :param float | None grad_clip: maximal gradient norm, ``None`` for no clipping.
    :param int num_workers: ``DataLoader`` workers (one process only: with several, each
        cuts its own patches).
    :param holdout: file-name patterns of ``train_folder`` images left out of training
        (e.g. ``["kodak_2[1-4].png"]``); without ``val_folder`` they are the validation set.
    :param val_only: file-name patterns: validate only on the ``val_folder`` images matching
        one of them (e.g. ``["mcmaster_0[1-4].png"]``, a cheap subset for a long campaign).
    :param torch.dtype | None autocast: run the training forward under
        ``torch.autocast`` with this dtype (``torch.bfloat16``: mixed precision, faster on
        CPUs with AVX-512 BF16; see the training guide); weights, optimizer, loss,
        validation and certificate stay in the model's dtype, and an
        :class:`~deepinv_dynnets.EulerDenoiser` estimates its step bounds
        :math:`\nu_i` outside autocast. ``None`` (default): the model's dtype throughout.
    :param float | None checkpoint_minutes: also checkpoint when this many minutes have
        passed since the last checkpoint.
    :param data_root: the data folder: the record names the image folders relative to it
        (default: the folder holding the folders that hold them).
    :return: the :class:`~deepinv_dynnets.training.TrainingRecord`.
    :raises ValueError: a bad argument; with several processes, a ``batch_size`` smaller
        than their number, a last batch of an epoch with fewer patches than processes, or
        ``num_workers > 0``.

    :Examples:

        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> from deepinv_dynnets import EulerDenoiser
        >>> from deepinv_dynnets.training import train_denoiser
        >>> folder = tempfile.mkdtemp()
        >>> rng = np.random.default_rng(0)
        >>> for name in ("a.png", "b.png"):
        ...     Image.fromarray(rng.integers(0, 256, (24, 20), dtype=np.uint8)).save(f"{folder}/{name}")
        >>> model = EulerDenoiser(in_channels=1, width=4, hidden=4, n_blocks=2)
        >>> record = train_denoiser(model, folder, val_folder=folder, epochs=1, batch_size=4,
        ...                         patch_size=16, patches_per_image=4, progress=False)
        >>> len(record.history), sorted(record.history[0]["val_psnr"])
        (1, ['15', '25', '50'])
        >>> record.certificate["lipschitz"] <= 1
        True
    """
    epochs = check_loop_arguments(epochs, lr, grad_clip, checkpoint_every, checkpoint_minutes)
    batch_size = check_positive_int(batch_size, "batch_size")
    lo, hi, levels = _noise_levels(sigma_range, sigmas)
    val_levels = [float(s) for s in val_sigmas]
    if any(not math.isfinite(s) or s < 0 for s in val_levels):
        raise ValueError(f"val_sigmas must be finite and >= 0, got {val_sigmas!r}")
    if autocast is not None and autocast not in (torch.bfloat16, torch.float16):
        raise ValueError(
            f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast!r}"
        )
    holdout = [str(h) for h in holdout]
    if val_only is not None:
        if val_folder is None:
            raise ValueError("val_only selects images of val_folder: give a val_folder")
        val_only = [str(v) for v in val_only]
    processes = world_size()
    if processes > 1 and batch_size < processes:
        raise ValueError(
            f"batch_size {batch_size} is the global batch, shared by {processes} processes: "
            "it must be at least the number of processes"
        )
    if processes > 1 and num_workers:
        raise ValueError("num_workers must be 0 with several processes (each cuts its patches)")
    data = ImagePatches(
        train_folder, patch_size, patches_per_image, channels, True, seed, exclude=holdout
    )
    if 0 < len(data) % batch_size < processes:
        raise ValueError(
            f"the last batch of an epoch would have {len(data) % batch_size} patches for "
            f"{processes} processes: change batch_size or patches_per_image"
        )
    if val_folder is not None:
        val_images = load_images(val_folder, channels, max_val_images, only=val_only)
    elif holdout:
        val_images = load_images(train_folder, channels, max_val_images, only=holdout)
    else:
        val_images = None
    folders = [Path(f) for f in (train_folder, val_folder) if f is not None]
    if data_root is None:
        data_root = os.path.commonpath([os.path.abspath(f.parent) for f in folders])
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    if autocast is torch.bfloat16 and device.type == "cpu" and not cpu_supports_bfloat16():
        warnings.warn(
            "bfloat16 autocast on a CPU without native bfloat16 instructions (AVX-512 BF16 "
            "or AMX): PyTorch emulates them and training runs about 20x slower than in "
            "float32; train without autocast (no --bf16) on this machine",
            RuntimeWarning,
            stacklevel=2,
        )
    settings = dict(
        model=type(model).__name__,
        config=getattr(model, "config", None),
        train_folder=relative_path(train_folder, data_root),
        val_folder=relative_path(val_folder, data_root),
        holdout=holdout,
        val_only=val_only,
        channels=channels,
        epochs=epochs,
        batch_size=batch_size,
        patch_size=data.patch_size,
        patches_per_image=data.patches_per_image,
        lr=float(lr),
        sigma_range=None if levels is not None else [lo, hi],
        sigmas=levels,
        val_sigmas=val_levels,
        seed=int(seed),
        grad_clip=grad_clip,
        n_train_images=len(data.images),
        n_val_images=0 if val_images is None else len(val_images),
        dtype=str(dtype),
        device=str(device),
        autocast=None if autocast is None else str(autocast),
        n_parameters=sum(p.numel() for p in model.parameters()),
    )

    def denoising_loss(network: nn.Module, x: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            out = network(x + sigma.view(-1, 1, 1, 1) * noise, sigma)
        return torch.mean((out.to(dtype) - x) ** 2)

    evaluate = objective(model, denoising_loss)
    shape = (channels, data.patch_size, data.patch_size)

    def noise_levels_and_noise(b: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        if levels is not None:
            sigma = torch.tensor(levels, dtype=torch.float64)[
                torch.randint(0, len(levels), (b,), generator=g)
            ]
        else:
            sigma = lo + (hi - lo) * torch.rand(b, generator=g, dtype=torch.float64)
        noise = torch.randn((b, *shape), generator=g)
        return sigma.to(device=device, dtype=dtype), noise.to(device=device, dtype=dtype)

    def run_epoch(epoch: int, step) -> dict:
        data.set_epoch(epoch)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        if processes == 1:
            loader = torch.utils.data.DataLoader(
                data, batch_size=batch_size, shuffle=True, generator=g, num_workers=num_workers
            )
        else:
            # The global batches of a single process, as patch indices (the same draws
            # from g); each process cuts only its shard's patches.
            loader = torch.utils.data.DataLoader(
                range(len(data)), batch_size=batch_size, shuffle=True, generator=g
            )
        total, count = 0.0, 0
        for batch in tqdm(
            loader, disable=not (progress and rank() == 0), desc=f"epoch {epoch + 1}", leave=False
        ):
            b = batch.shape[0]
            sigma, noise = noise_levels_and_noise(b, g)
            if processes == 1:
                x = batch.to(device=device, dtype=dtype)
                loss = evaluate(x, sigma, noise)
            else:
                part = shard(b)
                x = torch.stack([data[int(i)] for i in batch[part]])
                x = x.to(device=device, dtype=dtype)
                loss = evaluate(x, sigma[part], noise[part])
                loss = loss * shard_weight(x.shape[0], b)
            total += step(loss) * b
            count += b
        entry = {"loss": total / count}
        if val_images is not None:
            if processes == 1:
                entry["val_psnr"] = evaluate_psnr(model, val_images, val_levels)
            else:
                entry["val_psnr"] = _distributed_psnr(
                    model, val_images, val_levels, _VAL_NOISE_SEED, device
                )
        return entry

    def finish(record: TrainingRecord) -> None:
        if callable(getattr(model, "calibrate", None)):
            model.calibrate()
        record.certificate = _certificate_summary(model)

    record = TrainingRecord(settings=settings, world_size=world_size())
    return fit(
        model,
        run_epoch,
        record,
        epochs,
        lr,
        grad_clip=grad_clip,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        checkpoint_minutes=checkpoint_minutes,
        resume=resume,
        progress=progress,
        finish=finish,
    )
