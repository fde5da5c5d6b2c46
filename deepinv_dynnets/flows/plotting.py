"""Figures for flows: trajectories, phase portraits and energy error over time."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["plot_rollout"]


def plot_rollout(
    t: Tensor,
    trajectories: Mapping[str, Tensor],
    energy: Mapping[str, Tensor],
    index: int = 0,
) -> Figure:
    r"""Trajectory, phase portrait and energy error of one or more rollouts.

    :param torch.Tensor t: times ``(T,)``.
    :param trajectories: label -> states ``(T, N, 2n)`` (the first is drawn solid, the
        others dashed); sample ``index`` is drawn.
    :param energy: label -> mean absolute energy error ``(T,)``, drawn on log axes.
    :param int index: which initial condition to draw.
    :return: the figure (three panels: :math:`q(t)`, :math:`(q_1, p_1)`, :math:`|\Delta H|`).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.flows.plotting import plot_rollout
        >>> t = torch.linspace(0, 1, 5)
        >>> fig = plot_rollout(t, {"a": torch.rand(5, 2, 2)}, {"a": torch.rand(5)})
        >>> len(fig.axes)
        3
    """
    fig, (ax_q, ax_phase, ax_e) = plt.subplots(1, 3, figsize=(14, 3.8))
    for k, (label, y) in enumerate(trajectories.items()):
        y = y[:, index].detach().cpu()
        n = y.shape[-1] // 2
        style = "-" if k == 0 else "--"
        for i in range(n):
            ax_q.plot(t.cpu(), y[:, i], style, lw=1, label=f"{label} q{i + 1}")
        ax_phase.plot(y[:, 0], y[:, n], style, lw=0.8, label=label)
    ax_q.set(xlabel="t", ylabel="q", title="positions")
    ax_phase.set(xlabel="q1", ylabel="p1", title="phase portrait")
    for label, e in energy.items():
        ax_e.loglog(t[1:].cpu(), e[1:].detach().cpu().clamp_min(1e-17), lw=1, label=label)
    ax_e.set(xlabel="t", ylabel="mean |H(y(t)) - H(y0)|", title="energy error")
    for ax in (ax_q, ax_phase, ax_e):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
