r"""The Presnov-decomposition network: alternating gradient and sphere-preserving flows."""

from __future__ import annotations

import torch
from torch import Tensor

from .fields import GradientField, SpherePreservingField
from .network import FlowNetwork
from .steps import EulerStep, SphereStep

__all__ = ["PresnovNet"]


class PresnovNet(FlowNetwork):
    r"""Universal approximator from the Presnov decomposition.

    Any :math:`C^1` vector field splits as :math:`\nabla U + X_S` with :math:`X_S`
    sphere preserving, and compositions of flows of gradient fields and of
    sphere-preserving fields approximate any continuous map on a compact set in
    :math:`L^p` :footcite:p:`celledoni2023dynamical`. The network alternates

    .. math::

        x \leftarrow x + h\,\nabla U_i(x), \qquad
        x \leftarrow \cos(h\omega_i)\,x + h\,\mathrm{sinc}(h\omega_i)\,X_{S,i}(x),

    an Euler step of a :class:`~deepinv_dynnets.dynamics.GradientField` and a
    norm-preserving :class:`~deepinv_dynnets.dynamics.SphereStep` of a
    :class:`~deepinv_dynnets.dynamics.SpherePreservingField`.

    :param int features: state size (vectors, last axis).
    :param int depth: number of (gradient, sphere) pairs.
    :param int width: hidden width of every field.
    :param float h: step size, positive.
    :param str activation: ``tanh``, ``sigmoid`` or ``relu``.
    :param float init_scale: factor on the fields' output weights at initialisation, so
        that the untrained network is close to the identity.

    The sphere-preserving fields grow like :math:`\|x\|^2`; inputs so large that they
    overflow the dtype (about :math:`10^{19}` in float32) raise a ``ValueError`` rather than
    return NaN.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import PresnovNet
        >>> PresnovNet(2, depth=3)(torch.randn(10, 2)).shape
        torch.Size([10, 2])

    .. footbibliography::
    """

    def __init__(
        self,
        features: int,
        depth: int = 4,
        width: int = 16,
        h: float = 0.5,
        activation: str = "tanh",
        init_scale: float = 0.1,
    ):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        steps = []
        for _ in range(depth):
            steps.append(EulerStep(GradientField(features, width, activation), h))
            steps.append(SphereStep(SpherePreservingField(features, width, activation), h))
        super().__init__(steps)
        # Start near the identity: with unit-scale outputs a deep stack of steps blows up
        # at initialisation and training stalls.
        with torch.no_grad():
            for step in steps:
                field = step.fields[0]
                if isinstance(field, GradientField):
                    field.c.mul_(init_scale)
                else:
                    field.B.weight.mul_(init_scale)
                    field.B.bias.mul_(init_scale)

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        if not bool(torch.isfinite(out).all()):
            raise ValueError(
                f"x is too large for {x.dtype}: the fields overflowed (largest |x| entry "
                f"{float(x.detach().abs().max()):.3g}); rescale the input or use float64"
            )
        return out
