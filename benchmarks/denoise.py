"""Denoising benchmark: the shipped EulerDenoisers, the DnCNN baseline and BM3D / CBM3D.

In one run, on every set of --sets (grey Set12 and colour Kodak24 by default, under
--data-root) or on the folder --data: Gaussian noise of each level of --sigmas (0-255
scale, fixed seed, the same noise for every model) is added and the mean PSNR (outputs
clipped to [0, 1]) of each denoiser is reported:

- every shipped Euler denoiser for the set's channels (one per averagedness target
  alpha), with its certificate (Lipschitz bound, alpha), given the noise level;
- the DnCNN baseline (grey only; it is *blind*: it is not given the noise level);
- for a fair comparison with it, every Euler denoiser also *blind*: given the noise level
  that scikit-image's wavelet estimator (``estimate_sigma``, Donoho's median absolute
  deviation of the finest diagonal wavelet coefficients) reads off the noisy image (not
  certified: the certificate is for a fixed sigma, and the estimate depends on the input);
- BM3D (grey, ``bm3d.bm3d``) or CBM3D (colour, ``bm3d.bm3d_rgb``) from the ``bm3d``
  package (the ``bench`` extra), given the noise level.

Each learned model's card says which images it was trained and validated on; every image
is labelled per model as ``training``, ``validation`` (the model's validation folder or a
held-out pattern of its training folder) or ``test`` (neither), and the means are also
reported per label. Throughput is the median time of denoising a batch of four 256 x 256
images in megapixels per second, the networks taking turns so that other load slows them
alike (BM3D: one image, once). Prints a table per set and writes JSON to --out.

    python benchmarks/denoise.py --data-root ../shared/data --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch

from deepinv_dynnets import EulerDenoiser, certify
from deepinv_dynnets.data import IMAGE_EXTENSIONS, load_image
from deepinv_dynnets.metrics import psnr
from deepinv_dynnets.models import load_dncnn
from deepinv_dynnets.pretrained import SHIPPED, read_card, resolve_weights
from deepinv_dynnets.training import cpu_name

HERE = Path(__file__).resolve().parent
# Published Set12 figures (Zhang et al., 2017, Table 2), for context only.
PUBLISHED = {"DnCNN-S (published)": {"15": 32.86, "25": 30.44, "50": 27.18},
             "BM3D (published)": {"15": 32.37, "25": 29.97, "50": 26.72}}  # fmt: skip
#: Named sets: folder under --data-root, channels, file-name patterns (None: all).
SETS = {
    "set12": ("val/gray_set12", 1, None),
    "kodak24": ("train/color", 3, ["kodak_*.png"]),
    "kodak24-holdout": ("train/color", 3, ["kodak_2[1-4].png"]),
    # Grey conversions (ITU-R 601 luma): test images for the grey models, which were
    # neither trained nor validated on them (Set12 is the validation set of some).
    "kodak24-gray": ("train/color", 1, ["kodak_*.png"]),
    "mcmaster18": ("train/color", 3, ["mcmaster_*.png"]),
}


class BM3DDenoiser:
    """BM3D (grey) or CBM3D (colour, opponent colour space) as ``denoiser(y, sigma)``."""

    def __init__(self, channels: int) -> None:
        import bm3d  # the ``bench`` extra

        self._bm3d = bm3d
        self.channels = channels

    def __call__(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        out = []
        for image in y.detach().cpu().double().numpy():
            if self.channels == 1:
                z = self._bm3d.bm3d(image[0], sigma_psd=float(sigma))[None]
            else:
                z = self._bm3d.bm3d_rgb(image.transpose(1, 2, 0), float(sigma)).transpose(2, 0, 1)
            out.append(torch.from_numpy(np.ascontiguousarray(z)))
        return torch.stack(out).to(y.dtype)

    def parameters(self):
        return iter(())


class BlindDenoiser(torch.nn.Module):
    """A denoiser given, per image, the noise level estimated from the noisy image itself
    (scikit-image's ``estimate_sigma``) instead of the true one."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        super().__init__()
        from skimage.restoration import estimate_sigma  # needs PyWavelets (``bench`` extra)

        self._estimate = estimate_sigma
        self.denoiser = denoiser

    def estimate(self, y: torch.Tensor) -> torch.Tensor:
        """Estimated noise standard deviation of each image of the batch ``y``."""
        images = y.detach().cpu().double().numpy()
        return torch.tensor(
            [float(self._estimate(im, average_sigmas=True, channel_axis=0)) for im in images],
            dtype=y.dtype,
            device=y.device,
        )

    def forward(self, y: torch.Tensor, sigma=None) -> torch.Tensor:
        return self.denoiser(y, self.estimate(y))


def image_files(folder: Path, only: list[str] | None, first: int | None) -> list[Path]:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and (only is None or any(fnmatch(p.name, pattern) for pattern in only))
    )[:first]
    if not files:
        raise ValueError(f"no image in {folder} matching {only}")
    return files


def image_role(settings: dict | None, folder: Path, name: str) -> str:
    """``training``, ``validation`` or ``test`` for a model trained with ``settings``."""
    if not settings:
        return "unknown (no training record)"
    parts = folder.resolve().parts

    def is_folder(relative: str | None) -> bool:
        rel = Path(relative).parts if relative else ()
        return bool(rel) and parts[-len(rel) :] == rel

    if is_folder(settings.get("val_folder")):
        only = settings.get("val_only")  # validated on these images of the folder only
        if only is None or any(fnmatch(name, p) for p in only):
            return "validation"
    if is_folder(settings.get("train_folder")):
        held_out = any(fnmatch(name, p) for p in settings.get("holdout") or ())
        return "validation" if held_out else "training"
    return "test"


@torch.no_grad()
def psnrs(model, images: list[torch.Tensor], sigma: float, seed: int = 0) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    values = []
    for image in images:
        x = image[None]
        y = x + sigma * torch.randn(x.shape, generator=gen)
        values.append(float(psnr(model(y, sigma).clamp(0, 1), x)))
    return values


@torch.no_grad()
def throughput(
    models: dict, channels: int, batch: int = 4, size: int = 256, repeats: int = 5
) -> dict[str, float]:
    """Megapixels per second of each network: median of ``repeats`` rounds, the models
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


def shipped_eulers(channels: int) -> dict[str, tuple[torch.nn.Module, Path]]:
    """Every shipped EulerDenoiser for ``channels``: the defaults, then the other names."""
    eulers = {}
    for name, files in SHIPPED["euler_denoiser"].items():
        for _, a in sorted(k for k in files if k[0] == channels):
            label = f"alpha={a:g}" if name == "default" else f"alpha={a:g}, {name}"
            eulers[f"EulerDenoiser {label} (certified)"] = (
                EulerDenoiser(in_channels=channels, alpha=a, pretrained=name),
                resolve_weights(name, "euler_denoiser", in_channels=channels, alpha=a),
            )
    return eulers


def evaluate_set(name, folder, channels, only, args, sigmas) -> dict:
    files = image_files(folder, only, args.images)
    images = [load_image(f, channels) for f in files]
    names = [f.name for f in files]
    if args.euler == "default":
        eulers = shipped_eulers(channels)
    else:
        eulers = {
            f"{Path(f).name} (certified)": (EulerDenoiser.from_pretrained(f), Path(f))
            for f in args.euler.split(",")
        }
    networks = {k: m for k, (m, _) in eulers.items()}
    cards = {k: read_card(p) for k, (_, p) in eulers.items()}
    for k, m in networks.copy().items():
        label = k.replace("(certified)", "(blind, estimated sigma)")
        networks[label] = BlindDenoiser(m)
        cards[label] = cards[k]
    if channels == 1 and args.dncnn != "none":
        label = f"DnCNN baseline, {Path(args.dncnn).stem} (blind)"
        networks[label] = load_dncnn(args.dncnn)
        dncnn_file = resolve_weights(args.dncnn, "dncnn")
        cards[label] = read_card(dncnn_file)
    speed = throughput(networks, channels, repeats=args.repeats)
    models = dict(networks)
    if not args.no_bm3d:
        label = "BM3D" if channels == 1 else "CBM3D"
        models[label] = BM3DDenoiser(channels)
        tic = time.perf_counter()
        models[label](torch.rand(1, channels, 256, 256), 0.1)
        speed[label] = 256 * 256 / (time.perf_counter() - tic) / 1e6
    out = {"data": str(folder), "channels": channels, "images": names, "models": {}}
    for label, model in models.items():
        print(f"{name}: {label}", flush=True)
        settings = cards[label].get("settings") if label in cards else None
        roles = (
            {n: image_role(settings, folder, n) for n in names}
            if label in cards
            else dict.fromkeys(names, "not learned")
        )
        per_image = {f"{s:g}": psnrs(model, images, s / 255) for s in sigmas}
        by_role = {}
        for role in sorted(set(roles.values())):
            idx = [i for i, n in enumerate(names) if roles[n] == role]
            by_role[role] = {s: statistics.mean(v[i] for i in idx) for s, v in per_image.items()}
        row = {
            "psnr": {s: statistics.mean(v) for s, v in per_image.items()},
            "psnr_per_image": per_image,
            "psnr_by_role": by_role,
            "image_roles": roles,
            "noise_level_given": not (label.startswith("DnCNN") or "blind" in label),
            "megapixels_per_s": speed[label],
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if label in eulers:
            cert = certify(model)
            row["certificate"] = {
                "lipschitz": cert.lipschitz,
                "alpha": cert.alpha,
                "method": cert.method,
            }
        out["models"][label] = row
    return out


def print_set(name: str, result: dict, sigmas: list[float]) -> None:
    models = result["models"]
    width = max(len(m) for m in list(models) + list(PUBLISHED)) + 2
    print(f"\n{name}: {result['data']} ({len(result['images'])} images), PSNR in dB")
    print(
        f"{'model':{width}s}"
        + "".join(f"{'s=' + format(s, 'g'):>9s}" for s in sigmas)
        + f"{'MP/s':>9s}{'params':>10s}  images (role)"
    )
    for label, r in models.items():
        cells = "".join(f"{r['psnr'][f'{s:g}']:9.2f}" for s in sigmas)
        roles = ", ".join(
            f"{sum(v == role for v in r['image_roles'].values())} {role}"
            for role in r["psnr_by_role"]
        )
        speed = f"{r['megapixels_per_s']:9.3f}{r['parameters']:10d}"
        print(f"{label:{width}s}{cells}{speed}  {roles}")
        if len(r["psnr_by_role"]) > 1:
            for role, row in r["psnr_by_role"].items():
                cells = "".join(f"{row[f'{s:g}']:9.2f}" for s in sigmas)
                print(f"{'  ' + role + ' only':{width}s}{cells}")
        if "certificate" in r:
            c = r["certificate"]
            bound = f"Lipschitz <= {c['lipschitz']:.6g}, alpha <= {c['alpha']:.4g}"
            print(f"{'':{width}s}certified: {bound}")
    if name == "set12":
        for label, row in PUBLISHED.items():
            cells = "".join(f"{row.get(f'{s:g}', float('nan')):9.2f}" for s in sigmas)
            print(f"{label:{width}s}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--sets", default="set12,kodak24", help=f"comma-separated, of {', '.join(SETS)}"
    )
    parser.add_argument("--data", type=Path, help="a folder of images instead of --sets")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3], help="with --data")
    parser.add_argument("--images", type=int, help="use only the first N images of each set")
    parser.add_argument(
        "--euler",
        default="default",
        help="'default' (every shipped EulerDenoiser for the set's channels) or comma-separated files",
    )
    parser.add_argument(
        "--dncnn",
        default="dncnn-gray-bf16",
        help="'dncnn-gray-bf16' (trained like the shipped alpha = 0.95 model: bfloat16, equal "
        "compute), 'dncnn-gray' (float32, the earlier baseline), a file or 'none'",
    )
    parser.add_argument("--no-bm3d", action="store_true", help="skip BM3D / CBM3D")
    parser.add_argument("--sigmas", default="15,25,50", help="0-255 scale")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.images is not None and args.images < 1:
        parser.error("--images must be >= 1")
    torch.set_num_threads(args.threads)

    if args.data is not None:
        sets = {args.data.name: (args.data, args.channels, None)}
    else:
        names = args.sets.split(",")
        unknown = [n for n in names if n not in SETS]
        if unknown:
            parser.error(f"--sets: unknown {unknown}; known: {', '.join(SETS)}")
        sets = {n: (args.data_root / SETS[n][0], SETS[n][1], SETS[n][2]) for n in names}
    sigmas = [float(s) for s in args.sigmas.split(",")]
    results = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "sigmas": sigmas,
        "seed": 0,
        "hardware": f"{cpu_name()}, {args.threads} thread(s)",
        "torch": torch.__version__,
        "sets": {},
        "published": {"set12": PUBLISHED},
    }
    for name, (folder, channels, only) in sets.items():
        results["sets"][name] = evaluate_set(name, folder, channels, only, args, sigmas)
    for name, result in results["sets"].items():
        print_set(name, result, sigmas)
    print(f"hardware: {results['hardware']}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "denoise_" + "_".join(sets) + ("" if args.images is None else f"_first{args.images}")
    path = args.out / f"{stem}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
