r"""The activation table: each activation once, with what the structured layers need of it.

A layer asks the table for the function :math:`s` and, depending on its structure, for

- an **antiderivative** :math:`\gamma` with :math:`\gamma' = s` (gradient fields have the
  potential :math:`\sum_j c_j\gamma(a_j^\top x + b_j)`),
- the **derivatives** :math:`s'` and :math:`s''` (closed-form Jacobians and their
  tangents, as in the SympFlow potentials),
- whether :math:`s` is **monotone with slope in** :math:`[0, 1]` (the condition under which
  the Euler layer :math:`x - hA^\top s(Ax + b)` is averaged, see
  :func:`~deepinv_dynnets.lipschitz.certify`),
- an **in-place** variant (inference on a fresh feature map that no backward needs).

Parametrised activations (LeakyReLU's ``negative_slope``) take their parameters as keyword
arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "activation_from_name"]


@dataclass(frozen=True)
class Activation:
    r"""An activation :math:`s` and what is known of it in closed form.

    :param str name: the table's key.
    :param Callable fn: :math:`z \mapsto s(z)`.
    :param Callable | None derivative: :math:`z \mapsto s'(z)`, or ``None``.
    :param Callable | None second_derivative: :math:`z \mapsto s''(z)`, or ``None``.
    :param Callable | None antiderivative: :math:`\gamma` with :math:`\gamma' = s`, or ``None``.
    :param Callable | None inplace: a variant that overwrites its argument, or ``None``.
    :param bool unit_slope: :math:`s` is monotone with every slope in :math:`[0, 1]` (for
        the parameters it accepts: LeakyReLU with ``negative_slope`` in :math:`[0, 1]`).
    :param Callable | None with_derivative: :math:`z \mapsto (s(z), s'(z))` computed
        together, sharing work (the SympFlow potentials' hot path), or ``None``.
    :param Callable | None second_from_first: :math:`(s, s') \mapsto s''` at the same
        point, without re-evaluating :math:`s` (their tangents), or ``None``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics.activations import get_activation
        >>> relu = get_activation("relu")
        >>> relu.fn(torch.tensor([-1.0, 2.0])), relu.unit_slope
        (tensor([0., 2.]), True)
    """

    name: str
    fn: Callable[..., Tensor]
    derivative: Callable[..., Tensor] | None = None
    second_derivative: Callable[..., Tensor] | None = None
    antiderivative: Callable[..., Tensor] | None = None
    inplace: Callable[..., Tensor] | None = None
    unit_slope: bool = False
    with_derivative: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None
    second_from_first: Callable[[Tensor, Tensor], Tensor] | None = None


def _logcosh(z: Tensor) -> Tensor:
    # log(cosh z) = |z| + log(1 + exp(-2|z|)) - log 2, stable for large |z|.
    a = z.abs()
    return a + F.softplus(-2 * a) - torch.log(torch.tensor(2.0, dtype=z.dtype, device=z.device))


def _sigmoid_second(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s) * (1 - 2 * s)


def _tanh_with_derivative(z: Tensor) -> tuple[Tensor, Tensor]:
    # tanh(z) = 2 sigmoid(2z) - 1: the same function, but several times faster on CPU,
    # where torch.sigmoid is vectorised better than torch.tanh.
    s = 2 * torch.sigmoid(2 * z) - 1
    return s, 1 - s * s


def _sigmoid_with_derivative(z: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(z)
    return s, s * (1 - s)


def _leaky_derivative(z: Tensor, negative_slope: float = 0.01) -> Tensor:
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, negative_slope))


def _leaky_antiderivative(z: Tensor, negative_slope: float = 0.01) -> Tensor:
    return 0.5 * torch.where(z > 0, z * z, negative_slope * z * z)


#: Every activation of the package, by name.
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation(
            "tanh",
            torch.tanh,
            derivative=lambda z: 1 - torch.tanh(z) ** 2,
            second_derivative=lambda z: -2 * torch.tanh(z) * (1 - torch.tanh(z) ** 2),
            antiderivative=_logcosh,
            with_derivative=_tanh_with_derivative,
            second_from_first=lambda s, d1: -2 * s * d1,
        ),
        Activation(
            "sigmoid",
            torch.sigmoid,
            derivative=lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
            second_derivative=_sigmoid_second,
            antiderivative=F.softplus,
            unit_slope=True,  # slope in (0, 1/4]
            with_derivative=_sigmoid_with_derivative,
            second_from_first=lambda s, d1: d1 * (1 - 2 * s),
        ),
        Activation(
            "relu",
            F.relu,
            derivative=lambda z: (z > 0).to(z.dtype),
            antiderivative=lambda z: 0.5 * F.relu(z) ** 2,
            inplace=F.relu_,
            unit_slope=True,
        ),
        Activation(
            "leaky_relu",
            F.leaky_relu,
            derivative=_leaky_derivative,
            antiderivative=_leaky_antiderivative,
            inplace=F.leaky_relu_,
            unit_slope=True,
        ),
        Activation(
            "softplus",
            F.softplus,
            derivative=torch.sigmoid,
            second_derivative=lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
            unit_slope=True,
            with_derivative=lambda z: (F.softplus(z), torch.sigmoid(z)),
            second_from_first=lambda s, d1: d1 * (1 - d1),
        ),
        Activation(
            "sin",
            torch.sin,
            derivative=torch.cos,
            second_derivative=lambda z: -torch.sin(z),
            antiderivative=lambda z: 1 - torch.cos(z),
            with_derivative=lambda z: (torch.sin(z), torch.cos(z)),
            second_from_first=lambda s, d1: -s,
        ),
        Activation("elu", F.elu),
        Activation("gelu", F.gelu),
    )
}


def get_activation(name: str) -> Activation:
    """The table entry of the activation called ``name``.

    :param str name: a key of :data:`ACTIVATIONS`.
    :raises ValueError: an unknown name.

    :Examples:

        >>> from deepinv_dynnets.dynamics.activations import get_activation
        >>> get_activation("tanh").antiderivative is not None
        True
    """
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def activation_from_name(name: str) -> Callable[..., Tensor]:
    """Return the activation function called ``name``.

    :param str name: one of ``tanh``, ``sigmoid``, ``relu``, ``leaky_relu``, ``softplus``,
        ``sin``, ``elu``, ``gelu``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import activation_from_name
        >>> activation_from_name("relu")(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """
    return get_activation(name).fn
