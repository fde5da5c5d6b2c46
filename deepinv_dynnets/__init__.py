"""deepinv-dynnets: dynamical-systems-based structured neural networks.

Structured networks built as numerical flows, for DeepInverse and torchdiffeq users.
"""

from . import dynamics, flows, lipschitz, models, pnp, systems
from .dynamics import (
    EulerStep,
    FlowNetwork,
    NormPreservingNet,
    PresnovNet,
    SplittingStep,
    VolumePreservingNet,
    compose,
    norm_preservation_loss,
)
from .flows import SympFlow
from .lipschitz import certify
from .models import EulerDenoiser, RelaxedDenoiser
from .pnp import ConvergenceMonitor, convergent_pnp, pnp_certificate

__version__ = "0.1.0"

__all__ = [
    "dynamics",
    "flows",
    "systems",
    "SympFlow",
    "EulerDenoiser",
    "certify",
    "RelaxedDenoiser",
    "convergent_pnp",
    "pnp_certificate",
    "ConvergenceMonitor",
    "pnp",
    "models",
    "lipschitz",
    "EulerStep",
    "FlowNetwork",
    "NormPreservingNet",
    "PresnovNet",
    "SplittingStep",
    "VolumePreservingNet",
    "compose",
    "norm_preservation_loss",
]
