r"""One certified PnP deblurring experiment: blur, add noise, solve, score."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import deepinv as dinv
import torch
from torch import Tensor, nn

from ..metrics import psnr
from .certificate import PnPCertificate
from .monitor import ConvergenceMonitor, MonitorReport
from .solvers import convergent_pnp

__all__ = ["DeblurResult", "blur_physics", "deblur"]


@dataclass
class DeblurResult:
    """What :func:`deblur` measured.

    :param torch.Tensor x: the ground truth ``(B, C, H, W)``.
    :param torch.Tensor y: the blurred, noisy measurement.
    :param torch.Tensor x_hat: the PnP reconstruction.
    :param PnPCertificate certificate: checked before the run.
    :param ConvergenceMonitor monitor: the residuals of the run.
    :param MonitorReport report: ``monitor.report()``.
    :param float psnr_blurred: mean PSNR of ``y`` (clipped to [0, 1]) in dB.
    :param float psnr: mean PSNR of ``x_hat`` (clipped to [0, 1]) in dB.
    :param float seconds: wall time of the iterations (the certificate excluded).
    """

    x: Tensor
    y: Tensor
    x_hat: Tensor
    certificate: PnPCertificate
    monitor: ConvergenceMonitor
    report: MonitorReport
    psnr_blurred: float
    psnr: float
    seconds: float


def blur_physics(
    x: Tensor, kernel: Tensor, noise_level: float, *, seed: int = 0
) -> dinv.physics.BlurFFT:
    r"""The physics of :func:`deblur`: circular blur and seeded Gaussian noise.

    A deepinv ``BlurFFT`` with ``kernel`` on every channel and ``GaussianNoise`` of level
    ``noise_level`` drawn from ``seed``.

    Calling it on ``x`` gives the measurement :func:`deblur` reconstructs from, so another
    solver (a TV or wavelet prior, say) can be run on the very same data.

    :param torch.Tensor x: clean images ``(B, C, H, W)`` in :math:`[0, 1]` (sets the shape,
        dtype and device; not modified).
    :param torch.Tensor kernel: the blur kernel, ``(h, w)`` or ``(1, 1 or C, h, w)``.
    :param float noise_level: :math:`\sigma_n \ge 0` (images in :math:`[0, 1]`).
    :param int seed: seed of the noise.
    :return: a ``deepinv.physics.BlurFFT`` with its ``GaussianNoise``.
    :raises ValueError: ``x`` not 4-D or not finite, a kernel of the wrong shape or not
        finite, a negative noise level.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.pnp.deblurring import blur_physics
        >>> x = torch.rand(1, 1, 16, 16)
        >>> a = blur_physics(x, torch.ones(3, 3) / 9, 0.03, seed=1)(x)
        >>> b = blur_physics(x, torch.ones(3, 3) / 9, 0.03, seed=1)(x)
        >>> bool((a == b).all()), a.shape
        (True, torch.Size([1, 1, 16, 16]))
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (B, C, H, W), got {shape}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or Inf")
    kernel = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    if kernel.dim() == 2:
        kernel = kernel[None, None]
    c = x.shape[1]
    if kernel.dim() != 4 or kernel.shape[0] != 1 or kernel.shape[1] not in (1, c):
        raise ValueError(
            f"kernel must have shape (h, w), (1, 1, h, w) or (1, {c}, h, w), got "
            f"{tuple(kernel.shape)}"
        )
    if not bool(torch.isfinite(kernel).all()):
        raise ValueError("kernel contains NaN or Inf")
    noise_level = float(noise_level)
    if not math.isfinite(noise_level) or noise_level < 0:
        raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
    rng = torch.Generator(device=x.device).manual_seed(int(seed))
    return dinv.physics.BlurFFT(
        tuple(x.shape[1:]),
        filter=kernel.expand(1, c, *kernel.shape[-2:]).contiguous(),
        noise_model=dinv.physics.GaussianNoise(noise_level, rng=rng),
        device=x.device,
    )


def deblur(
    x: Tensor,
    kernel: Tensor,
    noise_level: float,
    denoiser: nn.Module,
    algorithm: str = "PGD",
    *,
    seed: int = 0,
    **options,
) -> DeblurResult:
    r"""Blur ``x`` circularly, add Gaussian noise, reconstruct with :func:`convergent_pnp`.

    The measurement is :math:`y = k * x + \sigma_n \varepsilon` (deepinv ``BlurFFT``, the
    same kernel on every channel, noise drawn from ``seed``); the reconstruction is
    ``convergent_pnp(physics, denoiser, algorithm, **options)`` run on :math:`y`, with its
    certificate and monitor. Used by ``dynnets deblur``, ``dynnets demo`` and
    ``benchmarks/pnp_deblur.py``.

    :param torch.Tensor x: clean images ``(B, C, H, W)`` in :math:`[0, 1]` (not modified).
    :param torch.Tensor kernel: the blur kernel, ``(h, w)`` or ``(1, 1 or C, h, w)``.
    :param float noise_level: :math:`\sigma_n \ge 0` (images in :math:`[0, 1]`).
    :param torch.nn.Module denoiser: ``denoiser(x, sigma)``.
    :param str algorithm: ``"PGD"``, ``"HQS"``, ``"DRS"`` or ``"ADMM"``.
    :param int seed: seed of the noise.
    :param options: passed to :func:`convergent_pnp` (``stepsize``, ``max_iter``, ...).
    :return: a :class:`DeblurResult`.
    :raises ValueError: ``x`` not 4-D or not finite, a kernel of the wrong shape or not
        finite, a negative noise level.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import EulerDenoiser
        >>> from deepinv_dynnets.pnp import deblur
        >>> x = torch.rand(1, 1, 16, 16)
        >>> result = deblur(x, torch.ones(3, 3) / 9, 0.03,
        ...                 EulerDenoiser(width=4, hidden=4, n_blocks=2), max_iter=20)
        >>> result.certificate.guaranteed, result.report.monotone, result.x_hat.shape
        (True, True, torch.Size([1, 1, 16, 16]))
    """
    physics = blur_physics(x, kernel, noise_level, seed=seed)
    y = physics(x)
    model, certificate = convergent_pnp(physics, denoiser, algorithm, **options)
    tic = time.perf_counter()
    with torch.no_grad():
        x_hat = model(y, physics)
    seconds = time.perf_counter() - tic
    return DeblurResult(
        x=x,
        y=y,
        x_hat=x_hat,
        certificate=certificate,
        monitor=model.monitor,
        report=model.monitor.report(),
        psnr_blurred=float(psnr(y.clamp(0, 1), x).mean()),
        psnr=float(psnr(x_hat.clamp(0, 1), x).mean()),
        seconds=seconds,
    )
