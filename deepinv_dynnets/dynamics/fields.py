r"""Parametric vector-field families :math:`F_\theta`.

A residual layer is one step of a numerical method for :math:`\dot y = F_\theta(y)`; the
family decides which properties the exact flow has. Every field here maps a tensor to a
tensor of the same shape and acts along one axis, ``dim``: the last axis for vectors
(any batch shape in front) or the channel axis ``-3`` for feature maps ``(B, C, H, W)``,
in which case the affine maps :math:`A` are convolutions and :math:`A^\top` is the
transposed convolution with the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import ACTIVATIONS, activation_from_name, get_activation

__all__ = [
    "VectorField",
    "MLPField",
    "ShearField",
    "GradientField",
    "SpherePreservingField",
    "activation_from_name",
]


def _check_kernel_size(kernel_size: int | None) -> None:
    if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
        raise ValueError(f"kernel_size must be a positive odd integer or None, got {kernel_size}")


def _affine(in_features: int, out_features: int, kernel_size: int | None) -> nn.Module:
    if kernel_size is None:
        return nn.Linear(in_features, out_features)
    return nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)


class VectorField(nn.Module):
    r"""Base class of the vector-field families.

    :param int features: number of entries of the state along ``dim``.
    :param int | None kernel_size: ``None`` for vectors (the field acts on the last axis),
        an odd integer for feature maps (the field acts on the channel axis ``-3`` with
        convolutions of that size).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import MLPField, VectorField
        >>> field = MLPField(3, width=8)
        >>> isinstance(field, VectorField), field(torch.randn(5, 3)).shape
        (True, torch.Size([5, 3]))
    """

    def __init__(self, features: int, kernel_size: int | None = None):
        super().__init__()
        if int(features) != features or features < 1:
            raise ValueError(f"features must be a positive integer, got {features}")
        _check_kernel_size(kernel_size)
        self.features = int(features)
        self.kernel_size = kernel_size
        self.dim = -1 if kernel_size is None else -3


class MLPField(VectorField):
    r"""Unstructured one-hidden-layer field :math:`F(x) = B\,\sigma(Ax + b)`.

    Its Euler steps give an ordinary ResNet: the baseline that keeps no property.

    :param int features: state size along ``dim``.
    :param int width: hidden width.
    :param str activation: name of :math:`\sigma` (see :func:`activation_from_name`).
    :param int | None kernel_size: ``None`` for vectors, odd int for feature maps.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import MLPField
        >>> MLPField(4, width=8)(torch.randn(2, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        features: int,
        width: int = 16,
        activation: str = "tanh",
        kernel_size: int | None = None,
    ):
        super().__init__(features, kernel_size)
        self.A = _affine(features, width, kernel_size)
        self.B = _affine(width, features, kernel_size)
        self.activation = activation_from_name(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.B(self.activation(self.A(x)))


class ShearField(VectorField):
    r"""One half of a split field, a shear.

    With :math:`x = (x_1, x_2)` split in two halves along ``dim``,

    .. math::

        F_{\text{first}}(x) = \begin{pmatrix} g(x_2) \\ 0 \end{pmatrix}, \qquad
        F_{\text{second}}(x) = \begin{pmatrix} 0 \\ g(x_1) \end{pmatrix}, \qquad
        g(z) = \sigma(Az + b)

    (or :math:`g(z) = B\sigma(Az + b)` when ``width`` is given). The half that moves does
    not enter :math:`g`, so the exact time-:math:`h` flow is the explicit Euler step
    :math:`x_1 \leftarrow x_1 + h\,g(x_2)`: a shear, whose Jacobian is block triangular
    with identity blocks, hence of determinant one.

    :param int features: state size along ``dim``; must be even.
    :param str part: ``"first"`` (moves :math:`x_1`) or ``"second"`` (moves :math:`x_2`).
    :param int | None width: hidden width of :math:`g`; ``None`` for the square
        :math:`g(z) = \sigma(Az + b)` of the talk.
    :param str activation: name of :math:`\sigma`.
    :param int | None kernel_size: ``None`` for vectors, odd int for feature maps.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import ShearField
        >>> field = ShearField(4, part="first")
        >>> v = field(torch.randn(3, 4))
        >>> bool((v[:, 2:] == 0).all())
        True
    """

    def __init__(
        self,
        features: int,
        part: str = "first",
        width: int | None = None,
        activation: str = "tanh",
        kernel_size: int | None = None,
    ):
        super().__init__(features, kernel_size)
        if features % 2:
            raise ValueError(
                f"features must be even to split the state into two halves, got {features}"
            )
        if part not in ("first", "second"):
            raise ValueError(f"part must be 'first' or 'second', got {part!r}")
        self.part = part
        half = features // 2
        self.A = _affine(half, width or half, kernel_size)
        self.B = None if width is None else _affine(width, half, kernel_size)
        self.activation = activation_from_name(activation)

    def g(self, z: Tensor) -> Tensor:
        """The update of the moving half, as a function of the other half."""
        out = self.activation(self.A(z))
        return out if self.B is None else self.B(out)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=self.dim)
        if self.part == "first":
            return torch.cat([self.g(x2), torch.zeros_like(x1)], dim=self.dim)
        return torch.cat([torch.zeros_like(x2), self.g(x1)], dim=self.dim)


class GradientField(VectorField):
    r"""Gradient field :math:`F(x) = \nabla U(x) = A^\top \big(c \odot \sigma(Ax + b)\big)`.

    The potential is :math:`U(x) = \sum_j c_j\,\gamma(a_j^\top x + b_j)` with
    :math:`\gamma' = \sigma`, so :math:`F` is a gradient by construction, one half of the
    Presnov decomposition. (With :math:`c = -1` and a monotone :math:`\sigma` of slope in
    :math:`[0, 1]`, an Euler step is the non-expansive layer :math:`x - hA^\top\sigma(Ax + b)`
    of the averaged denoisers.)

    :param int features: state size along ``dim``.
    :param int width: number of ridge functions (hidden channels).
    :param str activation: ``tanh``, ``sigmoid`` or ``relu`` (those with a closed-form
        antiderivative, so that :meth:`potential` is available).
    :param int | None kernel_size: ``None`` for vectors, odd int for feature maps (then
        :math:`A^\top` is the transposed convolution with the same weights).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import GradientField
        >>> field = GradientField(3, width=5)
        >>> field(torch.randn(7, 3)).shape
        torch.Size([7, 3])
    """

    def __init__(
        self,
        features: int,
        width: int = 16,
        activation: str = "tanh",
        kernel_size: int | None = None,
    ):
        super().__init__(features, kernel_size)
        if get_activation(activation).antiderivative is None:
            names = sorted(n for n, a in ACTIVATIONS.items() if a.antiderivative is not None)
            raise ValueError(
                f"activation must be one of {names} for a gradient field, got {activation!r}"
            )
        self.A = _affine(features, width, kernel_size)
        shape = (width,) if kernel_size is None else (width, 1, 1)
        self.c = nn.Parameter(torch.ones(shape))
        self.activation = activation_from_name(activation)
        self._gamma = get_activation(activation).antiderivative

    def _adjoint(self, z: Tensor) -> Tensor:
        if self.kernel_size is None:
            return z @ self.A.weight
        return F.conv_transpose2d(z, self.A.weight, padding=self.kernel_size // 2)

    def potential(self, x: Tensor) -> Tensor:
        """The scalar potential :math:`U(x)`, one value per sample."""
        u = self.c * self._gamma(self.A(x))
        return u.sum(-1) if self.kernel_size is None else u.sum((-3, -2, -1))

    def forward(self, x: Tensor) -> Tensor:
        return self._adjoint(self.c * self.activation(self.A(x)))


class SpherePreservingField(VectorField):
    r"""Sphere-preserving field :math:`X_S(x) = S(x)\,x` with :math:`S(x)` skew-symmetric.

    With an MLP :math:`g(x) = B\sigma(Ax + b)` and :math:`S(x) = g(x)x^\top - x\,g(x)^\top`,

    .. math::

        X_S(x) = \|x\|^2 g(x) - \langle x, g(x)\rangle\, x,

    so :math:`\langle x, X_S(x)\rangle = 0`: the exact flow stays on the sphere
    :math:`\|x\| = \text{const}`. Any :math:`C^1` field is a gradient field plus such a
    field (Presnov decomposition). Vectors only (the last axis).

    :param int features: state size.
    :param int width: hidden width of :math:`g`.
    :param str activation: name of :math:`\sigma`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import SpherePreservingField
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> field = SpherePreservingField(3).double()
        >>> bool((field(x) * x).sum(-1).abs().max() < 1e-12)
        True
    """

    def __init__(self, features: int, width: int = 16, activation: str = "tanh"):
        super().__init__(features, None)
        self.A = nn.Linear(features, width)
        self.B = nn.Linear(width, features)
        self.activation = activation_from_name(activation)

    def forward(self, x: Tensor) -> Tensor:
        g = self.B(self.activation(self.A(x)))
        sq = (x * x).sum(-1, keepdim=True)
        return sq * g - (x * g).sum(-1, keepdim=True) * x
