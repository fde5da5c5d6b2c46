"""Compare rerun benchmark records with the committed ones (issue 12: the refactor changes no number).

Reads the ``pnp_deblur_*.json`` files under --runs (any depth: plain runs written with
``--acceleration off``, accelerated ones with the default) and matches every run, by
(image, kernel, noise level), with the run of the committed README record of the same
configuration; and, with --denoise, a ``denoise_*.json`` against
``benchmarks/results/denoise_gray.json``. Writes the differences (PSNR, iterations to the
1e-5 residual, wall time) to --out, with --note for what the numbers cannot show.

    python benchmarks/repro_issue12.py --runs /tmp/repro --denoise /tmp/repro/denoise/denoise_set12.json \\
        --committed /tmp/records_7300c9c --committed-commit 7300c9c
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
# configuration -> the committed record the README quotes
RECORDS = {
    "gray_alpha0.5": ("pnp_deblur_gray", "gray"),
    "gray_alpha0.95": ("pnp_deblur_gray_alpha0.95", "gray_alpha0.95"),
    "color_alpha0.5": ("pnp_deblur_color", "color"),
    "color_alpha0.95": ("pnp_deblur_color_alpha0.95", "color_alpha0.95"),
}


def key(run: dict) -> tuple:
    return run["image"], run["kernel"], run["noise"]


def gather(folder: Path, stem: str) -> tuple[list[dict], list[str]]:
    runs, commands = [], []
    for path in sorted(folder.rglob(f"{stem}.json")):
        data = json.loads(path.read_text())
        runs += [r for r in data["runs"] if r.get("method", "euler") == "euler"]
        commands.append(data.get("command", str(path)))
    return runs, commands


def compare_pnp(folder: Path, committed: Path, label: str) -> dict:
    out = {}
    for name, (record, stem) in RECORDS.items():
        reference = {
            key(r): r for r in json.loads((committed / f"{record}.json").read_text())["runs"]
        }
        plain, plain_cmds = gather(folder, f"pnp_deblur_{stem}_plain")
        accelerated, acc_cmds = gather(folder, f"pnp_deblur_{stem}")
        if not plain and not accelerated:
            continue
        row = {"committed_record": f"benchmarks/results/{record}.json{label}"}
        if plain:
            row["off"] = {
                "commands": plain_cmds,
                "runs": len(plain),
                "runs_compared": [list(key(r)) for r in plain],
                "max_abs_dpsnr_vs_committed": max(
                    abs(r["psnr"] - reference[key(r)]["psnr"]) for r in plain
                ),
                "iteration_differences_vs_committed": [
                    r["iterations_to_1e-5"] - reference[key(r)]["iterations_to_1e-5"] for r in plain
                ],
                "mean_seconds": statistics.mean(r["seconds"] for r in plain),
                "committed_mean_seconds": statistics.mean(
                    reference[key(r)]["seconds"] for r in plain
                ),
                "all_monotone": all(r["monotone"] for r in plain),
                "all_guaranteed": all(r["guaranteed"] for r in plain),
            }
        if accelerated:
            # the plain run of the same problem: the rerun if there is one, else the record
            plain_of = {key(r): r for r in plain}
            base = [plain_of.get(key(r), reference[key(r)]) for r in accelerated]
            row["default"] = {
                "commands": acc_cmds,
                "runs": len(accelerated),
                "runs_compared": [list(key(r)) for r in accelerated],
                "iterations": [r["iterations_to_1e-5"] for r in accelerated],
                "plain_iterations": [b["iterations_to_1e-5"] for b in base],
                "mean_iterations": statistics.mean(
                    r["iterations_to_1e-5"] or 0 for r in accelerated
                ),
                "plain_mean_iterations": statistics.mean(b["iterations_to_1e-5"] for b in base),
                "reached_1e-5": sum(r["iterations_to_1e-5"] is not None for r in accelerated),
                "mean_psnr": statistics.mean(r["psnr"] for r in accelerated),
                "mean_psnr_minus_plain": statistics.mean(
                    r["psnr"] - b["psnr"] for r, b in zip(accelerated, base, strict=True)
                ),
                "max_abs_psnr_minus_plain": max(
                    abs(r["psnr"] - b["psnr"]) for r, b in zip(accelerated, base, strict=True)
                ),
                "mean_seconds": statistics.mean(r["seconds"] for r in accelerated),
                "plain_mean_seconds": statistics.mean(b["seconds"] for b in base),
                "anderson_accepted": sum(r.get("anderson_accepted", 0) for r in accelerated),
                "anderson_rejected": sum(r.get("anderson_rejected", 0) for r in accelerated),
                "all_monotone": all(r["monotone"] for r in accelerated),
                "all_guaranteed": all(r["guaranteed"] for r in accelerated),
            }
        out[name] = row
    return out


def compare_denoise(path: Path, committed: Path) -> dict:
    new = json.loads(path.read_text())
    old = json.loads(committed.read_text())
    entry = new["sets"]["set12"] if "sets" in new else new
    rows = {}
    for name, r in old["models"].items():
        match = [m for m in entry["models"] if m.split(" (blind)")[0] == name]
        if not match:
            continue
        got = entry["models"][match[0]]
        rows[name] = {
            "psnr": got["psnr"],
            "committed_psnr": r["psnr"],
            "max_abs_dpsnr": max(abs(got["psnr"][s] - r["psnr"][s]) for s in r["psnr"]),
            "megapixels_per_s": got["megapixels_per_s"],
            "committed_megapixels_per_s": r["megapixels_per_s"],
        }
    return {"command": new.get("command"), "record": str(path.name), "models": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of rerun PnP records")
    parser.add_argument("--denoise", type=Path, help="a rerun denoise_*.json")
    parser.add_argument("--committed", type=Path, default=HERE / "results")
    parser.add_argument(
        "--committed-commit", default="", help="the commit the --committed records come from"
    )
    parser.add_argument("--note", default="", help="what the numbers cannot show")
    parser.add_argument("--extra", type=Path, help="JSON merged into the record")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "repro_issue12.json")
    args = parser.parse_args()
    label = f" at commit {args.committed_commit}" if args.committed_commit else ""
    pnp = compare_pnp(args.runs, args.committed, label)
    plain = [r["off"] for r in pnp.values() if "off" in r]
    worst = max((r["max_abs_dpsnr_vs_committed"] for r in plain), default=None)
    its = sorted({d for r in plain for d in r["iteration_differences_vs_committed"]})
    summary = (
        f"{sum(r['runs'] for r in plain)} plain PnP runs rerun after the refactor: max |dPSNR| "
        f"{worst} dB, iteration differences {its} against the committed records. {args.note}"
    )
    record = {"summary": summary, "pnp": pnp}
    if args.denoise:
        record["denoise"] = compare_denoise(args.denoise, args.committed / "denoise_gray.json")
    if args.extra:
        record |= json.loads(args.extra.read_text())
    args.out.write_text(json.dumps(record, indent=2))
    print(summary)
    for name, row in pnp.items():
        for mode in ("off", "default"):
            if mode in row:
                r = row[mode]
                print(name, mode, {k: v for k, v in r.items() if not isinstance(v, list)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
