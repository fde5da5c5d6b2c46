"""Convert the shipped denoiser weights to the format of ``deepinv_dynnets.pretrained``.

Before: one ``torch.save`` of a dict (format tag, config, state dict, metadata) per model,
and a training record beside it with absolute data paths. After: a plain state dict
(``.pt``) and a model card (``.json``: format tag, kind, version, config, checksum, the
training record with paths relative to the data folder). The Euler denoiser's state-dict
keys move from ``blocks.i.*`` to the dynamics core's ``network.steps.i.*``.

Every converted model is checked to give bitwise the same outputs as the original, in
float32 and float64, before the files are replaced; the script refuses to run twice on the
same files (they are no longer of format version 0). Run from the repository root::

    python scripts/convert_weights.py --data-root /work/shared/data

The SympFlow files are left to ``SympFlow``'s own loader (``flows/``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from deepinv_dynnets.models import EulerDenoiser, load_dncnn, save_dncnn
from deepinv_dynnets.pretrained import SHIPPED, WEIGHTS_DIR, load_weights


def _outputs(model, channels: int, dtype: torch.dtype, conditioned: bool) -> torch.Tensor:
    x = torch.rand(2, channels, 48, 40, generator=torch.Generator().manual_seed(0))
    model = model.to(dtype)
    with torch.no_grad():
        out = model(x.to(dtype), torch.tensor([0.05, 0.2], dtype=dtype))
        if conditioned:  # both bias paths: one level per batch, one per image
            out = torch.cat([out, model(x.to(dtype), 0.1)])
    model.float()
    return out


def _convert(path: Path, kind: str, data_root: Path) -> None:
    state, card = load_weights(path, kind=kind)
    if card["format_version"] != 0:
        raise SystemExit(f"{path} is already converted (format version {card['format_version']})")
    record = json.loads(path.with_suffix(".json").read_text())
    entries = record | {
        k: v
        for k, v in card.items()
        if k not in ("format", "format_version", "kind", "config", "weights_file")
    }
    if kind == "euler_denoiser":
        old = EulerDenoiser.from_pretrained(path)
        channels = old.in_channels
        before = [_outputs(old, channels, d, True) for d in (torch.float32, torch.float64)]
        old.save(path, data_root=data_root, **entries)
        new = EulerDenoiser.from_pretrained(path)
    else:
        old = load_dncnn(path)
        channels = card["config"]["in_channels"]
        before = [_outputs(old, channels, d, False) for d in (torch.float32, torch.float64)]
        save_dncnn(old, path, card["config"], data_root=data_root, **entries)
        new = load_dncnn(path)
    after = [
        _outputs(new, channels, d, kind == "euler_denoiser") for d in (torch.float32, torch.float64)
    ]
    for dtype, a, b in zip(("float32", "float64"), before, after, strict=True):
        if not torch.equal(a, b):
            raise SystemExit(f"{path}: outputs changed in {dtype} ({(a - b).abs().max():.3g})")
    print(f"converted {path.name}: outputs bitwise identical in float32 and float64")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, required=True, help="the training data folder")
    args = parser.parse_args()
    for kind in ("euler_denoiser", "dncnn"):
        for entry in SHIPPED[kind].values():
            files = entry.values() if isinstance(entry, dict) else [entry]
            for name in files:
                _convert(WEIGHTS_DIR / name, kind, args.data_root)


if __name__ == "__main__":
    main()
