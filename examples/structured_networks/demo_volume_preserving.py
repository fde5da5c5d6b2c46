r"""
Volume-preserving networks
====================================================================================================

A residual layer :math:`x \mapsto x + hF(x)` is one explicit Euler step of the ODE
:math:`\dot x = F(x)`. If the field is split into two *shears*,
:math:`x_1 \leftarrow x_1 + h\,g_1(x_2)` then :math:`x_2 \leftarrow x_2 + h\,g_2(x_1)`,
each sub-step is the exact flow of a divergence-free field and has a Jacobian of
determinant one, so the whole network preserves volume for every input and every value
of the weights :footcite:p:`celledoni2023dynamical`.

In this example we learn an area-preserving map of the plane with
:class:`deepinv_dynnets.VolumePreservingNet` and with an unconstrained ResNet of the same
depth, and compare how well each one fits the map and how far each one is from
preserving area.
"""

import copy
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from deepinv_dynnets import FlowNetwork, VolumePreservingNet
from deepinv_dynnets.dynamics import EulerStep, MLPField

torch.manual_seed(0)

# %%
# An area-preserving target map
# ----------------------------------------------------------------------------------------
#
# The quadratic Hénon map :math:`H` first shears the plane,
# :math:`(x, y) \mapsto (x, y - c x^2)`, then rotates it by an angle :math:`\alpha`.
# Both maps have a Jacobian of determinant one, so :math:`H` preserves area. Our target
# is :math:`T = H \circ H`, on points of the square :math:`[-1, 1]^2`.

alpha, c = 1.3, 0.5
cos_a, sin_a = math.cos(alpha), math.sin(alpha)


def henon(z):
    x, y = z[..., 0], z[..., 1]
    w = y - c * x**2
    return torch.stack([cos_a * x - sin_a * w, sin_a * x + cos_a * w], dim=-1)


def target(z):
    return henon(henon(z))


x_train = 2 * torch.rand(2000, 2) - 1
y_train = target(x_train)
x_test = 2 * torch.rand(2000, 2) - 1
y_test = target(x_test)

# %%
# Two networks of the same depth
# ----------------------------------------------------------------------------------------
#
# The volume-preserving network alternates the shears
# :math:`x_1 \leftarrow x_1 + hB_1\tanh(A_1x_2 + b_1)` and
# :math:`x_2 \leftarrow x_2 + hB_2\tanh(A_2x_1 + b_2)`.
# The baseline is a ResNet: explicit Euler steps of unconstrained one-hidden-layer fields
# :math:`F(x) = B\tanh(Ax + b)`. Both have ``depth`` layers of hidden width ``width``
# and roughly the same number of parameters.

depth, width, h = 8, 16, 0.5

vp_net = VolumePreservingNet(2, depth=depth, h=h, width=width)
resnet = FlowNetwork([EulerStep(MLPField(2, width), h) for _ in range(depth)])
nets = {"volume-preserving": vp_net, "ResNet": resnet}

for name, net in nets.items():
    print(f"{name:>18}: {sum(p.numel() for p in net.parameters())} parameters")

# %%
# Training
# ----------------------------------------------------------------------------------------
#
# Both networks are trained with Adam on the mean squared error, with the same
# mini-batches and learning-rate schedule.

n_iter, batch_size = 1000, 256


def train(net):
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_iter)
    gen = torch.Generator().manual_seed(1)
    for _ in range(n_iter):
        idx = torch.randint(0, len(x_train), (batch_size,), generator=gen)
        loss = ((net(x_train[idx]) - y_train[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


for name, net in nets.items():
    train(net)
    with torch.no_grad():
        mse = ((net(x_test) - y_test) ** 2).mean().item()
    print(f"{name:>18}: test MSE = {mse:.2e}")

# %%
# How the maps deform the square
# ----------------------------------------------------------------------------------------
#
# We draw the images of the lines of a regular grid of :math:`[-1, 1]^2`. Each small
# square of the grid is mapped to a curved quadrilateral; for an area-preserving map
# all of them keep the area of the original square. The target's image is drawn in grey
# under each network's image.

lines = []
s = torch.linspace(-1, 1, 200)
for v in torch.linspace(-1, 1, 11):
    lines.append(torch.stack([s, torch.full_like(s, v)], dim=-1))
    lines.append(torch.stack([torch.full_like(s, v), s], dim=-1))

maps = {"target $T = H \\circ H$": target, "volume-preserving network": vp_net, "ResNet": resnet}
fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
with torch.no_grad():
    for ax, (title, f) in zip(axes, maps.items(), strict=True):
        for line in lines:
            if f is not target:
                ax.plot(*target(line).T, color="0.8", lw=1.5)
            ax.plot(*f(line).T, color="C0", lw=0.8)
        ax.set_title(title)
        ax.set_aspect("equal")
fig.tight_layout()
plt.show()

# %%
# Determinant of the Jacobian
# ----------------------------------------------------------------------------------------
#
# We compute the Jacobian :math:`D\mathcal N(x)` on a :math:`100 \times 100` grid in
# double precision. The samples of a batch do not interact, so the row :math:`i` of
# every Jacobian is the gradient of :math:`\sum_n \mathcal N_i(x_n)` with respect to the
# batch. Multiplying the mean determinant by the area of the square, 4, estimates the
# area of the image of the square.

n_grid = 100
g = torch.linspace(-1, 1, n_grid, dtype=torch.float64)
grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), dim=-1).reshape(-1, 2)


def jacobian_det(f, x):
    x = x.clone().requires_grad_(True)
    y = f(x)
    rows = [torch.autograd.grad(y[:, i].sum(), x, retain_graph=True)[0] for i in range(2)]
    jac = torch.stack(rows, dim=1)  # (N, 2, 2)
    return torch.linalg.det(jac).detach()


dets = {"target": jacobian_det(target, grid)}
for name, net in nets.items():
    dets[name] = jacobian_det(copy.deepcopy(net).double(), grid)

for name, det in dets.items():
    err = (det - 1).abs()
    print(
        f"{name:>18}: det J in [{det.min():.6f}, {det.max():.6f}], "
        f"max |det J - 1| = {err.max():.1e}, image area = {4 * det.mean():.4f}"
    )

# %%
# The volume-preserving network keeps :math:`\det D\mathcal N = 1` up to rounding errors,
# everywhere, while the ResNet's determinant drifts away from one, by up to about 20%,
# although its test error is as small: the training data only constrain the values of
# the map, not its Jacobian. The left panels show the error
# :math:`\log_{10}|\det D\mathcal N(x) - 1|` over the square (the thin dark curves of
# the ResNet are where its determinant crosses one); the right panel shows the
# distribution of :math:`|\det D\mathcal N(x) - 1|` on a logarithmic axis (exact zeros
# are drawn at :math:`10^{-17}`).

floor = 1e-17  # exact zeros get this value on the log scale
log_err = {k: torch.log10((dets[k] - 1).abs().clamp_min(floor)) for k in nets}
fig, axes = plt.subplots(
    1, 3, figsize=(14, 4.2), layout="constrained", gridspec_kw={"width_ratios": [1, 1, 1.4]}
)
for ax, (name, err) in zip(axes[:2], log_err.items(), strict=True):
    im = ax.imshow(
        err.reshape(n_grid, n_grid).numpy(),
        origin="lower",
        extent=(-1, 1, -1, 1),
        vmin=-17,
        vmax=0,
        cmap="viridis",
    )
    ax.set_title(name)
    ax.set_xticks([-1, 0, 1])
    ax.set_yticks([-1, 0, 1])
fig.colorbar(im, ax=axes[1], label="$\\log_{10}|\\det J - 1|$")
bins = np.logspace(-17, 0, 60)
for name in nets:
    axes[2].hist((dets[name] - 1).abs().clamp_min(floor).numpy(), bins=bins, alpha=0.7, label=name)
axes[2].set_xscale("log")
axes[2].set_xticks([1e-16, 1e-12, 1e-8, 1e-4, 1])
axes[2].set_xlabel("$|\\det J - 1|$ on the grid")
axes[2].set_ylabel("grid points")
axes[2].legend()
plt.show()

# %%
# :References:
#
# .. footbibliography::
