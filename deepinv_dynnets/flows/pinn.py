r"""The PINN baseline: an unstructured MLP flow map trained on the ODE residual."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..dynamics.activations import ACTIVATIONS
from ..pretrained import build_from_card, load_weights, resolve_weights, save_weights
from .base import NeuralFlow, check_flow_config
from .potentials import check_potential_activation

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
        dim, dt = check_flow_config(dim, dt)
        check_potential_activation(activation)
        self.dim, self.dt = int(dim), float(dt)
        self.config = dict(
            dim=self.dim, width=width, depth=depth, activation=activation, dt=self.dt
        )
        self._act = ACTIVATIONS[activation].with_derivative
        sizes = [dim + 1] + [width] * depth + [dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )

    def _mlp(self, t: Tensor, x: Tensor, tangent: bool) -> tuple[Tensor, Tensor | None]:
        """The MLP at ``(x, t)`` and, in forward mode, its derivative in ``t``."""
        h = torch.cat([x, t], dim=-1)
        dh = self.layers[0].weight[:, -1] if tangent else None  # d(W z)/dt
        for k, layer in enumerate(self.layers[:-1]):
            a = layer(h)
            if tangent and k > 0:
                dh = dh @ layer.weight.T
            s, d1 = self._act(a)
            h, dh = s, (d1 * dh if tangent else None)
        last = self.layers[-1]
        return last(h), (dh @ last.weight.T if tangent else None)

    def network(self, t: Tensor | float, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1]).unsqueeze(-1)
        return x + t * self._mlp(t, x, tangent=False)[0]

    def network_with_time_derivative(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1]).unsqueeze(-1)
        out, dout = self._mlp(t, x, tangent=True)
        return x + t * out, out + t * dout

    def save(self, path: str | Path, **metadata) -> None:
        """Save the weights and a model card (kind ``"pinn"``), as :meth:`SympFlow.save
        <deepinv_dynnets.SympFlow.save>` does.

        :param str | pathlib.Path path: the weights file; must end in ``.pt``.
        :param metadata: JSON-able card entries.
        """
        save_weights(self, path, kind="pinn", config=self.config, **metadata)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, map_location: str | torch.device = "cpu"
    ) -> PINNFlow:
        """Load a PINN written by :meth:`save` (or by ``dynnets train-sympflow --model pinn``).

        :Examples:

            >>> import pathlib, tempfile
            >>> from deepinv_dynnets.flows import PINNFlow
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "pinn.pt"
            >>> PINNFlow(dim=2, width=8).save(path, note="demo")
            >>> PINNFlow.from_pretrained(path).config["width"]
            8
        """
        path = resolve_weights(path, "pinn")
        state, card = load_weights(path, kind="pinn", map_location=map_location)
        return build_from_card(cls, state, card, path)
