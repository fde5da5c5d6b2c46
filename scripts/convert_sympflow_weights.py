"""Convert the shipped SympFlow weights to the format of ``deepinv_dynnets.pretrained``.

Before: one ``torch.save`` of a dict (format tag, config, state dict, metadata) per flow,
and a training record beside it (``.json``, no format tag). After: a plain state dict
(``.pt``) and a model card (``.json``: format tag, kind, version, config, checksum, and the
training record's entries at its top level, which the docs' model-card tables read).

Each converted flow is written to a temporary folder first and checked to give bitwise the
same outputs as the original, in float32 and float64 (the network at several times inside
and outside the window, its inverse, its Hamiltonian, and rollouts through the compiled
loop and through PyTorch), before the shipped files are replaced. The script refuses to run
twice on the same files (they are no longer of format version 0). From the repository root::

    python scripts/convert_sympflow_weights.py
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.pretrained import SHIPPED, WEIGHTS_DIR, load_weights


def _outputs(flow: SympFlow, dtype: torch.dtype) -> list[torch.Tensor]:
    flow = flow.to(dtype)
    gen = torch.Generator().manual_seed(0)
    x = (0.4 * torch.rand(64, flow.dim, generator=gen) - 0.2).to(dtype)
    times = torch.tensor([0.0, 0.37, 1.0, 2.5, 20.0], dtype=dtype)
    out = []
    with torch.no_grad():
        for t in (0.0, 0.37, flow.dt):
            out += [flow.network(t, x), flow.network_inverse(t, x), flow.hamiltonian(t, x)]
        for compiled in (True, False):
            flow.compiled_rollout = compiled
            out.append(flow(x[:8], times))
        flow.compiled_rollout = True
    flow.float()
    return out


def _convert(path: Path) -> None:
    _, card = load_weights(path, kind="sympflow")
    if card["format_version"] != 0:
        raise SystemExit(f"{path} is already converted (format version {card['format_version']})")
    record = json.loads(path.with_suffix(".json").read_text())
    old = SympFlow.from_pretrained(path)
    entries = record | old.metadata
    before = {d: _outputs(old, d) for d in (torch.float32, torch.float64)}
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / path.name
        old.save(staged, **entries)
        new = SympFlow.from_pretrained(staged)
        for dtype, outputs in before.items():
            for a, b in zip(outputs, _outputs(new, dtype), strict=True):
                if not torch.equal(a, b):
                    raise SystemExit(f"{path}: outputs changed in {dtype}")
        os.replace(staged.with_suffix(".json"), path.with_suffix(".json"))
        os.replace(staged, path)
    print(f"converted {path.name}: outputs bitwise identical in float32 and float64")


def main() -> None:
    for name in SHIPPED["sympflow"].values():
        _convert(WEIGHTS_DIR / name)


if __name__ == "__main__":
    main()
