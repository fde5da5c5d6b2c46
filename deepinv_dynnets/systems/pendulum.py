"""The mathematical pendulum."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive
from .base import HamiltonianSystem, sample_by_rejection, sample_uniform

__all__ = ["Pendulum"]


class Pendulum(HamiltonianSystem):
    r"""Simple pendulum (:math:`n = 1`), angle :math:`q` from the downward vertical.

    .. math::

        H(q, p) = \frac{p^2}{2} + \frac{g}{\ell}\,(1 - \cos q),
        \qquad \dot q = p, \qquad \dot p = -\frac{g}{\ell} \sin q,

    normalised so that the stable equilibrium has zero energy; the separatrix (the orbits
    through the upright position :math:`q = \pm\pi`) has energy :math:`2g/\ell`.

    Domain of initial conditions: librating (oscillating, not rotating) orbits,
    :math:`\Omega = \{(q, p) \in [-\pi/2, \pi/2] \times [-1, 1] : H(q, p) < 2g/\ell\}`, sampled
    uniformly. For :math:`g/\ell > 1/2` the energy bound holds on the whole rectangle
    (:math:`H \le 1/2 + g/\ell`); otherwise rotating states are rejected.

    :param float g_over_l: ratio :math:`g/\ell > 0` (squared small-angle frequency).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.systems import Pendulum
        >>> system = Pendulum(g_over_l=4.0)
        >>> system(torch.tensor(0.0), torch.tensor([torch.pi / 2, 1.0]))
        tensor([ 1., -4.])
    """

    def __init__(self, g_over_l: float = 1.0) -> None:
        super().__init__(dim=2)
        check_positive(g_over_l, "g_over_l")
        self.g_over_l = float(g_over_l)

    def extra_repr(self) -> str:
        return f"g_over_l={self.g_over_l}"

    @property
    def separatrix_energy(self) -> float:
        r"""Energy :math:`2g/\ell` of the separatrix between libration and rotation."""
        return 2.0 * self.g_over_l

    def _hamiltonian(self, y: Tensor) -> Tensor:
        q, p = y[..., 0], y[..., 1]
        return 0.5 * p**2 + self.g_over_l * (1.0 - torch.cos(q))

    def _grad_hamiltonian(self, y: Tensor) -> Tensor:
        return torch.stack([self.g_over_l * torch.sin(y[..., 0]), y[..., 1]], dim=-1)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        def propose(m: int) -> Tensor:
            q = sample_uniform((m, 1), -math.pi / 2, math.pi / 2, generator, device)
            p = sample_uniform((m, 1), -1.0, 1.0, generator, device)
            return torch.cat([q, p], dim=-1)

        return sample_by_rejection(
            n, propose, lambda y: self._hamiltonian(y) < self.separatrix_energy
        )
