r"""
Hénon–Heiles: Hamiltonian matching and long-time energy behaviour
====================================================================================================

The Hénon–Heiles system is a particle in the plane in the cubic potential

.. math::

    H(x, y, p_x, p_y) = \frac12\left(p_x^2 + p_y^2\right) + \frac12\left(x^2 + y^2\right)
    + x^2 y - \frac{y^3}{3},

a classical example of a Hamiltonian system that is regular at low energy and chaotic near
the escape energy :math:`1/6` :footcite:p:`hairer2006geometric`.

A :class:`deepinv_dynnets.SympFlow` trained on a window :math:`[0, \Delta t]` is the exact
flow of its own Hamiltonian :math:`H_{\mathcal N}`, and its long-time rollout is a
composition of symplectic maps :footcite:p:`canizares2024hamiltonian`. In this example we

* train a small SympFlow briefly, with Hamiltonian matching, to show the API;
* load the flow shipped with the package and roll it out to :math:`T = 100`, a hundred
  times its training window, from 200 initial conditions, next to a classical
  Runge–Kutta method taking the same steps;
* compare the network's own Hamiltonian with the true energy.
"""

import matplotlib.pyplot as plt
import torch
from torchdiffeq import odeint

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows.evaluation import flow_errors
from deepinv_dynnets.systems import HenonHeiles
from deepinv_dynnets.training import train_unsupervised

torch.manual_seed(0)

# %%
# The system
# ----------------------------------------------------------------------------------------
#
# :class:`~deepinv_dynnets.systems.HenonHeiles` is a ``torchdiffeq`` function
# ``f(t, y)`` :math:`= J\nabla H(y)` on states :math:`(x, y, p_x, p_y)`. Its sampler draws
# initial conditions with energy below :math:`1/6` inside the triangular potential well,
# so every orbit stays bounded.

system = HenonHeiles()

# %%
# A short training run
# ----------------------------------------------------------------------------------------
#
# :func:`~deepinv_dynnets.training.train_unsupervised` needs only the system: at
# every epoch it draws fresh points :math:`x_i` in the domain and times
# :math:`t_i \in [0, \Delta t]`, here with :math:`\Delta t = 1`, and takes one Adam step
# on the ODE residual of :math:`\mathcal N` plus the Hamiltonian matching term
# :math:`(H_{\mathcal N}(t_i, x_i) - H(x_i))^2`. This run is kept short for the
# documentation; the flow shipped with the package, loaded below, was trained with the
# same function, longer, with a larger network, and refined by L-BFGS on a fixed set of
# points (``lbfgs_steps``); its model card in the user guide gives the command.

flow_short = SympFlow(dim=4, n_layers=3, width=16, dt=1.0)
record = train_unsupervised(
    flow_short, system, epochs=1500, n_points=256, lr=5e-3, seed=0, progress=False
)
last = record.history[-1]
print(
    f"{len(record.history)} epochs in {record.wall_time_s:.1f} s "
    f"({1e3 * record.seconds_per_epoch:.1f} ms per epoch): "
    f"final residual {last['residual']:.2e}, matching {last['matching']:.2e}"
)

fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for key in ("residual", "matching"):
    ax.semilogy([h[key] for h in record.history], lw=0.8, label=key)
ax.set(xlabel="epoch", ylabel="loss", title="unsupervised training on Hénon–Heiles")
ax.legend()
plt.show()

# %%
# The shipped flow
# ----------------------------------------------------------------------------------------
#
# :meth:`SympFlow.from_pretrained <deepinv_dynnets.SympFlow.from_pretrained>` loads
# weights that ship inside the package (nothing is downloaded). We evaluate in double
# precision.

flow = SympFlow.from_pretrained("henon-heiles").double()
flow_short = flow_short.double()
print(f"shipped flow: {flow.config}, {sum(p.numel() for p in flow.parameters())} parameters")

# %%
# Rollout to T = 100
# ----------------------------------------------------------------------------------------
#
# We roll out 200 initial conditions to :math:`T = 100` with ``flow(y0, t)`` (100
# compositions of :math:`\mathcal N(1, \cdot)`), and compare with a high-accuracy
# reference solution and with the classical fourth-order Runge–Kutta method with the
# same step, :math:`h = 1`, in ``torchdiffeq``.

y0 = system.sample(200, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
t = torch.arange(0, 101, dtype=torch.float64)
reference = system.reference_trajectory(y0, t)
with torch.no_grad():
    rollouts = {
        "SympFlow (shipped)": flow(y0, t),
        "SympFlow (short run)": flow_short(y0, t),
        "RK4, h = 1": odeint(system, y0, t, method="rk4", options={"step_size": 1.0}),
    }

e0 = system.energy(y0)
energy_error = {k: (system.energy(y) - e0).abs().mean(dim=1) for k, y in rollouts.items()}
state_error = {
    k: ((y - reference).norm(dim=-1) / reference.norm(dim=-1)).mean(dim=1)
    for k, y in rollouts.items()
}
for label in rollouts:
    print(
        f"{label:>20}: energy error at t = 1, 10, 100: "
        + ", ".join(f"{energy_error[label][k]:.1e}" for k in (1, 10, 100))
        + "; relative state error: "
        + ", ".join(f"{state_error[label][k]:.1e}" for k in (1, 10, 100))
    )

# %%
# Energy error over time
# ----------------------------------------------------------------------------------------
#
# A Runge–Kutta method is not symplectic. With a step as large as :math:`h = 1` the
# classical RK4 method damps oscillations: for the harmonic part of the potential each
# step multiplies the energy by :math:`|R(i)|^2 \approx 0.988`, where :math:`R` is the
# method's stability function :footcite:p:`hairer2006geometric`. These losses add up into a
# drift, linear in time at first, until most of the energy is gone.
#
# The SympFlow rollout is a composition of symplectic maps. Its energy error comes from
# the training error of one step, and has no sign: it does not add up into a drift. At
# energies below half the escape energy, where the orbits are mostly regular, it stays
# flat. Closer to the escape energy, chaotic orbits wander through the whole energy shell
# and the error wanders slowly with them (right panel).

low = e0 < 1 / 12
print(f"{int(low.sum())} initial conditions with H < 1/12, {int((~low).sum())} with H >= 1/12")
for label, y in rollouts.items():
    drift = system.energy(y[-1]) - e0
    print(
        f"{label:>20}: mean H(y(100)) - H(y0) = {drift.mean():+.1e}, "
        f"mean H(y(100)) / H(y0) = {(system.energy(y[-1]) / e0).mean():.3f}"
    )

fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained", sharey=True)
for label, e in energy_error.items():
    axes[0].loglog(t[1:], e[1:], lw=1.2, label=label)
axes[0].loglog(t[1:], 2e-3 * t[1:], "k:", lw=1, label=r"$\propto t$")
axes[0].set(xlabel="t", ylabel=r"mean $|H(y(t)) - H(y_0)|$", title="all 200 initial conditions")
for k, label in enumerate(("SympFlow (shipped)", "RK4, h = 1")):
    de = (system.energy(rollouts[label]) - e0).abs()
    color = "C0" if k == 0 else "C2"
    axes[1].loglog(t[1:], de[1:, low].mean(dim=1), color=color, lw=1.2, label=f"{label}, H < 1/12")
    axes[1].loglog(
        t[1:], de[1:, ~low].mean(dim=1), color=color, ls="--", lw=1.2, label=f"{label}, H ≥ 1/12"
    )
axes[1].set(xlabel="t", title="by initial energy")
for ax in axes:
    ax.legend(fontsize=8)
plt.show()

# %%
# The state error is another matter: many Hénon–Heiles orbits at these energies are
# chaotic, so any error, even a tiny one, grows exponentially along them, and after
# :math:`t = 100` the relative state error is of order one for every method. We also
# report the errors at :math:`t = 1, 10, 100` with
# :func:`~deepinv_dynnets.flows.evaluation.flow_errors` (mean relative state error, mean
# and largest absolute energy error).

errors = flow_errors(flow, system, y0, times=(1.0, 10.0, 100.0))
for k, s in enumerate(errors["times"]):
    print(
        f"shipped SympFlow, t = {s:5.0f}: relative state error "
        f"{errors['relative_state_error'][k]:.2e}, energy error {errors['energy_error'][k]:.2e} "
        f"(max {errors['energy_error_max'][k]:.2e})"
    )

# %%
# Two orbits
# ----------------------------------------------------------------------------------------
#
# The paths in the :math:`(x, y)` plane of two initial conditions up to :math:`T = 100`,
# from the reference solution and from the shipped SympFlow, on a fine time grid. The
# dashed triangle is the boundary of the potential well, the level :math:`V = 1/6`
# through the three saddles of the potential. At low energy the orbit is regular and
# the SympFlow follows it closely. At the highest sampled energy the orbit is chaotic:
# after a while the two paths part ways, as any two numerical solutions of a chaotic
# orbit do, but the SympFlow path stays in the well, on the right energy shell.

corners = torch.tensor([[0.0, 1.0], [3**0.5 / 2, -0.5], [-(3**0.5) / 2, -0.5], [0.0, 1.0]])
t_fine = torch.linspace(0, 100, 5001, dtype=torch.float64)
chosen = {"regular": int(torch.argmin((e0 - 0.04).abs())), "chaotic": int(torch.argmax(e0))}
fig, axes = plt.subplots(2, 2, figsize=(9, 8.5), layout="constrained")
for row, (kind, i) in enumerate(chosen.items()):
    orbit_ref = system.reference_trajectory(y0[i], t_fine)
    with torch.no_grad():
        orbit_flow = flow(y0[i], t_fine)
    gap = (orbit_flow - orbit_ref).norm(dim=-1)
    print(
        f"{kind} orbit (initial condition {i}, H = {e0[i]:.4f}): distance to the reference "
        f"at t = 10: {gap[500]:.1e}, at t = 100: {gap[-1]:.1e}; "
        f"max energy error {(system.energy(orbit_flow) - e0[i]).abs().max():.1e}"
    )
    for col, (label, orbit) in enumerate((("reference", orbit_ref), ("SympFlow", orbit_flow))):
        ax = axes[row, col]
        ax.plot(orbit[:, 0], orbit[:, 1], lw=0.4)
        ax.plot(corners[:, 0], corners[:, 1], "k--", lw=0.8)
        ax.set(xlabel="x", ylabel="y", title=f"{kind} orbit, H = {e0[i]:.3f}: {label}")
        ax.set_aspect("equal")
plt.show()

# %%
# The network's own Hamiltonian
# ----------------------------------------------------------------------------------------
#
# :meth:`~deepinv_dynnets.SympFlow.hamiltonian` evaluates :math:`H_{\mathcal N}(t, x)`,
# built layer by layer from the composition theorem :footcite:p:`polterovich2001geometry`.
# Hamiltonian matching trained it to be close to the true energy. A constant shift of a
# Hamiltonian changes no flow, so we compare them up to their mean difference, on 1000
# random points of the domain at random times in :math:`[0, 1)`. The mismatch depends on
# :math:`t`: :math:`H_{\mathcal N}` is a time-dependent Hamiltonian, and matching only
# asks it to be close to :math:`H` on average over the window.

x = system.sample(1000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
s = torch.rand(1000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
with torch.no_grad():
    H_true = system.energy(x)
    H_net = {
        "SympFlow (shipped)": flow.hamiltonian(s, x),
        "SympFlow (short run)": flow_short.hamiltonian(s, x),
    }
for label, h in H_net.items():
    gap = h - H_true
    rms = (gap - gap.mean()).pow(2).mean().sqrt()
    print(
        f"{label:>20}: RMS of H_N - H up to a constant = {rms:.2e} "
        f"(mean offset {gap.mean():+.1e}; spread of H itself {H_true.std():.2e})"
    )

fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
gap = H_net["SympFlow (shipped)"] - H_true
axes[0].scatter(H_true, H_net["SympFlow (shipped)"] - gap.mean(), s=3)
axes[0].plot([0, 1 / 6], [0, 1 / 6], "k--", lw=0.8)
axes[0].set(xlabel="H(x)", ylabel=r"$H_{\mathcal{N}}(t, x)$ - mean offset", title="shipped flow")
sc = axes[1].scatter(H_true, gap - gap.mean(), c=s, s=3, cmap="viridis")
axes[1].axhline(0, color="k", lw=0.8)
axes[1].set(xlabel="H(x)", ylabel="mismatch", title="mismatch, coloured by t")
fig.colorbar(sc, ax=axes[1], label="t")
plt.show()

# %%
# :References:
#
# .. footbibliography::
