"""deepinv-dynnets: dynamical-systems-based structured neural networks.

Structured networks built as numerical flows, for DeepInverse and torchdiffeq users.
"""

from . import dynamics, flows, lipschitz, systems
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

__version__ = "0.1.0"

__all__ = [
    "dynamics",
    "flows",
    "systems",
    "SympFlow",
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
