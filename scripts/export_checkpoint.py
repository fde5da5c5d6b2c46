"""Export the model of an EulerDenoiser training checkpoint as a weights file with a card.

A long campaign (``dynnets train-denoiser ... --resume``, see the training guide) writes
``model.pt`` only when its last epoch ends; this script turns the resumable checkpoint of
an unfinished run into a weights file that ``benchmarks/denoise.py --euler FILE``,
``EulerDenoiser.from_pretrained(FILE)`` and ``dynnets deblur --denoiser FILE`` read. As at
the end of training, the model is calibrated (each step bound raised to the certified
``||A_i||^2`` where it is below it) and certified; the card records the checkpoint's
epoch, training settings (``settings``, read by ``benchmarks/denoise.py`` to tell
training, validation and test images apart), validation history, resumes and wall time::

    python scripts/export_checkpoint.py benchmarks/checkpoints/campaign_gray_relu_a095/checkpoint.pt \\
        --out /tmp/campaign/model.pt
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
from pathlib import Path

import torch

from deepinv_dynnets import EulerDenoiser, certify
from deepinv_dynnets.training import cpu_name
from deepinv_dynnets.training.loop import _FORMAT

# The history rows kept in the card (every epoch is in the checkpoint itself).
_HISTORY_ROWS = 25


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, or a ValueError saying why it is not an Euler checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for unreadable files
        raise ValueError(f"cannot read the training checkpoint {str(path)!r}: {error}") from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not a deepinv_dynnets training checkpoint")
    if state.get("model_class") != "EulerDenoiser":
        raise ValueError(f"{str(path)!r} holds a {state.get('model_class')}, not an EulerDenoiser")
    return state


def export(
    checkpoint: Path,
    out: Path,
    command: str | None = None,
    training_command: str | None = None,
):
    """Rebuild, calibrate and certify the checkpoint's model; save it to ``out`` with a card.

    ``command`` is the export's command line; ``training_command`` the training command
    (the record holds it only once the last epoch has ended). Returns the model and its
    certificate."""
    state = read_checkpoint(checkpoint)
    record = state["record"]
    settings = record["settings"]
    model = EulerDenoiser(**settings["config"])
    model.load_state_dict(state["model"])
    model.eval()
    model.calibrate()
    certificate = certify(model)
    history = record["history"]
    model.save(
        out,
        command=training_command or record.get("command") or command,
        export_command=command,
        # an unfinished run's record has no hardware yet: name the exporting machine
        hardware=record.get("hardware") or f"{cpu_name()} (the machine of the export)",
        torch=record.get("torch") or torch.__version__,
        certificate={
            "lipschitz": certificate.lipschitz,
            "alpha": certificate.alpha,
            "alpha_target": certificate.alpha_target,
            "margin": certificate.margin,
            "method": certificate.method,
        },
        source_checkpoint=str(checkpoint),
        source_sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        epoch=state["epoch"],
        settings=settings,
        history=_thinned(history),
        resumes=record.get("extra", {}).get("resumes", []),
        wall_time_s=record["wall_time_s"],
        val_psnr=history[-1].get("val_psnr") if history else None,
        certified_alpha=certificate.alpha,
        certified_lipschitz=certificate.lipschitz,
    )
    return model, certificate


def _thinned(history: list[dict]) -> list[dict]:
    """About ``_HISTORY_ROWS`` rows of the history, always ending with its last epoch."""
    rows = history[:: max(1, len(history) // _HISTORY_ROWS)]
    return rows if not history or rows[-1] is history[-1] else rows + history[-1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the weights file (.pt)")
    parser.add_argument(
        "--training-command", help="the training command, for the card (default: the record's)"
    )
    args = parser.parse_args()
    if args.out.suffix != ".pt":
        parser.error(f"--out must end in .pt, got {str(args.out)!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _, certificate = export(
            args.checkpoint, args.out, "python " + shlex.join(sys.argv), args.training_command
        )
    except ValueError as error:
        parser.error(str(error))
    print(certificate)
    print(f"wrote {args.out} and its card {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
