"""Denoising benchmark: the shipped EulerDenoisers against the DnCNN baseline.

Both networks were trained by ``dynnets train-denoiser`` on the same data (BSD400 crops)
with about the same compute (see the model cards). On every image of --data (Set12 by
default), Gaussian noise of level 15, 25 and 50 (0-255 scale, fixed seed) is added and
the mean PSNR (outputs clipped to [0, 1]) is reported; throughput is the median time of
denoising a batch of 256 x 256 images, in megapixels per second, on this CPU with
--threads threads (the models take turns, so that other load slows them alike). Every shipped Euler denoiser for --channels is evaluated (one per
averagedness target alpha), each with its certificate (Lipschitz bound, alpha). Prints a
table and writes JSON to --out.

    python benchmarks/denoise.py --data ../shared/data/val/gray_set12 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from deepinv_dynnets import EulerDenoiser, certify
from deepinv_dynnets.data import load_images
from deepinv_dynnets.metrics import psnr
from deepinv_dynnets.models import PRETRAINED, load_dncnn
from deepinv_dynnets.training import cpu_name

HERE = Path(__file__).resolve().parent
# Published Set12 figures (Zhang et al., 2017, Table 2), for context only.
PUBLISHED = {"DnCNN-S (published)": {"15": 32.86, "25": 30.44, "50": 27.18},
             "BM3D (published)": {"15": 32.37, "25": 29.97, "50": 26.72}}  # fmt: skip


@torch.no_grad()
def mean_psnr(model, images, sigma: float, seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    values = []
    for image in images:
        x = image[None]
        y = x + sigma * torch.randn(x.shape, generator=gen)
        values.append(float(psnr(model(y, sigma).clamp(0, 1), x)))
    return sum(values) / len(values)


@torch.no_grad()
def throughput(
    models: dict, channels: int, batch: int = 4, size: int = 256, repeats: int = 5
) -> dict[str, float]:
    """Megapixels per second of each model: median of ``repeats`` rounds, the models
    taking turns within a round so that a busy machine slows them all alike."""
    x = torch.rand(batch, channels, size, size)
    times = {name: [] for name in models}
    for model in models.values():
        model(x, 0.1)  # warm-up (and the Euler denoiser's lazy step-size estimate)
    for _ in range(repeats):
        for name, model in models.items():
            tic = time.perf_counter()
            model(x, 0.1)
            times[name].append(time.perf_counter() - tic)
    return {name: batch * size * size / statistics.median(t) / 1e6 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of test images (e.g. Set12)")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument(
        "--euler",
        default="default",
        help="'default' (every shipped alpha for --channels) or comma-separated weights files",
    )
    parser.add_argument("--dncnn", default="dncnn-gray", help="'dncnn-gray' or a file")
    parser.add_argument("--sigmas", default="15,25,50", help="0-255 scale")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    images = load_images(args.data, args.channels)
    if args.euler == "default":
        eulers = {
            f"EulerDenoiser alpha={a:g} (certified)": EulerDenoiser(
                in_channels=args.channels, alpha=a, pretrained="default"
            )
            for a in sorted(PRETRAINED["default"][args.channels])
        }
    else:
        eulers = {
            f"{Path(f).name} (certified)": EulerDenoiser.from_pretrained(f)
            for f in args.euler.split(",")
        }
    models = eulers | {"DnCNN baseline": load_dncnn(args.dncnn)}
    sigmas = [float(s) for s in args.sigmas.split(",")]
    results = {
        "data": str(args.data),
        "n_images": len(images),
        "sigmas": sigmas,
        "hardware": f"{cpu_name()}, {args.threads} thread(s)",
        "torch": torch.__version__,
        "models": {},
        "published": PUBLISHED,
    }
    speed = throughput(models, args.channels)
    for name, model in models.items():
        row = {f"{s:g}": mean_psnr(model, images, s / 255) for s in sigmas}
        results["models"][name] = {
            "psnr": row,
            "megapixels_per_s": speed[name],
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if name in eulers:
            cert = certify(model)
            results["models"][name]["certificate"] = {
                "lipschitz": cert.lipschitz,
                "alpha": cert.alpha,
                "method": cert.method,
            }

    width = max(len(name) for name in list(models) + list(PUBLISHED)) + 2
    head = f"{'model':{width}s}" + "".join(f"{'s=' + format(s, 'g'):>9s}" for s in sigmas)
    print(f"\nSet: {args.data} ({len(images)} images), PSNR in dB, outputs clipped to [0, 1]")
    print(head + f"{'MP/s':>9s}{'params':>10s}")
    for name, r in results["models"].items():
        cells = "".join(f"{r['psnr'][f'{s:g}']:9.2f}" for s in sigmas)
        print(f"{name:{width}s}{cells}{r['megapixels_per_s']:9.3f}{r['parameters']:10d}")
    for name, row in PUBLISHED.items():
        cells = "".join(f"{row.get(f'{s:g}', float('nan')):9.2f}" for s in sigmas)
        print(f"{name:{width}s}{cells}")
    for name in eulers:
        cert = results["models"][name]["certificate"]
        print(f"{name}: Lipschitz <= {cert['lipschitz']:.6g}, alpha <= {cert['alpha']:.4g}")
    print(f"hardware: {results['hardware']}")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "gray" if args.channels == 1 else "color"
    path = args.out / f"denoise_{suffix}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
