"""Hamiltonian test systems as ``torchdiffeq`` functions (the public home of
:mod:`deepinv_dynnets.flows.systems`)."""

from .flows.systems import HamiltonianSystem, HarmonicOscillator, HenonHeiles, Kepler, Pendulum

__all__ = ["HamiltonianSystem", "HarmonicOscillator", "HenonHeiles", "Pendulum", "Kepler"]
