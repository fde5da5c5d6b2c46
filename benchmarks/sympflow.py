"""SympFlow benchmark: accuracy, energy, rollout speed and training speed.

For each shipped flow (harmonic oscillator, Henon-Heiles), over initial conditions sampled
in the system's domain Omega:

- mean relative state error and mean absolute energy error at t = 1, 10, 100 against
  the float64 reference (dopri5, rtol = atol = 1e-10), with and without Hamiltonian
  matching (the no-matching flows come from the same training command, --no-matching);
- the energy error over time next to classical RK4 taking one step per Delta t;
- rollout time of 10,000 initial conditions to T = 100 against torchdiffeq's dopri5 at
  rtol = 1e-8 (atol at torchdiffeq's default 1e-9) on the true vector field in float64,
  measured in the same run, with the flow in float32 and in float64;
- wall time of one unsupervised training step (700 points, with matching), one thread.

Prints a table and writes JSON (and a figure) to --out.

    python benchmarks/sympflow.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torchdiffeq import odeint

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows.evaluation import flow_errors, time_rollout
from deepinv_dynnets.systems import HarmonicOscillator, HenonHeiles
from deepinv_dynnets.training import hamiltonian_matching_loss, residual_loss

HERE = Path(__file__).resolve().parent
SYSTEMS = {
    "harmonic-oscillator": HarmonicOscillator,
    "henon-heiles": HenonHeiles,
}


def training_step_time(flow: SympFlow, system, n_points: int = 700, repeats: int = 40) -> float:
    """Median wall time of one Adam step with residual + matching on fresh points."""
    flow = flow.float().train()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats + 5):
        tic = time.perf_counter()
        x0 = system.sample(n_points, generator=gen)
        t = flow.dt * torch.rand(n_points, generator=gen)
        loss = residual_loss(flow, system, t, x0) + hamiltonian_matching_loss(flow, system, t, x0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - tic)
    return statistics.median(times[5:])


@torch.no_grad()
def rk4_energy_error(system, y0: torch.Tensor, T: float, h: float) -> torch.Tensor:
    """Mean |H(y(t)) - H(y0)| of fixed-step RK4 at the integer times up to T."""
    grid = torch.arange(0, T + h / 2, h, dtype=torch.float64)
    y = odeint(system, y0, grid, method="rk4", options={"step_size": h})
    return (system.energy(y) - system.energy(y0)).abs().mean(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-ics", type=int, default=500, help="initial conditions for accuracy")
    parser.add_argument("--n-rollout", type=int, default=10_000, help="initial conditions timed")
    parser.add_argument("--T", type=float, default=100.0, help="rollout horizon")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--ablation",
        type=Path,
        default=HERE / "checkpoints",
        help="folder with <name>-no-matching.pt flows",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    times = (1.0, 10.0, args.T)
    results: dict = {
        "threads": args.threads,
        "n_ics": args.n_ics,
        "n_rollout": args.n_rollout,
        "T": args.T,
        "systems": {},
    }
    fig, axes = plt.subplots(1, len(SYSTEMS), figsize=(6 * len(SYSTEMS), 4))
    for ax, (name, cls) in zip(axes, SYSTEMS.items(), strict=True):
        system = cls()
        gen = torch.Generator().manual_seed(args.seed)
        y0 = system.sample(args.n_ics, generator=gen, dtype=torch.float64)
        dense = torch.arange(0, args.T + 0.5, 1.0, dtype=torch.float64)
        reference = system.reference_trajectory(y0, dense)
        ref_at = reference[[0, *[int(t) for t in times]]]
        entry: dict = {}
        flows = {"with matching": SympFlow.from_pretrained(name)}
        ablation = args.ablation / f"{name}-no-matching.pt"
        if ablation.is_file():
            flows["without matching"] = SympFlow.from_pretrained(ablation)
        for label, flow in flows.items():
            flow = flow.double()
            entry[label] = flow_errors(flow, system, y0, times, reference=ref_at)
            with torch.no_grad():
                curve = (system.energy(flow(y0, dense)) - system.energy(y0)).abs().mean(-1)
            entry[label]["energy_error_curve"] = curve.tolist()
            ax.loglog(dense[1:], curve[1:], label=f"SympFlow ({label})")
        rk4 = rk4_energy_error(system, y0, args.T, h=flows["with matching"].dt)
        entry["rk4, one step per dt"] = {"energy_error_curve": rk4.tolist()}
        ax.loglog(dense[1:], rk4[1:], "--", label="RK4, h = dt")
        ax.set(title=name, xlabel="t", ylabel="mean |H(y(t)) - H(y0)|")
        ax.legend()

        flow = flows["with matching"]
        big = system.sample(args.n_rollout, generator=gen, dtype=torch.float64)
        for precision, dtype in (("float32", torch.float32), ("float64", torch.float64)):
            timing = time_rollout(flow, system, big, T=args.T, flow_dtype=dtype)
            timing["ms_per_composition"] = 1e3 * timing["flow_s"] / timing["compositions"]
            entry[f"rollout_{precision}"] = timing
        entry["train_step_s"] = training_step_time(SympFlow(**flow.config), system)
        entry["train_step_s_reference_architecture"] = training_step_time(
            SympFlow(system.dim, n_layers=3, width=10, depth=2), system
        )
        entry["config"] = flow.config
        results["systems"][name] = entry
    fig.tight_layout()
    fig.savefig(args.out / "sympflow_energy.png", dpi=120)

    print(f"\nSympFlow benchmark ({args.threads} thread(s), {args.n_ics} initial conditions)")
    header = f"{'system':22s} {'variant':18s}" + "".join(
        f" {'rel err t=' + format(t, 'g'):>14s} {'|dE| t=' + format(t, 'g'):>12s}" for t in times
    )
    print(header)
    print("-" * len(header))
    for name, entry in results["systems"].items():
        for label in ("with matching", "without matching"):
            if label not in entry:
                continue
            e = entry[label]
            cells = "".join(
                f" {r:14.2e} {de:12.2e}"
                for r, de in zip(e["relative_state_error"], e["energy_error"], strict=True)
            )
            print(f"{name:22s} {label:18s}{cells}")
    print()
    print(
        f"{'system':22s} {'flow dtype':>10s} {'rollout s':>10s} {'ms/composition':>15s} "
        f"{'dopri5 s':>9s} {'speed-up':>9s} {'train step s':>13s} {'(3x10 arch)':>12s}"
    )
    for name, entry in results["systems"].items():
        for precision in ("float32", "float64"):
            r = entry[f"rollout_{precision}"]
            print(
                f"{name:22s} {precision:>10s} {r['flow_s']:10.3f} {r['ms_per_composition']:15.2f} "
                f"{r['odeint_s']:9.2f} {r['speedup']:9.1f} {entry['train_step_s']:13.4f} "
                f"{entry['train_step_s_reference_architecture']:12.4f}"
            )
    (args.out / "sympflow.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out / 'sympflow.json'} and {args.out / 'sympflow_energy.png'}")


if __name__ == "__main__":
    main()
