"""The Kepler problem: a point mass in a central 1/r potential."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import HamiltonianSystem, sample_uniform

__all__ = ["Kepler"]


class Kepler(HamiltonianSystem):
    r"""Kepler problem: the two-body problem in relative coordinates (:math:`n = 2`).

    With :math:`q \in \mathbb{R}^2` the relative position, :math:`p \in \mathbb{R}^2` its
    momentum, and units where the reduced mass and :math:`G(m_1 + m_2)` are 1,

    .. math::

        H(q, p) = \frac{|p|^2}{2} - \frac{1}{|q|},
        \qquad \dot q = p, \qquad \dot p = -\frac{q}{|q|^3}.

    Besides the energy, the angular momentum :math:`L = q_1 p_2 - q_2 p_1` is conserved. A
    bound orbit is an ellipse of semi-major axis :math:`a` and eccentricity :math:`e`, with

    .. math::

        H = -\frac{1}{2a}, \qquad e^2 = 1 + 2 H L^2, \qquad \text{period } 2\pi a^{3/2}.

    The vector field is singular at :math:`q = 0` (collision): :meth:`energy`, the vector
    field and :meth:`reference_trajectory` raise a ``ValueError`` for a state with
    :math:`q = 0` instead of returning non-finite values.

    Domain of initial conditions: bound elliptic orbits with :math:`a \sim U[0.8, 1.2]`,
    :math:`e \sim U[0, 0.5]`, periapsis direction :math:`\varpi \sim U[0, 2\pi)` and
    eccentric anomaly :math:`E \sim U[0, 2\pi)` (position along the orbit), all independent;
    motion is counter-clockwise (:math:`L > 0`). In the orbital frame,

    .. math::

        q = \big(a(\cos E - e),\ b \sin E\big), \qquad
        p = \frac{a^{-1/2}}{1 - e\cos E}\big(-\sin E,\ \sqrt{1 - e^2} \cos E\big),

    with :math:`b = a\sqrt{1 - e^2}`, then both are rotated by :math:`\varpi`. Hence
    :math:`H \in [-1/1.6, -1/2.4]` and :math:`|q| \ge a(1 - e) \ge 0.4`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.systems import Kepler
        >>> system = Kepler()
        >>> y = torch.tensor([1.0, 0.0, 0.0, 1.0])  # circular orbit of radius 1
        >>> system.energy(y), system.angular_momentum(y)
        (tensor(-0.5000), tensor(1.))
    """

    def __init__(self) -> None:
        super().__init__(dim=4)

    def angular_momentum(self, y: Tensor) -> Tensor:
        r"""Angular momentum :math:`L = q_1 p_2 - q_2 p_1`, a first integral.

        :param torch.Tensor y: states of shape ``(..., 4)``.
        :return: (:class:`torch.Tensor`) values of shape ``y.shape[:-1]``.
        :raises ValueError: if the last dimension of ``y`` is not 4.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets.systems import Kepler
            >>> Kepler().angular_momentum(torch.tensor([[1.0, 0.0, 0.0, 2.0]]))
            tensor([2.])
        """
        self._check_state(y)
        q1, q2, p1, p2 = y.unbind(dim=-1)
        return q1 * p2 - q2 * p1

    @staticmethod
    def _check_off_origin(r2: Tensor) -> None:
        # H = -1/|q| is infinite there: an error rather than -inf energies or NaN fields.
        if not bool((r2 > 0).all()):
            raise ValueError(
                "y has a state at the collision q = 0, where the Kepler Hamiltonian -1/|q| and "
                "its vector field are singular (not finite)"
            )

    def _hamiltonian(self, y: Tensor) -> Tensor:
        q, p = y[..., :2], y[..., 2:]
        r = torch.linalg.vector_norm(q, dim=-1)
        self._check_off_origin(r)
        return 0.5 * (p**2).sum(dim=-1) - r.reciprocal()

    def _grad_hamiltonian(self, y: Tensor) -> Tensor:
        q, p = y[..., :2], y[..., 2:]
        r2 = (q**2).sum(dim=-1, keepdim=True)
        self._check_off_origin(r2)
        return torch.cat([q * r2.pow(-1.5), p], dim=-1)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        a = sample_uniform((n,), 0.8, 1.2, generator, device)
        e = sample_uniform((n,), 0.0, 0.5, generator, device)
        varpi = sample_uniform((n,), 0.0, 2 * math.pi, generator, device)
        ecc_anomaly = sample_uniform((n,), 0.0, 2 * math.pi, generator, device)
        cos_e, sin_e = torch.cos(ecc_anomaly), torch.sin(ecc_anomaly)
        sqrt_1me2 = torch.sqrt(1.0 - e**2)
        # Orbital frame: periapsis on the first axis, focus at the origin.
        x = a * (cos_e - e)
        y = a * sqrt_1me2 * sin_e
        # Velocity = d(position)/dE * dE/dt, with dE/dt = a^{-3/2} / (1 - e cos E) (Kepler's
        # equation); the factor a of the position leaves a^{-1/2}.
        speed = a.rsqrt() / (1.0 - e * cos_e)
        vx = -speed * sin_e
        vy = speed * sqrt_1me2 * cos_e
        c, s = torch.cos(varpi), torch.sin(varpi)
        return torch.stack([c * x - s * y, s * x + c * y, c * vx - s * vy, s * vx + c * vy], dim=-1)
