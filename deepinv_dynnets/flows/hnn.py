r"""The HNN baseline: a learned energy integrated by the implicit midpoint rule.

A Hamiltonian neural network :footcite:p:`greydanus2019hamiltonian` learns a scalar
:math:`H_\theta(x)` whose field :math:`J\nabla H_\theta` matches observed time derivatives;
a trajectory is then an integration of that field. Here the integrator is the implicit
midpoint rule, symplectic for every :math:`H_\theta` (a generic MLP energy is not
separable, so explicit splitting methods do not apply) and symmetric, so its inverse is
its step with :math:`-h`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive_int
from .base import NeuralFlow, check_flow_config
from .potentials import MLPPotential, check_potential_activation
from .symplectic import apply_J

__all__ = ["HamiltonianNeuralNetwork", "HNN"]


class HamiltonianNeuralNetwork(NeuralFlow):
    r"""A learned autonomous energy :math:`H_\theta(x)` and its implicit-midpoint flow.

    :math:`H_\theta` is a scalar MLP of the whole state :math:`x = (q, p)` (an
    :class:`~deepinv_dynnets.flows.MLPPotential` evaluated at time 0), with a hand-written
    gradient. The flow map of a step :math:`t \in [0, h]` is the implicit midpoint rule

    .. math::

        \mathcal N(t, x) = y \quad\text{solving}\quad
        y = x + t\,J\nabla H_\theta\Big(\frac{x + y}{2}\Big),

    solved by fixed-point iteration to round-off (it contracts when
    :math:`t\,\|\nabla^2 H_\theta\|/2 < 1`). It is symplectic for every :math:`H_\theta`
    and every :math:`t`, and symmetric: :math:`\mathcal N(-t, \cdot)` is its inverse
    :footcite:p:`hairer2006geometric`. Longer times compose steps of size :math:`h` (the
    ``dt`` of :class:`~deepinv_dynnets.flows.NeuralFlow`), so ``hnn(y0, t)`` is called like
    ``torchdiffeq.odeint`` and like :class:`~deepinv_dynnets.SympFlow`.

    It is trained on trajectory data by :func:`~deepinv_dynnets.training.train_hnn`: the
    field at the midpoint of two consecutive observations must match their finite
    difference, which is the defect of one midpoint step between them.

    :param int dim: phase-space dimension :math:`2n` (even).
    :param int width: hidden width of the energy MLP.
    :param int depth: its hidden layers.
    :param str activation: ``tanh``, ``sigmoid``, ``softplus`` or ``sin``.
    :param float dt: the integrator's step :math:`h`.
    :param int max_iter: most fixed-point iterations per step; a step that has not
        converged to :math:`\sqrt{\varepsilon}` by then raises ``RuntimeError`` (take a
        smaller ``dt``).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows import HNN
        >>> hnn = HNN(dim=2, width=8, dt=0.1).double()
        >>> y0 = torch.randn(3, 2, dtype=torch.float64)
        >>> y = hnn(y0, torch.linspace(0, 1, 11, dtype=torch.float64))
        >>> y.shape, bool(torch.allclose(hnn.energy(y[-1]), hnn.energy(y0), atol=1e-3))
        (torch.Size([11, 3, 2]), True)

    .. footbibliography::
    """

    invertible = True

    def __init__(
        self,
        dim: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        dt: float = 0.1,
        max_iter: int = 100,
    ):
        super().__init__()
        dim, dt = check_flow_config(dim, dt)
        check_potential_activation(activation)
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.dim, self.dt = int(dim), float(dt)
        self.config = dict(
            dim=self.dim, width=int(width), depth=int(depth), activation=activation, dt=self.dt
        )
        self.energy_mlp = MLPPotential(self.dim, width, depth, activation)

    # -- the learned energy and its field, feature-major (dim, B) inside ------------------
    def _field_t(self, X: Tensor, dX: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        r""":math:`J\nabla H_\theta` at the columns of ``X`` and its derivative along ``dX``."""
        zero = X.new_zeros(1, X.shape[1])
        g, _, dg = self.energy_mlp.derivatives_t(X, zero, dX, None if dX is None else zero)
        n = self.dim // 2
        field = torch.cat([g[n:], -g[:n]])
        return field, (None if dg is None else torch.cat([dg[n:], -dg[:n]]))

    def energy(self, x: Tensor) -> Tensor:
        r"""The learned energy :math:`H_\theta(x)`, shape ``x.shape[:-1]``."""
        self._check_state(x, "x")
        return self.energy_mlp(x, 0.0)

    def field(self, x: Tensor) -> Tensor:
        r"""The learned vector field :math:`J\nabla H_\theta(x)`, shape ``x.shape``."""
        self._check_state(x, "x")
        return self._field(x)

    def _field(self, x: Tensor) -> Tensor:
        grad, _, _ = self.energy_mlp.derivatives(x, 0.0)
        return apply_J(grad)

    # -- the implicit midpoint step -------------------------------------------------------
    def _steps(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``X``, the step sizes ``(1, B)`` and the step's result, all feature-major."""
        X = x.reshape(-1, self.dim).T
        h = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1])
        h = h.reshape(1, -1)
        eps = torch.finfo(x.dtype).eps
        Y, delta = X, math.inf
        for _ in range(self.max_iter):
            field, _ = self._field_t((X + Y) / 2)
            Y_new = X + h * field
            delta = float((Y_new - Y).detach().abs().max()) if Y.numel() else 0.0
            Y = Y_new
            scale = 1.0 + float(Y.detach().abs().max()) if Y.numel() else 1.0
            if delta <= 16 * eps * scale:
                break
        else:
            if delta > math.sqrt(eps) * scale:
                raise RuntimeError(
                    f"the implicit midpoint iteration of {type(self).__name__} did not converge "
                    f"in {self.max_iter} iterations (last change {delta:.1e}): take a smaller dt"
                )
        return X, h, Y

    def network(self, t: Tensor | float, x: Tensor) -> Tensor:
        r"""One implicit midpoint step of size ``t`` (a float or a tensor broadcasting to
        ``x.shape[:-1]``)."""
        return self._steps(t, x)[2].T.reshape(x.shape)

    def network_inverse(self, t: Tensor | float, x: Tensor) -> Tensor:
        r"""The inverse of :meth:`network`: the midpoint rule is symmetric, so it is the
        step of size ``-t``."""
        return self.network(-torch.as_tensor(t, dtype=x.dtype, device=x.device), x)

    def network_with_time_derivative(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The step :math:`y = \mathcal N(t, x)` and :math:`\partial_t y`, which solves
        :math:`v = J\nabla H_\theta(m) + \tfrac t2 J\nabla^2 H_\theta(m)\, v` at the midpoint
        :math:`m = (x + y)/2` (differentiating the step's equation), by the same iteration."""
        X, h, Y = self._steps(t, x)
        mid = (X + Y) / 2
        field, _ = self._field_t(mid)
        eps = torch.finfo(x.dtype).eps
        V = field
        for _ in range(self.max_iter):
            _, dfield = self._field_t(mid, V)
            V_new = field + h / 2 * dfield
            delta = float((V_new - V).detach().abs().max()) if V.numel() else 0.0
            V = V_new
            if delta <= 16 * eps * (1.0 + float(V.detach().abs().max())):
                break
        return Y.T.reshape(x.shape), V.T.reshape(x.shape)


#: Short name of :class:`HamiltonianNeuralNetwork`.
HNN = HamiltonianNeuralNetwork
