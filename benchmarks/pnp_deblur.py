"""PnP deblurring benchmark: certified Plug-and-Play with the shipped Euler denoiser.

For every image of --data (optionally the first --images, centre-cropped to --size) and
every kernel of --kernels (Levin et al. 2009 by default names kernel_0 .. kernel_7), at
each noise level of --noise (0-255 scale), the image is blurred circularly (deepinv
BlurFFT), noise is added (fixed seed) and ``convergent_pnp(physics, denoiser, algorithm)``
runs with its default parameters (derived from the noise level and ||A||). Reported per
run: PSNR (output clipped to [0, 1]), the iterations until the relative fixed-point
residual of the monitored variable falls below 1e-5, wall time, and whether the residual
stayed non-increasing (the monitor). Prints a table (means per noise level and per run
with --verbose) and writes JSON to --out.

    python benchmarks/pnp_deblur.py --data ../shared/data/train/color --only "kodak_2[1-4].png" \\
        --channels 3 --kernels ../shared/data/kernels/levin09.npz --images 2 --size 128
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from deepinv_dynnets.data import center_crop, load_images
from deepinv_dynnets.pnp import deblur
from deepinv_dynnets.pretrained import load_denoiser
from deepinv_dynnets.training import cpu_name

HERE = Path(__file__).resolve().parent


def run_one(x, kernel, noise, denoiser, algorithm, max_iter, seed, threshold=1e-5, **options):
    result = deblur(
        x,
        kernel,
        noise,
        denoiser,
        algorithm,
        seed=seed,
        max_iter=max_iter,
        thres_conv=threshold,
        **options,
    )
    rel = result.monitor.relative_residuals().mean(dim=1)
    below = (rel < threshold).nonzero()
    return {
        "psnr": result.psnr,
        "psnr_blurred": result.psnr_blurred,
        "iterations_to_1e-5": int(below[0]) + 1 if len(below) else None,
        "iterations": result.report.iterations,
        "final_residual": result.report.final_residual,
        "seconds": result.seconds,
        "monotone": result.report.monotone,
        "guaranteed": result.certificate.guaranteed,
        "stepsize": result.certificate.stepsize,
        "anderson_accepted": result.report.accepted,
        "anderson_rejected": result.report.rejected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of test images")
    parser.add_argument("--only", action="append", help="file-name pattern(s) to use")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument("--kernels", required=True, help=".npz of blur kernels (Levin 2009)")
    parser.add_argument("--kernel-names", help="comma-separated subset of the .npz arrays")
    parser.add_argument("--noise", default="7.65,12.75", help="noise levels, 0-255 scale")
    parser.add_argument("--images", type=int, help="use only the first N images")
    parser.add_argument("--size", type=int, help="centre crop")
    parser.add_argument("--denoiser", default="default", help="'default', 'dncnn-gray', file")
    parser.add_argument(
        "--alpha", type=float, help="of the shipped weights (--denoiser default): 0.5 or 0.95"
    )
    parser.add_argument("--algorithm", default="PGD", choices=["PGD", "HQS", "DRS", "ADMM"])
    parser.add_argument(
        "--acceleration",
        default="default",
        choices=["default", "on", "off"],
        help="safeguarded Anderson acceleration: convergent_pnp's default (on when "
        "certified), forced on, or off (the plain averaged iteration)",
    )
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="print every run")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    images = load_images(args.data, args.channels, args.images, only=args.only)
    kernels = np.load(args.kernels)
    names = args.kernel_names.split(",") if args.kernel_names else list(kernels.files)
    levels = [float(s) for s in args.noise.split(",")]
    denoiser = load_denoiser(args.denoiser, args.channels, args.alpha)
    args.alpha = getattr(denoiser, "alpha", None)  # recorded: the alpha actually used

    options = {} if args.acceleration == "default" else {"acceleration": args.acceleration == "on"}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "gray" if args.channels == 1 else "color"
    if args.denoiser == "default" and args.alpha != 0.5:
        suffix += f"_alpha{args.alpha:g}"
    if args.acceleration == "off":
        suffix += "_plain"
    path = args.out / f"pnp_deblur_{suffix}.json"
    record = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "hardware": f"{cpu_name()}, {args.threads} thread(s)",
        "torch": torch.__version__,
    }

    runs = []
    jobs = [(i, k, s) for s in levels for i in range(len(images)) for k in names]
    for i, name, level in tqdm(jobs, desc="deblurring"):
        x = center_crop(images[i], args.size)[None]
        kernel = torch.as_tensor(kernels[name], dtype=torch.float32)
        kernel = (kernel / kernel.sum())[None, None]
        result = run_one(
            x, kernel, level / 255, denoiser, args.algorithm, args.max_iter, i, **options
        )
        result |= {"image": i, "kernel": name, "noise": level}
        runs.append(result)
        # written after every run, so that an interrupted benchmark keeps what it measured
        path.write_text(json.dumps(record | {"complete": False, "runs": runs}, indent=2))
        if args.verbose:
            tqdm.write(
                f"image {i} {name} noise {level:g}: {result['psnr_blurred']:.2f} -> "
                f"{result['psnr']:.2f} dB, {result['iterations_to_1e-5']} it to 1e-5, "
                f"{result['seconds']:.1f} s, monotone {result['monotone']}"
            )

    summary = {}
    for level in levels:
        rows = [r for r in runs if r["noise"] == level]
        reached = [r["iterations_to_1e-5"] for r in rows if r["iterations_to_1e-5"] is not None]
        summary[f"{level:g}"] = {
            "runs": len(rows),
            "mean_psnr": statistics.mean(r["psnr"] for r in rows),
            "mean_psnr_blurred": statistics.mean(r["psnr_blurred"] for r in rows),
            "reached_1e-5": len(reached),
            "median_iterations_to_1e-5": statistics.median(reached) if reached else None,
            "mean_seconds": statistics.mean(r["seconds"] for r in rows),
            "all_monotone": all(r["monotone"] for r in rows),
            "all_guaranteed": all(r["guaranteed"] for r in rows),
        }
    print(
        f"\nPnP-{args.algorithm}, {args.denoiser} denoiser, {len(images)} image(s) of "
        f"{args.data} (crop {args.size}), kernels {', '.join(names)}"
    )
    print(
        f"{'noise':>7}{'runs':>6}{'blurred':>9}{'PSNR':>8}{'reach 1e-5':>12}"
        f"{'median it':>11}{'s/run':>8}{'monotone':>10}{'certified':>11}"
    )
    for level, s in summary.items():
        med = s["median_iterations_to_1e-5"]
        print(
            f"{level:>7}{s['runs']:>6}{s['mean_psnr_blurred']:9.2f}{s['mean_psnr']:8.2f}"
            f"{s['reached_1e-5']:>7}/{s['runs']:<4}{'-' if med is None else f'{med:g}':>11}"
            f"{s['mean_seconds']:8.1f}{str(s['all_monotone']):>10}{str(s['all_guaranteed']):>11}"
        )
    results = record | {"complete": True, "summary": summary, "runs": runs}
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
