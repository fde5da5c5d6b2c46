"""Input checks shared by the public entry points.

Every public function validates its arguments once, at the boundary (as ``torchdiffeq``
does in ``_check_inputs``), and raises a :class:`ValueError` that names the offending
argument; the internals then assume clean input.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def check_positive(value: float | Tensor, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a finite number > 0."""
    v = float(value.detach().min()) if isinstance(value, Tensor) else float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1 (NumPy integers included,
    bools and floats refused), else raise a ``ValueError`` naming ``name``."""
    try:
        n = operator.index(value)  # any integer type, never a float
    except TypeError:
        n = 0
    if isinstance(value, bool) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return n


def check_finite(x: Tensor, name: str = "x") -> None:
    """Raise a ``ValueError`` naming ``name`` if ``x`` is not a floating tensor of finite values."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


def check_features(x: Tensor, features: int, dim: int, name: str = "x") -> None:
    """Check that ``x`` is finite and has ``features`` entries along dimension ``dim``."""
    check_finite(x, name)
    if x.dim() == 0 or x.dim() <= (dim if dim >= 0 else -dim - 1):
        raise ValueError(
            f"{name} must have at least {dim + 1 if dim >= 0 else -dim} dimension(s), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[dim] != features:
        where = "last dimension" if dim == -1 else f"dimension {dim}"
        raise ValueError(
            f"{name} must have {features} entries along its {where}, got shape {tuple(x.shape)}"
        )


def check_monotone_grid(t: Tensor, name: str = "t") -> None:
    """Raise a ``ValueError`` unless ``t`` is a non-empty, real, finite, strictly monotone
    1-D tensor (an ``odeint`` time grid)."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D tensor of times, got shape {tuple(t.shape)}"
        )
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be a real tensor, got dtype {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    if t.numel() > 1:
        step = t[1:] - t[:-1]
        if not (bool((step > 0).all()) or bool((step < 0).all())):
            raise ValueError(f"{name} must be strictly increasing or strictly decreasing")


def check_channels(channels: object) -> int:
    """Return ``channels`` if it is 1 (grey) or 3 (RGB), else raise a ``ValueError``."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return int(channels)


def check_output_folder(path: object, name: str = "out"):
    """Return ``path`` as a :class:`~pathlib.Path` if a folder can be written there (it is
    a folder or does not exist, and no part of it is a file); else raise a ``ValueError``
    naming ``name``. Nothing is created: callers check before any work."""
    import os
    from pathlib import Path

    folder = Path(path)
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise ValueError(f"{name} {str(folder)!r}: {str(part)!r} is a file, not a folder")
            if not os.access(part, os.W_OK):
                raise ValueError(f"{name} {str(folder)!r}: {str(part)!r} is not writable")
            break
    return folder


def check_device(device: object, name: str = "device") -> torch.device:
    """Return ``device`` as a :class:`torch.device` if it is ``"cpu"`` or an available CUDA
    device, else raise a ``ValueError`` naming ``name``."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name} must be 'cpu' or 'cuda', got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {device!r}: CUDA is not available on this machine")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be 'cpu' or 'cuda', got {device!r}")
    return resolved


def check_int_pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """Return ``value`` (an integer or a pair of integers, each ``>= minimum``) as a pair of
    ints, else raise a ``TypeError``/``ValueError`` naming ``name``."""
    is_pair = isinstance(value, Sequence) and not isinstance(value, str)
    pair = tuple(value) if is_pair else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an integer or a pair of integers, got {value!r}")
    for v in pair:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer or a pair of integers, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def positive_real(value: object, name: str) -> float:
    """Return ``value`` (a real number or a tensor: its largest entry, the worst case of
    per-image values) as a float if it is finite and > 0; else a ``TypeError`` (not a
    number) or ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Tensor):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, Tensor):
        value = value.max() if value.numel() != 1 else value
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def real_array(value: object, name: str) -> Tensor:
    """``value`` (a list, tuple or NumPy array of real numbers) as a float64 tensor.

    Checked element by element because ``np.asarray(value, dtype=float)`` would read
    ``True`` as 1, parse the string ``"0.1"`` and drop imaginary parts with only a warning:
    booleans, strings, complex numbers, ragged nestings and other objects raise a
    ``ValueError`` naming ``name``. One-element real tensors inside a list are accepted.
    """
    array = (
        np.asarray(value, dtype=object) if isinstance(value, list | tuple) else np.asarray(value)
    )
    if array.dtype.kind in "iuf":
        return torch.as_tensor(array.astype(np.float64))
    if array.dtype.kind != "O":
        raise ValueError(f"{name} must hold real numbers, got an array of dtype {array.dtype}")
    values = []
    for item in array.flat:
        if isinstance(item, Tensor) and item.numel() == 1:
            real = not (item.is_complex() or item.dtype == torch.bool)
            item = item.item() if real else item
        if isinstance(item, bool | np.bool_) or not isinstance(item, numbers.Real):
            raise ValueError(f"{name} must hold real numbers, got {item!r} in {value!r}")
        values.append(float(item))
    return torch.tensor(values, dtype=torch.float64).reshape(array.shape)
