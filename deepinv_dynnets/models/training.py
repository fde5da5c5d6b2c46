r"""Training image denoisers on patches: :class:`~deepinv_dynnets.models.EulerDenoiser` and baselines.

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

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checkpoints import load_training_state, save_training_state
from .._validation import check_positive

__all__ = [
    "IMAGE_EXTENSIONS",
    "DenoiserTrainingRecord",
    "ImagePatches",
    "load_images",
    "load_image",
    "psnr",
    "evaluate_psnr",
    "train_denoiser",
]

#: File endings read by :func:`load_images` (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
#: Default validation noise levels: 15, 25 and 50 on the 0-255 scale.
DEFAULT_VAL_SIGMAS = (15 / 255, 25 / 255, 50 / 255)
_VAL_NOISE_SEED = 2024  # fixed: the same noisy validation images at every epoch and run


def _check_channels(channels) -> int:
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return int(channels)


def load_images(
    folder: str | Path,
    channels: int = 1,
    max_images: int | None = None,
    exclude: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> list[Tensor]:
    r"""Read the PNG/JPEG images of ``folder`` (not its sub-folders), in name order.

    :param str | pathlib.Path folder: the folder.
    :param int channels: 1 (converted to grayscale) or 3 (converted to RGB).
    :param int | None max_images: read only the first ones (``None``: all).
    :param exclude: file-name patterns (``fnmatch``, e.g. ``"kodak_2[1-4].png"``) to skip.
    :param only: if given, read only the files matching one of these patterns.
    :return: float32 tensors ``(channels, H, W)`` with values in :math:`[0, 1]`.
    :raises ValueError: the folder is missing or holds no image, or ``channels`` is not 1
        or 3.

    :Examples:

        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> from deepinv_dynnets.models.training import load_images
        >>> folder = tempfile.mkdtemp()
        >>> Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(f"{folder}/a.png")
        >>> load_images(folder, channels=1)[0].shape
        torch.Size([1, 5, 7])
    """
    channels = _check_channels(channels)
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {str(folder)!r} does not exist or is not a folder")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(fnmatch(p.name, pattern) for pattern in exclude)
        and (only is None or any(fnmatch(p.name, pattern) for pattern in only))
    )
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images!r}")
        files = files[:max_images]
    if not files:
        raise ValueError(
            f"no image ({', '.join(IMAGE_EXTENSIONS)}) found in folder {str(folder)!r}"
        )
    return [load_image(p, channels) for p in files]


def load_image(path: str | Path, channels: int = 1) -> Tensor:
    r"""Read one PNG/JPEG image as a float32 tensor ``(channels, H, W)`` in :math:`[0, 1]`.

    :param str | pathlib.Path path: the file.
    :param int channels: 1 (converted to grayscale) or 3 (converted to RGB).
    :raises ValueError: the file is missing or not an image, or ``channels`` is not 1 or 3.

    :Examples:

        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> from deepinv_dynnets.models.training import load_image
        >>> path = tempfile.mkdtemp() + "/a.png"
        >>> Image.fromarray(np.zeros((5, 7), np.uint8)).save(path)
        >>> load_image(path, channels=3).shape
        torch.Size([3, 5, 7])
    """
    channels = _check_channels(channels)
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
    t = torch.from_numpy(array / 255.0)
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1).contiguous()


class ImagePatches(torch.utils.data.Dataset):
    r"""Random square patches of the images of a folder, loaded once into memory.

    One epoch is ``patches_per_image`` patches of every image: item ``i`` is a uniformly
    random ``patch_size`` :math:`\times` ``patch_size`` crop of image
    ``i // patches_per_image``, with (if ``augment``) one of the 8 symmetries of the square
    (a random ``rot90`` and a random flip). The randomness of item ``i`` depends only on
    ``seed``, the epoch set by :meth:`set_epoch` and ``i``, so an epoch is reproducible
    (also with several ``DataLoader`` workers and after resuming a run); ``seed=None`` draws
    a seed from PyTorch's global generator.

    :param str | pathlib.Path folder: folder of PNG/JPEG images (see :func:`load_images`).
    :param int patch_size: side of the patches; every image must be at least this large.
    :param int patches_per_image: patches of each image per epoch.
    :param int channels: 1 (grayscale) or 3 (RGB).
    :param bool augment: random flips and rotations by multiples of 90 degrees.
    :param int | None seed: seed of the crops and augmentations.
    :param exclude: file-name patterns of images to leave out (see :func:`load_images`).
    :raises ValueError: missing or empty folder, bad ``channels``, an image smaller than
        ``patch_size``.

    :Examples:

        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> from deepinv_dynnets.models.training import ImagePatches
        >>> folder = tempfile.mkdtemp()
        >>> Image.fromarray(np.zeros((20, 30), np.uint8)).save(f"{folder}/a.png")
        >>> data = ImagePatches(folder, patch_size=8, patches_per_image=4, seed=0)
        >>> len(data), data[0].shape
        (4, torch.Size([1, 8, 8]))
    """

    def __init__(
        self,
        folder: str | Path,
        patch_size: int = 40,
        patches_per_image: int = 16,
        channels: int = 1,
        augment: bool = True,
        seed: int | None = None,
        exclude: Sequence[str] = (),
    ):
        channels = _check_channels(channels)
        for name, value in (("patch_size", patch_size), ("patches_per_image", patches_per_image)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.images = load_images(folder, channels, exclude=exclude)
        small = [tuple(im.shape[1:]) for im in self.images if min(im.shape[1:]) < patch_size]
        if small:
            raise ValueError(
                f"patch_size {patch_size} is larger than some images of {str(folder)!r} "
                f"(e.g. H x W = {small[0][0]} x {small[0][1]})"
            )
        self.folder = Path(folder)
        self.patch_size = int(patch_size)
        self.patches_per_image = int(patches_per_image)
        self.channels = channels
        self.augment = bool(augment)
        self.seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of epoch ``epoch`` (each epoch has its own)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images) * self.patches_per_image

    def __getitem__(self, index: int) -> Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        g = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.epoch * len(self) + int(index)) % (2**63 - 1)
        )
        image = self.images[index // self.patches_per_image]
        p = self.patch_size
        h, w = image.shape[1:]
        top = int(torch.randint(0, h - p + 1, (), generator=g))
        left = int(torch.randint(0, w - p + 1, (), generator=g))
        patch = image[:, top : top + p, left : left + p]
        if self.augment:
            k = int(torch.randint(0, 4, (), generator=g))
            patch = torch.rot90(patch, k, dims=(1, 2))
            if int(torch.randint(0, 2, (), generator=g)):
                patch = patch.flip(2)
        return patch.contiguous()


def psnr(x: Tensor, y: Tensor) -> Tensor:
    r"""Peak signal-to-noise ratio of each image, for images in :math:`[0, 1]` (peak 1).

    .. math::

        \operatorname{PSNR}(x, y) = -10\log_{10}\Big(\frac1{CHW}\|x - y\|_2^2\Big)
        \ \text{dB},

    ``inf`` for identical images. No clipping is applied to ``x``.

    :param torch.Tensor x: images ``(B, C, H, W)`` (or ``(C, H, W)``).
    :param torch.Tensor y: references, same shape.
    :return: PSNR in dB, shape ``(B,)`` (a 0-d tensor for a single image).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.models.training import psnr
        >>> x = torch.zeros(1, 1, 4, 4)
        >>> psnr(x + 0.1, x).round(decimals=3)
        tensor([20.])
    """
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    dims = tuple(range(x.dim() - 3, x.dim())) if x.dim() >= 3 else tuple(range(x.dim()))
    mse = (x.double() - y.double()).square().mean(dim=dims)
    return (-10 * torch.log10(mse)).to(x.dtype)


@torch.no_grad()
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
    :param images: clean images ``(C, H, W)`` in :math:`[0, 1]` (see :func:`load_images`).
    :param sigmas: noise levels on the :math:`[0, 1]` scale.
    :param int seed: seed of the noise.
    :return: ``{"15": mean PSNR, ...}``, keyed by :math:`255\sigma` (``"%g"``), in dB.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.models import evaluate_psnr
        >>> class Identity(torch.nn.Module):
        ...     def forward(self, x, sigma):
        ...         return x
        >>> model = Identity()
        >>> model.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
        >>> psnrs = evaluate_psnr(model, [torch.rand(1, 32, 32)], sigmas=[0.1])
        >>> round(psnrs["25.5"])  # the noisy input: 20 dB for sigma = 0.1
        20
    """
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    was_training = model.training
    model.eval()
    try:
        result = {}
        for sigma in sigmas:
            g = torch.Generator().manual_seed(seed)
            values = []
            for image in images:
                x = image.unsqueeze(0).to(device=device, dtype=dtype)
                noise = torch.randn(x.shape, generator=g).to(device=device, dtype=dtype)
                s = torch.full((1,), float(sigma), device=device, dtype=dtype)
                values.append(float(psnr(model(x + sigma * noise, s), x)[0]))
            result[f"{255 * float(sigma):g}"] = sum(values) / len(values)
        return result
    finally:
        model.train(was_training)


@dataclass
class DenoiserTrainingRecord:
    r"""What a denoiser training run did.

    :param dict settings: the arguments of :func:`train_denoiser` and data sizes.
    :param list[dict] history: per epoch: ``epoch`` (1-based), ``loss`` (mean training
        MSE), ``lr`` (learning rate used), ``time_s`` and, with validation, ``val_psnr``
        (``{"15": dB, "25": dB, ...}``).
    :param float wall_time_s: training time (validation included), summed over resumes.
    :param dict | None certificate: for networks with certified constants (e.g.
        :class:`~deepinv_dynnets.models.EulerDenoiser`), the summary of
        :func:`~deepinv_dynnets.certify` after calibration: ``lipschitz``, ``alpha``,
        ``alpha_target``, ``margin``, ``method``; ``None`` otherwise.

    :Examples:

        >>> from deepinv_dynnets.models import DenoiserTrainingRecord
        >>> record = DenoiserTrainingRecord(settings={}, history=[
        ...     {"epoch": 1, "loss": 0.01, "val_psnr": {"25": 27.0}},
        ...     {"epoch": 2, "loss": 0.005, "val_psnr": {"25": 28.0}}])
        >>> record.val_psnr
        [{'25': 27.0}, {'25': 28.0}]
    """

    settings: dict
    history: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    certificate: dict | None = None

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall time of one epoch."""
        return self.wall_time_s / max(len(self.history), 1)

    @property
    def train_losses(self) -> list[float]:
        """The mean training loss of every epoch."""
        return [e["loss"] for e in self.history]

    @property
    def val_psnr(self) -> list[dict[str, float]]:
        """The validation PSNRs of every epoch (empty without validation)."""
        return [e["val_psnr"] for e in self.history if "val_psnr" in e]

    def to_json(self, path: str | Path) -> None:
        """Write the record as JSON."""
        data = asdict(self) | {"seconds_per_epoch": self.seconds_per_epoch}
        Path(path).write_text(json.dumps(data, indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> DenoiserTrainingRecord:
        """Read a record written by :meth:`to_json` (other keys, such as the training
        command that ``dynnets train-denoiser`` adds, are ignored)."""
        data = json.loads(Path(path).read_text())
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


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
    autocast: torch.dtype | None = None,
) -> DenoiserTrainingRecord:
    r"""Train a denoiser on noisy/clean patches with the MSE loss.

    Every epoch visits ``patches_per_image`` random, augmented patches of every training
    image (:class:`ImagePatches`) in a shuffled order, in mini-batches of ``batch_size``.
    Each image :math:`i` of a batch gets its own noise level :math:`\sigma_i`, uniform in
    ``sigma_range`` (or uniform among the fixed levels ``sigmas``), passed to the model as a
    ``(B,)`` tensor, ``model(x + sigma * noise, sigma)``; the loss is

    .. math::

        \mathcal L = \frac1B\sum_i \frac1{CHW}\|D(x_i + \sigma_i\varepsilon_i, \sigma_i) -
        x_i\|_2^2.

    Adam with learning rate decaying along a cosine from ``lr`` to ``lr / 100`` over
    ``epochs``, gradients clipped to norm ``grad_clip``. After every epoch, with
    ``val_folder``, the mean PSNR on the full validation images is recorded at every level
    of ``val_sigmas`` (:func:`evaluate_psnr`, fixed noise). The run is reproducible from
    ``seed`` (patches, batch order and noise of each epoch depend only on ``seed`` and the
    epoch, so a resumed run sees the same data as an uninterrupted one).

    A checkpoint (model, optimizer, scheduler, epoch, record) is written every
    ``checkpoint_every`` epochs and at the end; with ``resume=True`` and an existing
    ``checkpoint`` the run continues from its epoch. The model is left in eval mode. If
    the model has a ``calibrate()`` method (:meth:`EulerDenoiser.calibrate
    <deepinv_dynnets.models.EulerDenoiser.calibrate>`: raise each step bound
    :math:`\nu_i` to the certified :math:`\|A_i\|^2`, so that the target averagedness is
    certified), it is called after training, and for networks with certified constants
    the summary of :func:`~deepinv_dynnets.certify` is stored in the record.

    :param torch.nn.Module model: a denoiser ``model(x, sigma)`` with ``sigma`` of shape
        ``(B,)``, e.g. :class:`~deepinv_dynnets.models.EulerDenoiser` or
        ``deepinv.models.DnCNN(in_channels=c, out_channels=c, pretrained=None)``; trained
        in its own dtype and on its own device.
    :param str | pathlib.Path train_folder: folder of training images.
    :param str | pathlib.Path | None val_folder: folder of validation images, or ``None``.
    :param int channels: 1 (grayscale) or 3 (RGB); must match the model.
    :param int epochs: number of epochs (the total, when resuming).
    :param int batch_size: patches per batch.
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
    :param int num_workers: ``DataLoader`` workers.
    :param holdout: file-name patterns of ``train_folder`` images left out of training
        (e.g. ``["kodak_2[1-4].png"]``); without ``val_folder`` they are the validation set.
    :param torch.dtype | None autocast: run the training forward under
        ``torch.autocast`` with this dtype (``torch.bfloat16``: mixed precision, faster on
        CPUs with AVX-512 BF16; see the training guide); weights, optimizer, loss,
        validation and certificate stay in the model's dtype, and an
        :class:`~deepinv_dynnets.models.EulerDenoiser` estimates its step bounds
        :math:`\nu_i` outside autocast. ``None`` (default): the model's dtype throughout.
    :return: the :class:`DenoiserTrainingRecord`.

    :Examples:

        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> from deepinv_dynnets.models import EulerDenoiser
        >>> from deepinv_dynnets.models.training import train_denoiser
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
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    for name, value in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    check_positive(lr, "lr")
    if sigmas is not None:
        levels = [float(s) for s in sigmas]
        if not levels or any(not math.isfinite(s) or s < 0 for s in levels):
            raise ValueError(f"sigmas must be non-empty, finite and >= 0, got {sigmas!r}")
    else:
        lo, hi = (float(s) for s in sigma_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            raise ValueError(
                f"sigma_range must be (lo, hi) with 0 <= lo <= hi, got {sigma_range!r}"
            )
    val_levels = [float(s) for s in val_sigmas]
    if any(not math.isfinite(s) or s < 0 for s in val_levels):
        raise ValueError(f"val_sigmas must be finite and >= 0, got {val_sigmas!r}")
    if autocast is not None and autocast not in (torch.bfloat16, torch.float16):
        raise ValueError(
            f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast!r}"
        )

    holdout = [str(h) for h in holdout]
    data = ImagePatches(
        train_folder, patch_size, patches_per_image, channels, True, seed, exclude=holdout
    )
    if val_folder is not None:
        val_images = load_images(val_folder, channels, max_val_images)
    elif holdout:
        val_images = load_images(train_folder, channels, max_val_images, only=holdout)
    else:
        val_images = None
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    settings = dict(
        model=type(model).__name__,
        config=getattr(model, "config", None),
        train_folder=str(train_folder),
        val_folder=None if val_folder is None else str(val_folder),
        holdout=holdout,
        channels=channels,
        epochs=int(epochs),
        batch_size=int(batch_size),
        patch_size=int(patch_size),
        patches_per_image=int(patches_per_image),
        lr=float(lr),
        sigma_range=None if sigmas is not None else [lo, hi],
        sigmas=None if sigmas is None else levels,
        val_sigmas=val_levels,
        seed=int(seed),
        grad_clip=grad_clip,
        n_train_images=len(data.images),
        n_val_images=0 if val_images is None else len(val_images),
        dtype=str(dtype),
        autocast=None if autocast is None else str(autocast),
        n_parameters=sum(p.numel() for p in model.parameters()),
    )

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=lr / 100)
    record = DenoiserTrainingRecord(settings=settings)
    start = 0
    if checkpoint is not None and resume and Path(checkpoint).is_file():
        saved, start = load_training_state(checkpoint, model, optimizer, scheduler, device)
        record = DenoiserTrainingRecord(**saved)

    def save(epoch: int) -> None:
        save_training_state(
            checkpoint, model, optimizer, scheduler, record, epoch,
            model_class=type(model).__name__,
        )  # fmt: skip

    model.train()
    bar = tqdm(
        range(start, epochs), disable=not progress, desc="epochs", initial=start, total=epochs
    )
    for epoch in bar:
        tic = time.perf_counter()
        data.set_epoch(epoch)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        loader = torch.utils.data.DataLoader(
            data, batch_size=batch_size, shuffle=True, generator=g, num_workers=num_workers
        )
        lr_used = optimizer.param_groups[0]["lr"]
        total, count = 0.0, 0
        for x in tqdm(loader, disable=not progress, desc=f"epoch {epoch + 1}", leave=False):
            x = x.to(device=device, dtype=dtype)
            b = x.shape[0]
            if sigmas is not None:
                sigma = torch.tensor(levels, dtype=torch.float64)[
                    torch.randint(0, len(levels), (b,), generator=g)
                ]
            else:
                sigma = lo + (hi - lo) * torch.rand(b, generator=g, dtype=torch.float64)
            sigma = sigma.to(device=device, dtype=dtype)
            noise = torch.randn(x.shape, generator=g).to(device=device, dtype=dtype)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                out = model(x + sigma.view(-1, 1, 1, 1) * noise, sigma)
            loss = torch.mean((out.to(dtype) - x) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch + 1}: loss {loss.item()}"
                )
            total += loss.item() * b
            count += b
        scheduler.step()
        entry = {"epoch": epoch + 1, "loss": total / count, "lr": lr_used}
        if val_images is not None:
            entry["val_psnr"] = evaluate_psnr(model, val_images, val_levels)
        entry["time_s"] = time.perf_counter() - tic
        record.wall_time_s += entry["time_s"]
        record.history.append(entry)
        postfix = {"loss": f"{entry['loss']:.3e}"}
        if "val_psnr" in entry:
            postfix |= {f"psnr{k}": f"{v:.2f}" for k, v in entry["val_psnr"].items()}
        bar.set_postfix(postfix)
        if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            save(epoch + 1)
    model.eval()
    if callable(getattr(model, "calibrate", None)):
        model.calibrate()
    record.certificate = _certificate_summary(model)
    if checkpoint is not None:
        save(epochs)  # the calibrated model and the certificate
    return record
