"""Models: deepinv-compatible denoisers built as numerical flows, and their training."""

from .baselines import BASELINES, load_dncnn, save_dncnn
from .euler_denoiser import PRETRAINED, AveragedEulerBlock, EulerDenoiser
from .relaxed_denoiser import RelaxedDenoiser
from .training import (
    DenoiserTrainingRecord,
    ImagePatches,
    evaluate_psnr,
    load_image,
    load_images,
    psnr,
    train_denoiser,
)

__all__ = [
    "EulerDenoiser",
    "AveragedEulerBlock",
    "PRETRAINED",
    "RelaxedDenoiser",
    "BASELINES",
    "load_dncnn",
    "save_dncnn",
    "train_denoiser",
    "DenoiserTrainingRecord",
    "ImagePatches",
    "load_images",
    "load_image",
    "psnr",
    "evaluate_psnr",
]
