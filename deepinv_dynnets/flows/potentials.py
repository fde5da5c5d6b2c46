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

from ..dynamics.activations import ACTIVATIONS

__all__ = ["MLPPotential", "POTENTIAL_ACTIVATIONS", "check_potential_activation"]


#: The activations the potentials accept: those of the package's table
#: (:mod:`deepinv_dynnets.dynamics.activations`) with the value and derivative computed
#: together and the second derivative from them, which the closed-form derivatives need.
POTENTIAL_ACTIVATIONS = tuple(
    name
    for name, act in ACTIVATIONS.items()
    if act.with_derivative is not None and act.second_from_first is not None
)


def check_potential_activation(activation: object) -> str:
    """Return ``activation`` if it is one of :data:`POTENTIAL_ACTIVATIONS`, else raise a
    ``ValueError`` naming the argument (the flows' MLPs need its fused derivatives)."""
    if activation not in POTENTIAL_ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(POTENTIAL_ACTIVATIONS)}, got {activation!r}"
        )
    return activation


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
        >>> u, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
        >>> grad_u, dt, _ = P.derivatives(u, t)
        >>> grad_u.shape, dt.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(self, n: int, width: int = 16, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        if n < 1 or width < 1 or depth < 1:
            raise ValueError(f"n, width and depth must be >= 1, got {n}, {width}, {depth}")
        check_potential_activation(activation)
        self.n, self.width, self.depth, self.activation = n, width, depth, activation
        self._act = ACTIVATIONS[activation].with_derivative
        self._second = ACTIVATIONS[activation].second_from_first
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

    def forward(self, u: Tensor, t: Tensor | float) -> Tensor:
        """The value :math:`P(t, u)`, ``t`` a float or a tensor broadcasting to ``u.shape[:-1]``."""
        W1 = self.weights[0]
        t = torch.as_tensor(t, dtype=u.dtype, device=u.device).unsqueeze(-1)
        a = u @ W1[:, : self.n].T + t * W1[:, self.n] + self.biases[0]
        for W, b in zip(self.weights[1:], self.biases[1:], strict=True):
            a = self._act(a)[0] @ W.T + b
        return self._act(a)[0] @ self.out

    def derivatives(
        self,
        u: Tensor,
        t: Tensor | float,
        du: Tensor | None = None,
        dt: Tensor | float | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        r"""Return :math:`\nabla_u P`, :math:`\partial_t P`, and optionally a directional derivative.

        :param torch.Tensor u: points, shape ``(..., n)``.
        :param t: times, a float or a tensor broadcasting to ``u.shape[:-1]``.
        :param torch.Tensor du: tangent of ``u`` (same shape), or ``None``.
        :param dt: tangent of ``t`` (like ``t``), or ``None``.
        :return: ``(grad_u, dt_P, d_grad_u)`` with shapes ``(..., n)``, ``(...)`` and
            ``(..., n)``; ``d_grad_u`` is the derivative of :math:`\nabla_u P` along
            :math:`(\dot u, \dot t)`, ``None`` when no tangent is given.
        """
        shape = u.shape[:-1]

        def rows(v):  # (..., n) -> (n, B), the layout the internals use
            return v.reshape(-1, self.n).T

        def times(v):
            return torch.as_tensor(v, dtype=u.dtype, device=u.device).expand(shape).reshape(1, -1)

        tangent = du is not None or dt is not None
        g, dtP, dg = self.derivatives_t(
            rows(u),
            times(t),
            None if du is None else rows(du),
            times(0.0 if dt is None else dt) if tangent else None,
        )

        def back(v):
            return v.T.reshape(*shape, self.n)

        return back(g), dtP.reshape(shape), (back(dg) if tangent else None)

    def derivatives_t(
        self, U: Tensor, T: Tensor, dU: Tensor | None = None, dT: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`derivatives` in the feature-major layout: ``U`` is ``(n, B)``, ``T`` is
        ``(1, B)``, results are ``(n, B)``, ``(B,)``, ``(n, B)``. On CPU, products of a small
        matrix with a wide ``(width, B)`` block run an order of magnitude faster than
        with a tall ``(B, width)`` one, so the flows keep their states in this layout.
        """
        n = self.n
        tangent = dU is not None or dT is not None
        UT = torch.cat([U, T.expand(1, U.shape[1])])
        if not tangent and not torch.is_grad_enabled() and self.activation == "tanh":
            return self._tanh_inference(UT)
        W1 = self.weights[0]
        W1u, w1t = W1[:, :n], W1[:, n : n + 1]
        a = torch.addmm(self.biases[0].unsqueeze(1), W1, UT)
        if tangent:
            da = (0 if dU is None else W1u @ dU) + (0 if dT is None else w1t * dT)
        d1s, d2s, das = [], [], []
        for k in range(self.depth):
            s, d1 = self._act(a)
            d1s.append(d1)
            if tangent:
                d2s.append(self._second(s, d1))
                das.append(da)
            if k + 1 < self.depth:
                W, b = self.weights[k + 1], self.biases[k + 1]
                a = torch.addmm(b.unsqueeze(1), W, s)
                if tangent:
                    da = W @ (d1 * da)
        # Backward pass: delta_k = dP/da_k, and its tangent.
        w = self.out.unsqueeze(1)
        delta = d1s[-1] * w
        ddelta = d2s[-1] * das[-1] * w if tangent else None
        for k in range(self.depth - 2, -1, -1):
            Wt = self.weights[k + 1].T
            back = Wt @ delta
            if tangent:
                ddelta = d2s[k] * das[k] * back + d1s[k] * (Wt @ ddelta)
            delta = d1s[k] * back
        grad = W1u.T @ delta
        dtP = (w1t.T @ delta).squeeze(0)
        return grad, dtP, (W1u.T @ ddelta if tangent else None)

    def _tanh_inference(self, UT: Tensor) -> tuple[Tensor, Tensor, None]:
        r"""Gradient and time derivative for tanh potentials, without autograd (rollouts).

        The same maths as the general path, rewritten with :math:`\tanh a = 2s - 1`,
        :math:`s = \mathrm{sigmoid}(2a)`, and the constant factors folded into the (tiny)
        weights, so that each hidden layer costs one sigmoid and one fused multiply-add
        over the ``(width, B)`` block, done in place.
        """
        W, Wf, bf, out4 = self._folded()
        s = torch.addmm(bf[0], Wf[0], UT).sigmoid_()
        ss = [s]
        for k in range(1, self.depth):
            s = torch.addmm(bf[k], Wf[k], s).sigmoid_()
            ss.append(s)
        # tanh'(a) = 4 s (1 - s); the 4s are folded into the vectors they multiply.
        delta = torch.addcmul(ss[-1], ss[-1], ss[-1], value=-1).mul_(out4)
        for k in range(self.depth - 2, -1, -1):
            back = W[k + 1].T.mm(delta)
            delta = torch.addcmul(ss[k], ss[k], ss[k], value=-1).mul_(back).mul_(4)
        grad = W[0].T.mm(delta)  # rows: d/du then d/dt
        return grad[: self.n], grad[self.n], None

    @torch.no_grad()
    def _folded(self) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:
        """Weights with the tanh constants folded in, cached until a parameter changes."""
        key = tuple((p._version, p.data_ptr(), p.dtype) for p in self.parameters())
        if getattr(self, "_folded_key", None) != key:
            W, b = list(self.weights), list(self.biases)
            # a'_1 = 2 a_1; a'_{k+1} = 2 (W_{k+1}(2 s_k - 1) + b_{k+1}) = 4 W_{k+1} s_k + 2(b - W 1)
            Wf = [2 * W[0]] + [4 * w for w in W[1:]]
            bf = [2 * b[0].unsqueeze(1)] + [
                2 * (bk - w.sum(1)).unsqueeze(1) for w, bk in zip(W[1:], b[1:], strict=True)
            ]
            self._folded_cache = (W, Wf, bf, 4 * self.out.unsqueeze(1))
            self._folded_key = key
        return self._folded_cache
