r"""ResNet-like networks as compositions of numerical steps.

.. math::

    \mathcal N = P \circ \Psi^{h_L}_{F_L} \circ \dots \circ \Psi^{h_1}_{F_1} \circ L,

with an optional lifting :math:`L` and projection :math:`P`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._validation import check_features, check_finite
from .steps import FlowStep

__all__ = ["FlowNetwork", "Composition", "compose", "ZeroPadLift", "Truncation"]


class ZeroPadLift(nn.Module):
    r"""Lifting :math:`L` by zero padding: :math:`L(x) = (x, 0)` along ``dim``.

    Its adjoint is :class:`Truncation`: :math:`L^\top L = I`, so a network
    :math:`P\,\mathcal N\,L` with :math:`P = L^\top` keeps non-expansiveness and
    averagedness of :math:`\mathcal N`.

    :param int in_features: entries of the input along ``dim``.
    :param int out_features: entries after lifting (``>= in_features``).
    :param int dim: the axis to pad (``-1`` for vectors, ``-3`` for feature maps).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import ZeroPadLift
        >>> ZeroPadLift(2, 4)(torch.ones(1, 2))
        tensor([[1., 1., 0., 0.]])
    """

    def __init__(self, in_features: int, out_features: int, dim: int = -1):
        super().__init__()
        if in_features < 1 or out_features < in_features:
            raise ValueError(
                f"out_features must be >= in_features >= 1, got {in_features} -> {out_features}"
            )
        self.in_features, self.out_features, self.dim = in_features, out_features, dim

    def forward(self, x: Tensor) -> Tensor:
        shape = list(x.shape)
        shape[self.dim] = self.out_features - self.in_features
        return torch.cat([x, x.new_zeros(shape)], dim=self.dim)


class Truncation(nn.Module):
    r"""Projection :math:`P` keeping the first ``out_features`` entries along ``dim``.

    :param int out_features: entries kept.
    :param int dim: the axis (``-1`` for vectors, ``-3`` for feature maps).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import Truncation
        >>> Truncation(1)(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[1.]])
    """

    def __init__(self, out_features: int, dim: int = -1):
        super().__init__()
        if out_features < 1:
            raise ValueError(f"out_features must be >= 1, got {out_features}")
        self.out_features, self.dim = out_features, dim

    def forward(self, x: Tensor) -> Tensor:
        return x.narrow(self.dim, 0, self.out_features)


class Composition(nn.Module):
    r"""The composition :math:`f_1 \circ f_2 \circ \dots \circ f_m` of modules (see :func:`compose`).

    :param Sequence[nn.Module] maps: :math:`f_1, \dots, f_m`, in mathematical order: the
        last one is applied first.

    :Examples:

        >>> import torch
        >>> from torch import nn
        >>> from deepinv_dynnets.dynamics import Composition
        >>> double, add_one = nn.Linear(1, 1, bias=False), nn.Linear(1, 1)
        >>> _ = nn.init.constant_(double.weight, 2.0)
        >>> _ = nn.init.constant_(add_one.weight, 1.0), nn.init.constant_(add_one.bias, 1.0)
        >>> Composition([double, add_one])(torch.ones(1, 1)).item()  # double(add_one(1))
        4.0
    """

    def __init__(self, maps: Sequence[nn.Module]):
        super().__init__()
        if len(maps) == 0:
            raise ValueError("maps must hold at least one module")
        self.maps = nn.ModuleList(maps)

    def forward(self, x: Tensor) -> Tensor:
        for f in reversed(self.maps):
            x = f(x)
        return x


def compose(*maps: nn.Module) -> Composition:
    r"""Compose modules in mathematical order: ``compose(f, g)(x) == f(g(x))``.

    :param nn.Module maps: :math:`f_1, \dots, f_m`; the result is
        :math:`f_1 \circ \dots \circ f_m`, so ``maps[-1]`` acts first.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import Truncation, ZeroPadLift, compose
        >>> pad_then_cut = compose(Truncation(2), ZeroPadLift(2, 5))
        >>> pad_then_cut(torch.tensor([[1.0, 2.0]]))
        tensor([[1., 2.]])
    """
    return Composition(maps)


class FlowNetwork(nn.Module):
    r"""A ResNet-like network :math:`P \circ \Psi_L \circ \dots \circ \Psi_1 \circ L`.

    The steps are applied in list order, ``steps[0]`` first (as in ``nn.Sequential``),
    i.e. ``steps[i]`` is :math:`\Psi_{i+1}`. The input is validated once, here: it must
    be finite and have the right number of entries along the network's axis. Extra
    positional arguments of :meth:`forward` (a noise level, say) are passed to every step.

    Steps with ``reads_zero_padded = True`` (such as
    :class:`~deepinv_dynnets.dynamics.AveragedEulerStep`) accept an input with fewer
    entries than ``features`` along their axis, the missing ones meaning zeros, and a
    ``keep`` argument asking for the first ``keep`` output entries only. With a
    :class:`ZeroPadLift` in front of such a first step and a :class:`Truncation` after such
    a last step, the network then never multiplies by the lift's zeros nor computes what
    the projection discards: the same map, computed faster.

    :param Sequence[FlowStep] steps: :math:`\Psi_1, \dots, \Psi_L`, all of the same size
        and layout.
    :param nn.Module | None lift: lifting :math:`L` (e.g. :class:`ZeroPadLift`), or ``None``.
    :param nn.Module | None project: projection :math:`P` (e.g. :class:`Truncation`), or
        ``None``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import (
        ...     EulerStep, FlowNetwork, MLPField, Truncation, ZeroPadLift)
        >>> net = FlowNetwork([EulerStep(MLPField(6), h=0.1) for _ in range(3)],
        ...                   lift=ZeroPadLift(2, 6), project=Truncation(2))
        >>> net(torch.randn(5, 2)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        steps: Sequence[FlowStep],
        lift: nn.Module | None = None,
        project: nn.Module | None = None,
    ):
        super().__init__()
        if len(steps) == 0:
            raise ValueError("steps must hold at least one FlowStep")
        if len({(s.features, s.dim) for s in steps}) != 1:
            raise ValueError("steps must all have the same features and layout")
        self.steps = nn.ModuleList(steps)
        self.lift = lift
        self.project = project
        self.dim = steps[0].dim
        # A custom lift without `in_features` leaves the shape check to the lift itself.
        self.in_features = steps[0].features if lift is None else getattr(lift, "in_features", None)

    def forward(self, x: Tensor, *cond) -> Tensor:
        if self.in_features is None:
            check_finite(x)
        else:
            check_features(x, self.in_features, self.dim)
        first, last = self.steps[0], self.steps[-1]
        skip_lift = self._fused(self.lift, ZeroPadLift, first)
        keep = self.project.out_features if self._fused(self.project, Truncation, last) else None
        if self.lift is not None and not skip_lift:
            x = self.lift(x)
        for step in self.steps[:-1]:
            x = step(x, *cond)
        if keep is not None:
            return last(x, *cond, keep=keep)
        x = last(x, *cond)
        if self.project is not None:
            x = self.project(x)
        return x

    def _fused(self, layer: nn.Module | None, kind: type, step: nn.Module) -> bool:
        # A zero lift or truncation along the steps' own axis that the step can absorb.
        return (
            type(layer) is kind
            and layer.dim == self.dim
            and getattr(step, "reads_zero_padded", False)
        )
