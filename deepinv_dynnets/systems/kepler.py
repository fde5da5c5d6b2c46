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
    :math:`e \sim U[0, 0.5]` (:attr:`SEMI_MAJOR_AXIS`, :attr:`ECCENTRICITY`), periapsis
    direction :math:`\varpi \sim U[0, 2\pi)` and eccentric anomaly :math:`E \sim U[0, 2\pi)`
    (position along the orbit), all independent; motion is counter-clockwise
    (:math:`L > 0`). In the orbital frame,

    .. math::

        q = \big(a(\cos E - e),\ b \sin E\big), \qquad
        p = \frac{a^{-1/2}}{1 - e\cos E}\big(-\sin E,\ \sqrt{1 - e^2} \cos E\big),

    with :math:`b = a\sqrt{1 - e^2}`, then both are rotated by :math:`\varpi`. Since every
    :math:`(\varpi, E)` is drawn, the support of the samples is the whole set of states whose
    first integrals lie in the ranges above,

    .. math::

        \Omega = \Big\{y :\ -\tfrac{1}{1.6} \le H(y) \le -\tfrac{1}{2.4},\ L(y) > 0,\
        L(y)^2 \ge \tfrac{3}{8|H(y)|}\Big\},

    the last condition being :math:`e \le 1/2` through :math:`L^2 = a(1 - e^2)`. It is
    **invariant** under the exact flow, forward and backward in time: :math:`H` and
    :math:`L` are conserved, hence :math:`a` and :math:`e`, and a solution runs around its
    ellipse, on which :math:`a(1 - e) \le |q| \le a(1 + e)` (periapsis and apoapsis,
    :meth:`apsides`). On :math:`\Omega` this gives the band
    :math:`0.4 \le |q| \le 1.8` (:attr:`radius_band`): every orbit from :math:`\Omega`
    is bounded, stays away from the collision :math:`q = 0`, and exists for all times.
    Also :math:`H \in [-1/1.6, -1/2.4]`, :math:`L \in [\sqrt{0.6}, \sqrt{1.2}]` and
    periods :math:`2\pi a^{3/2} \in [4.5, 8.3]` on :math:`\Omega`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.systems import Kepler
        >>> system = Kepler()
        >>> y = torch.tensor([1.0, 0.0, 0.0, 1.0])  # circular orbit of radius 1
        >>> system.energy(y), system.angular_momentum(y)
        (tensor(-0.5000), tensor(1.))
    """

    #: Range of the semi-major axis :math:`a` of the sampled orbits.
    SEMI_MAJOR_AXIS: tuple[float, float] = (0.8, 1.2)
    #: Range of the eccentricity :math:`e` of the sampled orbits.
    ECCENTRICITY: tuple[float, float] = (0.0, 0.5)

    def __init__(self) -> None:
        super().__init__(dim=4)

    @property
    def radius_band(self) -> tuple[float, float]:
        r"""Bounds :math:`(\min a(1 - e), \max a(1 + e)) = (0.4, 1.8)` of :math:`|q|` on
        every orbit of the sampling domain :math:`\Omega` (an invariant set)."""
        (a_lo, a_hi), e_hi = self.SEMI_MAJOR_AXIS, self.ECCENTRICITY[1]
        return a_lo * (1.0 - e_hi), a_hi * (1.0 + e_hi)

    def apsides(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Periapsis and apoapsis :math:`a(1 \mp e)`: the range of :math:`|q|` on the orbit of ``y``.

        From the first integrals, :math:`a = -1/(2H)` and :math:`e = \sqrt{1 + 2HL^2}`, so
        they are constant along the exact flow.

        :param torch.Tensor y: states of bound orbits (:math:`H < 0`), shape ``(..., 4)``.
        :return: (:class:`torch.Tensor`, :class:`torch.Tensor`) the two radii, each of shape
            ``y.shape[:-1]``.
        :raises ValueError: if the last dimension of ``y`` is not 4, if a state is at the
            collision, or if an orbit is not bound (:math:`H \ge 0`).

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets.systems import Kepler
            >>> Kepler().apsides(torch.tensor([0.5, 0.0, 0.0, 3**0.5]))  # a = 1, e = 1/2
            (tensor(0.5000), tensor(1.5000))
        """
        energy = self.energy(y)
        if not bool((energy < 0).all()):
            raise ValueError("y has a state of an unbound orbit (H >= 0): it has no apoapsis")
        a = -0.5 / energy
        # Round-off can make e^2 slightly negative on a circular orbit.
        e = (1.0 + 2.0 * energy * self.angular_momentum(y) ** 2).clamp(min=0.0).sqrt()
        return a * (1.0 - e), a * (1.0 + e)

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
        a = sample_uniform((n,), *self.SEMI_MAJOR_AXIS, generator, device)
        e = sample_uniform((n,), *self.ECCENTRICITY, generator, device)
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
