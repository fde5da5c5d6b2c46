r"""
Unknown Hamiltonians: learning Hénon–Heiles from noisy trajectories
====================================================================================================

When the Hamiltonian is known, a classical integrator on the true vector field is hard to
beat. A learned flow is for the other case: we have trajectory data, noisy and sampled at
irregular times, but no formula. A :class:`deepinv_dynnets.SympFlow` fitted to such data
is, whatever its weights, a symplectic map and the exact flow of its own Hamiltonian
:math:`H_{\mathcal N}` :footcite:p:`canizares2024hamiltonian`: training it discovers an
energy. Here we learn the Hénon–Heiles system
:math:`H = \tfrac12(p_x^2 + p_y^2 + x^2 + y^2) + x^2y - y^3/3` from data alone and compare
three models trained on the same data:

* a SympFlow, fitted to the observations through its long-time flow;
* a Hamiltonian neural network (HNN) :footcite:p:`greydanus2019hamiltonian`
  (:class:`~deepinv_dynnets.flows.HNN`): an MLP energy :math:`H_\theta` whose field
  :math:`J\nabla H_\theta` is fitted to finite differences of the observations, then
  integrated with the implicit midpoint rule, which is symplectic for any :math:`H_\theta`
  :footcite:p:`hairer2006geometric`;
* the unstructured PINN baseline :class:`~deepinv_dynnets.flows.PINNFlow`, fitted like the
  SympFlow.

All three are then rolled out to :math:`t = 1000`, two thousand times the SympFlow's
window :math:`\Delta t = 1/2`. To keep this page fast (about a minute on one thread) the
networks are small and trained for 1000 steps only.
"""

import time

import matplotlib.pyplot as plt
import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import HNN, PINNFlow
from deepinv_dynnets.systems import HenonHeiles
from deepinv_dynnets.training import train_hnn, train_supervised, trajectory_data

torch.manual_seed(0)
torch.set_num_threads(1)
start_wall, start_cpu = time.perf_counter(), time.process_time()

# %%
# The data
# ----------------------------------------------------------------------------------------
#
# 100 trajectories start at random points of the Hénon–Heiles domain (energy below the
# escape energy :math:`1/6`). Each is observed at 10 times of its own, drawn uniformly in
# :math:`(0, 2]`, and every observation, the initial state included, carries Gaussian
# noise of standard deviation 0.01. The learners never see the clean states, nor the
# Hamiltonian. :func:`~deepinv_dynnets.training.trajectory_data` returns ``(x0, t, y)``
# with shapes ``(100, 4)``, ``(100, 10)`` and ``(100, 10, 4)``: row ``t[i]`` holds the
# irregular times of trajectory ``i``.

system = HenonHeiles()
x0, t_obs, y_obs = trajectory_data(
    system,
    n_trajectories=100,
    n_times=10,
    dt=2.0,
    noise_std=0.01,
    noisy_start=True,
    generator=torch.Generator().manual_seed(0),
)
gaps = torch.cat([torch.zeros(100, 1), t_obs], dim=1).diff(dim=1)
print(f"observation gaps: min {gaps.min():.1e}, median {gaps.median():.2f}, max {gaps.max():.2f}")

# %%
# Training
# ----------------------------------------------------------------------------------------
#
# :func:`~deepinv_dynnets.training.train_supervised` fits the SympFlow (window
# :math:`\Delta t = 1/2`) and the PINN (window 1) to the observations: with
# ``horizon=2.0`` an observation at :math:`t_m` beyond the window is predicted by the
# long-time flow, e.g. :math:`\mathcal N(t_m - 1) \circ \mathcal N(1/2)^{2}` for the
# SympFlow, and the gradient flows through the composition. The half window is what
# ``benchmarks/sympflow_supervised.py`` recommends: with :math:`\Delta t = 1` the learned
# energy lets about three times as many orbits leave the well (see the SympFlow guide). :func:`~deepinv_dynnets.training.train_hnn` fits the HNN's field at the
# midpoint of two consecutive observations to their difference quotient, weighted by the
# squared gap (the noise of a difference quotient grows as one over the gap, and some
# gaps here are tiny). Each takes 1000 full-batch Adam steps.

models = {
    "SympFlow": SympFlow(dim=4, n_layers=3, width=16, dt=0.5),
    "HNN": HNN(dim=4, width=32, depth=2, dt=0.2),
    "PINN": PINNFlow(dim=4, width=32, depth=3, dt=1.0),
}
common = dict(epochs=1000, batch_size=100, lr=5e-3, seed=0, progress=False)
for label, model in models.items():
    if label == "HNN":
        record = train_hnn(model, x0, t_obs, y_obs, **common)
    else:
        record = train_supervised(model, x0, t_obs, y_obs, horizon=2.0, **common)
    n_params = sum(p.numel() for p in model.parameters())
    final = {k: v for k, v in record.history[-1].items() if k not in ("epoch", "lr", "time_s")}
    print(
        f"{label:>8}: {n_params} parameters, {record.wall_time_s:.1f} s, final loss "
        f"{final['loss']:.2e}"
    )

# %%
# Long rollouts
# ----------------------------------------------------------------------------------------
#
# 50 fresh initial conditions, rolled out in double precision to :math:`t = 1000` and
# recorded at every integer time: 2000 compositions of :math:`\mathcal N(1/2)` for the
# SympFlow, 1000 of :math:`\mathcal N(1)` for the PINN, 5000 midpoint steps of size 0.2 for the HNN. The reference is
# the true system integrated by dopri5 (rtol = atol = :math:`10^{-10}`) up to
# :math:`t = 100`. Energy errors need no reference (the true energy is conserved), so they
# run to :math:`t = 1000`; the state of a chaotic Hénon–Heiles orbit is not reproducible
# that far (two reference solutions with tolerances :math:`10^{-8}` and :math:`10^{-10}`
# already differ by order one at :math:`t = 1000`), so state errors stop at
# :math:`t = 100`.

y0 = system.sample(50, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
t = torch.arange(0, 1001, dtype=torch.float64)
reference = system.reference_trajectory(y0, t[:101])
e0 = system.energy(y0)
rollouts = {}
with torch.no_grad():
    for label, model in models.items():
        model.double()
        tic = time.perf_counter()
        rollouts[label] = model(y0, t)
        print(f"{label:>8}: rollout to t = 1000 in {time.perf_counter() - tic:.1f} s")

times = (1, 10, 100, 1000)
rows = {}
for label, y in rollouts.items():
    state = ((y[:101] - reference).norm(dim=-1) / reference.norm(dim=-1)).mean(dim=1)
    energy = (system.energy(y) - e0).abs().mean(dim=1)
    left = (~system.in_potential_well(y)).any(dim=0)  # orbits that ever left the well
    rows[label] = (state, energy, int(left.sum()))
    if left.any():
        print(f"{label}: the orbits that leave the well start at H >= {e0[left].min():.4f}")
true_escaped = int((~system.in_potential_well(reference)).any(dim=0).sum())
print(f"true orbits leaving the well up to t = 100: {true_escaped}/50")
print(f"{'':>8}  mean relative state error     mean |H(y(t)) - H(y0)|")
header = "".join(f"{s:>9}" for s in times[:3]) + "  " + "".join(f"{s:>9}" for s in times)
print(f"{'t':>8}  {header}  escaped")
for label, (state, energy, escaped) in rows.items():
    print(
        f"{label:>8}  "
        + "".join(f"{state[s]:9.1e}" for s in times[:3])
        + "  "
        + "".join(f"{energy[s]:9.1e}" for s in times)
        + f"  {escaped:4d}/50"
    )

# %%
# Energy over time
# ----------------------------------------------------------------------------------------
#
# The SympFlow and the HNN are both symplectic maps, so their energy errors come from
# what they learned, not from the rollout, and they do not drift. Near the escape energy
# :math:`1/6`, though, a learned energy off by a few :math:`10^{-3}` opens the exits of
# the well: the few orbits that escape in each symplectic model (the table's last column)
# all start within about :math:`10^{-2}` of it (the lowest starting energy is printed
# above), and they raise the mean at :math:`t = 1000`. The PINN's map keeps
# no energy: its one-step errors pile up and all its orbits leave the potential well.

fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for label, (_, energy, _) in rows.items():
    ax.loglog(t[1:], energy[1:], lw=1, label=label)
ax.set(xlabel="t", ylabel=r"mean $|H(y(t)) - H(y_0)|$", title="true energy along the rollouts")
ax.legend()
plt.show()

# %%
# The discovered energies
# ----------------------------------------------------------------------------------------
#
# The SympFlow's own Hamiltonian :math:`H_{\mathcal N}(t, x)`
# (:meth:`~deepinv_dynnets.SympFlow.hamiltonian`) and the HNN's :math:`H_\theta(x)` are
# energies learned from data. A Hamiltonian is defined by its flow up to an additive
# constant (for :math:`H_{\mathcal N}`, a function of time), so we compare them with the
# true :math:`H` after subtracting the mean difference, on 500 points of the domain
# (:math:`H_{\mathcal N}` at the middle of its window).

points = system.sample(500, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
true_energy = system.energy(points)
with torch.no_grad():
    learned = {
        r"SympFlow $H_N(0.25, x)$": models["SympFlow"].hamiltonian(0.25, points),
        r"HNN $H_\theta(x)$": models["HNN"].energy(points),
    }
fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained", sharey=True)
for ax, (label, energy) in zip(axes, learned.items(), strict=True):
    energy = energy - (energy - true_energy).mean()
    gap = (energy - true_energy).abs().mean()
    print(f"{label}: mean |learned - true| = {gap:.1e} (true H spans 0 to {true_energy.max():.3f})")
    ax.plot(true_energy, energy, ".", ms=3)
    ax.plot([0, 1 / 6], [0, 1 / 6], "k--", lw=1)
    ax.set(xlabel="true H", title=label)
axes[0].set(ylabel="learned energy (shifted)")
plt.show()

# %%
# Phase portraits
# ----------------------------------------------------------------------------------------
#
# One orbit in the :math:`(y, p_y)` plane, sampled at every integer time up to
# :math:`t = 1000` (a cloud, like a stroboscopic map of the orbit). The true orbit stays
# on its energy shell inside the well; so do the symplectic models, while the PINN's
# spirals out.

i = int(torch.argmin((e0 - 0.06).abs()))
fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained", sharex=True, sharey=True)
for ax, (label, y) in zip(axes, rollouts.items(), strict=True):
    ax.plot(reference[:, i, 1], reference[:, i, 3], "k.", ms=2, zorder=3, label="true, t ≤ 100")
    inside = y[:, i].abs().amax(dim=-1) < 2  # escaped PINN states are out of the picture
    ax.plot(y[inside, i, 1], y[inside, i, 3], ".", ms=1.5, color="C1", label=f"{label}, t ≤ 1000")
    ax.set(xlabel="y", title=label, xlim=(-1, 1.2), ylim=(-0.7, 0.7))
    ax.legend(fontsize=8, loc="upper right")
axes[0].set(ylabel=r"$p_y$")
plt.show()

print(
    f"whole example: {time.perf_counter() - start_wall:.0f} s wall, "
    f"{time.process_time() - start_cpu:.0f} s CPU"
)

# %%
# :References:
#
# .. footbibliography::
