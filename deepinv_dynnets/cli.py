"""The ``dynnets`` command (also ``python -m deepinv_dynnets``).

It only parses arguments and calls library functions: :mod:`deepinv_dynnets.demo` (demo,
rollout, deblur), :mod:`deepinv_dynnets.training.runs` (training runs),
:func:`~deepinv_dynnets.pretrained.load_denoiser` and :func:`~deepinv_dynnets.certify`.
Every default is read from the signature of the function that uses it, so it is defined
once, in the library. Arguments are checked before any work; an error prints one line
``dynnets: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from collections.abc import Callable, Sequence

import torch

from .data import BLUR_KERNELS
from .demo import ALGORITHMS, SYSTEMS, run_deblur, run_demo, run_rollout
from .dynamics.averaged_step import AVERAGING_ACTIVATIONS
from .flows import SympFlow
from .models import EulerDenoiser
from .training import train_denoiser, train_supervised, train_unsupervised, trajectory_data
from .training.runs import DENOISER_MODELS, FLOW_MODELS, run_denoiser_training, run_flow_training

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, like the library's errors."""

    def error(self, message: str):
        self.exit(2, f"dynnets: error: {self.prog}: {message}\n")


def _default(function: Callable, name: str):
    """The default of ``function``'s parameter ``name``: the one place it is defined."""
    return inspect.signature(function).parameters[name].default


def _number(kind: type, low: float, strict: bool) -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` above ``low`` (``strict``) or at least ``low``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            bound = f"> {low:g}" if strict else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {'>' if strict else '>='} {low:g}"
    return parse


POSITIVE_INT, NONNEGATIVE_INT = _number(int, 0, True), _number(int, 0, False)
POSITIVE, NONNEGATIVE = _number(float, 0, True), _number(float, 0, False)


def _add(parser, flag: str, function: Callable, name: str, help: str, **kwargs) -> None:
    """Add ``flag`` with the default of ``function``'s parameter ``name``."""
    default = _default(function, name)
    shown = "" if default is None else " (default: %(default)s)"
    parser.add_argument(flag, default=default, help=help + shown, **kwargs)


# -- commands ---------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> None:
    run_demo(args.out, args.size, args.max_iter, args.n, args.n_timing)


def cmd_rollout(args: argparse.Namespace) -> None:
    run_rollout(args.flow, args.system, args.T, args.n, args.seed, args.out)


def cmd_deblur(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    run_deblur(
        args.input, args.channels, args.size, args.kernel, args.kernel_name, args.blur_std,
        args.noise, args.denoiser, args.alpha, args.algorithm, args.stepsize,
        args.sigma_denoiser, args.relaxation, args.max_iter, args.out,
    )  # fmt: skip


def cmd_certify(args: argparse.Namespace) -> None:
    from .lipschitz import certify
    from .pretrained import load_denoiser

    model = load_denoiser(args.weights, args.channels, args.alpha)
    cert = certify(model, method=args.method)
    print(f"{args.weights} ({type(model).__name__}):")
    print(cert)
    if not cert.certified:
        raise ValueError(f"{args.weights}: no certificate ({cert.reason})")


def cmd_train_sympflow(args: argparse.Namespace) -> None:
    names = ("n_layers", "width", "depth", "activation", "dt")
    architecture = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    training = {
        "epochs": args.epochs,
        "lr": args.lr,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "checkpoint_minutes": args.checkpoint_minutes,
        "resume": args.resume,
        "progress": not args.quiet,
    }
    data = {}
    if args.supervised:
        training["batch_size"] = args.batch_size
        data = {
            "n_trajectories": args.n_trajectories,
            "n_times": args.n_times,
            "noise_std": args.noise,
        }
    else:
        training |= {
            "n_points": args.n_points,
            "matching": args.model == "sympflow" and not args.no_matching,
            "lbfgs_steps": args.lbfgs_steps,
            "lbfgs_points": args.lbfgs_points,
        }
    run_flow_training(
        args.system, args.out, args.model, args.supervised, architecture, data, training,
        args.n_eval, args.threads, args.device, args.command,
    )  # fmt: skip


def cmd_train_denoiser(args: argparse.Namespace) -> None:
    if args.model == "euler":
        architecture = {"width": args.width, "hidden": args.hidden, "n_blocks": args.n_blocks}
        architecture |= {"alpha": args.alpha, "activation": args.activation}
    else:  # the baseline: --n-blocks is its depth, --width its feature channels
        if args.hidden is not None or args.alpha is not None or args.activation is not None:
            raise ValueError(
                "--hidden, --alpha and --activation apply to the Euler denoiser, not DnCNN"
            )
        architecture = {"nf": args.width, "depth": args.n_blocks}
    architecture = {k: v for k, v in architecture.items() if v is not None}
    training = {
        "val_folder": args.val,
        "holdout": args.holdout,
        "val_only": args.val_only or None,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "patches_per_image": args.patches_per_image,
        "lr": args.lr,
        "sigma_range": (0.0, args.sigma_max / 255),
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "checkpoint_minutes": args.checkpoint_minutes,
        "resume": args.resume,
        "progress": not args.quiet,
        "autocast": torch.bfloat16 if args.bf16 else None,
    }
    run_denoiser_training(
        args.data, args.out, args.model, args.channels, architecture, training, args.threads,
        args.device, args.command,
    )  # fmt: skip


# -- the parser -------------------------------------------------------------------------
def _checkpoint_arguments(parser, trainer: Callable) -> None:
    _add(parser, "--checkpoint-every", trainer, "checkpoint_every", "epochs between checkpoints", type=POSITIVE_INT)  # fmt: skip
    _add(parser, "--checkpoint-minutes", trainer, "checkpoint_minutes", "also checkpoint after this many minutes", type=POSITIVE)  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: run everything on built-in defaults",
        description=run_demo.__doc__.split("\n\n")[0],
    )
    _add(p, "--size", run_demo, "size", "side of the deblurred image", type=POSITIVE_INT)
    _add(p, "--max-iter", run_demo, "max_iter", "PnP iterations at most", type=POSITIVE_INT)
    _add(p, "--out", run_demo, "out", "folder for the figures")
    _add(p, "--n", run_demo, "n", "initial conditions for accuracy", type=POSITIVE_INT)
    _add(p, "--n-timing", run_demo, "n_timing", "initial conditions for the speed comparison", type=POSITIVE_INT)  # fmt: skip
    p.set_defaults(func=cmd_demo)


def _rollout_parser(sub) -> None:
    p = sub.add_parser(
        "rollout",
        help="roll a SympFlow out and plot trajectories and energy",
        description="Roll a shipped or saved SympFlow out from random initial conditions of "
        "its system and compare with the reference solver.",
    )
    _add(p, "--flow", run_rollout, "flow", "shipped name (harmonic-oscillator, henon-heiles) or weights file")  # fmt: skip
    p.add_argument("--system", choices=sorted(SYSTEMS), help="system (for a weights file)")
    _add(p, "--T", run_rollout, "T", "final time", type=POSITIVE)
    _add(p, "--n", run_rollout, "n", "number of initial conditions", type=POSITIVE_INT)
    _add(p, "--seed", run_rollout, "seed", "seed of the initial conditions", type=NONNEGATIVE_INT)
    _add(p, "--out", run_rollout, "out", "folder for the figure")
    p.set_defaults(func=cmd_rollout)


def _train_sympflow_parser(sub) -> None:
    p = sub.add_parser(
        "train-sympflow",
        help="train a SympFlow (or the PINN baseline)",
        description="Train on a Hamiltonian system: unsupervised (residual + Hamiltonian "
        "matching, fresh collocation points each epoch) or supervised on reference "
        "trajectory segments. Writes flow.pt, checkpoint.pt (resumable) and record.json "
        "to --out. Under torchrun (torchrun --nproc_per_node N -m deepinv_dynnets "
        "train-sympflow ...) it trains on N processes, --n-points and --batch-size being "
        "totals over them; rank 0 writes.",
    )
    unsup, sup = train_unsupervised, train_supervised
    p.add_argument("--system", choices=sorted(SYSTEMS), required=True)
    _add(p, "--model", run_flow_training, "model", "the flow", choices=FLOW_MODELS)
    p.add_argument("--supervised", action="store_true", help="train on trajectory segments")
    p.add_argument("--no-matching", action="store_true", help="residual loss only")
    _add(p, "--epochs", unsup, "epochs", "optimiser steps", type=POSITIVE_INT)
    _add(p, "--n-points", unsup, "n_points", "collocation points per step", type=POSITIVE_INT)
    _add(p, "--n-trajectories", trajectory_data, "n_trajectories", "supervised: segments", type=POSITIVE_INT)  # fmt: skip
    _add(p, "--n-times", trajectory_data, "n_times", "supervised: times per segment", type=POSITIVE_INT)  # fmt: skip
    _add(p, "--noise", trajectory_data, "noise_std", "supervised: noise std on data", type=NONNEGATIVE)  # fmt: skip
    _add(p, "--batch-size", sup, "batch_size", "supervised: batch size", type=POSITIVE_INT)
    p.add_argument("--layers", dest="n_layers", type=POSITIVE_INT, help=f"SympFlow layers (default: {_default(SympFlow, 'n_layers')})")  # fmt: skip
    p.add_argument("--width", type=POSITIVE_INT, help="hidden width (default: the model's)")
    p.add_argument("--depth", type=POSITIVE_INT, help="hidden layers (default: the model's)")
    p.add_argument("--activation", help="activation (default: the model's)")
    p.add_argument("--dt", type=POSITIVE, help="training window Delta t (default: the model's)")
    _add(p, "--lr", unsup, "lr", "initial learning rate", type=POSITIVE)
    _add(p, "--lbfgs-steps", unsup, "lbfgs_steps", "unsupervised: L-BFGS refinement iterations after Adam (float64)", type=NONNEGATIVE_INT)  # fmt: skip
    _add(p, "--lbfgs-points", unsup, "lbfgs_points", "unsupervised: fixed collocation points of the L-BFGS phase", type=POSITIVE_INT)  # fmt: skip
    _add(p, "--seed", unsup, "seed", "seed of weights and data", type=NONNEGATIVE_INT)
    _add(p, "--threads", run_flow_training, "threads", "torch CPU threads", type=POSITIVE_INT)
    _add(p, "--device", run_flow_training, "device", "cpu or cuda")
    _add(p, "--n-eval", run_flow_training, "n_eval", "initial conditions evaluated", type=POSITIVE_INT)  # fmt: skip
    _checkpoint_arguments(p, unsup)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add(p, "--out", run_flow_training, "out", "output folder")
    p.set_defaults(func=cmd_train_sympflow)


def _train_denoiser_parser(sub) -> None:
    p = sub.add_parser(
        "train-denoiser",
        help="train an averaged Euler denoiser (or DnCNN)",
        description="Train on random patches of an image folder with a noise level drawn "
        "per image, Adam with cosine decay, validation PSNR at sigma = 15, 25, 50 each "
        "epoch, resumable checkpoints. Writes model.pt, checkpoint.pt and record.json to "
        "--out; an Euler denoiser is calibrated and its certificate printed. Under torchrun "
        "(torchrun --nproc_per_node N -m deepinv_dynnets train-denoiser ...) it trains on N "
        "processes, --batch-size being the total over them; rank 0 writes.",
    )
    td = train_denoiser
    p.add_argument("--data", required=True, help="folder of training images")
    p.add_argument("--val", help="folder of validation images")
    p.add_argument(
        "--holdout", action="append", default=[], metavar="PATTERN",
        help="leave --data images matching PATTERN out of training (repeatable); without "
        "--val they are the validation set",
    )  # fmt: skip
    p.add_argument(
        "--val-only", action="append", default=[], metavar="PATTERN",
        help="validate only on the --val images matching PATTERN (repeatable)",
    )  # fmt: skip
    _add(p, "--channels", run_denoiser_training, "channels", "image channels", type=int, choices=[1, 3])  # fmt: skip
    _add(p, "--model", run_denoiser_training, "model", "the denoiser", choices=DENOISER_MODELS)
    defaults = {
        k: _default(EulerDenoiser, k)
        for k in ("width", "hidden", "n_blocks", "alpha", "activation")
    }
    p.add_argument("--width", type=POSITIVE_INT, help=f"feature channels (default: the model's; euler {defaults['width']})")  # fmt: skip
    p.add_argument("--hidden", type=POSITIVE_INT, help=f"euler: hidden channels per block (default: {defaults['hidden']})")  # fmt: skip
    p.add_argument("--n-blocks", type=POSITIVE_INT, help=f"blocks (euler, default {defaults['n_blocks']}) or depth (dncnn, default deepinv's)")  # fmt: skip
    p.add_argument("--alpha", type=POSITIVE, help=f"euler: target averagedness (default: {defaults['alpha']})")  # fmt: skip
    p.add_argument("--activation", choices=AVERAGING_ACTIVATIONS, help=f"euler: activation, slope in [0, 1] (default: {defaults['activation']})")  # fmt: skip
    _add(p, "--epochs", td, "epochs", "epochs", type=POSITIVE_INT)
    _add(p, "--batch-size", td, "batch_size", "patches per batch (all processes together)", type=POSITIVE_INT)  # fmt: skip
    _add(p, "--patch-size", td, "patch_size", "side of the patches", type=POSITIVE_INT)
    _add(p, "--patches-per-image", td, "patches_per_image", "patches of each image per epoch", type=POSITIVE_INT)  # fmt: skip
    _add(p, "--lr", td, "lr", "initial learning rate", type=POSITIVE)
    p.add_argument("--sigma-max", type=NONNEGATIVE, default=round(255 * _default(td, "sigma_range")[1], 6), help="noise levels in [0, this]/255 (default: %(default)s)")  # fmt: skip
    _add(p, "--seed", td, "seed", "seed of weights and data", type=NONNEGATIVE_INT)
    _add(p, "--threads", run_denoiser_training, "threads", "torch CPU threads", type=POSITIVE_INT)  # fmt: skip
    _add(p, "--device", run_denoiser_training, "device", "cpu or cuda")
    p.add_argument(
        "--bf16", action="store_true",
        help="mixed precision: the training forward in bfloat16 (faster on CPUs with "
        "AVX-512 BF16); weights, validation and certificate stay float32",
    )  # fmt: skip
    _checkpoint_arguments(p, td)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add(p, "--out", run_denoiser_training, "out", "output folder")
    p.set_defaults(func=cmd_train_denoiser)


def _deblur_parser(sub) -> None:
    p = sub.add_parser(
        "deblur",
        help="certified Plug-and-Play deblurring of an image (built-in by default)",
        description=run_deblur.__doc__.split("\n\n")[0],
    )
    rd = run_deblur
    p.add_argument("--input", help="image file (default: a built-in scikit-image image)")
    _add(p, "--channels", rd, "channels", "image channels", type=int, choices=[1, 3])
    p.add_argument("--size", type=POSITIVE_INT, help="centre crop (default: the whole image; 256 for the built-in one)")  # fmt: skip
    _add(p, "--kernel", rd, "kernel", f"{' or '.join(BLUR_KERNELS)} or a .npy/.npz file")
    p.add_argument("--kernel-name", help="array in a .npz kernel file, e.g. kernel_3")
    _add(p, "--blur-std", rd, "blur_std", "std of the gaussian kernel (pixels)", type=POSITIVE)
    _add(p, "--noise", rd, "noise", "noise std on the 0-255 scale", type=NONNEGATIVE)
    _add(p, "--denoiser", rd, "denoiser", "'default', 'campaign' (grey, alpha 0.95), 'dncnn-gray', 'dncnn-gray-bf16' or a weights file")  # fmt: skip
    p.add_argument("--alpha", type=POSITIVE, help="averagedness of the shipped Euler weights (--denoiser default): 0.5 or 0.95; default: the largest the algorithm accepts (0.95 for PGD and HQS, 0.5 for DRS and ADMM)")  # fmt: skip
    _add(p, "--algorithm", rd, "algorithm", "PnP algorithm", choices=ALGORITHMS)
    p.add_argument("--stepsize", type=POSITIVE, help="default: from the operator norm")
    p.add_argument("--sigma-denoiser", type=NONNEGATIVE, help="0-255 scale; default from --noise")
    _add(p, "--relaxation", rd, "relaxation", "lambda in (0, 1] of (1 - lambda) I + lambda D", type=float)  # fmt: skip
    _add(p, "--max-iter", rd, "max_iter", "PnP iterations at most", type=POSITIVE_INT)
    p.add_argument("--threads", type=POSITIVE_INT, default=torch.get_num_threads(), help="torch CPU threads (default: %(default)s)")  # fmt: skip
    _add(p, "--out", rd, "out", "output folder")
    p.set_defaults(func=cmd_deblur)


def _certify_parser(sub) -> None:
    from .lipschitz import certify
    from .pretrained import load_denoiser

    p = sub.add_parser(
        "certify",
        help="print the certified Lipschitz and averagedness constants of a denoiser",
        description="Certify a denoiser's weights: per-block operator-norm bounds, Lipschitz "
        "constant, averagedness alpha and margins. Exits non-zero for weights without a "
        "certificate (e.g. DnCNN).",
    )
    p.add_argument("--weights", default="default", help="'default' (the shipped weights), 'campaign' (grey, alpha 0.95) or a weights file")  # fmt: skip
    _add(p, "--channels", load_denoiser, "channels", "image channels", type=int, choices=[1, 3])
    p.add_argument("--alpha", type=POSITIVE, help="averagedness of the shipped weights (--weights default): 0.5 (default) or 0.95")  # fmt: skip
    _add(p, "--method", certify, "method", "operator-norm bound", choices=["fourier", "gram"])
    p.set_defaults(func=cmd_certify)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dynnets`` and its subcommands.

    :Examples:

        >>> from deepinv_dynnets.cli import build_parser
        >>> args = build_parser().parse_args(["deblur", "--noise", "7.65"])
        >>> args.noise, args.algorithm, args.max_iter
        (7.65, 'HQS', 200)
    """
    parser = _Parser(
        prog="dynnets",
        description="Dynamical-systems-based structured networks for deepinv and torchdiffeq.",
    )
    sub = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND", parser_class=_Parser)  # fmt: skip
    for add in (_demo_parser, _rollout_parser, _train_sympflow_parser, _train_denoiser_parser, _deblur_parser, _certify_parser):  # fmt: skip
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dynnets`` and ``python -m deepinv_dynnets``; returns the exit status.

    Errors a user can fix (bad arguments, missing or corrupt files) print one line
    ``dynnets: error: ...`` to stderr and return 2, before any work where the arguments
    allow it.

    :Examples:

        >>> from deepinv_dynnets.cli import main
        >>> main(["certify", "--weights", "no-such-file.pt"])
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    args.command = "dynnets " + " ".join(argv)  # recorded, so a run says how to reproduce it
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"dynnets: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
