"""The Hénon–Heiles system: a chaotic two-degree-of-freedom Hamiltonian."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive
from .base import HamiltonianSystem, sample_by_rejection, sample_uniform

__all__ = ["HenonHeiles"]


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
    (x, y) \in T\}`, sampled uniformly (vectorised rejection sampling from the cube). Every
    orbit that starts in :math:`\Omega` stays in it (:math:`|p|^2 < 2E_{\max} \le 1/3`
    keeps the momenta in the cube).

    Uniform sampling puts few points where orbits near the escape energy spend much of their
    time: at positions near the saddles, where :math:`V(x, y)` is close to :math:`E_{\max}`
    and the disc of allowed momenta is small. With ``position_fraction`` :math:`> 0`, that
    fraction of the points is drawn with the position uniform on
    :math:`\{(x, y) \in T : V < E_{\max}\}` and the momentum uniform on the disc
    :math:`|p|^2 < 2(E_{\max} - V(x, y))`: still in :math:`\Omega`, with the density
    raised by a factor proportional to :math:`1 / (E_{\max} - V)` there (a training
    distribution; evaluations use the default, uniform one).

    :param float max_energy: energy bound :math:`E_{\max} \in (0, 1/6]` of the sampled states.
    :param float position_fraction: fraction in :math:`[0, 1]` of the points drawn
        uniformly in position (the rest uniformly in :math:`\Omega`; 0 draws exactly what
        uniform sampling draws).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.systems import HenonHeiles
        >>> system = HenonHeiles()
        >>> round(system.energy(torch.tensor([0.0, 1.0, 0.0, 0.0])).item(), 6)  # a saddle of V
        0.166667
    """

    def __init__(self, max_energy: float = 1.0 / 6.0, position_fraction: float = 0.0) -> None:
        super().__init__(dim=4)
        check_positive(max_energy, "max_energy")
        if max_energy > 1.0 / 6.0:
            raise ValueError(
                "max_energy must be at most 1/6, the escape energy of the Henon-Heiles "
                f"potential, got {max_energy!r}"
            )
        if not 0.0 <= position_fraction <= 1.0:
            raise ValueError(f"position_fraction must be in [0, 1], got {position_fraction!r}")
        self.max_energy = float(max_energy)
        self.position_fraction = float(position_fraction)

    def extra_repr(self) -> str:
        extra = f"max_energy={self.max_energy}"
        if self.position_fraction:
            extra += f", position_fraction={self.position_fraction}"
        return extra

    @staticmethod
    def potential(y: Tensor) -> Tensor:
        r"""The potential :math:`V(x, y)` of states ``(..., 4)`` (or positions ``(..., 2)``).

        :param torch.Tensor y: states or positions; the first two entries are :math:`(x, y)`.
        :return: (:class:`torch.Tensor`) :math:`V` of shape ``y.shape[:-1]``.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets.systems import HenonHeiles
            >>> round(HenonHeiles.potential(torch.tensor([0.0, 1.0])).item(), 6)
            0.166667
        """
        x, yy = y[..., 0], y[..., 1]
        return 0.5 * (x**2 + yy**2) + x**2 * yy - yy**3 / 3.0

    @staticmethod
    def in_potential_well(y: Tensor) -> Tensor:
        r"""Whether the position :math:`(x, y)` lies in the open triangle :math:`T`.

        :math:`T` is the bounded component of :math:`\{V < 1/6\}`: the points with
        :math:`y > -1/2` and :math:`y < 1 - \sqrt{3}\,|x|`.

        :param torch.Tensor y: states of shape ``(..., 4)``.
        :return: (:class:`torch.Tensor`) boolean mask of shape ``y.shape[:-1]``.

        :Examples:

            >>> import torch
            >>> from deepinv_dynnets.systems import HenonHeiles
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
        n_position = round(self.position_fraction * n)
        parts = []
        if n_position < n:

            def accept(y: Tensor) -> Tensor:
                return (self._hamiltonian(y) < self.max_energy) & self.in_potential_well(y)

            parts.append(
                sample_by_rejection(
                    n - n_position,
                    lambda m: sample_uniform((m, 4), -1.0, 1.0, generator, device),
                    accept,
                )
            )
        if n_position > 0:
            parts.append(self._sample_by_position(n_position, generator, device))
        return torch.cat(parts)

    def _sample_by_position(
        self, n: int, generator: torch.Generator | None, device: torch.device
    ) -> Tensor:
        # Position uniform on {V < E_max} in T, momentum uniform on its disc of |p|^2 < 2(E_max - V).
        q = sample_by_rejection(
            n,
            lambda m: sample_uniform((m, 2), -1.0, 1.0, generator, device),
            lambda q: (self.potential(q) < self.max_energy) & self.in_potential_well(q),
        )
        radius = (2.0 * (self.max_energy - self.potential(q))).sqrt()
        u = sample_uniform((n, 2), 0.0, 1.0, generator, device)
        r, angle = radius * u[:, 0].sqrt(), 2.0 * math.pi * u[:, 1]
        return torch.cat([q, torch.stack([r * angle.cos(), r * angle.sin()], dim=-1)], dim=-1)
