"""PnP deblurring benchmark: certified Plug-and-Play with the shipped Euler denoiser.

For every image of --data (optionally the first --images, centre-cropped to --size; or
every image at full size with --full) and every kernel of --kernels (Levin et al. 2009 by
default names kernel_0 .. kernel_7), at each noise level of --noise (0-255 scale), the
image is blurred circularly (deepinv BlurFFT), noise is added (fixed seed) and
``convergent_pnp(physics, denoiser, algorithm)`` runs with its default parameters (derived
from the noise level and ||A||). Reported per run: PSNR (output clipped to [0, 1]), the
iterations until the relative fixed-point residual of the monitored variable falls below
1e-5, wall time, and whether the residual behaved as the theorem says (the monitor).

With --methods, anchors run on the same measurements in the same run:

- ``euler``: the certified Euler denoiser (--denoiser, default the shipped one);
- ``dncnn`` (grey only) and ``bm3d``: the DnCNN baseline and deepinv's ``BM3D`` denoiser
  in the same solver (``convergent_pnp``, same stepsize and denoiser noise level),
  uncertified: no guarantee, the monitor still reports what the residual did;
- ``tv`` and ``wavelet``: deepinv's PGD with ``TVPrior`` / ``WaveletPrior`` (convex priors,
  stepsize of our PGD, below 2/L, so the residual is non-increasing when the prox is
  exact), the regularisation weight picked per run from a grid by the PSNR against the
  ground truth (an oracle: an upper bound on what a tuned weight gives).

Prints a table (means per method and noise level, per kernel with --per-kernel, every run
with --verbose) and writes JSON to --out after every run.

    python benchmarks/pnp_deblur.py --data ../shared/data/train/color --only "kodak_2[1-4].png" \\
        --channels 3 --kernels ../shared/data/kernels/levin09.npz --images 2 --size 128
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import deepinv as dinv
import numpy as np
import torch
from tqdm.auto import tqdm

from deepinv_dynnets.data import center_crop, load_images
from deepinv_dynnets.metrics import psnr
from deepinv_dynnets.pnp import ConvergenceMonitor, deblur, default_parameters
from deepinv_dynnets.pnp.deblurring import blur_physics
from deepinv_dynnets.pretrained import load_denoiser
from deepinv_dynnets.training import cpu_name

HERE = Path(__file__).resolve().parent
METHODS = ("euler", "dncnn", "bm3d", "tv", "wavelet")
# What the residual may do, by method: the theorem behind each.
GUARANTEE = {
    "euler": "certified (convergent_pnp)",
    "dncnn": "none (uncertified denoiser)",
    "bm3d": "none (uncertified denoiser)",
    "tv": "convex prior, PGD with stepsize < 2/L (exact prox assumed)",
    "wavelet": "convex prior, PGD with stepsize < 2/L",
}


def first_below(monitor: ConvergenceMonitor, threshold: float) -> int | None:
    rel = monitor.relative_residuals().mean(dim=1)
    below = (rel < threshold).nonzero()
    return int(below[0]) + 1 if len(below) else None


def run_pnp(x, kernel, noise, denoiser, algorithm, max_iter, seed, threshold, **options):
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
    return {
        "psnr": result.psnr,
        "psnr_blurred": result.psnr_blurred,
        "iterations_to_1e-5": first_below(result.monitor, threshold),
        "iterations": result.report.iterations,
        "final_residual": result.report.final_residual,
        "seconds": result.seconds,
        "monotone": result.report.monotone,
        "guaranteed": result.certificate.guaranteed,
        "stepsize": result.certificate.stepsize,
        "anderson_accepted": result.report.accepted,
        "anderson_rejected": result.report.rejected,
    }


def run_convex(x, kernel, noise, prior, lambdas, stepsize, max_iter, seed, threshold):
    """deepinv PGD with a convex prior on the measurement of :func:`deblur`; the weight
    with the best PSNR of ``lambdas`` (an oracle) is reported, with every weight's PSNR."""
    physics = blur_physics(x, kernel, noise, seed=seed)
    y = physics(x)
    best, by_weight, seconds = None, {}, 0.0
    for lam in lambdas:
        solver = dinv.optim.PGD(
            prior=prior,
            data_fidelity=dinv.optim.L2(),
            lambda_reg=lam,
            stepsize=stepsize,
            max_iter=max_iter,
            early_stop=True,
            thres_conv=threshold,
        )
        monitor = ConvergenceMonitor(threshold=threshold).attach(solver)
        tic = time.perf_counter()
        with torch.no_grad():
            x_hat = solver(y, physics)
        elapsed = time.perf_counter() - tic
        seconds += elapsed
        value = float(psnr(x_hat.clamp(0, 1), x).mean())
        by_weight[f"{lam:g}"] = value
        report = monitor.report()
        if best is None or value > best["psnr"]:
            best = {
                "psnr": value,
                "lambda": lam,
                "iterations_to_1e-5": first_below(monitor, threshold),
                "iterations": report.iterations,
                "final_residual": report.final_residual,
                "seconds": elapsed,
                "monotone": report.monotone,
            }
    return best | {
        "psnr_blurred": float(psnr(y.clamp(0, 1), x).mean()),
        "guaranteed": False,
        "stepsize": stepsize,
        "psnr_by_lambda": by_weight,
        "seconds_all_lambdas": seconds,
    }


def summarise(rows: list[dict]) -> dict:
    reached = [r["iterations_to_1e-5"] for r in rows if r["iterations_to_1e-5"] is not None]
    return {
        "runs": len(rows),
        "mean_psnr": statistics.mean(r["psnr"] for r in rows),
        "mean_psnr_blurred": statistics.mean(r["psnr_blurred"] for r in rows),
        "reached_1e-5": len(reached),
        "median_iterations_to_1e-5": statistics.median(reached) if reached else None,
        "mean_seconds": statistics.mean(r["seconds"] for r in rows),
        "all_monotone": all(r["monotone"] for r in rows),
        "all_guaranteed": all(r["guaranteed"] for r in rows),
    }


def print_summary(title: str, summary: dict) -> None:
    """One line per key of ``summary`` (a noise level, or a kernel)."""
    print(title)
    print(
        f"{'noise':>9}{'runs':>6}{'blurred':>9}{'PSNR':>8}{'reach 1e-5':>12}"
        f"{'median it':>11}{'s/run':>8}{'monotone':>10}{'certified':>11}"
    )
    for level, s in summary.items():
        med = s["median_iterations_to_1e-5"]
        print(
            f"{level:>9}{s['runs']:>6}{s['mean_psnr_blurred']:9.2f}{s['mean_psnr']:8.2f}"
            f"{s['reached_1e-5']:>7}/{s['runs']:<4}{'-' if med is None else f'{med:g}':>11}"
            f"{s['mean_seconds']:8.1f}{str(s['all_monotone']):>10}{str(s['all_guaranteed']):>11}"
        )


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
    parser.add_argument(
        "--full", action="store_true", help="every image of --data at full size (no crop)"
    )
    parser.add_argument("--denoiser", default="default", help="'default', 'dncnn-gray', file")
    parser.add_argument(
        "--alpha", type=float, help="of the shipped weights (--denoiser default): 0.5 or 0.95"
    )
    parser.add_argument(
        "--methods",
        default="euler",
        help=f"comma-separated, of {', '.join(METHODS)}; 'all' for every one that applies",
    )
    parser.add_argument("--tv-lambdas", default="0.002,0.005,0.01,0.02", help="TV weights")
    parser.add_argument(
        "--wavelet-lambdas", default="0.02,0.05,0.1,0.2", help="wavelet (db8, 3 levels) weights"
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
    parser.add_argument("--per-kernel", action="store_true", help="print a table per kernel")
    parser.add_argument("--verbose", action="store_true", help="print every run")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--tag", default="", help="appended to the record's file name")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.full and (args.size is not None or args.images is not None):
        parser.error("--full uses every image at full size: drop --size and --images")
    methods = (
        [m for m in METHODS if not (m == "dncnn" and args.channels == 3)]
        if args.methods == "all"
        else args.methods.split(",")
    )
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    if "dncnn" in methods and args.channels == 3:
        parser.error("--methods dncnn: the DnCNN baseline is grey only (--channels 1)")
    if args.algorithm != "PGD" and {"tv", "wavelet"} & set(methods):
        parser.error("--methods tv, wavelet run deepinv's PGD: use --algorithm PGD")
    if not re.fullmatch(r"[A-Za-z0-9_.-]*", args.tag):
        parser.error(f"--tag: letters, digits, '_', '.' and '-' only, got {args.tag!r}")

    images = load_images(args.data, args.channels, args.images, only=args.only)
    kernels = np.load(args.kernels)
    names = args.kernel_names.split(",") if args.kernel_names else list(kernels.files)
    levels = [float(s) for s in args.noise.split(",")]
    denoiser = load_denoiser(args.denoiser, args.channels, args.alpha)
    args.alpha = getattr(denoiser, "alpha", None)  # recorded: the alpha actually used
    denoisers = {"euler": denoiser}
    if "dncnn" in methods:
        denoisers["dncnn"] = load_denoiser("dncnn-gray", 1)
    if "bm3d" in methods:
        denoisers["bm3d"] = dinv.models.BM3D()
    priors = {
        "tv": (dinv.optim.TVPrior(n_it_max=50), [float(v) for v in args.tv_lambdas.split(",")]),
        "wavelet": (
            dinv.optim.WaveletPrior(level=3, wv="db8"),
            [float(v) for v in args.wavelet_lambdas.split(",")],
        ),
    }

    options = {} if args.acceleration == "default" else {"acceleration": args.acceleration == "on"}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "gray" if args.channels == 1 else "color"
    if args.denoiser == "default" and args.alpha != 0.5:
        suffix += f"_alpha{args.alpha:g}"
    if args.acceleration == "off":
        suffix += "_plain"
    if methods != ["euler"]:
        suffix += "_anchors"
    if args.full:
        suffix += "_full"
    if args.algorithm != "PGD":
        suffix += f"_{args.algorithm.lower()}"
    if args.tag:
        suffix += f"_{args.tag}"
    path = args.out / f"pnp_deblur_{suffix}.json"
    record = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "methods": methods,
        "guarantee": {m: GUARANTEE[m] for m in methods},
        "hardware": f"{cpu_name()}, {args.threads} thread(s)",
        "torch": torch.__version__,
    }

    runs = []
    jobs = [
        (i, k, s, m) for s in levels for i in range(len(images)) for k in names for m in methods
    ]
    stepsizes = {}
    for i, name, level, method in tqdm(jobs, desc="deblurring"):
        x = images[i][None] if args.full else center_crop(images[i], args.size)[None]
        kernel = torch.as_tensor(kernels[name], dtype=torch.float32)
        kernel = (kernel / kernel.sum())[None, None]
        if method in priors:
            # the stepsize of the certified run on the same problem (or its default)
            stepsize = stepsizes.get((i, name, level))
            if stepsize is None:
                physics = blur_physics(x, kernel, level / 255, seed=i)
                stepsize = default_parameters(physics, "PGD")["stepsize"]
            prior, lambdas = priors[method]
            result = run_convex(
                x, kernel, level / 255, prior, lambdas, stepsize, args.max_iter, i, 1e-5
            )
        else:
            result = run_pnp(
                x,
                kernel,
                level / 255,
                denoisers[method],
                args.algorithm,
                args.max_iter,
                i,
                1e-5,
                **options,
            )
            stepsizes[(i, name, level)] = result["stepsize"]
        result |= {"method": method, "image": i, "kernel": name, "noise": level}
        runs.append(result)
        # written after every run, so that an interrupted benchmark keeps what it measured
        path.write_text(json.dumps(record | {"complete": False, "runs": runs}, indent=2))
        if args.verbose:
            tqdm.write(
                f"{method} image {i} {name} noise {level:g}: {result['psnr_blurred']:.2f} -> "
                f"{result['psnr']:.2f} dB, {result['iterations_to_1e-5']} it to 1e-5, "
                f"{result['seconds']:.1f} s, monotone {result['monotone']}"
            )

    by_method = {
        m: {f"{s:g}": summarise([r for r in runs if r["method"] == m and r["noise"] == s])
            for s in levels}
        for m in methods
    }  # fmt: skip
    per_kernel = {
        m: {f"{s:g}": {k: summarise([r for r in runs if r["method"] == m and r["noise"] == s
                                     and r["kernel"] == k]) for k in names}
            for s in levels}
        for m in methods
    }  # fmt: skip
    where = "full size" if args.full else f"crop {args.size}"
    for m in methods:
        print_summary(
            f"\n{m} ({GUARANTEE[m]}): PnP-{args.algorithm}, {len(images)} image(s) of "
            f"{args.data} ({where}), kernels {', '.join(names)}",
            by_method[m],
        )
        if args.per_kernel:
            for s in levels:
                print_summary(f"{m}, noise {s:g}, per kernel", per_kernel[m][f"{s:g}"])
    results = record | {"complete": True, "methods_summary": by_method, "per_kernel": per_kernel}
    if "euler" in methods:
        results["summary"] = by_method["euler"]  # the certified rows, as earlier records
    results["runs"] = runs
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
