"""Hamiltonian test systems as ``torchdiffeq`` functions.

Each system is a :class:`torch.nn.Module` whose ``forward(t, y)`` is Hamilton's vector field
:math:`J\nabla H(y)`, so it can be passed as ``func`` to :func:`torchdiffeq.odeint`, with
``energy``, ``sample`` (initial conditions in a documented domain) and
``reference_trajectory``. One system per module; the base class is in ``base``.
"""

from .base import HamiltonianSystem
from .harmonic_oscillator import HarmonicOscillator
from .henon_heiles import HenonHeiles
from .kepler import Kepler
from .pendulum import Pendulum

__all__ = ["HamiltonianSystem", "HarmonicOscillator", "HenonHeiles", "Pendulum", "Kepler"]
