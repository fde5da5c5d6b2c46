"""The ``dynnets`` command."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from . import systems
from .flows import SympFlow
from .flows.base import NeuralFlow
from .flows.evaluation import flow_errors, time_rollout
from .flows.pinn import PINNFlow
from .training import train_supervised, train_unsupervised, trajectory_data

__all__ = ["main", "build_parser", "center_crop", "cpu_name", "load_denoiser"]

SYSTEMS = {
    "harmonic-oscillator": systems.HarmonicOscillator,
    "henon-heiles": systems.HenonHeiles,
    "pendulum": systems.Pendulum,
    "kepler": systems.Kepler,
}
# the system each shipped flow was trained for
SHIPPED_SYSTEM = {"harmonic-oscillator": "harmonic-oscillator", "henon-heiles": "henon-heiles"}


def cpu_name() -> str:
    """The CPU's model name (for the hardware line of records and benchmarks).

    :Examples:

        >>> from deepinv_dynnets.cli import cpu_name
        >>> isinstance(cpu_name(), str)
        True
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _savefig(fig, path: Path) -> None:
    fig.savefig(path, dpi=110)
    print(f"  figure: {path}")


def _rollout_report(flow: NeuralFlow, system, y0: torch.Tensor, T: float, out: Path, tag: str):
    """Roll ``y0`` out to ``T``, compare with the reference, plot, and return the numbers."""
    import matplotlib

    matplotlib.use("Agg")
    from .flows.plotting import plot_rollout

    flow = flow.double()
    y0 = y0.to(torch.float64)
    t = torch.linspace(0, T, int(10 * T / flow.dt) + 1, dtype=torch.float64)
    with torch.no_grad():
        ours = flow(y0, t)
    reference = system.reference_trajectory(y0, t)
    e0 = system.energy(y0)
    energy = {
        "SympFlow": (system.energy(ours) - e0).abs().mean(-1),
        "reference (dopri5, 1e-10)": (system.energy(reference) - e0).abs().mean(-1),
    }
    fig = plot_rollout(t, {"SympFlow": ours, "reference": reference}, energy)
    out.mkdir(parents=True, exist_ok=True)
    _savefig(fig, out / f"{tag}_rollout.png")
    return energy["SympFlow"]


def cmd_rollout(args: argparse.Namespace) -> None:
    flow = SympFlow.from_pretrained(args.flow)
    name = args.system or SHIPPED_SYSTEM.get(str(args.flow))
    if name is None:
        raise ValueError("--system is needed for a flow loaded from a file")
    system = SYSTEMS[name]()
    if system.dim != flow.dim:
        raise ValueError(f"the flow has dim {flow.dim} but {name} has dim {system.dim}")
    y0 = system.sample(args.n, generator=torch.Generator().manual_seed(args.seed))
    curve = _rollout_report(flow, system, y0, args.T, Path(args.out), name)
    print(
        f"{name}: mean |H(y(T)) - H(y0)| at T = {args.T:g}: {curve[-1].item():.3e} "
        f"(max over time {curve.max().item():.3e}, {args.n} initial conditions)"
    )


def cmd_demo(args: argparse.Namespace) -> None:
    out = Path(args.out)
    print(f"dynnets demo: writing figures to {out.resolve()}")
    out.mkdir(parents=True, exist_ok=True)
    from .models import EulerDenoiser
    from .pnp import deblur

    alpha = _accepted_alpha(1, "PGD")
    print(
        f"\n[1] Certified Plug-and-Play deblurring: built-in camera image ({args.size} x "
        f"{args.size}), motion blur, noise 12.75/255, shipped Euler denoiser (alpha {alpha:g}), "
        "PnP-PGD"
    )
    tic = time.perf_counter()
    result = deblur(
        _builtin_image(1, args.size)[None],
        _blur_kernel("motion", None, 0.0),
        12.75 / 255,
        EulerDenoiser(in_channels=1, alpha=alpha, pretrained="default"),
        "PGD",
        max_iter=args.max_iter,
    )
    print("  " + str(result.certificate).replace("\n", "\n  "))
    print("  " + str(result.report).replace("\n", "\n  "))
    print(
        f"  PSNR: blurred {result.psnr_blurred:.2f} dB -> restored {result.psnr:.2f} dB "
        f"({time.perf_counter() - tic:.1f} s with the certificate)"
    )
    _deblur_figures(result, out, "pnp_deblur")

    system = systems.HenonHeiles()
    flow = SympFlow.from_pretrained("henon-heiles")
    gen = torch.Generator().manual_seed(0)
    print("\n[2] SympFlow: Henon-Heiles rolled out to T = 100 with the shipped weights")
    y0 = system.sample(args.n, generator=gen, dtype=torch.float64)
    errors = flow_errors(flow.double(), system, y0, times=(1.0, 10.0, 100.0))
    for t, rel, de in zip(
        errors["times"], errors["relative_state_error"], errors["energy_error"], strict=True
    ):
        print(f"  t = {t:5g}: mean relative state error {rel:.2e}, mean |dH| {de:.2e}")
    _rollout_report(flow, system, y0[:50], 100.0, out, "henon_heiles")
    big = system.sample(args.n_timing, generator=gen, dtype=torch.float64)
    timing = time_rollout(flow, system, big, T=100.0, flow_dtype=torch.float32)
    print(
        f"  rollout of {args.n_timing} initial conditions to T = 100: SympFlow (float32) "
        f"{timing['flow_s']:.2f} s, torchdiffeq dopri5 (float64, rtol 1e-8) "
        f"{timing['odeint_s']:.2f} s -> {timing['speedup']:.1f}x faster"
    )
    print("\n[3] Structured networks: guarantees checked on random inputs (float64)")
    from .dynamics import EulerStep, FlowNetwork, MLPField, VolumePreservingNet

    torch.manual_seed(0)
    vp = VolumePreservingNet(4, depth=6, h=0.9, width=16).double()
    resnet = FlowNetwork([EulerStep(MLPField(4, width=16), h=0.9) for _ in range(6)]).double()
    x = torch.randn(20, 4, dtype=torch.float64)
    for label, net in (("volume-preserving net", vp), ("plain ResNet", resnet)):
        dets = torch.stack(
            [torch.linalg.det(torch.autograd.functional.jacobian(net, xi)) for xi in x]
        )
        print(f"  {label:22s} max |det J - 1| = {(dets - 1).abs().max().item():.1e}")
    print(f"\ndone; figures in {out.resolve()}")


def _build_flow(args: argparse.Namespace, dim: int) -> NeuralFlow:
    if args.model == "pinn":
        return PINNFlow(
            dim, width=args.width, depth=args.depth, activation=args.activation, dt=args.dt
        )
    return SympFlow(
        dim,
        n_layers=args.layers,
        width=args.width,
        depth=args.depth,
        activation=args.activation,
        dt=args.dt,
    )


def cmd_train_sympflow(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    system = SYSTEMS[args.system]()
    flow = _build_flow(args, system.dim)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        checkpoint=out / "checkpoint.pt",
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        progress=not args.quiet,
    )
    tic = time.perf_counter()
    if args.supervised:
        x0, t, y = trajectory_data(
            system,
            args.n_trajectories,
            args.n_times,
            dt=args.dt,
            noise_std=args.noise,
            generator=torch.Generator().manual_seed(args.seed),
        )
        record = train_supervised(flow, x0, t, y, batch_size=args.batch_size, **common)
    else:
        matching = args.model == "sympflow" and not args.no_matching
        record = train_unsupervised(
            flow,
            system,
            n_points=args.n_points,
            matching=matching,
            lbfgs_steps=args.lbfgs_steps,
            lbfgs_points=args.lbfgs_points,
            **common,
        )
    wall = time.perf_counter() - tic
    y0 = system.sample(
        args.n_eval, generator=torch.Generator().manual_seed(1234), dtype=torch.float64
    )
    metrics = flow_errors(flow.double(), system, y0, times=(1.0, 10.0, 100.0))
    flow.float()
    summary = {
        "command": "dynnets " + " ".join(args.argv),
        "system": args.system,
        "wall_time_s": wall,
        "hardware": f"{cpu_name()}, {args.threads} thread(s)",
        "torch": str(torch.__version__),
        "evaluation": metrics,
    }
    if isinstance(flow, SympFlow):
        flow.save(out / "flow.pt", **summary)
    else:
        torch.save({"config": flow.config, "state_dict": flow.state_dict()}, out / "flow.pt")
    (out / "record.json").write_text(
        json.dumps(
            summary
            | {
                "settings": record.settings,
                "seconds_per_epoch": record.seconds_per_epoch,
                "lbfgs_history": record.lbfgs_history,
                "history": record.history[:: max(1, len(record.history) // 500)],
            },
            indent=2,
        )
    )
    print(f"trained {args.system} in {wall:.1f} s ({record.seconds_per_epoch * 1e3:.1f} ms/epoch)")
    for t, rel, de in zip(
        metrics["times"], metrics["relative_state_error"], metrics["energy_error"], strict=True
    ):
        print(f"  t = {t:5g}: mean relative state error {rel:.2e}, mean |dH| {de:.2e}")
    print(f"wrote {out / 'flow.pt'} and {out / 'record.json'}")


def cmd_train_denoiser(args: argparse.Namespace) -> None:
    import deepinv

    from .lipschitz import certify
    from .models import EulerDenoiser, save_dncnn
    from .training import train_denoiser

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.model == "euler":
        model = EulerDenoiser(
            in_channels=args.channels,
            width=args.width,
            hidden=args.hidden,
            n_blocks=args.n_blocks,
            alpha=args.alpha,
        )
    else:  # the baseline, trained by the same loop on the same data and budget
        model = deepinv.models.DnCNN(
            in_channels=args.channels,
            out_channels=args.channels,
            depth=args.n_blocks,
            nf=args.width,
            pretrained=None,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = train_denoiser(
        model,
        args.data,
        val_folder=args.val,
        channels=args.channels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        patches_per_image=args.patches_per_image,
        lr=args.lr,
        sigma_range=(0.0, args.sigma_max / 255),
        seed=args.seed,
        checkpoint=out / "checkpoint.pt",
        resume=args.resume,
        progress=not args.quiet,
        holdout=args.holdout,
        autocast=torch.bfloat16 if args.bf16 else None,
    )
    summary = {
        "command": "dynnets " + " ".join(args.argv),
        "wall_time_s": record.wall_time_s,
        "hardware": f"{cpu_name()}, {args.threads} thread(s)",
        "torch": str(torch.__version__),
        "val_psnr": record.val_psnr,
    }
    if isinstance(model, EulerDenoiser):
        model.save(out / "model.pt", **summary)
        print(certify(model))
    else:
        config = {
            "in_channels": args.channels,
            "out_channels": args.channels,
            "depth": args.n_blocks,
            "nf": args.width,
        }
        save_dncnn(model, out / "model.pt", config, **summary)
    record.to_json(out / "record.json")
    # the record with how it was made: the model card of shipped weights
    card = json.loads((out / "record.json").read_text()) | summary
    (out / "record.json").write_text(json.dumps(card, indent=2))
    print(f"trained {args.model} in {record.wall_time_s:.1f} s; validation PSNR: {record.val_psnr}")
    print(f"wrote {out / 'model.pt'} and {out / 'record.json'}")


def _builtin_image(channels: int, size: int) -> torch.Tensor:
    """scikit-image's camera (grey) or astronaut (colour), centre-cropped: no download."""
    from skimage import data

    array = data.camera() if channels == 1 else data.astronaut()
    x = torch.from_numpy(array.astype("float32") / 255)
    x = x[None] if channels == 1 else x.permute(2, 0, 1)
    return center_crop(x, size)


def center_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central ``size`` x ``size`` window of ``x`` (``(..., H, W)``); ``None``: all of it."""
    if size is None:
        return x
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"size {size} is larger than the image ({h} x {w})")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size].contiguous()


def _blur_kernel(spec: str, name: str | None, blur_std: float) -> torch.Tensor:
    import deepinv

    if spec == "gaussian":
        return deepinv.physics.functional.blur.gaussian_blur(sigma=(blur_std, blur_std))
    if spec == "motion":
        gen = deepinv.physics.generator.MotionBlurGenerator(
            (19, 19), rng=torch.Generator().manual_seed(0)
        )
        return gen.step(1, seed=0)["filter"]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--kernel must be 'gaussian', 'motion' or a .npy/.npz file, got {spec!r}")
    import numpy as np

    loaded = np.load(path)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        key = name or loaded.files[0]
        if key not in loaded.files:
            raise ValueError(f"{path} has no array {key!r} (it has {', '.join(loaded.files)})")
        loaded = loaded[key]
    kernel = torch.as_tensor(loaded, dtype=torch.float32)
    if kernel.dim() != 2 or not bool(torch.isfinite(kernel).all()) or kernel.sum() <= 0:
        raise ValueError(f"the blur kernel must be a finite 2-D array with a positive sum: {path}")
    return (kernel / kernel.sum())[None, None]


def load_denoiser(spec: str, channels: int = 1, alpha: float | None = None) -> torch.nn.Module:
    """The denoiser a ``--denoiser`` (or ``--weights``) argument names.

    :param str spec: ``"default"`` (the shipped :class:`~deepinv_dynnets.EulerDenoiser`
        for ``channels`` and ``alpha``), a name in
        :data:`~deepinv_dynnets.models.BASELINES` (``"dncnn-gray"``), or a file written by
        :meth:`~deepinv_dynnets.EulerDenoiser.save` or
        :func:`~deepinv_dynnets.models.save_dncnn`.
    :param int channels: image channels, for ``"default"``.
    :param float | None alpha: averagedness target of the shipped weights, for
        ``"default"`` (``None``: 0.5). With a file or a baseline it must be ``None`` or the
        network's own target: it selects shipped weights, it does not change a network.
    :return: the model, in eval mode.
    :raises ValueError: an unknown name, a missing or unreadable file, no shipped weights
        for ``channels`` and ``alpha``, an ``alpha`` that is not the loaded network's.

    :Examples:

        >>> from deepinv_dynnets.cli import load_denoiser
        >>> load_denoiser("default", channels=1, alpha=0.95).alpha
        0.95
    """
    from .models import BASELINES, EulerDenoiser, load_dncnn

    if spec == "default":
        alpha = 0.5 if alpha is None else alpha
        return EulerDenoiser(in_channels=channels, alpha=alpha, pretrained="default")
    if spec in BASELINES:
        model = load_dncnn(spec)
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(
                f"--denoiser must be 'default', one of {', '.join(BASELINES)} or a file, "
                f"got {spec!r}"
            )
        try:
            model = EulerDenoiser.from_pretrained(path)
        except ValueError:
            model = load_dncnn(path)  # raises a clear error if it is neither
    own = getattr(model, "alpha", None)
    if alpha is not None and (own is None or abs(own - alpha) > 1e-12):
        raise ValueError(
            f"--alpha {alpha:g} selects shipped weights ('default'); {spec!r} is a "
            f"{type(model).__name__} with alpha {own if own is None else format(own, 'g')}"
        )
    return model


def _deblur_figures(result, out: Path, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def show(ax, img, title):
        img = img[0].clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    show(axes[0], result.x, "ground truth")
    show(axes[1], result.y, f"blurred + noise\n{result.psnr_blurred:.2f} dB")
    show(axes[2], result.x_hat, f"certified PnP\n{result.psnr:.2f} dB")
    result.monitor.plot(axes[3])
    axes[3].set_title(f"residual ({result.report.iterations} iterations)")
    fig.tight_layout()
    _savefig(fig, out / f"{tag}.png")
    plt.close(fig)


def _accepted_alpha(channels: int, algorithm: str) -> float:
    """The largest alpha of the shipped weights that the algorithm's certificate accepts."""
    from .models import PRETRAINED
    from .pnp.certificate import _accepts_alpha

    shipped = PRETRAINED["default"][channels]
    return max(a for a in shipped if _accepts_alpha(algorithm.upper(), a))


def cmd_deblur(args: argparse.Namespace) -> None:
    from PIL import Image

    from .data import load_image
    from .pnp import deblur

    torch.set_num_threads(args.threads)
    if args.input is None:
        x = _builtin_image(args.channels, args.size or 256)
        source = "built-in " + ("camera" if args.channels == 1 else "astronaut") + " image"
    else:
        path = Path(args.input)
        if not path.is_file():
            raise ValueError(f"--input {str(path)!r} is not a file")
        x = center_crop(load_image(path, args.channels), args.size)
        source = str(path)
    kernel = _blur_kernel(args.kernel, args.kernel_name, args.blur_std)
    alpha = args.alpha
    if alpha is None and args.denoiser == "default":
        alpha = _accepted_alpha(args.channels, args.algorithm)
    denoiser = load_denoiser(args.denoiser, args.channels, alpha)
    options = {"max_iter": args.max_iter, "relaxation": args.relaxation}
    if args.stepsize is not None:
        options["stepsize"] = args.stepsize
    if args.sigma_denoiser is not None:
        options["sigma_denoiser"] = args.sigma_denoiser / 255
    print(
        f"deblurring {source} ({tuple(x.shape)}), kernel {args.kernel} "
        f"{tuple(kernel.shape[-2:])}, noise {args.noise:g}/255, {args.algorithm}"
    )
    result = deblur(x[None], kernel, args.noise / 255, denoiser, args.algorithm, **options)
    print(result.certificate)
    print(result.report)
    print(
        f"PSNR: blurred {result.psnr_blurred:.2f} dB -> restored {result.psnr:.2f} dB "
        f"in {result.seconds:.1f} s"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = result.x_hat[0].clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()
    Image.fromarray((image * 255).round().astype("uint8")).save(out / "deblurred.png")
    print(f"  image: {out / 'deblurred.png'}")
    _deblur_figures(result, out, "deblur")


def cmd_certify(args: argparse.Namespace) -> None:
    from .lipschitz import certify

    model = load_denoiser(args.weights, args.channels, args.alpha)
    cert = certify(model, method=args.method)
    print(f"{args.weights} ({type(model).__name__}):")
    print(cert)
    if not cert.certified:
        raise ValueError(f"{args.weights}: no certificate ({cert.reason})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dynnets`` and its subcommands.

    :Examples:

        >>> from deepinv_dynnets.cli import build_parser
        >>> args = build_parser().parse_args(["deblur", "--noise", "7.65"])
        >>> args.noise, args.algorithm
        (7.65, 'PGD')
    """
    parser = argparse.ArgumentParser(
        prog="dynnets",
        description="Dynamical-systems-based structured networks for deepinv and torchdiffeq.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="the main job: run everything on built-in defaults",
        description="Certified Plug-and-Play deblurring of a built-in image with the "
        "shipped Euler denoiser (certificate, monitored iterations, PSNR), a SympFlow "
        "rollout of Henon-Heiles to T = 100 with the shipped weights (accuracy, energy, "
        "speed against torchdiffeq) and a check of the structured networks' guarantees. "
        "No downloads.",
    )
    demo.add_argument("--size", type=int, default=160, help="side of the deblurred image")
    demo.add_argument("--max-iter", type=int, default=100, help="PnP iterations at most")
    demo.add_argument("--out", default="dynnets_output", help="folder for the figures")
    demo.add_argument("--n", type=int, default=200, help="initial conditions for accuracy")
    demo.add_argument(
        "--n-timing", type=int, default=10_000, help="initial conditions for the speed comparison"
    )
    demo.set_defaults(func=cmd_demo)

    roll = sub.add_parser(
        "rollout",
        help="roll a SympFlow out and plot trajectories and energy",
        description="Roll a shipped or saved SympFlow out from random initial "
        "conditions of its system and compare with the reference solver.",
    )
    roll.add_argument(
        "--flow",
        default="henon-heiles",
        help="shipped name (harmonic-oscillator, henon-heiles) or checkpoint path",
    )
    roll.add_argument("--system", choices=sorted(SYSTEMS), help="system (for a checkpoint path)")
    roll.add_argument("--T", type=float, default=100.0, help="final time")
    roll.add_argument("--n", type=int, default=100, help="number of initial conditions")
    roll.add_argument("--seed", type=int, default=0)
    roll.add_argument("--out", default="dynnets_output", help="folder for the figure")
    roll.set_defaults(func=cmd_rollout)

    tr = sub.add_parser(
        "train-sympflow",
        help="train a SympFlow (or the PINN baseline)",
        description="Train on a Hamiltonian system: unsupervised (residual + "
        "Hamiltonian matching, fresh collocation points each epoch) or "
        "supervised on reference trajectory segments. Writes flow.pt, "
        "checkpoint.pt (resumable) and record.json to --out.",
    )
    tr.add_argument("--system", choices=sorted(SYSTEMS), required=True)
    tr.add_argument("--model", choices=["sympflow", "pinn"], default="sympflow")
    tr.add_argument("--supervised", action="store_true", help="train on trajectory segments")
    tr.add_argument("--no-matching", action="store_true", help="residual loss only")
    tr.add_argument("--epochs", type=int, default=2000, help="optimiser steps")
    tr.add_argument("--n-points", type=int, default=700, help="collocation points per step")
    tr.add_argument("--n-trajectories", type=int, default=200, help="supervised: segments")
    tr.add_argument("--n-times", type=int, default=10, help="supervised: times per segment")
    tr.add_argument("--noise", type=float, default=0.0, help="supervised: noise std on data")
    tr.add_argument("--batch-size", type=int, default=256, help="supervised: batch size")
    tr.add_argument("--layers", type=int, default=3, help="SympFlow layers")
    tr.add_argument("--width", type=int, default=16, help="hidden width")
    tr.add_argument("--depth", type=int, default=2, help="hidden layers per potential")
    tr.add_argument("--activation", default="tanh")
    tr.add_argument("--dt", type=float, default=1.0, help="training window Delta t")
    tr.add_argument("--lr", type=float, default=5e-3)
    tr.add_argument(
        "--lbfgs-steps",
        type=int,
        default=0,
        help="unsupervised: L-BFGS refinement iterations after Adam (float64)",
    )
    tr.add_argument(
        "--lbfgs-points",
        type=int,
        default=4000,
        help="unsupervised: fixed collocation points of the L-BFGS phase",
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    tr.add_argument("--n-eval", type=int, default=200, help="initial conditions evaluated")
    tr.add_argument("--checkpoint-every", type=int, default=500)
    tr.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.add_argument("--out", default="runs/sympflow", help="output folder")
    tr.set_defaults(func=cmd_train_sympflow)

    td = sub.add_parser(
        "train-denoiser",
        help="train an averaged Euler denoiser (or DnCNN)",
        description="Train on random patches of an image folder with a noise "
        "level drawn per image, Adam with cosine decay, validation PSNR at "
        "sigma = 15, 25, 50 each epoch, resumable checkpoints. Writes model.pt, "
        "checkpoint.pt and record.json to --out; an Euler denoiser is calibrated "
        "and its certificate printed.",
    )
    td.add_argument("--data", required=True, help="folder of training images (PNG/JPG)")
    td.add_argument("--val", help="folder of validation images")
    td.add_argument(
        "--holdout",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave --data images matching PATTERN out of training (repeatable); without "
        "--val they are the validation set",
    )
    td.add_argument("--channels", type=int, default=1, choices=[1, 3])
    td.add_argument("--model", choices=["euler", "dncnn"], default="euler")
    td.add_argument("--width", type=int, default=64, help="feature channels")
    td.add_argument("--hidden", type=int, default=64, help="euler: hidden channels per block")
    td.add_argument("--n-blocks", type=int, default=8, help="blocks (euler) or depth (dncnn)")
    td.add_argument("--alpha", type=float, default=0.5, help="euler: target averagedness")
    td.add_argument("--epochs", type=int, default=50)
    td.add_argument("--batch-size", type=int, default=32)
    td.add_argument("--patch-size", type=int, default=40)
    td.add_argument("--patches-per-image", type=int, default=16)
    td.add_argument("--lr", type=float, default=1e-3)
    td.add_argument("--sigma-max", type=float, default=55.0, help="noise levels in [0, this]/255")
    td.add_argument("--seed", type=int, default=0)
    td.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    td.add_argument(
        "--bf16",
        action="store_true",
        help="mixed precision: the training forward in bfloat16 (faster on CPUs with "
        "AVX-512 BF16); weights, validation and certificate stay float32",
    )
    td.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    td.add_argument("--quiet", action="store_true", help="no progress bar")
    td.add_argument("--out", default="runs/denoiser", help="output folder")
    td.set_defaults(func=cmd_train_denoiser)

    db = sub.add_parser(
        "deblur",
        help="certified Plug-and-Play deblurring of an image (built-in by default)",
        description="Blur an image with a kernel and Gaussian noise, restore it with a "
        "certified PnP solver (convergent_pnp) and the shipped Euler denoiser; print the "
        "convergence certificate, the monitor's report and the PSNR; save the result and a "
        "figure with the residual curve.",
    )
    db.add_argument("--input", help="image file (default: a built-in scikit-image image)")
    db.add_argument("--channels", type=int, default=1, choices=[1, 3])
    db.add_argument("--size", type=int, help="centre crop (default 256 for the built-in image)")
    db.add_argument("--kernel", default="gaussian", help="'gaussian', 'motion' or a .npy/.npz file")
    db.add_argument("--kernel-name", help="array in a .npz kernel file, e.g. kernel_3")
    db.add_argument("--blur-std", type=float, default=1.6, help="std of the gaussian kernel")
    db.add_argument("--noise", type=float, default=12.75, help="noise std on the 0-255 scale")
    db.add_argument(
        "--denoiser", default="default", help="'default', 'dncnn-gray' or a weights file"
    )
    db.add_argument(
        "--alpha",
        type=float,
        help="averagedness of the shipped Euler weights (--denoiser default): 0.5 or 0.95; "
        "default: the largest the algorithm accepts (0.95 for PGD and HQS, 0.5 for DRS and "
        "ADMM)",
    )
    db.add_argument("--algorithm", default="PGD", choices=["PGD", "HQS", "DRS", "ADMM"])
    db.add_argument("--stepsize", type=float, help="default: from the operator norm")
    db.add_argument("--sigma-denoiser", type=float, help="0-255 scale; default from --noise")
    db.add_argument("--relaxation", type=float, default=1.0, help="(1 - l) I + l D")
    db.add_argument("--max-iter", type=int, default=200)
    db.add_argument("--threads", type=int, default=torch.get_num_threads())
    db.add_argument("--out", default="dynnets_output", help="output folder")
    db.set_defaults(func=cmd_deblur)

    ce = sub.add_parser(
        "certify",
        help="print the certified Lipschitz and averagedness constants of a denoiser",
        description="Certify a denoiser's weights: per-block operator-norm bounds, "
        "Lipschitz constant, averagedness alpha and margins. Exits non-zero for weights "
        "without a certificate (e.g. DnCNN).",
    )
    ce.add_argument("--weights", default="default", help="'default' or a weights file")
    ce.add_argument("--channels", type=int, default=1, choices=[1, 3])
    ce.add_argument(
        "--alpha",
        type=float,
        help="averagedness of the shipped weights (--weights default): 0.5 (default) or 0.95",
    )
    ce.add_argument("--method", default="fourier", choices=["fourier", "gram"])
    ce.set_defaults(func=cmd_certify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dynnets`` command; returns the exit status.

    Errors a user can fix (bad arguments, missing or corrupt files) print one line
    ``dynnets: error: ...`` to stderr and return 2.

    :Examples:

        >>> from deepinv_dynnets.cli import main
        >>> main(["certify", "--weights", "no-such-file.pt"])
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in training records, so a run says how to reproduce it
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"dynnets: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
