r"""Classical Hamiltonian systems with closed-form vector fields.

Each system is a :class:`torch.nn.Module` whose ``forward(t, y)`` returns Hamilton's vector field

.. math::

    \dot y = f(y) = J \nabla H(y), \qquad y = (q, p) \in \mathbb{R}^{2n},

with the canonical :math:`J` of :mod:`deepinv_dynnets.flows.symplectic`, so a system can be
passed directly as ``func`` to :func:`torchdiffeq.odeint`. Gradients are written out by hand
(no autograd), which keeps the vector field cheap and usable under :func:`torch.no_grad`.
Each system also provides a sampler of initial conditions in a documented domain
:math:`\Omega` and a high-accuracy :meth:`~HamiltonianSystem.reference_trajectory`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

from .._validation import check_monotone_grid, check_positive, check_positive_int
from .symplectic import apply_J, check_phase_space

__all__ = ["HamiltonianSystem", "HarmonicOscillator", "HenonHeiles", "Pendulum", "Kepler"]


def _uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Uniform samples on ``[low, high)`` in float64."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return low + (high - low) * u


def _rejection_sample(
    n: int,
    propose: Callable[[int], Tensor],
    accept: Callable[[Tensor], Tensor],
    max_rounds: int = 100,
    max_batch: int = 1 << 20,
) -> Tensor:
    """Draw ``n`` proposals that pass ``accept``, a whole batch of proposals per round.

    The batch size follows the acceptance rate seen so far, so a small acceptance region costs
    a few large rounds rather than many small ones; the sequence of draws only depends on the
    generator state, which keeps sampling reproducible.
    """
    kept: list[Tensor] = []
    n_kept = n_proposed = 0
    batch = max(2 * n, 1024)
    for _ in range(max_rounds):
        y = propose(batch)
        y = y[accept(y)]
        kept.append(y)
        n_kept += y.shape[0]
        n_proposed += batch
        if n_kept >= n:
            return torch.cat(kept)[:n]
        rate = max(n_kept, 1) / n_proposed
        batch = min(max_batch, math.ceil(1.2 * (n - n_kept) / rate) + 16)
    raise RuntimeError(
        f"rejection sampling accepted only {n_kept} of {n_proposed} proposals, "
        f"fewer than the {n} requested; the sampling domain is too small"
    )


class HamiltonianSystem(torch.nn.Module, ABC):
    r"""Base class of autonomous Hamiltonian systems on :math:`\mathbb{R}^{2n}`.

    The state is :math:`y = (q, p)` along the last dimension (size :attr:`dim` :math:`= 2n`),
    with any batch shape in front. The dynamics are

    .. math::

        \dot y = J \nabla H(y) = \left(\frac{\partial H}{\partial p},
        -\frac{\partial H}{\partial q}\right).

    Subclasses implement :meth:`_hamiltonian`, :meth:`_grad_hamiltonian` (both in closed form,
    on inputs already checked) and :meth:`_sample` (float64 initial conditions in the system's
    domain :math:`\Omega`); the public methods add the argument checks.

    :param int dim: dimension :math:`2n` of phase space.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows.systems import HarmonicOscillator
        >>> system = HarmonicOscillator()
        >>> system.dim
        2
        >>> system(torch.tensor(0.0), torch.tensor([1.0, 0.0]))
        tensor([ 0., -1.])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    @abstractmethod
    def _hamiltonian(self, y: Tensor) -> Tensor:
        """Closed-form :math:`H(y)`, shape ``y.shape[:-1]``."""

    @abstractmethod
    def _grad_hamiltonian(self, y: Tensor) -> Tensor:
        r"""Closed-form :math:`\nabla H(y)`, shape ``y.shape``."""

    @abstractmethod
    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        r"""``n`` float64 points of :math:`\Omega`, drawn on ``device``, shape ``(n, dim)``."""

    def _check_state(self, y: Tensor, name: str = "y") -> None:
        # Shape only: this runs on every vector-field evaluation, so no scan of the values.
        if not isinstance(y, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
        if y.dim() == 0 or y.shape[-1] != self.dim:
            raise ValueError(
                f"{name} must have last dimension {self.dim} (positions q then momenta p), "
                f"got shape {tuple(y.shape)}"
            )

    def energy(self, y: Tensor) -> Tensor:
        r"""Total energy :math:`H(y)`, a first integral of the flow.

        :param torch.Tensor y: states of shape ``(..., dim)``.
        :return: (:class:`torch.Tensor`) energies of shape ``y.shape[:-1]``.
        :raises ValueError: if the last dimension of ``y`` is not :attr:`dim`.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets.flows.systems import HarmonicOscillator
            >>> HarmonicOscillator(omega=2.0).energy(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
            tensor([2.0000, 0.5000])
        """
        self._check_state(y)
        return self._hamiltonian(y)

    def hamiltonian(self, y: Tensor) -> Tensor:
        r"""Hamiltonian :math:`H(y)`; same as :meth:`energy`.

        :param torch.Tensor y: states of shape ``(..., dim)``.
        :return: (:class:`torch.Tensor`) values of shape ``y.shape[:-1]``.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets.flows.systems import Pendulum
            >>> Pendulum().hamiltonian(torch.tensor([0.0, 2.0]))
            tensor(2.)
        """
        return self.energy(y)

    def grad_hamiltonian(self, y: Tensor) -> Tensor:
        r"""Gradient :math:`\nabla H(y) = (\partial_q H, \partial_p H)` in closed form.

        :param torch.Tensor y: states of shape ``(..., dim)``.
        :return: (:class:`torch.Tensor`) gradients of the same shape as ``y``.
        :raises ValueError: if the last dimension of ``y`` is not :attr:`dim`.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets.flows.systems import HarmonicOscillator
            >>> HarmonicOscillator(omega=2.0).grad_hamiltonian(torch.tensor([1.0, 3.0]))
            tensor([4., 3.])
        """
        self._check_state(y)
        return self._grad_hamiltonian(y)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        r"""Hamiltonian vector field :math:`f(y) = J \nabla H(y)`, in the ``func(t, y)``
        convention of :func:`torchdiffeq.odeint`.

        :param torch.Tensor t: time (ignored: the system is autonomous), e.g. a 0-d tensor.
        :param torch.Tensor y: states of shape ``(..., dim)``, any floating dtype and device.
        :return: (:class:`torch.Tensor`) :math:`\dot y`, same shape, dtype and device as ``y``.
        :raises ValueError: if the last dimension of ``y`` is not :attr:`dim`.

        :Examples:

            >>> import torch
            >>> from torchdiffeq import odeint
            >>> from deepinv_dynnets.flows.systems import Kepler
            >>> system = Kepler()
            >>> system(torch.tensor(0.0), torch.tensor([0.6, 0.8, 0.0, 1.0]))
            tensor([ 0.0000,  1.0000, -0.6000, -0.8000])
            >>> odeint(system, torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.linspace(0, 1, 5)).shape
            torch.Size([5, 4])
        """
        self._check_state(y)
        return apply_J(self._grad_hamiltonian(y))

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        r"""Draw ``n`` initial conditions in the system's domain :math:`\Omega`.

        Points are drawn in float64 on the generator's device (CPU without a generator), then
        cast, so a seeded generator gives the same points for every ``dtype`` and ``device``.

        :param int n: number of points (positive).
        :param torch.Generator generator: source of randomness (PyTorch's global one if ``None``).
        :param torch.dtype dtype: floating dtype of the result.
        :param device: device of the result (the sampling device if ``None``).
        :return: (:class:`torch.Tensor`) initial conditions of shape ``(n, dim)``.
        :raises ValueError: if ``n`` is not a positive integer or ``dtype`` is not floating.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets.flows.systems import HenonHeiles
            >>> y0 = HenonHeiles().sample(8, generator=torch.Generator().manual_seed(0))
            >>> y0.shape, y0.dtype
            (torch.Size([8, 4]), torch.float32)
        """
        n_int = check_positive_int(n, "n")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        sample_device = generator.device if generator is not None else torch.device("cpu")
        y = self._sample(n_int, generator, sample_device)
        return y.to(dtype=dtype, device=device if device is not None else sample_device)

    def reference_trajectory(
        self,
        y0: Tensor,
        t: Tensor,
        rtol: float = 1e-10,
        atol: float = 1e-10,
        method: str = "dopri5",
    ) -> Tensor:
        r"""High-accuracy solution :math:`y(t_k)` of :math:`\dot y = J\nabla H(y)`,
        :math:`y(t_0) = y_0`.

        The system is integrated in float64 with :func:`torchdiffeq.odeint` (adaptive step,
        tolerances ``rtol`` and ``atol``) and the result is cast back to the dtype of ``y0``.
        It is ground-truth data, so it is computed without autograd.

        :param torch.Tensor y0: initial states of shape ``(..., dim)``.
        :param torch.Tensor t: 1-D, finite, strictly monotone times; ``t[0]`` is the initial time.
        :param float rtol: relative tolerance of the solver.
        :param float atol: absolute tolerance of the solver.
        :param str method: a :func:`torchdiffeq.odeint` method, preferably adaptive.
        :return: (:class:`torch.Tensor`) states of shape ``(len(t), *y0.shape)`` on the device
            and in the dtype of ``y0``.
        :raises ValueError: if ``y0`` is not a finite floating tensor with last dimension
            :attr:`dim`, if ``t`` is not as above, or if a tolerance is not positive.

        :Examples:

            >>> import math, torch
            >>> from deepinv_dynnets.flows.systems import HarmonicOscillator
            >>> y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
            >>> t = torch.tensor([0.0, math.pi / 2], dtype=torch.float64)
            >>> ys = HarmonicOscillator().reference_trajectory(y0, t)
            >>> torch.allclose(ys[-1], torch.tensor([0.0, -1.0], dtype=torch.float64), atol=1e-8)
            True
        """
        check_phase_space(y0, "y0", dim=self.dim)
        check_monotone_grid(t)
        check_positive(rtol, "rtol")
        check_positive(atol, "atol")
        with torch.no_grad():
            y64 = y0.detach().to(torch.float64)
            t64 = t.detach().to(device=y0.device, dtype=torch.float64)
            ys = odeint(self, y64, t64, rtol=rtol, atol=atol, method=method)
        return ys.to(y0.dtype)


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
        >>> from deepinv_dynnets.flows.systems import HarmonicOscillator
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
        return _uniform((n, 2), -1.0, 1.0, generator, device)


class HenonHeiles(HamiltonianSystem):
    r"""Hénon–Heiles system (:math:`n = 2`), state :math:`(x, y, p_x, p_y)`.

    .. math::

        H = \frac{1}{2}\left(p_x^2 + p_y^2\right) + V(x, y), \qquad
        V(x, y) = \frac{1}{2}\left(x^2 + y^2\right) + x^2 y - \frac{y^3}{3}.

    The level set :math:`\{V = 1/6\}` contains the triangle :math:`T` with vertices
    :math:`(0, 1)` and :math:`(\pm\sqrt{3}/2, -1/2)` (the three saddles of :math:`V`), and
    :math:`T` is the bounded component of :math:`\{V < 1/6\}`. An orbit with energy
    :math:`E < 1/6` that starts with :math:`(x, y)` inside :math:`T` stays inside
    (:math:`V \le E < 1/6` along it), so it is bounded; :math:`E < 1/6` alone is not enough,
    since :math:`\{V < 1/6\}` also has unbounded components outside :math:`T` that reach
    into :math:`[-1, 1]^2`, along whose escape channels orbits run off to infinity.

    Domain of initial conditions: :math:`\Omega = \{y \in [-1, 1]^4 : H(y) < E_{\max},\
    (x, y) \in T\}`, sampled uniformly (vectorised rejection sampling from the cube).

    :param float max_energy: energy bound :math:`E_{\max} \in (0, 1/6]` of the sampled states.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows.systems import HenonHeiles
        >>> system = HenonHeiles()
        >>> round(system.energy(torch.tensor([0.0, 1.0, 0.0, 0.0])).item(), 6)  # a saddle of V
        0.166667
    """

    def __init__(self, max_energy: float = 1.0 / 6.0) -> None:
        super().__init__(dim=4)
        check_positive(max_energy, "max_energy")
        if max_energy > 1.0 / 6.0:
            raise ValueError(
                "max_energy must be at most 1/6, the escape energy of the Henon-Heiles "
                f"potential, got {max_energy!r}"
            )
        self.max_energy = float(max_energy)

    def extra_repr(self) -> str:
        return f"max_energy={self.max_energy}"

    @staticmethod
    def in_potential_well(y: Tensor) -> Tensor:
        r"""Whether the position :math:`(x, y)` lies in the open triangle :math:`T`.

        :math:`T` is the bounded component of :math:`\{V < 1/6\}`: the points with
        :math:`y > -1/2` and :math:`y < 1 - \sqrt{3}\,|x|`.

        :param torch.Tensor y: states of shape ``(..., 4)``.
        :return: (:class:`torch.Tensor`) boolean mask of shape ``y.shape[:-1]``.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets.flows.systems import HenonHeiles
            >>> HenonHeiles.in_potential_well(torch.tensor([[0.0, 0.0, 5.0, 5.0],
            ...                                             [0.9, -0.55, 0.0, 0.0]]))
            tensor([ True, False])
        """
        x, yy = y[..., 0], y[..., 1]
        return (yy > -0.5) & (yy < 1.0 - math.sqrt(3.0) * x.abs())

    def _hamiltonian(self, y: Tensor) -> Tensor:
        x, yy, px, py = y.unbind(dim=-1)
        return 0.5 * (px**2 + py**2 + x**2 + yy**2) + x**2 * yy - yy**3 / 3.0

    def _grad_hamiltonian(self, y: Tensor) -> Tensor:
        x, yy, px, py = y.unbind(dim=-1)
        return torch.stack([x + 2.0 * x * yy, yy + x**2 - yy**2, px, py], dim=-1)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        def accept(y: Tensor) -> Tensor:
            return (self._hamiltonian(y) < self.max_energy) & self.in_potential_well(y)

        return _rejection_sample(
            n, lambda m: _uniform((m, 4), -1.0, 1.0, generator, device), accept
        )


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
        >>> from deepinv_dynnets.flows.systems import Pendulum
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
            q = _uniform((m, 1), -math.pi / 2, math.pi / 2, generator, device)
            p = _uniform((m, 1), -1.0, 1.0, generator, device)
            return torch.cat([q, p], dim=-1)

        return _rejection_sample(
            n, propose, lambda y: self._hamiltonian(y) < self.separatrix_energy
        )


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
        >>> from deepinv_dynnets.flows.systems import Kepler
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
            >>> from deepinv_dynnets.flows.systems import Kepler
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
        a = _uniform((n,), 0.8, 1.2, generator, device)
        e = _uniform((n,), 0.0, 0.5, generator, device)
        varpi = _uniform((n,), 0.0, 2 * math.pi, generator, device)
        ecc_anomaly = _uniform((n,), 0.0, 2 * math.pi, generator, device)
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
