r"""Images and blur kernels: reading image files, centre crops, built-in images, kernels.

Images are float32 tensors ``(C, H, W)`` with values in :math:`[0, 1]`. A file is scaled by
its own bit depth: 8-bit files by :math:`1/255`, 16-bit files by :math:`1/65535`, and
floating-point files (e.g. 32-bit TIFF) are read as they are, provided that their values
already lie in :math:`[0, 1]` (there is no way to know which scale a float file uses, so
one outside it is refused rather than clipped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ._validation import check_channels, check_positive_int

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_BLUR_STD",
    "BLUR_KERNELS",
    "load_image",
    "load_images",
    "center_crop",
    "builtin_image",
    "blur_kernel",
    "ImagePatches",
]

#: File endings read by :func:`load_images` (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Standard deviation (pixels) of the ``"gaussian"`` kernel of :func:`blur_kernel`.
DEFAULT_BLUR_STD = 1.6
#: The kernels :func:`blur_kernel` knows by name (any other spec is a ``.npy``/``.npz`` file).
BLUR_KERNELS = ("gaussian", "motion")

# Pillow modes holding one channel of more than 8 bits, and the value of their white.
_WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def _wide_array(im: Image.Image, path: str | Path) -> np.ndarray:
    """A one-channel image of more than 8 bits (16-bit integer or float) as float32 in [0, 1]."""
    array = np.asarray(im)
    if im.mode == "F":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(
                f"cannot read image {str(path)!r}: a floating-point image must have finite "
                f"values in [0, 1], got [{array.min():g}, {array.max():g}]"
            )
        return array.astype(np.float32)
    white = _WIDE_MODES[im.mode]
    if array.min() < 0 or array.max() > white:
        raise ValueError(
            f"cannot read image {str(path)!r}: {im.mode} values in [{array.min()}, "
            f"{array.max()}] are not 16-bit"
        )
    return (array.astype(np.float64) / white).astype(np.float32)


def load_image(path: str | Path, channels: int = 1) -> Tensor:
    r"""Read one image file as a float32 tensor ``(channels, H, W)`` in :math:`[0, 1]`.

    8-bit files (grey, RGB, RGBA, palette, ...) are converted by Pillow to grey (ITU-R
    601-2 luma) or RGB (alpha dropped) and divided by 255; 16-bit grey files are divided
    by 65535; floating-point grey files (TIFF) are read unchanged if their values lie in
    :math:`[0, 1]`. A grey file read with ``channels=3`` is repeated on the 3 channels,
    and a 16-bit or float file read with ``channels=1`` keeps its full precision.

    :param str | pathlib.Path path: the file.
    :param int channels: 1 (grayscale) or 3 (RGB).
    :raises ValueError: the file is missing or not an image, a float image with values
        outside :math:`[0, 1]`, or ``channels`` is not 1 or 3.

    :Examples:

        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> from deepinv_dynnets.data import load_image
        >>> path = tempfile.mkdtemp() + "/a.png"
        >>> Image.fromarray(np.full((5, 7), 65535, np.uint16)).save(path)  # 16-bit white
        >>> x = load_image(path, channels=3)
        >>> x.shape, x.max().item()
        (torch.Size([3, 5, 7]), 1.0)
    """
    channels = check_channels(channels)
    try:
        with Image.open(path) as im:
            if im.mode in _WIDE_MODES or im.mode == "F":
                array = _wide_array(im, path)
                if channels == 3:
                    array = np.repeat(array[..., None], 3, axis=-1)
            else:
                rgb = im.convert("L" if channels == 1 else "RGB")
                array = np.asarray(rgb, dtype=np.float32) / 255.0
    except (OSError, ValueError, KeyError) as err:
        if isinstance(err, ValueError) and str(err).startswith("cannot read image"):
            raise
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
    t = torch.from_numpy(np.ascontiguousarray(array))
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1).contiguous()


def load_images(
    folder: str | Path,
    channels: int = 1,
    max_images: int | None = None,
    exclude: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> list[Tensor]:
    r"""Read the images of ``folder`` (not its sub-folders), in name order.

    :param str | pathlib.Path folder: the folder; files ending in one of
        :data:`IMAGE_EXTENSIONS` are read by :func:`load_image`.
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
        >>> from deepinv_dynnets.data import load_images
        >>> folder = tempfile.mkdtemp()
        >>> Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(f"{folder}/a.png")
        >>> load_images(folder, channels=1)[0].shape
        torch.Size([1, 5, 7])
    """
    channels = check_channels(channels)
    if max_images is not None:
        max_images = check_positive_int(max_images, "max_images")
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
    )[:max_images]
    if not files:
        raise ValueError(
            f"no image ({', '.join(IMAGE_EXTENSIONS)}) found in folder {str(folder)!r}"
        )
    return [load_image(p, channels) for p in files]


def center_crop(x: Tensor, size: int | None) -> Tensor:
    """The central ``size`` x ``size`` window of ``x`` (``(..., H, W)``); ``None``: all of it.

    :raises ValueError: ``size`` is not a positive integer or is larger than the image.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.data import center_crop
        >>> center_crop(torch.arange(25.0).reshape(1, 5, 5), 1)
        tensor([[[12.]]])
    """
    if size is None:
        return x
    size = check_positive_int(size, "size")
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"size {size} is larger than the image ({h} x {w})")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size].contiguous()


def builtin_image(channels: int = 1, size: int | None = None) -> Tensor:
    """scikit-image's *camera* (grey, 512 x 512) or *astronaut* (colour), centre-cropped.

    Shipped with scikit-image, so no download is needed.

    :param int channels: 1 (camera) or 3 (astronaut).
    :param int | None size: side of the centre crop (``None``: the whole image).
    :return: a float32 tensor ``(channels, size, size)`` in :math:`[0, 1]`.

    :Examples:

        >>> from deepinv_dynnets.data import builtin_image
        >>> builtin_image(3, 64).shape
        torch.Size([3, 64, 64])
    """
    from skimage import data

    channels = check_channels(channels)
    array = data.camera() if channels == 1 else data.astronaut()
    x = torch.from_numpy(array.astype("float32") / 255)
    x = x[None] if channels == 1 else x.permute(2, 0, 1)
    return center_crop(x, size)


def blur_kernel(
    spec: str | Path, name: str | None = None, blur_std: float = DEFAULT_BLUR_STD
) -> Tensor:
    """A blur kernel ``(1, 1, h, w)`` that sums to 1, by name or from a NumPy file.

    :param spec: ``"gaussian"`` (isotropic, standard deviation ``blur_std`` pixels),
        ``"motion"`` (deepinv's ``MotionBlurGenerator``, 19 x 19, seed 0), or a ``.npy``
        file or ``.npz`` file of 2-D arrays (normalised to sum 1).
    :param str | None name: the array of a ``.npz`` file (default: its first).
    :param float blur_std: standard deviation of the ``"gaussian"`` kernel.
    :raises ValueError: an unknown name or missing file, a missing ``.npz`` array, an array
        that is not 2-D, not finite or does not have a positive sum, a bad ``blur_std``.

    :Examples:

        >>> from deepinv_dynnets.data import blur_kernel
        >>> k = blur_kernel("gaussian", blur_std=1.0)
        >>> k.dim(), round(k.sum().item(), 6)
        (4, 1.0)
    """
    import deepinv

    if str(spec) == "gaussian":
        if not (isinstance(blur_std, int | float) and math.isfinite(blur_std) and blur_std > 0):
            raise ValueError(f"blur_std must be a finite positive number, got {blur_std!r}")
        return deepinv.physics.functional.blur.gaussian_blur(sigma=(blur_std, blur_std))
    if str(spec) == "motion":
        gen = deepinv.physics.generator.MotionBlurGenerator(
            (19, 19), rng=torch.Generator().manual_seed(0)
        )
        return gen.step(1, seed=0)["filter"]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(
            f"kernel must be {' or '.join(map(repr, BLUR_KERNELS))} or a .npy/.npz file, "
            f"got {str(spec)!r}"
        )
    try:
        loaded = np.load(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the kernel file {str(path)!r}: {err}") from err
    if isinstance(loaded, np.lib.npyio.NpzFile):
        key = name or loaded.files[0]
        if key not in loaded.files:
            raise ValueError(f"{path} has no array {key!r} (it has {', '.join(loaded.files)})")
        loaded = loaded[key]
    kernel = torch.as_tensor(np.asarray(loaded, dtype=np.float32))
    if kernel.dim() != 2 or not bool(torch.isfinite(kernel).all()) or kernel.sum() <= 0:
        raise ValueError(f"the blur kernel must be a finite 2-D array with a positive sum: {path}")
    return (kernel / kernel.sum())[None, None]


class ImagePatches(torch.utils.data.Dataset):
    r"""Random square patches of the images of a folder, loaded once into memory.

    One epoch is ``patches_per_image`` patches of every image: item ``i`` is a uniformly
    random ``patch_size`` :math:`\times` ``patch_size`` crop of image
    ``i // patches_per_image``, with (if ``augment``) one of the 8 symmetries of the square
    (a random ``rot90`` and a random flip). The randomness of item ``i`` depends only on
    ``seed``, the epoch set by :meth:`set_epoch` and ``i``, so an epoch is reproducible
    (also with several ``DataLoader`` workers and after resuming a run); ``seed=None`` draws
    a seed from PyTorch's global generator.

    :param str | pathlib.Path folder: folder of images (see
        :func:`load_images`).
    :param int patch_size: side of the patches; every image must be at least this large.
    :param int patches_per_image: patches of each image per epoch.
    :param int channels: 1 (grayscale) or 3 (RGB).
    :param bool augment: random flips and rotations by multiples of 90 degrees.
    :param int | None seed: seed of the crops and augmentations.
    :param exclude: file-name patterns of images to leave out.
    :raises ValueError: missing or empty folder, bad ``channels``, an image smaller than
        ``patch_size``.

    :Examples:

        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> from deepinv_dynnets.data import ImagePatches
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
        channels = check_channels(channels)
        patch_size = check_positive_int(patch_size, "patch_size")
        patches_per_image = check_positive_int(patches_per_image, "patches_per_image")
        self.images = load_images(folder, channels, exclude=exclude)
        small = [tuple(im.shape[1:]) for im in self.images if min(im.shape[1:]) < patch_size]
        if small:
            raise ValueError(
                f"patch_size {patch_size} is larger than some images of {str(folder)!r} "
                f"(e.g. H x W = {small[0][0]} x {small[0][1]})"
            )
        self.folder = Path(folder)
        self.patch_size = patch_size
        self.patches_per_image = patches_per_image
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
