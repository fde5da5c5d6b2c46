r"""
Applying a denoiser 60 times: stable by construction
====================================================================================================

A denoiser used inside an iterative scheme is applied again and again to its own output.
The :class:`deepinv_dynnets.EulerDenoiser` is averaged, so the sequence
:math:`x_{k+1} = D(x_k, \sigma)` is a Krasnosel'skii–Mann iteration: it can only move
towards the denoiser's fixed points, with steps that never grow,

.. math::

    \|x_{k+2} - x_{k+1}\| = \|D(x_{k+1}) - D(x_k)\| \le \|x_{k+1} - x_k\|.

A DnCNN has no such guarantee: its repeated application can drift. This is the
experiment of :footcite:t:`sherry2024designing` with the weights shipped in this
package: the Euler denoiser and a DnCNN trained by the same script, on the same data,
with the same budget (see :doc:`/user_guide/model_cards`).

Both lose detail as they are applied again and again (a denoiser is not a projection: it
keeps smoothing, and the PSNR falls for both). What differs is whether the sequence
settles: the Euler denoiser's steps :math:`\|x_{k+1} - x_k\|` can only shrink, so the
iterates converge to one of its fixed points; the DnCNN's steps are free to grow.
"""

import matplotlib.pyplot as plt
import torch
from skimage import data

from deepinv_dynnets import EulerDenoiser
from deepinv_dynnets.metrics import psnr
from deepinv_dynnets.models import load_dncnn

torch.manual_seed(0)

# %%
# A built-in image (scikit-image's camera, centre crop) with noise of level 25/255.
x = torch.from_numpy(data.camera()[192:320, 192:320].astype("float32") / 255)[None, None]
sigma = 25 / 255
y = x + sigma * torch.randn_like(x)

denoisers = {
    "EulerDenoiser (certified)": EulerDenoiser(in_channels=1, pretrained="default"),
    "DnCNN (same budget)": load_dncnn("dncnn-gray"),
}

# %%
# Apply each denoiser 60 times, recording the PSNR and the size of each step.
n_applications = 60
history = {}
with torch.no_grad():
    for name, denoiser in denoisers.items():
        z, values, steps, snapshots = y, [], [], {}
        for k in range(1, n_applications + 1):
            z_next = denoiser(z, sigma)
            steps.append(float((z_next - z).norm()))
            z = z_next
            values.append(float(psnr(z.clamp(0, 1), x)))
            if k in (1, 10, n_applications):
                snapshots[k] = z.clamp(0, 1)
        history[name] = (values, steps, snapshots)
        print(
            f"{name:26s} PSNR after 1: {values[0]:.2f} dB, after {n_applications}: "
            f"{values[-1]:.2f} dB; steps non-increasing: "
            f"{all(b <= a * (1 + 1e-4) for a, b in zip(steps[:-1], steps[1:], strict=True))}"
        )

# %%
# PSNR and step size along the applications.
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for name, (values, steps, _) in history.items():
    axes[0].plot(range(1, n_applications + 1), values, label=name)
    axes[1].semilogy(range(1, n_applications + 1), steps, label=name)
axes[0].set_xlabel("applications k")
axes[0].set_ylabel("PSNR (dB)")
axes[1].set_xlabel("applications k")
axes[1].set_ylabel(r"$\|x_{k+1} - x_k\|$")
axes[0].legend()
fig.tight_layout()

# %%
# The images after 1, 10 and 60 applications.
fig, axes = plt.subplots(2, 4, figsize=(11, 6))
for row, (name, (values, _, snapshots)) in enumerate(history.items()):
    axes[row, 0].imshow(y[0, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
    axes[row, 0].set_title("noisy input")
    for col, (k, img) in enumerate(snapshots.items(), start=1):
        axes[row, col].imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_title(f"{name.split(' ')[0]}, k = {k}\n{values[k - 1]:.2f} dB")
for ax in axes.ravel():
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# References
# ----------
#
# .. footbibliography::
