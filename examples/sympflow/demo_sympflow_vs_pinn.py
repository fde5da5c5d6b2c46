r"""
SympFlow versus the PINN baseline
====================================================================================================

A physics-informed neural network (PINN) can learn the flow of an ODE from its residual
alone, like :class:`deepinv_dynnets.SympFlow`. The baseline
:class:`~deepinv_dynnets.flows.PINNFlow` is an unstructured MLP
:math:`\mathcal N(t, x_0) = x_0 + t\,\mathrm{MLP}(t, x_0)`: it starts at the identity,
and nothing else is built in. A SympFlow is, for every :math:`t` and every value of its
weights, a symplectic map and the exact flow of a Hamiltonian
:footcite:p:`canizares2024hamiltonian`.

In this example we train both with the same loop on the harmonic oscillator
:math:`H(q, p) = (q^2 + p^2)/2`, for the same number of steps, on the same collocation
points, with the same learning rate, and compare their accuracy over a single training
window and over a hundred windows, their energy behaviour, and their symplecticity.
"""

import matplotlib.pyplot as plt
import torch
from torch.autograd.functional import jacobian

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import PINNFlow
from deepinv_dynnets.flows.evaluation import flow_errors
from deepinv_dynnets.flows.symplectic import canonical_J
from deepinv_dynnets.systems import HarmonicOscillator
from deepinv_dynnets.training import train_unsupervised

torch.manual_seed(0)

# %%
# Two models, one training loop
# ----------------------------------------------------------------------------------------
#
# The SympFlow has two layers of potentials of width 16; the PINN is an MLP with three
# hidden layers of width 32, which gives it more parameters. Both have
# :math:`\Delta t = 1`. :func:`~deepinv_dynnets.training.train_unsupervised` takes
# 1000 Adam steps on the ODE residual
# :math:`\|\partial_t\mathcal N(t_i, x_i) - J\nabla H(\mathcal N(t_i, x_i))\|^2` at 256
# fresh collocation points per step (the same points for both, since they come from the
# same seed). The SympFlow also gets the Hamiltonian matching term; the PINN cannot,
# having no Hamiltonian of its own (``matching=False``).

system = HarmonicOscillator()
models = {
    "SympFlow": SympFlow(dim=2, n_layers=2, width=16, dt=1.0),
    "PINN": PINNFlow(dim=2, width=32, depth=3, dt=1.0),
}
records = {}
for label, model in models.items():
    records[label] = train_unsupervised(
        model,
        system,
        epochs=1000,
        n_points=256,
        lr=1e-2,
        matching=label == "SympFlow",
        seed=0,
        progress=False,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{label:>8}: {n_params} parameters, {records[label].wall_time_s:.1f} s, "
        f"final residual loss {records[label].history[-1]['residual']:.2e}"
    )

# %%
# Residual loss
# ----------------------------------------------------------------------------------------
#
# Both reach a residual of the same order: on the training window, the PINN is a
# reasonable approximation of the flow. The curves are smoothed over 20 steps.


def smooth(values, width=20):
    values = torch.tensor(values)
    return values.unfold(0, width, 1).mean(dim=1)


fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for label, record in records.items():
    ax.semilogy(smooth([h["residual"] for h in record.history]), lw=1, label=label)
ax.set(xlabel="epoch", ylabel="residual loss", title="training on the harmonic oscillator")
ax.legend()
plt.show()

# %%
# Accuracy at t = 1, 10 and 100
# ----------------------------------------------------------------------------------------
#
# Beyond :math:`\Delta t` both models compose their time-:math:`\Delta t` map with itself
# (``model(y0, t)``), so :math:`t = 100` is a hundred compositions.
# :func:`~deepinv_dynnets.flows.evaluation.flow_errors` compares with a high-accuracy
# reference solution on 100 test initial conditions, in double precision.

models = {label: model.double() for label, model in models.items()}
y0 = system.sample(100, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
for label, model in models.items():
    errors = flow_errors(model, system, y0, times=(1.0, 10.0, 100.0))
    for k, s in enumerate(errors["times"]):
        print(
            f"{label:>8}, t = {s:5.0f}: relative state error "
            f"{errors['relative_state_error'][k]:.2e}, energy error {errors['energy_error'][k]:.2e}"
        )

# %%
# Energy error over time
# ----------------------------------------------------------------------------------------
#
# The exact flow is a rotation of the phase plane and keeps :math:`H`. The PINN's map has
# no reason to keep any energy: its small errors of one step, always in the same
# direction for a given state, pile up over the compositions and the orbits spiral
# slowly in or out. The SympFlow's map is symplectic, and its energy error stays at the
# level of one step.

t = torch.linspace(0, 100, 1001, dtype=torch.float64)
e0 = system.energy(y0)
fig, axes = plt.subplots(
    1, 2, figsize=(12, 4.6), layout="constrained", gridspec_kw={"width_ratios": [1.5, 1]}
)
circle = torch.linspace(0, 2 * torch.pi, 200)
radius = y0[0].norm()
axes[1].plot(radius * torch.cos(circle), radius * torch.sin(circle), "k--", lw=1, label="exact")
with torch.no_grad():
    for k, (label, model) in enumerate(models.items()):
        y = model(y0, t)
        de = (system.energy(y) - e0).abs().mean(dim=1)
        axes[0].loglog(t[1:], de[1:], lw=1, label=label)
        axes[1].plot(y[:, 0, 0], y[:, 0, 1], lw=0.6, color=f"C{k}", zorder=3 - k, label=label)
        print(
            f"{label:>8}: H(y(100)) / H(y0) for the orbit drawn: "
            f"{system.energy(y[-1, 0]) / e0[0]:.3f}"
        )
axes[0].set(xlabel="t", ylabel=r"mean $|H(y(t)) - H(y_0)|$", title="energy error")
axes[0].legend()
axes[1].set(xlabel="q", ylabel="p", title="one orbit, t in [0, 100]", aspect="equal")
axes[1].legend(loc="center")
plt.show()

# %%
# Symplecticity
# ----------------------------------------------------------------------------------------
#
# A map :math:`\mathcal N` is symplectic when its Jacobian :math:`J_{\mathcal N}`
# satisfies :math:`J_{\mathcal N}^\top J J_{\mathcal N} = J` at every point
# :footcite:p:`hairer2006geometric`. We compute the Jacobian of
# :math:`x \mapsto \mathcal N(0.7, x)` by automatic differentiation at 100 random points,
# in double precision, and measure the defect
# :math:`\|J_{\mathcal N}^\top J J_{\mathcal N} - J\|` (Frobenius norm). For the SympFlow it
# is at the level of rounding errors, whatever the training; for the PINN it is as large
# as its training error allows.

J = canonical_J(1, dtype=torch.float64)
points = system.sample(100, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
for label, model in models.items():
    defects = []
    for x in points:
        jac = jacobian(lambda z, model=model: model.network(0.7, z), x)
        defects.append(torch.linalg.matrix_norm(jac.T @ J @ jac - J))
    defects = torch.stack(defects)
    print(f"{label:>8}: ||J_N^T J J_N - J|| mean {defects.mean():.1e}, max {defects.max():.1e}")

# %%
# :References:
#
# .. footbibliography::
