"""Models: deepinv-compatible denoisers built as numerical flows, and their tiled forms."""

from .baselines import BASELINES, load_dncnn, save_dncnn
from .distributed_tiling import TilingCertificate, certify_distributed, certify_tiling
from .euler_denoiser import PRETRAINED, AveragedEulerBlock, EulerDenoiser
from .relaxed_denoiser import RelaxedDenoiser
from .tiled_denoiser import AlternatingTiledDenoiser, TiledDenoiser, tile_partition

__all__ = [
    "EulerDenoiser",
    "AveragedEulerBlock",
    "PRETRAINED",
    "RelaxedDenoiser",
    "TiledDenoiser",
    "AlternatingTiledDenoiser",
    "tile_partition",
    "TilingCertificate",
    "certify_tiling",
    "certify_distributed",
    "BASELINES",
    "load_dncnn",
    "save_dncnn",
]
