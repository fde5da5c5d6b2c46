r"""Shipped weights: the registry, and the one file format every model is saved in.

A set of weights is two files side by side:

- ``name.pt``: the model's **plain state dict** (``torch.save(model.state_dict())``), so
  ``torch.load(path, weights_only=True)`` reads it, and a file of a deepinv model (the DnCNN
  baseline) loads with deepinv's own ``DnCNN(pretrained=path)``;
- ``name.json``: the **model card**: the format tag, the model ``kind``, the format
  version, the constructor ``config``, the SHA-256 of the ``.pt`` file, and how the weights
  were made (command, data, hardware, wall time, history). Paths to training data are
  stored relative to the data folder, never as absolute paths of the machine that trained.

:func:`save_weights` writes both, :func:`load_weights` checks both (tag, kind, version,
checksum) and reads the weights with ``weights_only=True``. Files written before this format
(one ``torch.save`` of a dict holding a format tag, the config and the state dict) are still
read, as format version 0. ``scripts/convert_weights.py`` converted the shipped ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "WEIGHTS_DIR",
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "KINDS",
    "CARD_FORMAT_KEYS",
    "SHIPPED",
    "save_weights",
    "load_weights",
    "read_card",
    "resolve_weights",
    "load_denoiser",
    "build_from_card",
]

#: The folder of the shipped weights (inside the package: nothing is downloaded).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Format tag written in every model card.
WEIGHTS_FORMAT = "deepinv_dynnets.weights"
#: Version of the format; :func:`load_weights` refuses files of a newer one.
WEIGHTS_FORMAT_VERSION = 1
#: The model kinds, with the keys that select one of several shipped files of a name.
KINDS = {
    "euler_denoiser": ("in_channels", "alpha"),
    "dncnn": (),
    "sympflow": (),
    "pinn": (),
}
#: Shipped weights: kind -> name -> file in :data:`WEIGHTS_DIR`, or, for kinds with
#: selection keys (see :data:`KINDS`), a dict from the tuple of key values to the file.
#: ``alpha`` is an Euler denoiser's target averagedness: 1/2 (firmly non-expansive, for
#: every PnP algorithm) or 0.95 (PGD and HQS only, better denoising).
SHIPPED: dict[str, dict[str, str | dict[tuple, str]]] = {
    "euler_denoiser": {
        "default": {
            (1, 0.5): "euler_denoiser_gray.pt",
            (1, 0.95): "euler_denoiser_gray_a095.pt",
            (3, 0.5): "euler_denoiser_color.pt",
            (3, 0.95): "euler_denoiser_color_a095.pt",
        },
        # The long training campaign (100 epochs, validated on held-out BSD400 images); not
        # the default while the PnP defaults and records are those of the weights above.
        "campaign": {(1, 0.95): "euler_denoiser_gray_a095_campaign.pt"},
    },
    "dncnn": {
        "dncnn-gray": "dncnn_baseline_gray.pt",
        # bfloat16, the shipped alpha = 0.95 grey model's precision and compute
        "dncnn-gray-bf16": "dncnn_baseline_gray_bf16.pt",
    },
    "sympflow": {
        "harmonic-oscillator": "sympflow_harmonic_oscillator.pt",
        "henon-heiles": "sympflow_henon_heiles.pt",
        # Delta t = 1/2, no matching: energy error bounded to t = 1000 (twice the compositions)
        "henon-heiles-dt05": "sympflow_henon_heiles_dt05.pt",
        # Delta t = 1/4, no matching: no orbit of the benchmark's 500 escapes (4x the compositions)
        "henon-heiles-dt025": "sympflow_henon_heiles_dt025.pt",
        "pendulum": "sympflow_pendulum.pt",
        "kepler": "sympflow_kepler.pt",
    },
    "pinn": {},
}

#: Card keys written by :func:`save_weights` itself; a model's own card entries may not
#: reuse them (the rest of a card is the model's metadata).
CARD_FORMAT_KEYS = ("format", "format_version", "kind", "config", "weights_file", "weights_sha256")
# Tags of the single-file formats that came before this one (format version 0).
_LEGACY_TAGS = {
    "euler_denoiser": ("format", "deepinv_dynnets.EulerDenoiser"),
    "dncnn": ("model", "deepinv.models.DnCNN"),
    "sympflow": ("format", "deepinv_dynnets.SympFlow"),
}


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    return kind


def _card_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _relative_to(value, root: str):
    # Every string holding the data folder's absolute path, with that prefix removed.
    if isinstance(value, str):
        return value.replace(root + "/", "").replace(root, ".")
    if isinstance(value, Mapping):
        return {k: _relative_to(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative_to(v, root) for v in value]
    return value


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    kind: str,
    config: Mapping | None,
    data_root: str | Path | None = None,
    **card,
) -> None:
    r"""Save ``model``'s weights to ``path`` (``.pt``) and its model card beside it (``.json``).

    The ``.pt`` file holds the plain state dict (on the CPU); the card holds
    ``{"format", "format_version", "kind", "config", "weights_file", "weights_sha256"}``
    and the entries of ``card`` at its top level.

    :param torch.nn.Module model: the model.
    :param str | pathlib.Path path: the weights file; must end in ``.pt``.
    :param str kind: one of :data:`KINDS`.
    :param dict | None config: the constructor arguments that rebuild the architecture
        (JSON-able), or ``None`` when the kind needs none.
    :param str | pathlib.Path | None data_root: the training data folder: every string of
        the card that contains its absolute path gets it removed, so cards hold paths
        relative to it.
    :param card: JSON-able entries (command, wall time, hardware, history, ...).
    :raises ValueError: unknown ``kind``, a path not ending in ``.pt``, reserved or
        non-JSON-able card entries (checked before anything is written).

    :Examples:

        >>> import json, tempfile, pathlib
        >>> from torch import nn
        >>> from deepinv_dynnets.pretrained import load_weights, save_weights
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "lin.pt"
        >>> save_weights(nn.Linear(2, 1), path, kind="pinn", config={"n": 2}, command="demo")
        >>> state, card = load_weights(path, kind="pinn")
        >>> sorted(state), card["config"], card["command"]
        (['bias', 'weight'], {'n': 2}, 'demo')
    """
    kind = _check_kind(kind)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"path must end in .pt (the card goes beside it), got {str(path)!r}")
    clash = sorted(set(card) & set(CARD_FORMAT_KEYS))
    if clash:
        raise ValueError(f"card entries {clash} are reserved for the format")
    if config is not None and not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict or None, got {type(config).__name__}")
    entries = {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "kind": kind,
        "config": None if config is None else dict(config),
        "weights_file": path.name,
        "weights_sha256": "",
        **card,
    }
    if data_root is not None:
        entries = _relative_to(entries, str(Path(data_root).resolve()))
        entries["paths_relative_to"] = "the training data folder"
    try:
        json.dumps(entries, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the model card must be JSON-able (finite numbers): {err}") from err
    state = {
        k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in model.state_dict().items()
    }
    torch.save(state, path)
    entries["weights_sha256"] = _sha256(path)
    _card_path(path).write_text(json.dumps(entries, indent=2) + "\n")


def _has_card(path: Path) -> bool:
    # A card of this format beside the file (files of older versions have none, or a
    # training record without the format tag).
    try:
        card = json.loads(_card_path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(card, dict) and card.get("format") == WEIGHTS_FORMAT


def _legacy_file(path: Path, map_location) -> tuple[dict, str]:
    # A single-file checkpoint of an older version: (its dict, its kind).
    try:
        saved = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as err:  # pickle, zip and EOF errors all mean the same to a user
        raise ValueError(f"{path} is not a readable weights file ({err})") from err
    if isinstance(saved, dict):
        for kind, (key, tag) in _LEGACY_TAGS.items():
            if saved.get(key) == tag and isinstance(saved.get("state_dict"), dict):
                return saved, kind
    raise ValueError(
        f"{path} has no model card {_card_path(path).name} beside it and is not a weights "
        f"file of an older version: save it with deepinv_dynnets.pretrained.save_weights"
    )


def _read_legacy(path: Path, kind: str, map_location) -> tuple[dict, dict]:
    saved, found = _legacy_file(path, map_location)
    if found != kind:
        raise ValueError(f"{path} holds weights of kind {found!r}, not {kind!r}")
    card = {
        "format": WEIGHTS_FORMAT,
        "format_version": 0,
        "kind": kind,
        "config": saved.get("config"),
        "weights_file": path.name,
        **saved.get("metadata", {}),
    }
    return saved["state_dict"], card


def read_card(path: str | Path) -> dict:
    """The model card of a weights file (checked tag and version, not yet the checksum).

    :param str | pathlib.Path path: the ``.pt`` file (its card is the ``.json`` beside it).
    :raises ValueError: no card, an unreadable card, a foreign tag, a newer version.

    :Examples:

        >>> from deepinv_dynnets.pretrained import WEIGHTS_DIR, read_card
        >>> read_card(WEIGHTS_DIR / "dncnn_baseline_gray.pt")["kind"]
        'dncnn'
    """
    path = Path(path)
    card_file = _card_path(path)
    if not card_file.is_file():
        raise ValueError(f"{path} has no model card {card_file.name} beside it")
    try:
        card = json.loads(card_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{card_file} is not a readable model card ({err})") from err
    if not isinstance(card, dict) or card.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{card_file} is not a model card (no {WEIGHTS_FORMAT!r} format tag)")
    version = card.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{card_file} has no integer format_version")
    if version > WEIGHTS_FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer deepinv-dynnets (format version {version} > "
            f"{WEIGHTS_FORMAT_VERSION}): upgrade the package"
        )
    return card


def load_weights(
    path: str | Path, *, kind: str, map_location: str | torch.device | None = None
) -> tuple[dict, dict]:
    """Read a weights file written by :func:`save_weights`, checked against its card.

    :param str | pathlib.Path path: the ``.pt`` file.
    :param str kind: the kind expected (one of :data:`KINDS`).
    :param map_location: passed to ``torch.load`` (default: the CPU).
    :return: ``(state_dict, card)``.
    :raises ValueError: a missing, truncated or corrupt file (checksum mismatch), a card of
        another kind or of a newer format version.

    :Examples:

        >>> from deepinv_dynnets.pretrained import WEIGHTS_DIR, load_weights
        >>> state, card = load_weights(WEIGHTS_DIR / "dncnn_baseline_gray.pt", kind="dncnn")
        >>> card["config"]["depth"], card["format_version"]
        (17, 1)
    """
    kind = _check_kind(kind)
    if not isinstance(path, (str, Path)):
        raise ValueError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no weights file {str(path)!r}")
    if not _has_card(path):
        return _read_legacy(path, kind, map_location)
    card = read_card(path)
    if card.get("kind") != kind:
        raise ValueError(f"{path} holds weights of kind {card.get('kind')!r}, not {kind!r}")
    if _sha256(path) != card.get("weights_sha256"):
        raise ValueError(
            f"{path} does not match the checksum in its model card: the file is truncated, "
            f"corrupt or was replaced without its card"
        )
    try:
        state = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as err:  # pickle, zip and EOF errors all mean the same to a user
        raise ValueError(f"{path} is not a readable weights file ({err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state, card


def resolve_weights(name_or_path: str | Path, kind: str, **keys) -> Path:
    """The file a shipped name (for ``kind`` and the selection ``keys``) or a path names.

    :param str | pathlib.Path name_or_path: a name in :data:`SHIPPED` ``[kind]`` or a path.
    :param str kind: one of :data:`KINDS`.
    :param keys: for kinds with selection keys (:data:`KINDS`), their values, e.g.
        ``in_channels=1, alpha=0.5`` for ``"euler_denoiser"``.
    :raises ValueError: an unknown name, no shipped file for ``keys``, a missing file.

    :Examples:

        >>> from deepinv_dynnets.pretrained import resolve_weights
        >>> resolve_weights("default", "euler_denoiser", in_channels=3, alpha=0.95).name
        'euler_denoiser_color_a095.pt'
    """
    kind = _check_kind(kind)
    names = SHIPPED[kind]
    if isinstance(name_or_path, str) and name_or_path in names:
        entry = names[name_or_path]
        if isinstance(entry, dict):
            wanted = tuple(keys.get(k) for k in KINDS[kind])
            match = [f for sel, f in entry.items() if _same_keys(sel, wanted)]
            if not match:
                options = ", ".join(
                    "("
                    + ", ".join(f"{k}={v!r}" for k, v in zip(KINDS[kind], sel, strict=True))
                    + ")"
                    for sel in entry
                )
                asked = ", ".join(f"{k}={v!r}" for k, v in zip(KINDS[kind], wanted, strict=True))
                raise ValueError(
                    f"no shipped {kind} weights {name_or_path!r} for {asked}: shipped are "
                    f"{options}; pick one of those or train a model (dynnets train-denoiser)"
                )
            entry = match[0]
        path = WEIGHTS_DIR / entry
        if not path.is_file():
            raise ValueError(f"the shipped weights {path} are missing: reinstall the package")
        return path
    if not isinstance(name_or_path, (str, Path)):
        raise ValueError(f"pretrained must be a name or a path, got {name_or_path!r}")
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"pretrained must be one of {sorted(names)} or the path of a weights file, "
            f"got {str(name_or_path)!r}"
        )
    return path


def _same_keys(shipped: tuple, wanted: tuple) -> bool:
    for a, b in zip(shipped, wanted, strict=True):
        if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
            if not math.isclose(a, float(b), rel_tol=0, abs_tol=1e-12):
                return False
        elif a != b:
            return False
    return True


def load_denoiser(spec: str, channels: int = 1, alpha: float | None = None) -> nn.Module:
    r"""The denoiser a name or a weights file names (what ``--denoiser``/``--weights`` take).

    :param str spec: ``"default"`` (the shipped :class:`~deepinv_dynnets.EulerDenoiser`
        for ``channels`` and ``alpha``), ``"campaign"`` (the grey :math:`\alpha = 0.95`
        weights of the long training campaign), a name in
        :data:`~deepinv_dynnets.models.BASELINES` (``"dncnn-gray"``, ``"dncnn-gray-bf16"``),
        or a file written by :meth:`~deepinv_dynnets.EulerDenoiser.save` or
        :func:`~deepinv_dynnets.models.save_dncnn`.
    :param int channels: image channels, for ``"default"``.
    :param float | None alpha: averagedness target of the shipped weights, for a shipped
        name (``None``: 0.5 for ``"default"``, the only one shipped for ``"campaign"``).
        With a file or a baseline it must be ``None`` or the network's own target: it
        selects shipped weights, it does not change a network.
    :return: the model, in eval mode.
    :raises ValueError: an unknown name, a missing or unreadable file, no shipped weights
        for ``channels`` and ``alpha``, an ``alpha`` that is not the loaded network's.

    :Examples:

        >>> from deepinv_dynnets.pretrained import load_denoiser
        >>> load_denoiser("default", channels=1, alpha=0.95).alpha
        0.95
    """
    from .models import BASELINES, EulerDenoiser, load_dncnn

    names = SHIPPED["euler_denoiser"]
    if spec in names:
        if alpha is None:  # "default": 0.5; a name with one alpha for these channels: that one
            shipped = sorted({a for c, a in names[spec] if c == channels})
            alpha = shipped[0] if spec != "default" and len(shipped) == 1 else 0.5
        return EulerDenoiser(in_channels=channels, alpha=alpha, pretrained=spec)
    if spec in BASELINES:
        model = load_dncnn(spec)
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(
                f"--denoiser must be one of {', '.join([*names, *BASELINES])} or a file, "
                f"got {spec!r}"
            )
        kind = _kind_of(path)
        if kind == "euler_denoiser":
            model = EulerDenoiser.from_pretrained(path)
        elif kind == "dncnn":
            model = load_dncnn(path)
        else:
            raise ValueError(f"{path} holds {kind} weights, not a denoiser")
    own = getattr(model, "alpha", None)
    if alpha is not None and (own is None or abs(own - alpha) > 1e-12):
        raise ValueError(
            f"--alpha {alpha:g} selects shipped weights ('default'); {spec!r} is a "
            f"{type(model).__name__} with alpha {own if own is None else format(own, 'g')}"
        )
    return model


def _kind_of(path: Path) -> str:
    if _has_card(path):
        kind = read_card(path).get("kind")
        return kind if isinstance(kind, str) else "unknown"
    return _legacy_file(path, "cpu")[1]


def build_from_card(cls: type[nn.Module], state: dict, card: dict, path: str | Path) -> nn.Module:
    """Build ``cls(**card["config"])`` and load ``state`` into it strictly, in eval mode.

    :param type cls: the model class.
    :param dict state: a state dict (from :func:`load_weights`).
    :param dict card: its model card (from :func:`load_weights`).
    :param path: the file, for the error messages.
    :raises ValueError: the card has no config, or the weights do not fit it.

    :Examples:

        >>> import pathlib, tempfile
        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.pretrained import build_from_card, load_weights
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "f.pt"
        >>> SympFlow(2, n_layers=1, width=4).save(path)
        >>> build_from_card(SympFlow, *load_weights(path, kind="sympflow"), path).dim
        2
    """
    config = card.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path} has no {cls.__name__} config in its model card")
    try:
        model = cls(**config)
        model.load_state_dict(state, strict=True)
    except (TypeError, RuntimeError) as err:
        raise ValueError(
            f"{path} holds weights of a different architecture than its config says: {err}"
        ) from err
    return model.eval()
