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
from ..flows.symplectic import apply_J, check_phase_space

__all__ = ["HamiltonianSystem", "sample_uniform", "sample_by_rejection"]


def sample_uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Uniform samples on ``[low, high)`` in float64 (a system's ``_sample`` building block).

    :param tuple shape: shape of the samples.
    :param float low: lower end.
    :param float high: upper end.
    :param torch.Generator | None generator: random generator.
    :param torch.device device: where to draw them.
    :return: (:class:`torch.Tensor`) the samples.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.systems.base import sample_uniform
        >>> sample_uniform((2, 3), -1.0, 1.0, None, torch.device("cpu")).dtype
        torch.float64
    """
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return low + (high - low) * u


def sample_by_rejection(
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

    :param int n: number of samples.
    :param propose: ``propose(m)`` draws ``m`` candidates.
    :param accept: ``accept(y)``, a boolean mask of the candidates to keep.
    :param int max_rounds: rounds before giving up.
    :param int max_batch: largest batch of proposals.
    :return: (:class:`torch.Tensor`) ``n`` accepted candidates.
    :raises RuntimeError: fewer than ``n`` accepted after ``max_rounds``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.systems.base import sample_by_rejection
        >>> y = sample_by_rejection(5, lambda m: torch.randn(m), lambda y: y > 0)
        >>> bool((y > 0).all()), y.shape
        (True, torch.Size([5]))
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
        >>> from deepinv_dynnets.systems import HarmonicOscillator
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
            >>> from deepinv_dynnets.systems import HarmonicOscillator
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
            >>> from deepinv_dynnets.systems import Pendulum
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
            >>> from deepinv_dynnets.systems import HarmonicOscillator
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
            >>> from deepinv_dynnets.systems import Kepler
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
            >>> from deepinv_dynnets.systems import HenonHeiles
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
            >>> from deepinv_dynnets.systems import HarmonicOscillator
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
