"""Models: deepinv-compatible denoisers built as numerical flows."""

from .euler_denoiser import PRETRAINED, AveragedEulerBlock, EulerDenoiser

__all__ = ["EulerDenoiser", "AveragedEulerBlock", "PRETRAINED"]
