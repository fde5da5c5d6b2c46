"""Models: deepinv-compatible denoisers built as numerical flows, and their training."""

from .euler_denoiser import PRETRAINED, AveragedEulerBlock, EulerDenoiser
from .training import (
    DenoiserTrainingRecord,
    ImagePatches,
    evaluate_psnr,
    load_images,
    psnr,
    train_denoiser,
)

__all__ = [
    "EulerDenoiser",
    "AveragedEulerBlock",
    "PRETRAINED",
    "train_denoiser",
    "DenoiserTrainingRecord",
    "ImagePatches",
    "load_images",
    "psnr",
    "evaluate_psnr",
]
