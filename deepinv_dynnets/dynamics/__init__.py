"""Dynamics core: vector-field families, numerical steps, and networks built from them."""

from .activations import ACTIVATIONS, Activation, get_activation
from .averaged_step import AveragedEulerStep, ConvRidgeField
from .fields import (
    GradientField,
    MLPField,
    ShearField,
    SpherePreservingField,
    VectorField,
    activation_from_name,
)
from .linear_spline import MonotoneLinearSpline
from .network import Composition, FlowNetwork, Truncation, ZeroPadLift, compose
from .norm_preserving import NormPreservingNet, norm_preservation_loss
from .orthogonal_lifts import HaarAnalysis, HaarSynthesis
from .presnov import PresnovNet
from .steps import EulerStep, FlowStep, SphereStep, SplittingStep
from .volume_preserving import VolumePreservingNet

__all__ = [
    "MonotoneLinearSpline",
    "HaarAnalysis",
    "HaarSynthesis",
    "VectorField",
    "MLPField",
    "ShearField",
    "GradientField",
    "SpherePreservingField",
    "activation_from_name",
    "Activation",
    "ACTIVATIONS",
    "get_activation",
    "ConvRidgeField",
    "AveragedEulerStep",
    "FlowStep",
    "EulerStep",
    "SplittingStep",
    "SphereStep",
    "FlowNetwork",
    "Composition",
    "compose",
    "ZeroPadLift",
    "Truncation",
    "VolumePreservingNet",
    "NormPreservingNet",
    "norm_preservation_loss",
    "PresnovNet",
]
