"""Tuning of certified PnP's quality knobs on the dev images (issue 15, item 3).

Every setting of the grid is certified: the denoiser's noise level ``sigma_denoiser`` enters
the Euler denoiser through its biases only, HQS accepts every positive stepsize and PGD
every stepsize below 2/L. So the grid explores quality without leaving the theorem.

For each image (centre crop), kernel and noise level the measurement is drawn once
(:func:`deepinv_dynnets.pnp.deblur`, seed = image index) and ``convergent_pnp`` runs for
every (algorithm, stepsize factor, denoiser-noise factor) of the grid:

- ``sigma_denoiser = sigma_factor * noise``;
- PGD: ``stepsize = step_factor * 2/L`` (``step_factor < 1``);
- HQS: ``stepsize = step_factor / L``.

Prints the mean PSNR per setting (and the best) and writes JSON; the defaults of
:func:`deepinv_dynnets.pnp.default_parameters` are the row ``PGD, step 0.95, sigma x1``.

    python benchmarks/pnp_tuning.py --data ../shared/data/val/gray_set12 --channels 1 \\
        --kernels ../shared/data/kernels/levin09.npz --images 2 --size 128 \\
        --out benchmarks/results/pnp_tuning_gray.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from deepinv_dynnets.data import center_crop, load_images
from deepinv_dynnets.pnp import deblur, operator_sqnorm
from deepinv_dynnets.pnp.deblurring import blur_physics
from deepinv_dynnets.pretrained import load_denoiser
from deepinv_dynnets.training import cpu_name


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of dev images")
    parser.add_argument("--only", action="append", help="file-name pattern(s) to use")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument("--kernels", required=True, help=".npz of blur kernels (Levin 2009)")
    parser.add_argument("--kernel-names", help="comma-separated subset of the .npz arrays")
    parser.add_argument("--noise", default="7.65,12.75", help="noise levels, 0-255 scale")
    parser.add_argument("--images", type=int, default=2, help="the first N images")
    parser.add_argument("--size", type=int, default=128, help="centre crop")
    parser.add_argument("--alpha", type=float, default=0.95, help="of the shipped weights")
    parser.add_argument("--sigma-factors", default="1,1.5,2,3", help="sigma_denoiser / noise")
    parser.add_argument("--pgd-steps", default="0.95", help="PGD stepsize / (2/L), each < 1")
    parser.add_argument("--hqs-steps", default="1,5,20", help="HQS stepsize * L")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if any(s >= 1 or s <= 0 for s in floats(args.pgd_steps)):
        parser.error("--pgd-steps: each factor must lie in (0, 1) (the certificate needs < 2/L)")

    images = load_images(args.data, args.channels, args.images, only=args.only)
    kernels = np.load(args.kernels)
    names = args.kernel_names.split(",") if args.kernel_names else list(kernels.files)
    denoiser = load_denoiser("default", args.channels, args.alpha)
    settings = [("PGD", s) for s in floats(args.pgd_steps)]
    settings += [("HQS", s) for s in floats(args.hqs_steps)]
    grid = list(itertools.product(settings, floats(args.sigma_factors)))
    jobs = list(itertools.product(floats(args.noise), range(len(images)), names))

    record = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "hardware": f"{cpu_name()}, {args.threads} thread(s)",
        "torch": torch.__version__,
        "complete": False,
    }
    runs = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for level, i, name in tqdm(jobs, desc="problems"):
        x = center_crop(images[i], args.size)[None]
        kernel = torch.as_tensor(kernels[name], dtype=torch.float32)
        kernel = (kernel / kernel.sum())[None, None]
        noise = level / 255
        lipschitz, _ = operator_sqnorm(blur_physics(x, kernel, noise, seed=i))  # L of L2()
        for (algorithm, step), factor in grid:
            stepsize = step * 2 / lipschitz if algorithm == "PGD" else step / lipschitz
            result = deblur(
                x,
                kernel,
                noise,
                denoiser,
                algorithm,
                seed=i,
                stepsize=stepsize,
                sigma_denoiser=max(factor * noise, 2 / 255),
                max_iter=args.max_iter,
                thres_conv=1e-5,
            )
            runs.append(
                {
                    "noise": level,
                    "image": i,
                    "kernel": name,
                    "algorithm": algorithm,
                    "step_factor": step,
                    "sigma_factor": factor,
                    "psnr": result.psnr,
                    "psnr_blurred": result.psnr_blurred,
                    "iterations": result.report.iterations,
                    "converged": result.report.converged,
                    "monotone": result.report.monotone,
                    "guaranteed": result.certificate.guaranteed,
                    "seconds": result.seconds,
                }
            )
        args.out.write_text(json.dumps(record | {"runs": runs}, indent=2))

    table = {}
    for noise in floats(args.noise):
        rows = {}
        for (algorithm, step), factor in grid:
            sel = [
                r
                for r in runs
                if r["noise"] == noise
                and r["algorithm"] == algorithm
                and r["step_factor"] == step
                and r["sigma_factor"] == factor
            ]
            rows[f"{algorithm} step {step:g} sigma x{factor:g}"] = {
                "mean_psnr": statistics.mean(r["psnr"] for r in sel),
                "mean_iterations": statistics.mean(r["iterations"] for r in sel),
                "mean_seconds": statistics.mean(r["seconds"] for r in sel),
                "all_converged": all(r["converged"] for r in sel),
                "all_monotone": all(r["monotone"] for r in sel),
                "all_guaranteed": all(r["guaranteed"] for r in sel),
                "runs": len(sel),
            }
        table[f"{noise:g}"] = rows
        best = max(rows, key=lambda k: rows[k]["mean_psnr"])
        default = rows.get("PGD step 0.95 sigma x1")
        print(f"\nnoise {noise:g}/255: mean PSNR over {len(sel)} problems")
        print(f"{'setting':<28} {'PSNR':>7} {'iters':>6} {'s':>6} conv mono cert")
        for key, row in rows.items():
            print(
                f"{key:<28} {row['mean_psnr']:7.2f} {row['mean_iterations']:6.1f} "
                f"{row['mean_seconds']:6.1f} {row['all_converged']!s:>4} "
                f"{row['all_monotone']!s:>4} {row['all_guaranteed']!s:>4}"
            )
        gain = ""
        if default is not None:
            gain = f" ({rows[best]['mean_psnr'] - default['mean_psnr']:+.2f} dB over the default)"
        print(f"best: {best}{gain}")
    args.out.write_text(
        json.dumps(record | {"complete": True, "table": table, "runs": runs}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
