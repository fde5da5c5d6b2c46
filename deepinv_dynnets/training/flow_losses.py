r"""Losses and data for training learned flows.

Unsupervised, for a known Hamiltonian :math:`H` :footcite:p:`canizares2024hamiltonian`:
the residual of the flow's time derivative against :math:`J\nabla H` and Hamiltonian
matching (:func:`residual_loss`, :func:`hamiltonian_matching_loss`). Supervised, on
trajectories :math:`(x_0, y_1, \dots, y_M)` observed at times :math:`t_m` (one grid per
trajectory, possibly beyond the window :math:`\Delta t`):
:math:`\frac1{NM}\sum \|\mathcal N(t_m, x_0) - y_m\|^2` (:func:`supervised_loss`), and
the HNN baseline's field-matching loss (:func:`hnn_loss`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_finite, check_positive
from ..flows.base import NeuralFlow
from ..flows.hnn import HamiltonianNeuralNetwork
from ..flows.sympflow import SympFlow
from ..flows.symplectic import check_phase_space
from ..systems import HamiltonianSystem

__all__ = [
    "residual_loss",
    "hamiltonian_matching_loss",
    "supervised_loss",
    "hnn_loss",
    "trajectory_data",
]


def residual_loss(flow: NeuralFlow, system: HamiltonianSystem, t: Tensor, x0: Tensor) -> Tensor:
    r"""Mean squared ODE residual :math:`\|\partial_t\mathcal N(t, x_0) - J\nabla H(\mathcal N(t, x_0))\|^2`.

    :param NeuralFlow flow: the learned flow.
    :param HamiltonianSystem system: the true system (its ``forward`` is :math:`J\nabla H`).
    :param torch.Tensor t: times, shape ``x0.shape[:-1]``.
    :param torch.Tensor x0: initial states, shape ``(N, 2n)``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.training import residual_loss
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> flow, system = SympFlow(dim=2, n_layers=2, width=4), HarmonicOscillator()
        >>> x0 = system.sample(8)
        >>> bool(residual_loss(flow, system, torch.rand(8), x0) >= 0)
        True
    """
    y, dy = flow.network_with_time_derivative(t, x0)
    return ((dy - system(t, y)) ** 2).sum(-1).mean()


def hamiltonian_matching_loss(
    flow: SympFlow, system: HamiltonianSystem, t: Tensor, x: Tensor
) -> Tensor:
    r"""Mean squared mismatch :math:`(H_{\mathcal N}(t, x) - H(x))^2` (times in :math:`[0, \Delta t]`).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.training import hamiltonian_matching_loss
        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> flow, system = SympFlow(dim=2, n_layers=2, width=4), HarmonicOscillator()
        >>> bool(hamiltonian_matching_loss(flow, system, torch.rand(8), system.sample(8)) >= 0)
        True
    """
    return ((flow.hamiltonian(t, x) - system.energy(x)) ** 2).mean()


def supervised_loss(flow: NeuralFlow, x0: Tensor, t: Tensor, y: Tensor) -> Tensor:
    r"""Mean squared error :math:`\|\psi(t_m, x_0) - y_m\|^2` over trajectories.

    Each trajectory has its own times (row ``t[i]``, irregular). Times in
    :math:`[0, \Delta t]` use the network :math:`\mathcal N(t_m, x_0)` directly; later ones
    the long-time flow :math:`\psi(t_m) = \mathcal N(r_m)\circ\mathcal N(\Delta t)^{k_m}`
    (:math:`t_m = k_m\Delta t + r_m`), through which the gradient flows. The arguments are
    not checked (see :func:`train_supervised`).

    :param torch.Tensor x0: initial states at time 0, shape ``(N, 2n)``.
    :param torch.Tensor t: times, shape ``(N, M)``, each row non-decreasing, :math:`\ge 0`.
    :param torch.Tensor y: observed states, shape ``(N, M, 2n)``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import SympFlow
        >>> from deepinv_dynnets.training import supervised_loss
        >>> flow = SympFlow(dim=2, n_layers=2, width=4)
        >>> x0, t = torch.randn(4, 2), torch.zeros(4, 1)
        >>> float(supervised_loss(flow, x0, t, x0.unsqueeze(1)))  # N(0, x0) = x0
        0.0
    """
    return ((_predict(flow, x0, t) - y) ** 2).sum(-1).mean()


def _predict(flow: NeuralFlow, x0: Tensor, t: Tensor) -> Tensor:
    r""":math:`\psi(t_{im}, x_{0,i})`, shape ``(N, M, 2n)``, for rows of times ``t`` (N, M)."""
    if float(t.max()) <= flow.dt:  # one window: the network itself, no composition
        return flow.network(t, x0.unsqueeze(1).expand(*t.shape, x0.shape[-1]))
    with torch.no_grad():  # k = floor(t / dt) and r = t - k dt in float64, as the flows do
        k = torch.floor(t.double() / flow.dt)
        r = (t.double() - k * flow.dt).to(t.dtype)
        k = k.long()
    # N(dt)^j x0 for j = 0..max k on the whole batch (a few batched calls rather than one
    # per trajectory and time), then each observation picks its own power.
    powers = [x0]
    for _ in range(int(k.max())):
        powers.append(flow.network(flow.dt, powers[-1]))
    states = torch.stack(powers)[k, torch.arange(x0.shape[0], device=x0.device).unsqueeze(1)]
    return flow.network(r, states)


def check_trajectories(flow: NeuralFlow, x0: Tensor, t: Tensor, y: Tensor) -> None:
    """Check trajectory data for the trainers (shapes, finiteness, times that do not
    decrease along each trajectory); a ``ValueError`` names the argument."""
    check_phase_space(x0, "x0", flow.dim)
    check_phase_space(y, "y", flow.dim)
    if not isinstance(t, Tensor) or not torch.is_floating_point(t):
        raise ValueError(f"t must be a floating-point torch.Tensor, got {type(t).__name__}")
    check_finite(t, "t")
    if x0.dim() != 2 or y.shape[:1] != x0.shape[:1] or t.shape != y.shape[:2]:
        raise ValueError(
            f"expected x0 (N, 2n), t (N, M), y (N, M, 2n); got {tuple(x0.shape)}, "
            f"{tuple(t.shape)}, {tuple(y.shape)}"
        )
    if t.numel() == 0:
        raise ValueError(f"t must hold at least one trajectory and one time, got {tuple(t.shape)}")
    if t.shape[1] > 1 and bool((t.diff(dim=1) < 0).any()):
        rows = (t.diff(dim=1) < 0).any(1).nonzero().squeeze(1)[:5].tolist()
        raise ValueError(
            f"each trajectory's times t[i] must be non-decreasing; rows {rows} are not"
        )


def check_horizon(flow: NeuralFlow, t: Tensor, horizon: float | None) -> float:
    """Check that the times lie in ``[0, horizon]`` (``[0, flow.dt]`` by default) and
    return the horizon, for the trainers."""
    if horizon is None:
        if bool((t < 0).any()) or bool((t > flow.dt * (1 + 1e-6)).any()):
            raise ValueError(
                f"t must lie in [0, flow.dt] = [0, {flow.dt}]; for longer trajectories, "
                "pass horizon (the flow is then composed, see supervised_loss)"
            )
        return flow.dt
    check_positive(horizon, "horizon")
    if bool((t < 0).any()) or bool((t > horizon * (1 + 1e-6)).any()):
        raise ValueError(f"t must lie in [0, horizon] = [0, {horizon}]")
    return float(horizon)


def trajectory_data(
    system: HamiltonianSystem,
    n_trajectories: int = 200,
    n_times: int = 10,
    dt: float = 1.0,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    noisy_start: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Irregularly sampled trajectories for supervised training, from the reference solver.

    Initial states come from ``system.sample``, times are uniform in :math:`(0, \Delta t]`
    (sorted, one draw per trajectory: every trajectory has its own irregular times) and
    the targets are the reference solution (float64, rtol = atol = 1e-10) plus optional
    Gaussian noise of standard deviation ``noise_std``. ``dt`` may exceed the flow's
    window (then train with ``horizon``, see :func:`train_supervised`).

    :param bool noisy_start: also add the noise to the initial states, as when they are
        observations too (the clean ones are then unknown to the learner).

    :return: ``(x0, t, y)`` with shapes ``(N, 2n)``, ``(N, M)``, ``(N, M, 2n)``.

    :Examples:

        >>> from deepinv_dynnets.systems import HarmonicOscillator
        >>> from deepinv_dynnets.training import trajectory_data
        >>> x0, t, y = trajectory_data(HarmonicOscillator(), 4, 3)
        >>> x0.shape, t.shape, y.shape
        (torch.Size([4, 2]), torch.Size([4, 3]), torch.Size([4, 3, 2]))
    """
    if n_trajectories < 1 or n_times < 1:
        raise ValueError(
            f"n_trajectories and n_times must be >= 1, got {n_trajectories}, {n_times}"
        )
    check_positive(dt, "dt")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    x0 = system.sample(n_trajectories, generator=generator, dtype=torch.float64)
    t = torch.rand(n_trajectories, n_times, generator=generator, dtype=torch.float64)
    t = (dt * (1 - t)).sort(dim=1).values  # in (0, dt]
    # One solve for all segments on the union of their times, then pick each segment's own.
    grid, inverse = torch.unique(torch.cat([t.new_zeros(1), t.reshape(-1)]), return_inverse=True)
    solution = system.reference_trajectory(x0, grid)  # (len(grid), N, 2n)
    rows = inverse[1:].reshape(n_trajectories, n_times)
    y = solution[rows, torch.arange(n_trajectories).unsqueeze(1)]
    if noise_std > 0:
        y = y + noise_std * torch.randn(y.shape, generator=generator, dtype=torch.float64)
        if noisy_start:
            x0 = x0 + noise_std * torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    return x0.to(dtype), t.to(dtype), y.to(dtype)


def hnn_loss(hnn: HamiltonianNeuralNetwork, x0: Tensor, t: Tensor, y: Tensor) -> Tensor:
    r"""Finite-difference loss of a Hamiltonian neural network on observed trajectories.

    With the observations :math:`z_0 = x_0, z_1 = y_1, \dots` of a trajectory at the
    times :math:`0 = \tau_0 < \tau_1 < \dots` (row ``t[i]``), gaps
    :math:`\delta_m = \tau_{m+1} - \tau_m`, the field at each midpoint must match the
    finite difference :footcite:p:`greydanus2019hamiltonian`, weighted by the squared gaps:

    .. math::

        \frac{\sum_{i, m}\delta_m^2\,\Big\|J\nabla H_\theta\Big(\frac{z_m + z_{m+1}}2\Big)
        - \frac{z_{m+1} - z_m}{\delta_m}\Big\|^2}{\sum_{i, m}\delta_m^2}.

    The noise of a finite difference grows as :math:`1/\delta_m`; the weights keep the
    irregular short gaps from dominating. Each term is the squared defect of one implicit
    midpoint step from :math:`z_m` to :math:`z_{m+1}`, the integrator the HNN then uses.
    The arguments are not checked (see :func:`train_hnn`).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows import HNN
        >>> from deepinv_dynnets.training import hnn_loss
        >>> hnn = HNN(dim=2, width=8)
        >>> x0, t = torch.randn(4, 2), torch.tensor([[0.1, 0.3]]).expand(4, 2)
        >>> bool(hnn_loss(hnn, x0, t, torch.randn(4, 2, 2)) > 0)
        True

    .. footbibliography::
    """
    z = torch.cat([x0.unsqueeze(1), y], dim=1)  # (N, M + 1, 2n)
    gaps = torch.cat([t.new_zeros(t.shape[0], 1), t], dim=1).diff(dim=1).unsqueeze(-1)
    defects = gaps * hnn.field((z[:, 1:] + z[:, :-1]) / 2) - z.diff(dim=1)
    return (defects**2).sum() / (gaps**2).sum()
