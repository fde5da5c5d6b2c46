r"""Numerical steps :math:`\Psi^h_F`: one residual layer each.

The method is chosen to keep, at the discrete level, the property of the field's exact
flow: explicit Euler for general fields, Lie–Trotter splitting into shears (each Euler
sub-step *is* the exact shear flow, so volume is kept exactly), and a rotation step for
sphere-preserving fields (norm kept exactly).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._validation import check_positive
from .fields import VectorField

__all__ = ["FlowStep", "EulerStep", "SplittingStep", "SphereStep"]


class FlowStep(nn.Module):
    r"""Base class of a step :math:`\Psi^h` of size ``h`` > 0 along the fields it holds.

    :param Sequence[VectorField] fields: the fields the step uses (all of the same size
        and layout).
    :param float | None h: step size, positive; ``None`` for a step that computes its own
        (see :class:`~deepinv_dynnets.dynamics.AveragedEulerStep`), then no ``h`` buffer is
        registered.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import EulerStep, FlowStep, MLPField
        >>> step = EulerStep(MLPField(2, width=4), h=0.1)
        >>> isinstance(step, FlowStep), step(torch.randn(3, 2)).shape
        (True, torch.Size([3, 2]))
    """

    def __init__(self, fields: Sequence[VectorField], h: float | None = 1.0):
        super().__init__()
        if h is not None:
            check_positive(h, "h")
        if len(fields) == 0:
            raise ValueError("fields must hold at least one VectorField")
        if len({(f.features, f.dim) for f in fields}) != 1:
            raise ValueError("fields must all have the same features and layout")
        self.fields = nn.ModuleList(fields)
        self.features = fields[0].features
        self.dim = fields[0].dim
        if h is not None:
            self.register_buffer("h", torch.tensor(float(h)))


class EulerStep(FlowStep):
    r"""Explicit Euler step :math:`\Psi^h_F(x) = x + hF(x)`.

    :param VectorField field: the field :math:`F`.
    :param float h: step size, positive.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import EulerStep, MLPField
        >>> step = EulerStep(MLPField(2, width=4), h=0.1)
        >>> step(torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """

    def __init__(self, field: VectorField, h: float = 1.0):
        super().__init__([field], h)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.h * self.fields[0](x)


class SplittingStep(FlowStep):
    r"""Lie–Trotter splitting step for :math:`F = F_1 + \dots + F_m`.

    .. math::

        \Psi^h = \Phi^h_{F_m} \circ \dots \circ \Phi^h_{F_1}, \qquad
        \Phi^h_{F_k}(x) = x + hF_k(x),

    each sub-step seeing the state updated by the previous ones. For shear fields
    (:class:`~deepinv_dynnets.dynamics.ShearField`) every sub-step is the exact flow of its
    field, so the step is volume preserving: :math:`\det D\Psi^h = 1`.

    :param Sequence[VectorField] fields: :math:`F_1, \dots, F_m`, applied in this order.
    :param float h: step size, positive.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import ShearField, SplittingStep
        >>> step = SplittingStep([ShearField(4, "first"), ShearField(4, "second")], h=0.5)
        >>> step(torch.randn(2, 4)).shape
        torch.Size([2, 4])
    """

    def forward(self, x: Tensor) -> Tensor:
        for field in self.fields:
            x = x + self.h * field(x)
        return x


class SphereStep(FlowStep):
    r"""Norm-preserving step for a sphere-preserving field :math:`X` (:math:`\langle x, X(x)\rangle = 0`).

    Freezing :math:`S(x)` in :math:`\dot y = S(x) y` gives a rotation in the plane of
    :math:`x` and :math:`X(x)` at angular speed :math:`\omega = \|X(x)\| / \|x\|`:

    .. math::

        \Psi^h(x) = \cos(h\omega)\, x + h\,\operatorname{sinc}(h\omega)\, X(x),

    a first-order method (it agrees with Euler to :math:`O(h^2)`) that keeps
    :math:`\|\Psi^h(x)\| = \|x\|` exactly. At :math:`x = 0` it returns :math:`0`.

    :param SpherePreservingField field: the field :math:`X`.
    :param float h: step size, positive.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.dynamics import SpherePreservingField, SphereStep
        >>> step = SphereStep(SpherePreservingField(3), h=0.3).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> bool(torch.allclose(step(x).norm(dim=-1), x.norm(dim=-1)))
        True
    """

    def __init__(self, field: VectorField, h: float = 1.0):
        if field.dim != -1:
            raise ValueError("SphereStep needs a vector field acting on the last dimension")
        super().__init__([field], h)

    def forward(self, x: Tensor) -> Tensor:
        v = self.fields[0](x)
        r = _norm(x)
        # omega = |X| / |x|; at x = 0 the field vanishes too, and any finite omega works.
        omega = _norm(v) / torch.where(r > 0, r, torch.ones_like(r))
        angle = self.h * omega
        return torch.cos(angle) * x + self.h * torch.sinc(angle / torch.pi) * v


def _norm(v: Tensor) -> Tensor:
    # Euclidean norm along the last axis without squaring overflow: |X(x)| grows like
    # |x|^2, so for |x| = 1e10 in float32 the plain sum of squares is inf.
    m = v.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(m > 0, m, torch.ones_like(m))
    return (v / scale).norm(dim=-1, keepdim=True) * m
