r"""The PINN baseline: an unstructured MLP flow map trained on the ODE residual."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_positive
from .base import NeuralFlow
from .potentials import _ACTIVATIONS

__all__ = ["PINNFlow"]


class PINNFlow(NeuralFlow):
    r"""Physics-informed MLP flow :math:`\mathcal N(t, x_0) = x_0 + t\,\mathrm{MLP}(t, x_0)`.

    The factor :math:`t` gives :math:`\mathcal N(0, x_0) = x_0` exactly; nothing else is
    built in (no symplecticity, no inverse, no Hamiltonian). Trained by the same loop as
    :class:`~deepinv_dynnets.SympFlow` with the residual loss only, it is the baseline of
    :footcite:t:`canizares2024hamiltonian`.

    :param int dim: phase-space dimension :math:`2n`.
    :param int width: hidden width.
    :param int depth: hidden layers.
    :param str activation: ``tanh``, ``sigmoid``, ``softplus`` or ``sin``.
    :param float dt: the training window :math:`\Delta t`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows import PINNFlow
        >>> pinn = PINNFlow(dim=2)
        >>> pinn(torch.rand(3, 2), torch.linspace(0, 2, 5)).shape
        torch.Size([5, 3, 2])

    .. footbibliography::
    """

    def __init__(
        self,
        dim: int,
        width: int = 64,
        depth: int = 3,
        activation: str = "tanh",
        dt: float = 1.0,
    ):
        super().__init__()
        if int(dim) != dim or dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even phase-space dimension 2n >= 2, got {dim}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        check_positive(dt, "dt")
        self.dim, self.dt = int(dim), float(dt)
        self.config = dict(
            dim=self.dim, width=width, depth=depth, activation=activation, dt=self.dt
        )
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        fan_in = dim + 1
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), _Activation(act)]
            fan_in = width
        layers.append(nn.Linear(fan_in, dim))
        self.mlp = nn.Sequential(*layers)

    def network(self, t: Tensor | float, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1]).unsqueeze(-1)
        return x + t * self.mlp(torch.cat([x, t], dim=-1))

    def network_with_time_derivative(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1])
        return torch.func.jvp(lambda s: self.network(s, x), (t,), (torch.ones_like(t),))


class _Activation(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.act = act

    def forward(self, a: Tensor) -> Tensor:
        return self.act(a)[0]
