r"""
A universal approximator from gradient and sphere-preserving flows
====================================================================================================

Any :math:`C^1` vector field :math:`F` on :math:`\mathbb R^d` splits as
:math:`F = \nabla U + X_S`, with :math:`\nabla U` a gradient field and :math:`X_S` a
sphere-preserving field, :math:`\langle x, X_S(x)\rangle = 0` (Presnov decomposition).
Composing flows of the two families therefore gives networks that approximate any
continuous map on a compact set, in :math:`L^p` :footcite:p:`celledoni2023dynamical`.

:class:`deepinv_dynnets.PresnovNet` alternates Euler steps of gradient fields
:math:`\nabla U(x) = A^\top(c \odot \tanh(Ax + b))` and norm-preserving rotation steps
(:class:`deepinv_dynnets.dynamics.SphereStep`) of sphere-preserving fields. In this
example we fit with it a map of the plane that preserves neither volume nor norms, and
check that each sphere step keeps norms exactly.
"""

import matplotlib.pyplot as plt
import torch

from deepinv_dynnets import PresnovNet
from deepinv_dynnets.dynamics import EulerStep, SphereStep

torch.manual_seed(0)

# %%
# A map with no structure
# ----------------------------------------------------------------------------------------
#
# We fit the map
#
# .. math::
#
#     f(x) = \big(x_0^2 - 0.5\,x_1,\ \sin(2x_0) + x_1\big)
#
# on the square :math:`[-1, 1]^2`. Its Jacobian determinant :math:`2x_0 + \cos(2x_0)`
# is not constant, so it does not preserve area, and it does not preserve norms either.
# The determinant even changes sign on the line :math:`x_0 \approx -0.37`, where
# :math:`f` folds the plane onto itself. A network of flow steps is an invertible map
# and cannot fold, which is why the approximation holds in :math:`L^p` (on average)
# rather than uniformly.


def target(x):
    return torch.stack([x[..., 0] ** 2 - 0.5 * x[..., 1], torch.sin(2 * x[..., 0]) + x[..., 1]], -1)


x_train = 2 * torch.rand(2000, 2) - 1
y_train = target(x_train)
x_test = 2 * torch.rand(2000, 2) - 1
y_test = target(x_test)

# %%
# The network
# ----------------------------------------------------------------------------------------
#
# ``depth`` pairs of steps, a gradient step then a sphere step, all with hidden width
# ``width`` and step size ``h``. At initialisation the fields are scaled down so that
# the network starts close to the identity.

depth, width, h = 6, 16, 0.5
net = PresnovNet(2, depth=depth, width=width, h=h)
print(f"{len(net.steps)} steps, {sum(p.numel() for p in net.parameters())} parameters")

# %%
# Training
# ----------------------------------------------------------------------------------------
#
# Adam on the mean squared error, with a cosine learning-rate schedule. We record the
# mini-batch loss at every iteration and the test error every 50 iterations.

n_iter, batch_size = 1000, 256
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_iter)
gen = torch.Generator().manual_seed(1)
train_loss, test_iters, test_loss = [], [], []
for it in range(n_iter):
    idx = torch.randint(0, len(x_train), (batch_size,), generator=gen)
    loss = ((net(x_train[idx]) - y_train[idx]) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    train_loss.append(loss.item())
    if it % 50 == 0 or it == n_iter - 1:
        with torch.no_grad():
            test_iters.append(it)
            test_loss.append(((net(x_test) - y_test) ** 2).mean().item())

print(f"initial test MSE: {test_loss[0]:.2e}")
print(f"final test MSE:   {test_loss[-1]:.2e}")
print(f"target variance:  {y_test.var(dim=0).sum():.2e}")

fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
ax.semilogy(train_loss, lw=0.6, alpha=0.7, label="training loss (mini-batch)")
ax.semilogy(test_iters, test_loss, "o-", ms=3, label="test MSE")
ax.set_xlabel("iteration")
ax.set_ylabel("mean squared error")
ax.legend()
plt.show()

# %%
# Target versus prediction
# ----------------------------------------------------------------------------------------
#
# Left: the images of the lines of a regular grid of the square under the target (grey)
# and under the network (blue). Right: the pointwise error
# :math:`\|\mathcal N(x) - f(x)\|` over the square, with the fold line of :math:`f`
# dashed. On average the error is larger on the left of the fold, in the strip that
# :math:`f` folds back over the image of the rest of the square, where an invertible map
# cannot follow it exactly; the difference is moderate, since the network only needs to
# be close to :math:`f` on average.

s = torch.linspace(-1, 1, 200)
lines = []
for v in torch.linspace(-1, 1, 11):
    lines.append(torch.stack([s, torch.full_like(s, v)], dim=-1))
    lines.append(torch.stack([torch.full_like(s, v), s], dim=-1))

n_grid = 200
g = torch.linspace(-1, 1, n_grid)
grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), dim=-1).reshape(-1, 2)

fig, axes = plt.subplots(
    1, 2, figsize=(10, 5), layout="constrained", gridspec_kw={"width_ratios": [0.55, 1]}
)
with torch.no_grad():
    for line in lines:
        axes[0].plot(*target(line).T, color="0.7", lw=1.5)
        axes[0].plot(*net(line).T, color="C0", lw=0.8)
    err = (net(grid) - target(grid)).norm(dim=-1).reshape(n_grid, n_grid)
axes[0].set_aspect("equal")
axes[0].set_title("grid lines under $f$ (grey)\nand PresnovNet (blue)")
im = axes[1].imshow(err.numpy(), origin="lower", extent=(-1, 1, -1, 1), cmap="magma")
axes[1].axvline(-0.3695, color="w", ls="--", lw=1)
axes[1].text(-0.33, -0.93, "fold", color="w")
axes[1].set_title("error $\\|\\mathcal{N}(x) - f(x)\\|$")
fig.colorbar(im, ax=axes[1], shrink=0.9)
plt.show()

fold = grid[:, 0] < -0.3695
err = err.reshape(-1)
print(f"mean error left of the fold:  {err[fold].mean():.2e}")
print(f"mean error right of the fold: {err[~fold].mean():.2e}")

# %%
# Each sphere step keeps norms
# ----------------------------------------------------------------------------------------
#
# A :class:`~deepinv_dynnets.dynamics.SphereStep` rotates its input in the plane of
# :math:`x` and :math:`X_S(x)`, so it keeps :math:`\|x\|` exactly, whatever its weights.
# We run the test points through the trained network in double precision, and measure
# how much each step changes the norm of its input: the sphere steps do not, to rounding
# errors, while the gradient steps do all the radial work.

net64 = net.double()
x = x_test.double()
with torch.no_grad():
    for i, step in enumerate(net64.steps):
        y = step(x)
        change = (y.norm(dim=-1) - x.norm(dim=-1)).abs().max().item()
        if isinstance(step, SphereStep):
            kind = "sphere step  "
        elif isinstance(step, EulerStep):
            kind = "gradient step"
        else:
            kind = type(step).__name__
        print(f"step {i:2d} ({kind}): max | ||out|| - ||in|| | = {change:.1e}")
        x = y

# %%
# :References:
#
# .. footbibliography::
