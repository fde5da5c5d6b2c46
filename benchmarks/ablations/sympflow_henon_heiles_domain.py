"""Ablation of the Hénon–Heiles SympFlow's long-time energy (issue 16, item 4).

The escaping orbits of the shipped flow start near the escape energy 1/6. Their states stay
in the training domain Omega (every orbit from Omega does), but they spend far more of their
time at positions near the saddles, where the potential is close to 1/6, than uniform
sampling of Omega puts training points there. The variants refine a trained flow with
L-BFGS (in float64, on one fixed collocation set) drawn with part of the points uniform in
position (``HenonHeiles(position_fraction=...)``), with and without Hamiltonian matching,
against the same refinement on uniformly drawn points.

``--train NAME`` refines one variant (``--start``: the flow it starts from) into
``runs/hh-domain/NAME/flow.pt`` with its card; without it, every flow in ``--flows`` (files,
or the names of shipped flows) is evaluated as the benchmark does it (benchmarks/sympflow.py:
500 initial conditions of seed 1234, float64, against dopri5 at rtol = atol = 1e-10):
mean relative state error and mean |dH| at t = 1, 10, 100, 1000, and the orbits that leave
the potential well (``HenonHeiles.in_potential_well``) or are non-finite at an integer time.
The reference is cached in ``runs/hh-domain/reference.pt``. Prints a table and writes
``benchmarks/results/ablation_sympflow_henon_heiles.json`` (rows of earlier runs of other
flows are kept). One thread.

    python benchmarks/ablations/sympflow_henon_heiles_domain.py --train lbfgs-position-0.5 \\
        --start henon-heiles --position-fraction 0.5 --lbfgs-steps 1000
    python benchmarks/ablations/sympflow_henon_heiles_domain.py \\
        --flows henon-heiles runs/hh-domain/lbfgs-position-0.5/flow.pt
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows.evaluation import flow_errors
from deepinv_dynnets.systems import HenonHeiles
from deepinv_dynnets.training import cpu_name, refine_lbfgs

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "hh-domain"
RESULTS = ROOT / "benchmarks" / "results" / "ablation_sympflow_henon_heiles.json"
TIMES = (1.0, 10.0, 100.0, 1000.0)
N_ICS, SEED = 500, 1234  # as benchmarks/sympflow.py


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def reference(system: HenonHeiles) -> tuple[torch.Tensor, torch.Tensor]:
    """The benchmark's initial conditions and their reference at t = 0, 1, ..., 1000."""
    y0 = system.sample(N_ICS, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    cache = RUNS / "reference.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if torch.equal(saved["y0"], y0):
            return y0, saved["reference"]
    grid = torch.arange(0, TIMES[-1] + 0.5, 1.0, dtype=torch.float64)
    ref = system.reference_trajectory(y0, grid)
    RUNS.mkdir(parents=True, exist_ok=True)
    torch.save({"y0": y0, "reference": ref}, cache)
    return y0, ref


@torch.no_grad()
def evaluate(flow: SympFlow, system: HenonHeiles, y0: torch.Tensor, ref: torch.Tensor) -> dict:
    """The benchmark's accuracy, energy and escape numbers for one flow."""
    flow = flow.double().eval()
    result = flow_errors(flow, system, y0, TIMES, reference=ref[[0, *[int(t) for t in TIMES]]])
    states = flow(y0, torch.arange(0, TIMES[-1] + 0.5, 1.0, dtype=torch.float64))
    inside = torch.isfinite(states).all(-1) & system.in_potential_well(states)
    left = ~inside.all(0)
    first = (~inside).float().argmax(0)
    energy = system.energy(states)
    stayed = ~left
    result["left_well"] = int(left.sum())
    result["first_exit_time"] = sorted(int(k) for k in first[left])
    result["escaped_initial_energy"] = sorted(float(e) for e in system.energy(y0)[left])
    result["energy_error_orbits_that_stayed"] = [
        float((energy[int(t)] - energy[0])[stayed].abs().mean()) for t in TIMES
    ]
    return result


def train(args: argparse.Namespace) -> None:
    """Refine ``--start`` with L-BFGS on the chosen collocation set; save with a card."""
    torch.set_num_threads(1)
    flow = SympFlow.from_pretrained(args.start)
    start_card = {k: flow.metadata.get(k) for k in ("command", "wall_time_s")}
    system = HenonHeiles(position_fraction=args.position_fraction)
    load = list(os.getloadavg())
    tic = time.perf_counter()
    losses = refine_lbfgs(
        flow, system, args.lbfgs_steps, args.lbfgs_points, matching=not args.no_matching,
        seed=args.seed, progress=False,
    )  # fmt: skip
    wall = time.perf_counter() - tic
    out = RUNS / args.train
    out.mkdir(parents=True, exist_ok=True)
    y0, ref = reference(HenonHeiles())
    metrics = flow_errors(
        flow.double(), HenonHeiles(), y0, (1.0, 10.0, 100.0), ref[[0, 1, 10, 100]]
    )
    flow.float().save(
        out / "flow.pt",
        command=command_line(),
        system="henon-heiles",
        wall_time_s=wall,
        hardware=f"{cpu_name()}, 1 thread(s)",
        load_average_start=load,
        torch=torch.__version__,
        evaluation=metrics,
        refined_from=start_card,
        settings={
            "kind": "lbfgs refinement",
            "position_fraction": args.position_fraction,
            "matching": not args.no_matching,
            "lbfgs_steps": args.lbfgs_steps,
            "lbfgs_points": args.lbfgs_points,
            "seed": args.seed,
        },
        lbfgs_history=losses,
    )
    print(f"refined {args.start} -> {out / 'flow.pt'} in {wall:.0f} s (load {load}), "
          f"L-BFGS loss {losses[0]:.3e} -> {losses[-1]:.3e} in {len(losses)} chunks")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", nargs="+", default=["henon-heiles"], help="flows to evaluate")
    parser.add_argument("--train", help="refine a variant into runs/hh-domain/TRAIN")
    parser.add_argument("--start", default="henon-heiles", help="the flow to refine")
    parser.add_argument("--position-fraction", type=float, default=0.5)
    parser.add_argument("--no-matching", action="store_true")
    parser.add_argument("--lbfgs-steps", type=int, default=1000)
    parser.add_argument("--lbfgs-points", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1, help="seed of the collocation set")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.train:
        train(args)
        return
    system = HenonHeiles()
    y0, ref = reference(system)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"flows": {}}
    results |= {
        "command": command_line(),
        "cpu": cpu_name(),
        "threads": 1,
        "load_average_start": list(os.getloadavg()),
        "n_ics": N_ICS,
        "seed": SEED,
        "times": list(TIMES),
        "reference_left_well": int(
            (~(torch.isfinite(ref).all(-1) & system.in_potential_well(ref)).all(0)).sum()
        ),
    }
    for name in args.flows:
        flow = SympFlow.from_pretrained(name)
        row = evaluate(flow, system, y0, ref)
        row["card"] = {
            k: flow.metadata.get(k)
            for k in ("command", "wall_time_s", "hardware", "load_average_start", "settings")
            if k in flow.metadata
        }
        results["flows"][str(name)] = row
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"{'flow':48s} {'rel t=10':>9s}" + "".join(f" {'|dE| t=' + format(t, 'g'):>11s}" for t in TIMES)
          + f" {'left':>5s}")  # fmt: skip
    for name, row in results["flows"].items():
        print(f"{name[-48:]:48s} {row['relative_state_error'][1]:9.2e}"
              + "".join(f" {e:11.2e}" for e in row["energy_error"]) + f" {row['left_well']:5d}")  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
