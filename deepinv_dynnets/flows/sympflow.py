r"""SympFlow: a time-dependent symplectic network that is the exact flow of its own Hamiltonian."""

from __future__ import annotations

import numbers
from pathlib import Path

import torch
from torch import Tensor, nn

from ..pretrained import SHIPPED, build_from_card, load_weights, resolve_weights, save_weights
from .base import NeuralFlow, check_flow_config
from .fast_rollout import compiled_powers, kernel_available
from .potentials import MLPPotential
from .symplectic import apply_J

__all__ = ["SympFlow", "SympFlowVectorField"]

_CHUNK = 4096  # states per slice in inference, see SympFlow._in_chunks
#: The compiled loop runs state by state; beyond this many states PyTorch's batched
#: products are faster (measured crossover, see the SympFlow guide).
KERNEL_MAX_BATCH = 256
_KERNEL_PIECE = 2000  # compositions per call of the compiled loop
# Entries of a model card that describe the format, not the model (the rest is metadata).
_CARD_FORMAT_KEYS = (
    "format",
    "format_version",
    "kind",
    "config",
    "weights_file",
    "weights_sha256",
    "paths_relative_to",
)


class SympFlow(NeuralFlow):
    r"""Time-dependent symplectic network: the exact flow of a learned Hamiltonian system.

    The state :math:`x = (q, p) \in \mathbb R^{2n}` sits on the last axis (any batch shape in
    front). With MLP potentials :math:`V_i(t, q)`, :math:`K_i(t, p)`,

    .. math::

        \phi_q^i(t; q, p) &= \big(q + \nabla_p K_i(t, p) - \nabla_p K_i(0, p),\ p\big),\\
        \phi_p^i(t; q, p) &= \big(q,\ p - \nabla_q V_i(t, q) + \nabla_q V_i(0, q)\big),\\
        \mathcal N(t, x) &= \phi_p^L \circ \phi_q^L \circ \dots \circ \phi_p^1 \circ
        \phi_q^1 (x).

    Each block is the exact time-:math:`t` flow of the Hamiltonian :math:`\partial_t K_i(t, p)`
    (resp. :math:`\partial_t V_i(t, q)`), so :math:`\mathcal N(t, \cdot)` is symplectic for
    every :math:`t`, :math:`\mathcal N(0, \cdot) = \mathrm{id}` exactly, every block has an
    explicit inverse, and by the composition theorem :footcite:p:`polterovich2001geometry`
    the network is the flow of its own Hamiltonian :math:`H_{\mathcal N}`
    (:meth:`hamiltonian`) :footcite:p:`canizares2024hamiltonian`.

    Beyond the training window :math:`[0, \Delta t]` the flow composes
    :math:`\mathcal N(\Delta t, \cdot)`:
    :math:`\psi(t) = \mathcal N(t - m\Delta t) \circ \mathcal N(\Delta t)^m` with
    :math:`m = \lfloor t/\Delta t \rfloor` (negative :math:`m` uses the inverse), the exact flow
    of the :math:`\Delta t`-periodic extension of :math:`H_{\mathcal N}`, hence symplectic for
    every :math:`t`.

    Called like ``torchdiffeq.odeint``, ``flow(y0, t)`` returns the states at the times ``t``
    (a 1-D monotone grid, any start, either direction) with shape ``(len(t), *y0.shape)``.
    As in torchdiffeq, ``y0`` is the state *at time* ``t[0]``: ``out[i]`` is the flow from
    :math:`t_0` to :math:`t_i`, :math:`\psi(t_i)\circ\psi(t_0)^{-1}`, which agrees with
    ``odeint(flow.vector_field, y0, t)``. ``t`` of shape ``(T, *y0.shape[:-1])`` gives one
    grid per initial state. :attr:`vector_field` is the ``func(t, y)`` of the learned system
    for ``torchdiffeq.odeint`` or ``odeint_adjoint``. Under ``torch.no_grad()``, rollouts of
    up to :data:`KERNEL_MAX_BATCH` states on the CPU run in a compiled loop
    (:attr:`compiled_rollout`).

    :param int dim: phase-space dimension :math:`2n` (even).
    :param int n_layers: number of layers :math:`L` (each a :math:`\phi_q` and a :math:`\phi_p`).
    :param int width: hidden width of each potential.
    :param int depth: hidden layers of each potential.
    :param str activation: ``tanh``, ``sigmoid``, ``softplus`` or ``sin``.
    :param float dt: the training window :math:`\Delta t`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import SympFlow
        >>> flow = SympFlow(dim=4, n_layers=2, width=8)
        >>> y0 = torch.rand(5, 4)
        >>> flow(y0, torch.linspace(0, 3, 7)).shape
        torch.Size([7, 5, 4])
        >>> bool(torch.equal(flow.network(0.0, y0), y0))
        True

    .. footbibliography::
    """

    invertible = True
    #: Rollouts on the CPU of at most :data:`KERNEL_MAX_BATCH` states, when no autograd graph
    #: is needed (e.g. under ``torch.no_grad()``), compose :math:`\mathcal N(\Delta t)` in a
    #: compiled loop (:mod:`~deepinv_dynnets.flows.fast_rollout`); ``False`` keeps PyTorch.
    compiled_rollout: bool = True

    def __init__(
        self,
        dim: int,
        n_layers: int = 3,
        width: int = 16,
        depth: int = 2,
        activation: str = "tanh",
        dt: float = 1.0,
    ):
        super().__init__()
        dim, dt = check_flow_config(dim, dt)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.config = dict(
            dim=int(dim),
            n_layers=int(n_layers),
            width=int(width),
            depth=int(depth),
            activation=activation,
            dt=float(dt),
        )
        self.dim, self.n, self.dt = int(dim), int(dim) // 2, float(dt)
        self.K = nn.ModuleList(
            MLPPotential(self.n, width, depth, activation) for _ in range(n_layers)
        )
        self.V = nn.ModuleList(
            MLPPotential(self.n, width, depth, activation) for _ in range(n_layers)
        )
        # A constant shift of H_N changes no flow; it lets H_N match an energy exactly.
        self.energy_offset = nn.Parameter(torch.zeros(()))

    # -- the network N(t, x) on [0, dt] -------------------------------------------------
    # Internally states are feature-major, q and p of shape (n, B), and every potential is
    # evaluated at (t, u) and (0, u) in one call on the doubled batch (see MLPPotential).
    def _split(self, t: Tensor | float, x: Tensor):
        X = x.reshape(-1, self.dim).T.contiguous()
        T = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1]).reshape(1, -1)
        return X[: self.n], X[self.n :], torch.cat([T, torch.zeros_like(T)], dim=1)

    def _join(self, q: Tensor, p: Tensor, x: Tensor) -> Tensor:
        return torch.cat([q, p]).T.reshape(x.shape)

    @staticmethod
    def _shift(P: MLPPotential, U: Tensor, TT: Tensor, dU=None, dTT=None):
        r""":math:`\nabla P(t, u) - \nabla P(0, u)`, :math:`\partial_t P(t, u)` and the tangent."""
        B = U.shape[1]
        g, dtP, dg = P.derivatives_t(
            torch.cat([U, U], dim=1), TT, None if dU is None else torch.cat([dU, dU], dim=1), dTT
        )
        # The two halves may round differently; the mask makes N(0, .) = id exactly.
        shift = g[:, :B] - g[:, B:]
        if not bool(TT[:, :B].all()):
            if TT.requires_grad:  # keep d/dt at t = 0: shift - shift.detach() is 0 exactly
                shift = torch.where(TT[:, :B] != 0, shift, shift - shift.detach())
            else:
                shift = shift * (TT[:, :B] != 0)
        return shift, dtP[:B], (None if dg is None else dg[:, :B] - dg[:, B:])

    def _forward_blocks(self, t, x: Tensor, with_time_derivative: bool = False):
        q, p, TT = self._split(t, x)
        dq = dp = dTT = None
        if with_time_derivative:
            B = q.shape[1]
            dTT = torch.cat([torch.ones_like(TT[:, :B]), torch.zeros_like(TT[:, :B])], dim=1)
        for K, V in zip(self.K, self.V, strict=True):
            shift, _, dshift = self._shift(K, p, TT, dp, dTT)
            q = q + shift
            if with_time_derivative:
                dq = dshift if dq is None else dq + dshift
            shift, _, dshift = self._shift(V, q, TT, dq, dTT)
            p = p - shift
            if with_time_derivative:
                dp = -dshift if dp is None else dp - dshift
        y = self._join(q, p, x)
        return (y, self._join(dq, dp, x)) if with_time_derivative else y

    def _in_chunks(self, fn, t, x: Tensor) -> Tensor:
        """Apply ``fn(t, x)`` to slices of the batch when no gradient is recorded.

        In a rollout the whole batch passes through every block; slices of ``_CHUNK`` states
        keep each block's ``(width, chunk)`` activations in cache (2-4x faster on CPU).
        """
        if torch.is_grad_enabled() or x.numel() <= _CHUNK * self.dim:
            return fn(t, x)
        flat = x.reshape(-1, self.dim)
        times = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1]).reshape(-1)
        pieces = [
            fn(times[i : i + _CHUNK], flat[i : i + _CHUNK]) for i in range(0, len(flat), _CHUNK)
        ]
        return torch.cat(pieces).reshape(x.shape)

    # -- rollouts -------------------------------------------------------------------------
    def _needs_graph(self, x: Tensor) -> bool:
        return torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )

    def _use_kernel(self, x: Tensor) -> bool:
        return (
            self.compiled_rollout
            and self.config["activation"] == "tanh"
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and x.numel() <= KERNEL_MAX_BATCH * self.dim
            and not self._needs_graph(x)
            and kernel_available()
        )

    def _rollout_threads(self, x: Tensor) -> int | None:
        # Without a graph every operation is at most _CHUNK states, too little work to share
        # between threads: with several, OpenMP threads spin-wait at each of the thousands of
        # barriers and a busy core slows the whole rollout many times over.
        return 1 if not self._needs_graph(x) or x.numel() <= _CHUNK * self.dim else None

    def _power(self, x: Tensor, m: int, bar=None) -> Tensor:
        if m == 0 or not self._use_kernel(x):
            return super()._power(x, m, bar)
        return self._powers(x, torch.tensor([m]), bar)[0]

    def _powers(self, x: Tensor, marks: Tensor, bar=None) -> Tensor:
        if not self._use_kernel(x):
            return super()._powers(x, marks, bar)
        if bar is None or marks.dim() > 1:
            out = compiled_powers(self, x, marks)
            if bar is not None:
                bar.update(bar.total - bar.n)
            return out
        # A moving progress bar: calls of at most _KERNEL_PIECE compositions each.
        pieces, done, i = [], 0, 0
        sign = 1 if int(marks[-1]) >= 0 else -1
        while i < len(marks):
            j = i
            while j < len(marks) and abs(int(marks[j]) - done) <= _KERNEL_PIECE:
                j += 1
            if j == i:  # a gap longer than a piece: go part of the way, recording nothing
                x = compiled_powers(self, x, torch.tensor([sign * _KERNEL_PIECE]))[0]
                done += sign * _KERNEL_PIECE
                bar.update(_KERNEL_PIECE)
                continue
            piece = compiled_powers(self, x, marks[i:j] - done)
            pieces.append(piece)
            x = piece[-1]
            bar.update(abs(int(marks[j - 1]) - done))
            done, i = int(marks[j - 1]), j
        return torch.cat(pieces)

    def network(self, t: Tensor | float, x: Tensor) -> Tensor:
        r"""The network :math:`\mathcal N(t, x)` itself (no long-time composition).

        :param t: time(s): a float, or a tensor broadcasting to ``x.shape[:-1]``.
        :param torch.Tensor x: states, shape ``(..., 2n)``.
        """
        return self._in_chunks(self._forward_blocks, t, x)

    def network_with_time_derivative(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\mathcal N(t, x)` and :math:`\partial_t \mathcal N(t, x)`, in closed form.

        This is what the residual loss needs; it costs about twice a forward pass.
        """
        return self._forward_blocks(t, x, with_time_derivative=True)

    def network_inverse(self, t: Tensor | float, x: Tensor) -> Tensor:
        r"""The exact inverse :math:`\mathcal N(t, \cdot)^{-1}(x)`, block by block."""
        return self._in_chunks(self._inverse_blocks, t, x)

    def _inverse_blocks(self, t, x: Tensor) -> Tensor:
        q, p, TT = self._split(t, x)
        for K, V in zip(reversed(self.K), reversed(self.V), strict=True):
            p = p + self._shift(V, q, TT)[0]
            q = q - self._shift(K, p, TT)[0]
        return self._join(q, p, x)

    def _hamiltonian(self, t, x: Tensor) -> Tensor:
        # Composition theorem, from the last block back: H = H_last(x) + H_prev(last^-1 x) + ...
        q, p, TT = self._split(t, x)
        total = self.energy_offset
        for K, V in zip(reversed(self.K), reversed(self.V), strict=True):
            shift, dtV, _ = self._shift(V, q, TT)
            total = total + dtV
            p = p + shift
            shift, dtK, _ = self._shift(K, p, TT)
            total = total + dtK
            q = q - shift
        return total.expand(q.shape[1]).reshape(x.shape[:-1])

    def hamiltonian(self, t: Tensor | float, x: Tensor) -> Tensor:
        r"""The network's own Hamiltonian :math:`H_{\mathcal N}(t, x)`, shape ``x.shape[:-1]``.

        Built by the composition theorem; for :math:`t` outside :math:`[0, \Delta t)` it is
        the periodic extension that generates the long-time flow. It includes a learnable
        constant (:attr:`energy_offset`) which changes no flow.

        :param t: time(s): a float or a tensor broadcasting to ``x.shape[:-1]``.
        :param torch.Tensor x: states, shape ``(..., 2n)``.
        """
        self._check_state(x, "x")
        t = _check_times(t, x)
        return self._hamiltonian(t - self.dt * torch.floor(t / self.dt), x)

    @property
    def vector_field(self) -> SympFlowVectorField:
        r"""The learned system's ``func(t, y)`` :math:`= J\nabla_x H_{\mathcal N}(t, y)`.

        An ``nn.Module``, so it works with ``torchdiffeq.odeint`` and ``odeint_adjoint``.
        """
        return SympFlowVectorField(self)

    # -- weights -------------------------------------------------------------------------
    def save(self, path: str | Path, **metadata) -> None:
        """Save the weights and a model card with the configuration and JSON-able ``metadata``.

        The format of every model of the package
        (:func:`~deepinv_dynnets.pretrained.save_weights`, kind ``"sympflow"``): the plain
        state dict in ``path`` (``.pt``) and the card beside it (``.json``).

        :param str | pathlib.Path path: the weights file; must end in ``.pt``.
        :param metadata: JSON-able card entries (command, evaluation, ...).
        """
        save_weights(self, path, kind="sympflow", config=self.config, **metadata)

    @classmethod
    def from_pretrained(
        cls, name: str | Path, map_location: str | torch.device = "cpu"
    ) -> SympFlow:
        """Load shipped weights by name (``"harmonic-oscillator"``, ``"henon-heiles"``,
        ``"pendulum"``, ``"kepler"``) or a path.

        Nothing is downloaded: names resolve to files inside the package. Files written by
        :meth:`save`, and the single-file checkpoints of version 0.1, are read (with
        ``weights_only=True``); the card's entries other than the format's own are in
        ``flow.metadata``.

        :Examples:

            >>> from deepinv_dynnets import SympFlow
            >>> flow = SympFlow.from_pretrained("henon-heiles")
            >>> flow.dim, flow.metadata["system"]
            (4, 'henon-heiles')
        """
        try:
            path = resolve_weights(name, "sympflow")
        except ValueError as err:
            raise ValueError(
                f"name must be one of {sorted(SHIPPED['sympflow'])} or a path to a SympFlow "
                f"weights file, got {str(name)!r}"
            ) from err
        try:
            state, card = load_weights(path, kind="sympflow", map_location=map_location)
        except ValueError as err:
            raise ValueError(f"not a SympFlow weights file: {err}") from err
        flow = build_from_card(cls, state, card, path)
        flow.metadata = {k: v for k, v in card.items() if k not in _CARD_FORMAT_KEYS}
        return flow.eval()


def _check_state_shape(y: Tensor, name: str, dim: int) -> None:
    """Shape and dtype only, no scan of the values (cheap enough for every solver stage)."""
    if not isinstance(y, Tensor) or not torch.is_floating_point(y):
        what = f"dtype {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {what}")
    if y.dim() == 0 or y.shape[-1] != dim:
        raise ValueError(
            f"{name} must have last dimension {dim} (positions q then momenta p), "
            f"got shape {tuple(y.shape)}"
        )


def _check_times(t: Tensor | float, x: Tensor) -> Tensor:
    """``t`` as a tensor like ``x``, or a ``ValueError`` if it is not real and finite or does
    not broadcast to ``x.shape[:-1]``."""
    if not isinstance(t, Tensor):
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise ValueError(f"t must be a real number or a tensor, got {type(t).__name__}")
        t = torch.tensor(float(t), dtype=x.dtype, device=x.device)
    if t.is_complex() or not torch.is_floating_point(t):
        raise ValueError(f"t must be a real floating-point time, got dtype {t.dtype}")
    try:
        shape = torch.broadcast_shapes(t.shape, x.shape[:-1])
    except RuntimeError:
        shape = None
    if shape != x.shape[:-1]:
        raise ValueError(
            f"t must be a number or a tensor broadcasting to the batch shape "
            f"{tuple(x.shape[:-1])} of the states, got shape {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t contains NaN or Inf values")
    return t.to(dtype=x.dtype, device=x.device)


class SympFlowVectorField(nn.Module):
    r"""The vector field :math:`f(t, y) = J\nabla_y H_{\mathcal N}(t, y)` of a :class:`SympFlow`.

    A ``func(t, y)`` for ``torchdiffeq.odeint`` / ``odeint_adjoint``: integrating it from
    ``0`` to ``t`` reproduces ``flow.network(t, y0)`` up to the solver's tolerance. Beyond
    :math:`\Delta t` it is the periodic extension that generates the long-time flow; it
    jumps at the multiples of :math:`\Delta t`, so tell an adaptive solver where, e.g.
    ``odeint(flow.vector_field, y0, t, options={"jump_t": flow.dt * torch.arange(1, m)})``.

    :param SympFlow flow: the flow.

    :Examples:

        >>> import torch
        >>> from torchdiffeq import odeint
        >>> from deepinv_dynnets import SympFlow
        >>> flow = SympFlow(dim=2, n_layers=1, width=4).double()
        >>> y0 = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
        >>> t = torch.tensor([0.0, 0.5], dtype=torch.float64)
        >>> y = odeint(flow.vector_field, y0, t, rtol=1e-10, atol=1e-10)
        >>> bool(torch.allclose(y[-1], flow.network(0.5, y0), atol=1e-7))
        True
    """

    def __init__(self, flow: SympFlow):
        super().__init__()
        self.flow = flow

    def forward(self, t: Tensor | float, y: Tensor) -> Tensor:
        r""":math:`J\nabla_y H_{\mathcal N}(t, y)`, shape ``y.shape``; ``t`` a float or a tensor
        broadcasting to ``y.shape[:-1]``. Shapes and dtypes are checked, values are not (this
        runs at every solver stage)."""
        _check_state_shape(y, "y", self.flow.dim)
        self.flow._check_state_dtype(y, "y")
        t = _check_times(t, y)
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            y_ = y if y.requires_grad else y.detach().requires_grad_(True)
            t = t - self.flow.dt * torch.floor(t / self.flow.dt)
            H = self.flow._hamiltonian(t, y_).sum()
            (grad,) = torch.autograd.grad(H, y_, create_graph=create_graph)
        return apply_J(grad)
