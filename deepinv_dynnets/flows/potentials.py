r"""Time-dependent scalar potentials with closed-form derivatives.

A SympFlow block needs, for a potential :math:`V(t, u)`, the gradient :math:`\nabla_u V`,
the time derivative :math:`\partial_t V` (the block's Hamiltonian) and, for training, the
directional derivative of :math:`\nabla_u V` along :math:`(\dot u, \dot t)`. Autograd
would give them at the cost of one graph per derivative; here a single hand-written
backward pass through the small MLP gives all three as plain tensor expressions, which
autograd then differentiates once for the parameters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MLPPotential"]


def _tanh(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.tanh(a)
    d1 = 1 - s * s
    return s, d1, -2 * s * d1


def _sigmoid(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sigmoid(a)
    d1 = s * (1 - s)
    return s, d1, d1 * (1 - 2 * s)


def _softplus(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    sig = torch.sigmoid(a)
    return torch.nn.functional.softplus(a), sig, sig * (1 - sig)


def _sin(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sin(a)
    return s, torch.cos(a), -s


# activation -> (sigma, sigma', sigma'') evaluated together, sharing work.
_ACTIVATIONS = {"tanh": _tanh, "sigmoid": _sigmoid, "softplus": _softplus, "sin": _sin}


class MLPPotential(nn.Module):
    r"""A scalar MLP potential :math:`P(t, u)`, :math:`u \in \mathbb R^n`, with closed-form derivatives.

    .. math::

        a_1 = W_1 (u, t) + b_1,\quad a_{k+1} = W_{k+1}\sigma(a_k) + b_{k+1},\quad
        P(t, u) = w^\top \sigma(a_D).

    :param int n: dimension of :math:`u`.
    :param int width: hidden width.
    :param int depth: number of hidden layers :math:`D \ge 1`.
    :param str activation: ``tanh``, ``sigmoid``, ``softplus`` or ``sin``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows.potentials import MLPPotential
        >>> P = MLPPotential(2, width=8).double()
        >>> u, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, 1, dtype=torch.float64)
        >>> grad_u, dt, _ = P.derivatives(u, t)
        >>> grad_u.shape, dt.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(self, n: int, width: int = 16, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        if n < 1 or width < 1 or depth < 1:
            raise ValueError(f"n, width and depth must be >= 1, got {n}, {width}, {depth}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.n, self.width, self.depth, self.activation = n, width, depth, activation
        self._act = _ACTIVATIONS[activation]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        fan_in = n + 1
        for _ in range(depth):
            bound = 1 / math.sqrt(fan_in)  # the nn.Linear default
            self.weights.append(nn.Parameter(torch.empty(width, fan_in).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(width).uniform_(-bound, bound)))
            fan_in = width
        bound = 1 / math.sqrt(width)
        self.out = nn.Parameter(torch.empty(width).uniform_(-bound, bound))

    def forward(self, u: Tensor, t: Tensor) -> Tensor:
        """The value :math:`P(t, u)`; ``t`` has shape ``u.shape[:-1] + (1,)`` (or broadcasts)."""
        W1 = self.weights[0]
        a = u @ W1[:, : self.n].T + t * W1[:, self.n] + self.biases[0]
        for W, b in zip(self.weights[1:], self.biases[1:], strict=True):
            a = self._act(a)[0] @ W.T + b
        return self._act(a)[0] @ self.out

    def derivatives(
        self, u: Tensor, t: Tensor, du: Tensor | None = None, dt: Tensor | float | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        r"""Return :math:`\nabla_u P`, :math:`\partial_t P`, and optionally a directional derivative.

        :param torch.Tensor u: points, shape ``(..., n)``.
        :param torch.Tensor t: times, shape ``(..., 1)`` (or broadcasting to it).
        :param torch.Tensor du: tangent of ``u`` (same shape), or ``None``.
        :param dt: tangent of ``t`` (tensor broadcasting to ``(..., 1)`` or float), or ``None``.
        :return: ``(grad_u, dt_P, d_grad_u)`` with shapes ``(..., n)``, ``(...)`` and
            ``(..., n)``; ``d_grad_u`` is the derivative of :math:`\nabla_u P` along
            :math:`(\dot u, \dot t)`, ``None`` when no tangent is given.
        """
        n = self.n
        W1 = self.weights[0]
        W1u, w1t = W1[:, :n], W1[:, n]
        tangent = du is not None or dt is not None
        a = u @ W1u.T + t * w1t + self.biases[0]
        if tangent:
            da = (0 if du is None else du @ W1u.T) + (0 if dt is None else dt * w1t)
        d1s, d2s, das = [], [], []
        for k in range(self.depth):
            s, d1, d2 = self._act(a)
            d1s.append(d1)
            if tangent:
                d2s.append(d2)
                das.append(da)
            if k + 1 < self.depth:
                W, b = self.weights[k + 1], self.biases[k + 1]
                a = s @ W.T + b
                if tangent:
                    da = (d1 * da) @ W.T
        # Backward pass: delta_k = dP/da_k, and its tangent.
        g = self.out
        delta = d1s[-1] * g
        ddelta = d2s[-1] * das[-1] * g if tangent else None
        for k in range(self.depth - 2, -1, -1):
            W = self.weights[k + 1]
            back = delta @ W
            if tangent:
                ddelta = d2s[k] * das[k] * back + d1s[k] * (ddelta @ W)
            delta = d1s[k] * back
        grad_u = delta @ W1u
        dt_P = delta @ w1t
        return grad_u, dt_P, (ddelta @ W1u if tangent else None)
