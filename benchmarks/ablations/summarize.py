"""Print the ablation results (``results/*.json``) as reST tables for the docs.

Usage: ``python benchmarks/ablations/summarize.py [results folder]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _row(cells: list[str], widths: list[int]) -> str:
    return "   " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "   " + "  ".join("=" * w for w in widths)
    lines = [rule, _row(header, widths), rule, *(_row(r, widths) for r in rows), rule]
    return "\n".join(lines)


def main(folder: Path) -> None:
    # a run stopped before its end leaves only NAME.partial.json: its curve, no certificate
    records = {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))}
    finished = {name: r for name, r in records.items() if "certificate" in r}
    header = [
        "run",
        "params",
        "steps",
        "CPU s/step",
        "cert. alpha",
        "val 15/25/50",
        "Set12 15/25/50",
    ]
    rows = []
    for name, r in finished.items():
        val = "/".join(f"{r['val_psnr'][s]:.2f}" for s in ("15", "25", "50"))
        test = r.get("set12_psnr")
        test = "/".join(f"{test[s]:.2f}" for s in ("15", "25", "50")) if test else "-"
        rows.append(
            [
                name,
                str(r["settings"]["n_params"]),
                str(r["steps"]),
                f"{r['s_per_step']:.2f}",
                f"{r['certificate']['certified_alpha']:.4f}",
                val,
                test,
            ]
        )
    print(table(header, rows))
    print()
    curve_rows = []
    for name, r in records.items():
        points = ", ".join(
            f"{c['train_s']:.0f} s: "
            + "/".join(f"{c['val_psnr'][s]:.2f}" for s in ("15", "25", "50"))
            for c in r["curve"]
        )
        curve_rows.append([name, points])
    print(
        table(
            ["run", "validation PSNR at sigma 15/25/50 (running step bounds) after CPU seconds"],
            curve_rows,
        )
    )
    print()
    for name, r in records.items():
        print(f"{name}: OMP_NUM_THREADS=1 nice -n 10 {r['command']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results")
