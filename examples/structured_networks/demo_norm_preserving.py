r"""
Norm preservation: architecture versus regulariser
====================================================================================================

There are two ways to ask a network :math:`\mathcal N` for the property
:math:`\|\mathcal N(x)\| = \|x\|` :footcite:p:`celledoni2023dynamical`. The first
restricts the architecture: any network :math:`\tilde{\mathcal N}` gives the
norm-preserving map

.. math::

    \mathcal N(x) = \|x\|\,\frac{\tilde{\mathcal N}(x)}{\|\tilde{\mathcal N}(x)\|},

implemented by :class:`deepinv_dynnets.NormPreservingNet`. The second keeps the
architecture and adds to the training loss the regulariser
:math:`\frac1N\sum_i (\|x_i\| - \|\mathcal N(x_i)\|)^2`
(:func:`deepinv_dynnets.norm_preservation_loss`).

In this example we learn a norm-preserving map of :math:`\mathbb R^3` both ways, and with
no constraint at all, and compare the fits and the norm errors, on the training domain
and away from it.
"""

import copy

import matplotlib.pyplot as plt
import numpy as np
import torch

from deepinv_dynnets import FlowNetwork, NormPreservingNet, norm_preservation_loss
from deepinv_dynnets.dynamics import EulerStep, MLPField

torch.manual_seed(0)

# %%
# A norm-preserving target map
# ----------------------------------------------------------------------------------------
#
# The target rotates each point :math:`x` about an axis :math:`k(x)` by an angle
# :math:`\theta(x)`, both depending on :math:`x`: :math:`T(x) = R(x)\,x` with
# :math:`R(x)` given by Rodrigues' formula. A rotation keeps norms, so
# :math:`\|T(x)\| = \|x\|` for every :math:`x`, however the rotation depends on :math:`x`.


def target(x):
    axis = torch.stack([torch.ones_like(x[..., 0]), x[..., 1], x[..., 2] ** 2 + 0.5], dim=-1)
    k = axis / axis.norm(dim=-1, keepdim=True)
    theta = torch.sin(x[..., 0] + x[..., 1] * x[..., 2]).unsqueeze(-1)
    kx = (k * x).sum(-1, keepdim=True)
    return (
        x * torch.cos(theta)
        + torch.cross(k, x, dim=-1) * torch.sin(theta)
        + k * kx * (1 - torch.cos(theta))
    )


def sample_shell(n, r_min, r_max):
    """Points uniformly distributed in the shell r_min <= ||x|| <= r_max."""
    direction = torch.randn(n, 3)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    u = torch.rand(n, 1)
    radius = (r_min**3 + u * (r_max**3 - r_min**3)) ** (1 / 3)
    return radius * direction


# Training and test points in the unit ball; out-of-domain points with norms in [1.5, 3].
x_train = sample_shell(2000, 0.0, 1.0)
y_train = target(x_train)
x_test = sample_shell(2000, 0.0, 1.0)
x_out = sample_shell(2000, 1.5, 3.0)

# %%
# Four models from the same base network
# ----------------------------------------------------------------------------------------
#
# The base network :math:`\tilde{\mathcal N}` is a ResNet: explicit Euler steps of
# one-hidden-layer fields :math:`F(x) = B\tanh(Ax + b)`. All the models start from the
# same initial weights and are trained on the same mini-batches:
#
# * the restricted network ``NormPreservingNet(base)``, trained on the mean squared error;
# * the base network trained on the mean squared error plus
#   :math:`\lambda` times the regulariser, for two values of :math:`\lambda`;
# * the base network trained on the mean squared error only.

depth, width, h = 6, 32, 0.5


def make_base():
    torch.manual_seed(1)
    return FlowNetwork([EulerStep(MLPField(3, width), h) for _ in range(depth)])


models = {
    "restricted": (NormPreservingNet(make_base()), 0.0),
    "regularised, $\\lambda=1$": (make_base(), 1.0),
    "regularised, $\\lambda=100$": (make_base(), 100.0),
    "plain": (make_base(), 0.0),
}

# %%
# Training
# ----------------------------------------------------------------------------------------
#
# Adam on the loss :math:`\mathrm{MSE} + \lambda\,\mathrm{reg}`, with :math:`\lambda = 0`
# for the restricted and the plain networks.

n_iter, batch_size = 600, 256


def train(net, lam):
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_iter)
    gen = torch.Generator().manual_seed(2)
    for _ in range(n_iter):
        idx = torch.randint(0, len(x_train), (batch_size,), generator=gen)
        x = x_train[idx]
        y = net(x)
        loss = ((y - y_train[idx]) ** 2).mean()
        if lam > 0:
            loss = loss + lam * norm_preservation_loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


for net, lam in models.values():
    train(net, lam)

# %%
# Fit and norm error
# ----------------------------------------------------------------------------------------
#
# We evaluate every model in double precision on the test points (in the training
# domain) and on the out-of-domain points, and measure the test error and the norm error
# :math:`\big|\|\mathcal N(x)\| - \|x\|\big|`.

x_test64, x_out64 = x_test.double(), x_out.double()
results = {}
for name, (net, _) in models.items():
    net64 = copy.deepcopy(net).double()
    res = {}
    with torch.no_grad():
        for where, x in [("in", x_test64), ("out", x_out64)]:
            y = net64(x)
            res[f"mse_{where}"] = ((y - target(x)) ** 2).mean().item()
            res[f"norm_{where}"] = (y.norm(dim=-1) - x.norm(dim=-1)).abs()
    results[name] = res

print("                         |  test MSE        |      norm error (mean / max)")
print("model                    |  in      out     |  in                  out")
for name, r in results.items():
    label = name.replace("$\\lambda", "lambda").replace("$", "")
    print(
        f"{label:<24} | {r['mse_in']:.1e}  {r['mse_out']:.1e} | "
        f"{r['norm_in'].mean():.1e} / {r['norm_in'].max():.1e}   "
        f"{r['norm_out'].mean():.1e} / {r['norm_out'].max():.1e}"
    )

# %%
# On the training domain, the restricted network keeps norms to rounding errors, at most
# a few :math:`10^{-16}`, and it also fits the target best: the constraint is one the
# target satisfies, so it costs nothing. The regulariser brings the norm error down as
# :math:`\lambda` grows, but never to zero, and at the price of a worse fit; the plain
# network has the largest norm error. Out of the domain, no model predicts the values
# of the target (the test errors are large for all of them), but only the restricted
# one still keeps norms. The histograms show the distributions of the norm error on the
# test points (left) and on the out-of-domain points (right); exact zeros are drawn at
# :math:`10^{-17}`.

floor = 1e-17
bins = np.logspace(-17, 1, 73)
fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True, layout="constrained")
for ax, where, title in [
    (axes[0], "in", "test points, $\\|x\\| \\leq 1$"),
    (axes[1], "out", "out of domain, $1.5 \\leq \\|x\\| \\leq 3$"),
]:
    for name, r in results.items():
        err = r[f"norm_{where}"].clamp_min(floor).numpy()
        ax.hist(err, bins=bins, histtype="step", lw=1.8, label=name)
    ax.set_xscale("log")
    ax.set_xticks([1e-16, 1e-12, 1e-8, 1e-4, 1])
    ax.set_xlabel("$|\\,\\|\\mathcal{N}(x)\\| - \\|x\\|\\,|$")
    ax.set_title(title)
axes[0].set_ylabel("points")
axes[0].legend(loc="upper center")
plt.show()

# %%
# Away from the training domain
# ----------------------------------------------------------------------------------------
#
# The regulariser only sees the training points: outside the unit ball nothing keeps the
# regularised networks norm preserving, and their norm errors grow with :math:`\|x\|`.
# The restricted network is norm preserving by construction, at every point. We plot the
# mean and the maximum norm error over random directions, as a function of the
# radius :math:`\|x\|`.

radii = torch.linspace(0.05, 3.0, 60, dtype=torch.float64)
directions = torch.randn(500, 3, dtype=torch.float64)
directions = directions / directions.norm(dim=-1, keepdim=True)
points = radii[:, None, None] * directions[None]  # (radii, directions, 3)

fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
for i, (name, (net, _)) in enumerate(models.items()):
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
        err = (net64(points).norm(dim=-1) - radii[:, None]).abs().clamp_min(floor)
    ax.plot(radii, err.mean(dim=1), color=f"C{i}", label=f"{name} (mean)")
    ax.plot(radii, err.max(dim=1).values, color=f"C{i}", ls="--", lw=0.8)
ax.axvspan(0, 1, color="0.9", zorder=0, label="training domain")
ax.set_yscale("log")
ax.set_xlabel("$\\|x\\|$")
ax.set_ylabel("$|\\,\\|\\mathcal{N}(x)\\| - \\|x\\|\\,|$ (dashed: max)")
ax.legend(loc="center right", fontsize="small")
plt.show()

# %%
# :References:
#
# .. footbibliography::
