r"""Canonical symplectic structure of phase space.

A phase-space state is stored as :math:`y = (q, p)` along the **last** dimension of a tensor:
the first :math:`n` entries are the positions :math:`q`, the last :math:`n` the momenta
:math:`p`, and any batch shape may come in front. The canonical symplectic matrix is

.. math::

    J = \begin{pmatrix} 0 & I_n \\ -I_n & 0 \end{pmatrix},
    \qquad J \begin{pmatrix} v_q \\ v_p \end{pmatrix} = \begin{pmatrix} v_p \\ -v_q \end{pmatrix},

so that Hamilton's equations read :math:`\dot y = J \nabla H(y)`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_finite, check_positive_int

__all__ = ["apply_J", "canonical_J", "check_phase_space"]


def _check_even_last_dim(v: Tensor, name: str) -> int:
    """Return ``n`` for a tensor whose last dimension is ``2n``; shape-only, no data access."""
    if v.dim() == 0:
        raise ValueError(
            f"{name} must have at least one dimension (its last holds q then p), got a 0-d tensor"
        )
    if v.shape[-1] % 2 != 0:
        raise ValueError(
            f"{name} must have an even last dimension 2n (positions q then momenta p), "
            f"got shape {tuple(v.shape)}"
        )
    return v.shape[-1] // 2


def apply_J(v: Tensor) -> Tensor:
    r"""Apply the canonical symplectic matrix :math:`J` along the last dimension.

    .. math::

        J v = (v_p, -v_q) \quad \text{for} \quad v = (v_q, v_p) \in \mathbb{R}^{2n}.

    The matrix is never formed, so the cost is a copy of ``v``.

    :param torch.Tensor v: tensor of shape ``(..., 2n)``.
    :return: (:class:`torch.Tensor`) tensor of the same shape, dtype and device as ``v``.
    :raises ValueError: if the last dimension of ``v`` is odd or ``v`` is 0-dimensional.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows.symplectic import apply_J
        >>> apply_J(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        tensor([ 3.,  4., -1., -2.])
    """
    n = _check_even_last_dim(v, "v")
    return torch.cat([v[..., n:], -v[..., :n]], dim=-1)


def canonical_J(
    n: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> Tensor:
    r"""Dense canonical symplectic matrix of size :math:`2n \times 2n`.

    .. math::

        J = \begin{pmatrix} 0 & I_n \\ -I_n & 0 \end{pmatrix},
        \qquad J^\top J = I_{2n}, \qquad J^2 = -I_{2n}.

    Prefer :func:`apply_J` to multiply by :math:`J`; this matrix is meant for checks and
    for building structured weights.

    :param int n: number of degrees of freedom (positive).
    :param torch.dtype dtype: dtype of the result (PyTorch's default floating dtype if ``None``).
    :param device: device of the result.
    :return: (:class:`torch.Tensor`) the matrix, of shape ``(2n, 2n)``.
    :raises ValueError: if ``n`` is not a positive integer.

    :Examples:

        >>> from deepinv_dynnets.flows.symplectic import canonical_J
        >>> canonical_J(1)
        tensor([[ 0.,  1.],
                [-1.,  0.]])
    """
    n = check_positive_int(n, "n")
    eye = torch.eye(n, dtype=dtype, device=device)
    zero = torch.zeros_like(eye)
    return torch.cat([torch.cat([zero, eye], dim=1), torch.cat([-eye, zero], dim=1)], dim=0)


def check_phase_space(y: Tensor, name: str = "y", dim: int | None = None) -> None:
    r"""Validate a batch of phase-space points :math:`y = (q, p) \in \mathbb{R}^{2n}`.

    Shape checks run first and the NaN/Inf scan last, so malformed input fails without
    touching the data.

    :param torch.Tensor y: tensor of shape ``(..., 2n)``.
    :param str name: name of the argument, used in the error messages.
    :param int dim: if given, the required size ``2n`` of the last dimension.
    :raises ValueError: if ``y`` is not a floating-point tensor, is 0-dimensional, has an odd
        last dimension or one different from ``dim``, or contains NaN or Inf values.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows.symplectic import check_phase_space
        >>> check_phase_space(torch.zeros(5, 4), dim=4)
        >>> check_phase_space(torch.zeros(5, 3))
        Traceback (most recent call last):
        ...
        ValueError: y must have an even last dimension 2n (positions q then momenta p), got shape (5, 3)
    """  # noqa: E501
    if not isinstance(y, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if not torch.is_floating_point(y):
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {y.dtype}")
    _check_even_last_dim(y, name)
    if dim is not None and y.shape[-1] != dim:
        raise ValueError(
            f"{name} must have last dimension {dim} (positions q then momenta p), "
            f"got shape {tuple(y.shape)}"
        )
    check_finite(y, name)
