"""Cost of one certified PnP iteration on a full-size colour image, and of its parts.

On a --height x --width colour image (scikit-image's *astronaut*, resized; Levin kernel 0
when --data is given, else a 9 x 9 box blur; noise 12.75/255), one thread, the parts of one
PGD iteration of ``convergent_pnp`` are timed in turns (so that other load slows them
alike), --repeats rounds, medians reported:

- the Euler denoiser as the library runs it (channels-last feature maps on CPUs);
- the same network on the default (NCHW) layout, the path before channels-last: the
  difference is the layout alone, the map being the same up to the summation order;
- the data-fidelity gradient step ``x - gamma A^T (A x - y)`` (two FFT blurs);
- a whole iteration of the certified solver (``convergent_pnp``, PGD, ``max_iter=1``
  after a warm-up call; it includes the monitor and the Anderson bookkeeping).

Prints a table and writes JSON to --out. ::

    OMP_NUM_THREADS=1 python benchmarks/pnp_iteration.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from deepinv_dynnets import EulerDenoiser, convergent_pnp
from deepinv_dynnets.data import blur_kernel, builtin_image
from deepinv_dynnets.pnp import blur_physics, default_parameters
from deepinv_dynnets.training import cpu_name

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=321)
    parser.add_argument("--width", type=int, default=481)
    parser.add_argument("--data", type=Path, help="data folder with kernels/levin09.npz")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    image = builtin_image(3)[None]
    x = F.interpolate(image, (args.height, args.width), mode="bicubic", antialias=True)
    x = x.clamp(0, 1).float()
    if args.data is None:
        kernel, kernel_name = torch.ones(9, 9) / 81, "9x9 box"
    else:
        levin = args.data / "kernels" / "levin09.npz"
        kernel, kernel_name = blur_kernel(levin, "kernel_0").float(), "Levin 0"
    physics = blur_physics(x, kernel, 12.75 / 255, seed=0)
    y = physics(x)
    denoiser = EulerDenoiser(in_channels=3, alpha=0.95, pretrained="default").eval()
    params = default_parameters(physics, "PGD")
    gamma, sigma = params["stepsize"], params["sigma_denoiser"]
    level = torch.full((1,), sigma)
    solver, _ = convergent_pnp(physics, denoiser, "PGD", max_iter=1, early_stop=False)

    parts = {
        "denoiser (channels-last, as run)": lambda: denoiser(y, sigma),
        "denoiser network on NCHW (before)": lambda: denoiser.network(y, level),
        "gradient step (2 FFT blurs)": lambda: y - gamma * physics.A_adjoint(physics.A(y) - y),
        "one certified PGD iteration": lambda: solver(y, physics),
    }
    times = {name: [] for name in parts}
    with torch.no_grad():
        for run in parts.values():
            run()  # warm-up (lazy step sizes, oneDNN kernel choice)
        for _ in range(args.repeats):
            for name, run in parts.items():
                tic = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - tic)
    result = {
        "command": "python benchmarks/pnp_iteration.py "
        + f"--height {args.height} --width {args.width} --repeats {args.repeats}"
        + ("" if args.data is None else f" --data {args.data}"),
        "image": f"astronaut resized to {args.height}x{args.width}, colour",
        "kernel": kernel_name,
        "hardware": f"{cpu_name()}, 1 thread",
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "seconds": {name: statistics.median(t) for name, t in times.items()},
        "seconds_all": times,
    }
    print(f"\nOne PnP iteration, {result['image']}, {kernel_name}, {result['hardware']}")
    print(f"load average {result['load_average']}, median of {args.repeats}")
    for name, seconds in result["seconds"].items():
        print(f"{name:38s} {seconds:8.3f} s")
    before = result["seconds"]["denoiser network on NCHW (before)"]
    now = result["seconds"]["denoiser (channels-last, as run)"]
    print(f"{'channels-last speed-up of the denoiser':38s} {before / now:8.2f} x")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "pnp_iteration.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
