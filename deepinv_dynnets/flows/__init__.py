"""Symplectic flows and Hamiltonian systems, with a torchdiffeq-shaped interface."""

from .base import NeuralFlow
from .hnn import HNN, HamiltonianNeuralNetwork
from .pinn import PINNFlow
from .potentials import MLPPotential
from .sympflow import SympFlow, SympFlowVectorField
from .symplectic import apply_J, canonical_J, check_phase_space

__all__ = [
    "SympFlow",
    "SympFlowVectorField",
    "PINNFlow",
    "HNN",
    "HamiltonianNeuralNetwork",
    "NeuralFlow",
    "MLPPotential",
    "apply_J",
    "canonical_J",
    "check_phase_space",
]
