"""Does a held-out trajectory loss track the escapes of a SympFlow learned from noisy data?

The data of ``benchmarks/sympflow_supervised.py`` (100 Hénon–Heiles trajectories, 10
irregular times in (0, 2], noise 0.01): a SympFlow (3 layers, width 16, --dt) is trained
on the first 80 trajectories, full batch, Adam 5e-3 with cosine decay to 1 %, gradient
clipping 1 (the loop of ``train_supervised``), and every --every steps the script records
the training and held-out losses (the last 20 trajectories) next to the long-time
behaviour of the current weights: the orbits of 500 fresh initial conditions (seed 1234)
that leave the potential well by t = 1000 and the median energy error at t = 1000, in
float64. Prints one line per evaluation and writes JSON to --out.

    python benchmarks/ablations/sympflow_supervised_overfitting.py --dt 0.5
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path

import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.systems import HenonHeiles
from deepinv_dynnets.training import supervised_loss, trajectory_data

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dt", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    system = HenonHeiles()
    x0, t_obs, y_obs = trajectory_data(
        system, n_trajectories=100, n_times=10, dt=2.0, noise_std=0.01, noisy_start=True,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    train, held = (x0[:80], t_obs[:80], y_obs[:80]), (x0[80:], t_obs[80:], y_obs[80:])
    y0 = system.sample(500, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    e0 = system.energy(y0)
    grid = torch.arange(0, 1001, dtype=torch.float64)
    flow = SympFlow(dim=4, n_layers=3, width=16, dt=args.dt)
    optimizer = torch.optim.Adam(flow.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps, eta_min=5e-5)
    rows = []
    for step in range(args.steps + 1):
        if step % args.every == 0:
            flow.eval()
            with torch.no_grad():
                y = copy.deepcopy(flow).double()(y0, grid)
                energy = torch.nan_to_num((system.energy(y[-1]) - e0).abs(), nan=float("inf"))
                rows.append(
                    {
                        "step": step,
                        "train_loss": float(supervised_loss(flow, *train)),
                        "held_out_loss": float(supervised_loss(flow, *held)),
                        "left_well": int((~system.in_potential_well(y)).any(dim=0).sum()),
                        "median_energy_error_t1000": float(energy.median()),
                    }
                )
            flow.train()
            print(" ".join(f"{k} {v:.4g}" for k, v in rows[-1].items()), flush=True)
        if step == args.steps:
            break
        loss = supervised_loss(flow, *train)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    best = min(rows, key=lambda r: r["held_out_loss"])
    print(f"lowest held-out loss at step {best['step']}: {best['left_well']} orbits left the well")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"command": shlex.join(["python", *sys.argv]), "dt": args.dt, "rows": rows}
    (args.out / f"sympflow_supervised_overfitting_dt{args.dt:g}.json").write_text(
        json.dumps(record, indent=1)
    )


if __name__ == "__main__":
    main()
