r"""The volume-preserving network of the talk."""

from __future__ import annotations

from .fields import ShearField
from .network import FlowNetwork
from .steps import SplittingStep

__all__ = ["VolumePreservingNet"]


class VolumePreservingNet(FlowNetwork):
    r"""Volume-preserving ResNet: splitting steps of the shear field pair.

    Each layer steps :math:`F(x) = [\sigma(A_1x_2 + b_1); 0] + [0; \sigma(A_2x_1 + b_2)]`
    sub-field by sub-field,

    .. math::

        x_1 \leftarrow x_1 + h\,\sigma(A_1 x_2 + b_1), \qquad
        x_2 \leftarrow x_2 + h\,\sigma(A_2 x_1 + b_2),

    so each layer is a composition of two shears and :math:`\det D\mathcal N(x) = 1`
    for every input and every parameter value. It acts on vectors (last axis, any batch
    shape) or, with ``kernel_size``, on feature maps ``(B, C, H, W)`` split by channels.

    :param int features: state size along the network's axis; must be even.
    :param int depth: number of layers :math:`L`.
    :param float h: step size of every layer, positive.
    :param int | None width: hidden width of each shear (``None``: square :math:`A_i`).
    :param str activation: name of :math:`\sigma`.
    :param int | None kernel_size: ``None`` for vectors, an odd int for feature maps.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import VolumePreservingNet
        >>> net = VolumePreservingNet(4, depth=3).double()
        >>> x = torch.randn(4, dtype=torch.float64)
        >>> J = torch.autograd.functional.jacobian(net, x)
        >>> bool(abs(torch.linalg.det(J) - 1) < 1e-10)
        True
    """

    def __init__(
        self,
        features: int,
        depth: int = 4,
        h: float = 1.0,
        width: int | None = None,
        activation: str = "tanh",
        kernel_size: int | None = None,
    ):
        if features % 2:
            raise ValueError(
                f"features must be even to split the state into two halves, got {features}"
            )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        steps = [
            SplittingStep(
                [
                    ShearField(features, part, width, activation, kernel_size)
                    for part in ("first", "second")
                ],
                h,
            )
            for _ in range(depth)
        ]
        super().__init__(steps)
