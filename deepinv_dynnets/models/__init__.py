"""Models: deepinv-compatible denoisers built as numerical flows, and their training."""

from .baselines import BASELINES, load_dncnn, save_dncnn
from .euler_denoiser import PRETRAINED, AveragedEulerBlock, EulerDenoiser
from .relaxed_denoiser import RelaxedDenoiser

__all__ = [
    "EulerDenoiser",
    "AveragedEulerBlock",
    "PRETRAINED",
    "RelaxedDenoiser",
    "BASELINES",
    "load_dncnn",
    "save_dncnn",
]
