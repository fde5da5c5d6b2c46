"""The harmonic oscillator, the simplest Hamiltonian test system."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive
from .base import HamiltonianSystem, sample_uniform

__all__ = ["HarmonicOscillator"]


class HarmonicOscillator(HamiltonianSystem):
    r"""Harmonic oscillator with angular frequency :math:`\omega` (:math:`n = 1`).

    .. math::

        H(q, p) = \frac{1}{2}\left(p^2 + \omega^2 q^2\right),
        \qquad \dot q = p, \qquad \dot p = -\omega^2 q.

    The exact flow is a rotation in the scaled plane :math:`(\omega q, p)`:
    :math:`q(t) = q_0 \cos \omega t + (p_0/\omega) \sin \omega t`,
    :math:`p(t) = -\omega q_0 \sin \omega t + p_0 \cos \omega t`.

    Domain of initial conditions: :math:`\Omega = [-1, 1]^2`, sampled uniformly.

    :param float omega: angular frequency :math:`\omega > 0`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> system = HarmonicOscillator(omega=2.0)
        >>> system(torch.tensor(0.0), torch.tensor([1.0, 3.0]))
        tensor([ 3., -4.])
    """

    def __init__(self, omega: float = 1.0) -> None:
        super().__init__(dim=2)
        check_positive(omega, "omega")
        self.omega = float(omega)

    def extra_repr(self) -> str:
        return f"omega={self.omega}"

    def _hamiltonian(self, y: Tensor) -> Tensor:
        q, p = y[..., 0], y[..., 1]
        return 0.5 * (p**2 + self.omega**2 * q**2)

    def _grad_hamiltonian(self, y: Tensor) -> Tensor:
        return torch.stack([self.omega**2 * y[..., 0], y[..., 1]], dim=-1)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        return sample_uniform((n, 2), -1.0, 1.0, generator, device)
