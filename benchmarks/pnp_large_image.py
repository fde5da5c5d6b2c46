"""Certified PnP deblurring of a large image with tiled denoising on 1 and 2 CPU processes.

The test image (scikit-image's *camera*, or --image) is upscaled (bicubic) to --size x
--size, blurred circularly by a Gaussian kernel (deepinv BlurFFT) with Gaussian noise
(--noise on the 0-255 scale, fixed seed), and restored by plug-and-play PGD,

    x <- D(x - gamma A^T (A x - y), sigma_d),

with D = TiledDenoiser(EulerDenoiser(in_channels=1, alpha=0.95, pretrained="default"),
--tile): non-overlapping tiles, so D keeps the certified averagedness constant of the
Euler denoiser and the PnP certificate (pnp_certificate with that constant) holds. gamma
and sigma_d are the defaults of convergent_pnp (0.95 * 2/L and the noise level).

1. Wall time: --max-iter iterations for each process count of --procs (1: one process;
   2 or more: torch.multiprocessing processes joined by gloo over a file rendezvous, the
   tiles spread by deepinv.distributed; every process runs the same PGD and holds the
   image). Reported: seconds per iteration (median) and the largest difference between
   the iterates of 1 and N processes (the same map: zero up to round-off).
   --procs none skips this part.
2. PSNR cost of the tiling: on the central --crop x --crop window of the original image
   (--crop-source image) or of the upscaled one (--crop-source large; when --crop-tile
   divides (--size - --crop) / 2, the crop's tiles are tiles of the large image),
   PGD to convergence (relative residual ||x_{k+1} - x_k|| / ||x_{k+1}|| below --thres, or
   --crop-iter iterations) with the untiled denoiser, the tiled one (--crop-tile tiles)
   and AlternatingTiledDenoiser (the same tiles and the partition shifted by half a tile,
   in turn; its certificate is for two consecutive steps).

Prints the tables and writes JSON to --out. Example (what the user guide reports):

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/pnp_large_image.py --size 512 \\
        --tile 128 --max-iter 3 --crop 128 --crop-tile 32 --crop-iter 100 \\
        --out benchmarks/results/pnp_large_image_512.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import deepinv as dinv
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from deepinv_dynnets import EulerDenoiser
from deepinv_dynnets.data import blur_kernel, builtin_image, center_crop, load_image
from deepinv_dynnets.metrics import psnr
from deepinv_dynnets.models.tiled_denoiser import AlternatingTiledDenoiser, TiledDenoiser
from deepinv_dynnets.pnp import default_parameters, pnp_certificate


def test_image(args) -> torch.Tensor:
    image = builtin_image(1) if args.image is None else load_image(args.image, 1)
    return image[None].float()


def make_problem(x: torch.Tensor, args):
    """BlurFFT physics with its seeded noise, and the measurement."""
    rng = torch.Generator().manual_seed(args.seed)
    physics = dinv.physics.BlurFFT(
        tuple(x.shape[1:]),
        filter=blur_kernel("gaussian", blur_std=args.blur_std),
        noise_model=dinv.physics.GaussianNoise(args.noise / 255, rng=rng),
    )
    return physics, physics(x)


def pgd(denoiser, physics, y, stepsize, sigma, n_iter, thres=None, ctx=None, period=1):
    """Plain PnP-PGD from A^T y; per-iteration wall times and relative residuals.

    The residual compares x_k with x_{k - period}: alternating tilings (period 2) have a
    fixed map over two steps, and their odd and even iterates converge to different points.
    """
    history = [physics.A_adjoint(y)]
    times, residuals = [], []
    with torch.no_grad():
        for k in range(n_iter):
            if ctx is not None:
                ctx.barrier()
            x = history[-1]
            tic = time.perf_counter()
            new = denoiser(x - stepsize * physics.A_adjoint(physics.A(x) - y), sigma)
            times.append(time.perf_counter() - tic)
            history = [*history[-period:], new]
            if k + 1 >= period:
                residuals.append(float((new - history[-1 - period]).norm() / new.norm()))
                if thres is not None and (k + 1) % period == 0 and residuals[-1] < thres:
                    break
    return history[-1], times, residuals


def shipped_denoiser() -> EulerDenoiser:
    return EulerDenoiser(in_channels=1, alpha=0.95, pretrained="default")


def _worker(rank: int, world_size: int, folder: str, options: dict) -> None:
    torch.set_num_threads(options["threads"])
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size
    )
    try:
        with dinv.distributed.DistributedContext(device_mode="cpu") as ctx:
            y, kernel = torch.load(f"{folder}/problem.pt")
            physics = dinv.physics.BlurFFT(tuple(y.shape[1:]), filter=kernel)
            tiled = TiledDenoiser(shipped_denoiser(), options["tile"], ctx=ctx)
            x, times, _ = pgd(
                tiled,
                physics,
                y,
                options["stepsize"],
                options["sigma"],
                options["max_iter"],
                ctx=ctx,
            )
            if rank == 0:
                torch.save((x, times), f"{folder}/result.pt")
    finally:
        dist.destroy_process_group()


def timed_run(procs: int, y, kernel, physics, options: dict):
    if procs == 1:
        torch.set_num_threads(options["threads"])
        tiled = TiledDenoiser(shipped_denoiser(), options["tile"])
        x, times, _ = pgd(
            tiled, physics, y, options["stepsize"], options["sigma"], options["max_iter"]
        )
        return x, times
    with tempfile.TemporaryDirectory() as folder:
        torch.save((y, kernel), f"{folder}/problem.pt")
        mp.spawn(_worker, args=(procs, folder, options), nprocs=procs, join=True)
        return torch.load(f"{folder}/result.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="side of the large image")
    parser.add_argument("--tile", type=int, default=256, help="tile side on the large image")
    parser.add_argument(
        "--procs", default="1,2", help="process counts, comma-separated; 'none': no timing"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--max-iter", type=int, default=3, help="timed PGD iterations")
    parser.add_argument("--crop", type=int, default=128, help="side of the PSNR-cost crop")
    parser.add_argument(
        "--crop-source",
        choices=("image", "large"),
        default="image",
        help="crop the original image or the upscaled one",
    )
    parser.add_argument("--crop-tile", type=int, default=32, help="tile side on the crop")
    parser.add_argument("--crop-iter", type=int, default=300, help="iteration cap on the crop")
    parser.add_argument("--thres", type=float, default=1e-4, help="relative residual to stop")
    parser.add_argument("--noise", type=float, default=5.0, help="noise level (0-255 scale)")
    parser.add_argument("--blur-std", type=float, default=1.6, help="Gaussian blur (pixels)")
    parser.add_argument("--image", default=None, help="grey image file (default: camera)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()
    procs_list = [] if args.procs == "none" else [int(p) for p in args.procs.split(",")]

    image = test_image(args)
    large = F.interpolate(image, size=(args.size, args.size), mode="bicubic").clamp(0, 1)
    physics, y = make_problem(large, args)
    kernel = physics.filter
    params = default_parameters(physics, "PGD")
    denoiser = shipped_denoiser()
    tile_alpha = TiledDenoiser(denoiser, args.tile).averaged_constant()
    cert = pnp_certificate(physics, tile_alpha, "PGD", stepsize=params["stepsize"])
    options = {
        "tile": args.tile,
        "threads": args.threads,
        "max_iter": args.max_iter,
        "stepsize": params["stepsize"],
        "sigma": params["sigma_denoiser"],
    }
    print(f"tiled denoiser: {tile_alpha:.4g}-averaged; PnP-PGD certificate: {cert.verdict}")

    timing = []
    reference = None
    for procs in procs_list:
        x, times = timed_run(procs, y, kernel, physics, options)
        if reference is None:
            reference = x
        timing.append(
            {
                "procs": procs,
                "seconds_per_iter": statistics.median(times),
                "seconds_per_iter_all": times,
                "max_abs_diff_to_first": float((x - reference).abs().max()),
                "psnr": float(psnr(x.clamp(0, 1), large).mean()),
            }
        )
    if timing:
        base = timing[0]["seconds_per_iter"]
        print(f"\n{args.size}x{args.size}, tiles {args.tile}, {args.max_iter} PGD iterations")
        print(f"{'procs':>6}{'s/iter':>10}{'speedup':>9}{'max|diff|':>11}{'PSNR':>8}")
        for row in timing:
            print(
                f"{row['procs']:>6}{row['seconds_per_iter']:>10.3f}"
                f"{base / row['seconds_per_iter']:>9.2f}{row['max_abs_diff_to_first']:>11.2e}"
                f"{row['psnr']:>8.2f}"
            )

    crop = center_crop(image if args.crop_source == "image" else large, args.crop)
    crop_physics, crop_y = make_problem(crop, args)
    variants = {
        "untiled": denoiser,
        f"tiled {args.crop_tile}": TiledDenoiser(denoiser, args.crop_tile),
        f"alternating {args.crop_tile}": AlternatingTiledDenoiser(denoiser, args.crop_tile),
    }
    cost = []
    for name, model in variants.items():
        x, times, residuals = pgd(
            model,
            crop_physics,
            crop_y,
            params["stepsize"],
            params["sigma_denoiser"],
            args.crop_iter,
            thres=args.thres,
            period=2 if isinstance(model, AlternatingTiledDenoiser) else 1,
        )
        cost.append(
            {
                "variant": name,
                "iterations": len(times),
                "seconds": sum(times),
                "final_residual": residuals[-1],
                "converged": residuals[-1] < args.thres,
                "psnr": float(psnr(x.clamp(0, 1), crop).mean()),
            }
        )
    print(
        f"\nPSNR cost of tiling, {args.crop}x{args.crop} crop of the {args.crop_source} (blurred: "
        f"{float(psnr(crop_y.clamp(0, 1), crop).mean()):.2f} dB)"
    )
    print(f"{'variant':>16}{'iters':>7}{'residual':>10}{'PSNR':>8}{'cost':>8}")
    for row in cost:
        print(
            f"{row['variant']:>16}{row['iterations']:>7}{row['final_residual']:>10.1e}"
            f"{row['psnr']:>8.2f}{row['psnr'] - cost[0]['psnr']:>8.2f}"
        )

    if args.out is not None:
        record = {
            "command": "python benchmarks/pnp_large_image.py "
            + " ".join(
                f"--{k.replace('_', '-')} {v}"
                for k, v in vars(args).items()
                if v is not None and k != "out"
            ),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "denoiser": 'EulerDenoiser(in_channels=1, alpha=0.95, pretrained="default")',
            "tiled_alpha": tile_alpha,
            "certificate": cert.verdict,
            "stepsize": params["stepsize"],
            "sigma_denoiser": params["sigma_denoiser"],
            "timing": timing,
            "psnr_cost": cost,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
