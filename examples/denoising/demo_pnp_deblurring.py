r"""
PnP deblurring with a convergence guarantee
====================================================================================================

Plug-and-Play proximal gradient descent replaces the proximal step of a regulariser by a
denoiser :math:`D`,

.. math::

    x_{k+1} = D\big(x_k - \gamma A^\top(Ax_k - y),\ \sigma\big).

If :math:`D` is averaged and :math:`0 < \gamma < 2/\|A\|^2`, the iteration map is
averaged, so the iterates converge (to a fixed point, when one exists) with a
non-increasing residual :math:`\|x_{k+1} - x_k\|` :footcite:p:`combettes2015compositions`.
:func:`deepinv_dynnets.convergent_pnp` checks these conditions before the run (the
*certificate*) and watches the residual during it (the *monitor*). A certified run is
accelerated by a safeguarded Anderson scheme that keeps the guarantee
:footcite:p:`zhang2020globally,fu2020anderson`; we compare it with the plain iteration.

We deblur a built-in image blurred by one of the motion-blur kernels of
:footcite:t:`levin2009understanding` with noise of level 12.75/255, comparing

* the certified :class:`~deepinv_dynnets.EulerDenoiser` (shipped weights), firmly
  non-expansive (:math:`\alpha = 1/2`, accepted by every PnP algorithm) and with
  :math:`\alpha = 0.95` (accepted by PGD and HQS, a better denoiser), in PGD and in HQS;
* a DnCNN trained by the same script, on the same data, with about the same compute: no
  certificate, run long to see whether it settles;
* deepinv's :class:`~deepinv.models.BM3D` denoiser in the same solver (PnP-BM3D, the
  usual anchor of the PnP literature; no certificate);
* deepinv's total-variation prior, a classical convex baseline.
"""

import time
from pathlib import Path

import deepinv as dinv
import matplotlib.pyplot as plt
import numpy as np
import torch
from skimage import data

from deepinv_dynnets import EulerDenoiser, convergent_pnp
from deepinv_dynnets.models import load_dncnn

torch.manual_seed(0)
metric = dinv.loss.metric.PSNR(max_pixel=1.0)


def psnr(estimate, target):
    return metric(estimate, target)


# %%
# The problem
# -----------
# The Levin kernels live in the workspace's data folder; without it we fall back on a
# motion-blur kernel drawn by deepinv with a fixed seed (the title of the figure says
# which one was used).
candidates = [
    base / "shared/data/kernels/levin09.npz" for base in (Path.cwd(), *Path.cwd().parents)
]
levin = next((path for path in candidates if path.is_file()), None)
if levin is not None:
    kernel = torch.from_numpy(np.load(levin)["kernel_1"]).float()
    kernel_name = "Levin kernel 1"
else:
    gen = dinv.physics.generator.MotionBlurGenerator((17, 17), rng=torch.Generator().manual_seed(0))
    kernel = gen.step(1, seed=0)["filter"][0, 0]
    kernel_name = "deepinv motion kernel (seed 0)"
kernel = (kernel / kernel.sum())[None, None]

x = torch.from_numpy(data.camera()[160:288, 192:320].astype("float32") / 255)[None, None]
noise = 12.75 / 255
physics = dinv.physics.BlurFFT(
    (1, 128, 128),
    filter=kernel,
    noise_model=dinv.physics.GaussianNoise(noise, rng=torch.Generator().manual_seed(0)),
)
y = physics(x)
print(f"{kernel_name}; blurred and noisy: {psnr(y.clamp(0, 1), x).item():.2f} dB")

# %%
# Certified PnP with the Euler denoisers
# --------------------------------------
# With only ``physics`` and the denoiser given, the stepsize and the denoiser's noise
# level default to values derived from the operator norm and the noise level. PGD only
# needs :math:`\alpha < 1`: the shipped :math:`\alpha = 0.95` weights are certified for it
# as well as the firmly non-expansive ones (DRS and ADMM would refuse them), and denoise
# better. The runs stop at a relative fixed-point residual of :math:`10^{-5}`.
x_euler, monitors, seconds = {}, {}, {}
for alpha in (0.5, 0.95):
    euler = EulerDenoiser(in_channels=1, alpha=alpha, pretrained="default")
    model, certificate = convergent_pnp(physics, euler, max_iter=300)
    print(certificate)
    tic = time.perf_counter()
    with torch.no_grad():
        x_euler[alpha] = model(y, physics)
    seconds[alpha] = time.perf_counter() - tic
    monitors[alpha] = model.monitor
    print(model.monitor.report())
    print(f"{seconds[alpha]:.1f} s")

# %%
# Plain versus accelerated
# ------------------------
# The runs above used the default safeguarded Anderson acceleration: an extrapolation from
# the last iterates is accepted only if it does not increase the fixed-point residual (and
# stays within a summable budget), otherwise the plain averaged step is taken, so the
# convergence theorem still holds and the monitor checks it step by step. The same
# :math:`\alpha = 0.95` run without it:
model_plain, _ = convergent_pnp(physics, euler, max_iter=300, acceleration=False)
tic = time.perf_counter()
with torch.no_grad():
    x_plain = model_plain(y, physics)
seconds_plain = time.perf_counter() - tic
report_plain, report_fast = model_plain.monitor.report(), monitors[0.95].report()
print(report_plain)
print(
    f"to relative residual 1e-5: plain {report_plain.iterations} iterations in "
    f"{seconds_plain:.1f} s, accelerated {report_fast.iterations} iterations "
    f"({report_fast.rejected} rejected candidates) in {seconds[0.95]:.1f} s; largest pixel "
    f"difference of the two restorations: {(x_plain - x_euler[0.95]).abs().max().item():.1e}"
)

# %%
# HQS, the default of ``dynnets deblur``
# --------------------------------------
# Half-quadratic splitting alternates the proximal step of the data term with the
# denoiser. With the :math:`\alpha = 0.95` weights it is certified too, and its defaults
# (a proximal weight of :math:`8/\|A\|^2` and the denoiser at twice the measurement's
# noise level) were tuned on other images and kernels than this one (the PnP guide's
# "Defaults" table), so it is what ``dynnets deblur`` runs.
model_hqs, certificate_hqs = convergent_pnp(physics, euler, "HQS", max_iter=300)
print(certificate_hqs)
tic = time.perf_counter()
with torch.no_grad():
    x_hqs = model_hqs(y, physics)
seconds_hqs = time.perf_counter() - tic
print(model_hqs.monitor.report())
print(f"{seconds_hqs:.1f} s")

# %%
# DnCNN in the same solver, same parameters
# -----------------------------------------
# The certificate says no (the network has no certified averagedness constant), so the
# run is not accelerated; we run it without early stopping for 100 iterations and let the
# monitor judge.
dncnn = load_dncnn("dncnn-gray")
model_dncnn, certificate_dncnn = convergent_pnp(
    physics,
    dncnn,
    stepsize=certificate.stepsize,
    sigma_denoiser=noise,
    max_iter=100,
    early_stop=False,
)
print(certificate_dncnn)
with torch.no_grad():
    x_dncnn = model_dncnn(y, physics)
monitor_dncnn = model_dncnn.monitor
print(monitor_dncnn.report())

# %%
# PnP-BM3D in the same solver
# ---------------------------
# deepinv's BM3D (the ``bm3d`` package) at the measurement's noise level, the same
# stepsize, 30 plain iterations (no certificate, so no acceleration). BM3D takes seconds
# per call, so the run is cut short before its residual settles (see the curves below):
# its PSNR here is a lower bound of what it reaches.
try:
    bm3d = dinv.models.BM3D()
    model_bm3d, certificate_bm3d = convergent_pnp(
        physics,
        bm3d,
        stepsize=certificate.stepsize,
        sigma_denoiser=noise,
        max_iter=30,
        early_stop=False,
    )
    tic = time.perf_counter()
    with torch.no_grad():
        x_bm3d = model_bm3d(y, physics)
    seconds_bm3d = time.perf_counter() - tic
    print(certificate_bm3d)
    print(f"PnP-BM3D: {model_bm3d.monitor.report().iterations} iterations, {seconds_bm3d:.1f} s")
except ImportError as err:  # the bm3d package (docs and bench extras) is not installed
    x_bm3d = None
    print(f"PnP-BM3D skipped: {err}")

# %%
# Total variation (deepinv), a convex baseline
# --------------------------------------------
# PGD on :math:`\frac12\|Ax - y\|^2 + \lambda\,\mathrm{TV}(x)`; the weight :math:`\lambda`
# is picked from a small grid by PSNR (an oracle choice, favourable to TV).
best = None
for lam in (0.005, 0.01):
    tv = dinv.optim.PGD(
        prior=dinv.optim.TVPrior(n_it_max=50),
        data_fidelity=dinv.optim.L2(),
        lambda_reg=lam,
        stepsize=certificate.stepsize,
        max_iter=100,
        early_stop=True,
    )
    with torch.no_grad():
        x_tv = tv(y, physics)
    value = psnr(x_tv.clamp(0, 1), x).item()
    if best is None or value > best[0]:
        best = (value, lam, x_tv)
print(f"TV: best lambda {best[1]}, {best[0]:.2f} dB")

# %%
# Images and residual curves
# --------------------------
results = {
    "blurred + noise": y,
    "Euler a=0.5 PnP (certified)": x_euler[0.5],
    "Euler a=0.95 PnP (certified)": x_euler[0.95],
    "Euler a=0.95 HQS (certified)": x_hqs,
    "DnCNN PnP (no certificate)": x_dncnn,
    f"TV (lambda = {best[1]})": best[2],
}
if x_bm3d is not None:
    results["PnP-BM3D (no certificate)"] = x_bm3d
for name, img in results.items():
    print(f"{name:28s} {psnr(img.clamp(0, 1), x).item():.2f} dB")
fig, axes = plt.subplots(1, len(results) + 1, figsize=(3.2 * (len(results) + 1), 3.8))
axes[0].imshow(x[0, 0], cmap="gray", vmin=0, vmax=1)
axes[0].set_title("ground truth")
for ax, (name, img) in zip(axes[1:], results.items(), strict=True):
    ax.imshow(img[0, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{name}\n{psnr(img.clamp(0, 1), x).item():.2f} dB")
for ax in axes:
    ax.axis("off")
fig.suptitle(kernel_name)
fig.tight_layout()

fig, ax = plt.subplots(figsize=(6, 4))
for alpha, monitor in monitors.items():
    monitor.plot(ax, label=f"Euler alpha = {alpha}, accelerated ({seconds[alpha]:.1f} s)")
model_plain.monitor.plot(ax, label=f"Euler alpha = 0.95, plain ({seconds_plain:.1f} s)")
model_hqs.monitor.plot(ax, label=f"Euler alpha = 0.95, HQS ({seconds_hqs:.1f} s)")
monitor_dncnn.plot(ax, label="DnCNN (no certificate)")
if x_bm3d is not None:
    model_bm3d.monitor.plot(ax, label=f"PnP-BM3D (no certificate, {seconds_bm3d:.1f} s)")
ax.set_title("fixed-point residual per iteration")
fig.tight_layout()
plt.show()

# %%
# References
# ----------
#
# .. footbibliography::
