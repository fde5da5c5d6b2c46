r"""What the ``dynnets`` commands do: the demo, SympFlow rollouts and certified deblurring.

Each function checks all its arguments and its output folder before any work, prints what
it measured and writes its figures to ``out``; the command line only parses arguments and
calls them (their defaults are the command's defaults).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from . import systems
from ._validation import check_channels, check_output_folder, check_positive, check_positive_int
from .data import DEFAULT_BLUR_STD, blur_kernel, builtin_image, center_crop, load_image

__all__ = [
    "SYSTEMS",
    "SHIPPED_SYSTEM",
    "ALGORITHMS",
    "BUILTIN_SIZE",
    "accepted_alpha",
    "run_demo",
    "run_rollout",
    "run_deblur",
    "deblur_figure",
    "rollout_figure",
]

#: The Hamiltonian systems known by name.
SYSTEMS = {
    "harmonic-oscillator": systems.HarmonicOscillator,
    "henon-heiles": systems.HenonHeiles,
    "pendulum": systems.Pendulum,
    "kepler": systems.Kepler,
}
#: The system each shipped flow was trained for.
SHIPPED_SYSTEM = {"harmonic-oscillator": "harmonic-oscillator", "henon-heiles": "henon-heiles"}
#: The PnP algorithms of :func:`~deepinv_dynnets.convergent_pnp`.
ALGORITHMS = ("PGD", "HQS", "DRS", "ADMM")
#: Side of the centre crop of the built-in image that :func:`run_deblur` restores.
BUILTIN_SIZE = 256


def _check_nonnegative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def accepted_alpha(channels: int, algorithm: str) -> float:
    """The largest alpha of the shipped Euler weights that ``algorithm``'s certificate accepts
    (0.95 for PGD and HQS, 0.5 for DRS and ADMM).

    :Examples:

        >>> from deepinv_dynnets.demo import accepted_alpha
        >>> accepted_alpha(1, "PGD"), accepted_alpha(1, "DRS")
        (0.95, 0.5)
    """
    from .models import PRETRAINED
    from .pnp.certificate import accepts_alpha

    shipped = PRETRAINED["default"][check_channels(channels)]
    return max(a for a in shipped if accepts_alpha(algorithm.upper(), a))


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"  figure: {path}")


def deblur_figure(result, path: str | Path) -> None:
    """Ground truth, measurement, reconstruction and residual curve of a
    :class:`~deepinv_dynnets.pnp.DeblurResult`, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def show(ax, img, title):
        img = img[0].clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    show(axes[0], result.x, "ground truth")
    show(axes[1], result.y, f"blurred + noise\n{result.psnr_blurred:.2f} dB")
    show(axes[2], result.x_hat, f"certified PnP\n{result.psnr:.2f} dB")
    result.monitor.plot(axes[3])
    axes[3].set_title(f"residual ({result.report.iterations} iterations)")
    fig.tight_layout()
    _save(fig, Path(path))


def rollout_figure(flow, system, y0: torch.Tensor, T: float, path: str | Path) -> torch.Tensor:
    """Roll ``y0`` out to ``T`` in float64, plot it against the reference solution and save
    the figure to ``path``; return the mean energy error over time."""
    import matplotlib

    matplotlib.use("Agg")
    from .flows.plotting import plot_rollout

    flow = flow.double()
    y0 = y0.to(torch.float64)
    t = torch.linspace(0, T, int(10 * T / flow.dt) + 1, dtype=torch.float64)
    with torch.no_grad():
        ours = flow(y0, t)
    reference = system.reference_trajectory(y0, t)
    e0 = system.energy(y0)
    energy = {
        "SympFlow": (system.energy(ours) - e0).abs().mean(-1),
        "reference (dopri5, 1e-10)": (system.energy(reference) - e0).abs().mean(-1),
    }
    _save(plot_rollout(t, {"SympFlow": ours, "reference": reference}, energy), Path(path))
    return energy["SympFlow"]


def run_rollout(
    flow: str = "henon-heiles",
    system: str | None = None,
    T: float = 100.0,
    n: int = 100,
    seed: int = 0,
    out: str | Path = "dynnets_output",
) -> torch.Tensor:
    """Roll a shipped or saved SympFlow out from ``n`` random initial conditions of its
    system to time ``T``, compare with the reference solver and plot; return the mean
    energy error over time.

    :param str flow: a shipped name (see :data:`SHIPPED_SYSTEM`) or a weights file.
    :param str | None system: a name in :data:`SYSTEMS`; needed for a file.
    :raises ValueError: bad arguments, an output path that is a file, a flow and a system
        of different dimensions.
    """
    from .flows import SympFlow

    check_positive(T, "T")
    n = check_positive_int(n, "n")
    out = check_output_folder(out)
    name = system or SHIPPED_SYSTEM.get(str(flow))
    if name is None:
        raise ValueError("system is needed for a flow loaded from a file")
    if name not in SYSTEMS:
        raise ValueError(f"system must be one of {', '.join(SYSTEMS)}, got {name!r}")
    model = SympFlow.from_pretrained(flow)
    dynamics = SYSTEMS[name]()
    if dynamics.dim != model.dim:
        raise ValueError(f"the flow has dim {model.dim} but {name} has dim {dynamics.dim}")
    y0 = dynamics.sample(n, generator=torch.Generator().manual_seed(seed))
    out.mkdir(parents=True, exist_ok=True)
    curve = rollout_figure(model, dynamics, y0, T, out / f"{name}_rollout.png")
    print(
        f"{name}: mean |H(y(T)) - H(y0)| at T = {T:g}: {curve[-1].item():.3e} "
        f"(max over time {curve.max().item():.3e}, {n} initial conditions)"
    )
    return curve


def run_deblur(
    input: str | Path | None = None,
    channels: int = 1,
    size: int | None = None,
    kernel: str = "gaussian",
    kernel_name: str | None = None,
    blur_std: float = DEFAULT_BLUR_STD,
    noise: float = 12.75,
    denoiser: str = "default",
    alpha: float | None = None,
    algorithm: str = "HQS",
    stepsize: float | None = None,
    sigma_denoiser: float | None = None,
    relaxation: float = 1.0,
    max_iter: int = 200,
    out: str | Path = "dynnets_output",
):
    r"""Blur an image, add noise, restore it with certified PnP, save the result and a figure.

    :param input: an image file (default: the built-in camera or astronaut image,
        centre-cropped to :data:`BUILTIN_SIZE`).
    :param int channels: 1 or 3.
    :param int | None size: side of a centre crop.
    :param str kernel: ``"gaussian"``, ``"motion"`` or a ``.npy``/``.npz`` file (see
        :func:`~deepinv_dynnets.data.blur_kernel`).
    :param float noise: noise standard deviation on the 0-255 scale.
    :param str denoiser: ``"default"`` (the shipped Euler denoiser with the largest alpha
        the algorithm accepts, or ``alpha``), a baseline name or a weights file.
    :param str algorithm: one of :data:`ALGORITHMS`. HQS by default (while
        :func:`~deepinv_dynnets.convergent_pnp` keeps deepinv's PGD): with the tuned
        defaults it restored our held-out deblurring problems 0.2-0.9 dB better than PGD in
        about half the iterations (``benchmarks/results/pnp_deblur_*_hqs*.json``).
    :param float relaxation: :math:`\lambda \in (0, 1]` of the relaxed denoiser
        :math:`(1 - \lambda)I + \lambda D` (beyond 1 the certificate may be lost).
    :param sigma_denoiser: the denoiser's noise level on the 0-255 scale (default: from
        the algorithm).
    :return: the :class:`~deepinv_dynnets.pnp.DeblurResult`.
    :raises ValueError: a bad argument or output folder (before any work).
    """
    from PIL import Image

    from .pnp import deblur
    from .pretrained import load_denoiser

    channels = check_channels(channels)
    noise = _check_nonnegative(noise, "noise")
    max_iter = check_positive_int(max_iter, "max_iter")
    if size is not None:
        size = check_positive_int(size, "size")
    if algorithm.upper() not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if isinstance(relaxation, bool) or not (
        isinstance(relaxation, int | float) and 0 < relaxation <= 1
    ):
        raise ValueError(f"relaxation must lie in (0, 1] for a certificate, got {relaxation!r}")
    if stepsize is not None:
        check_positive(stepsize, "stepsize")
    if sigma_denoiser is not None:
        sigma_denoiser = _check_nonnegative(sigma_denoiser, "sigma_denoiser")
    out = check_output_folder(out)
    if input is not None and not Path(input).is_file():
        raise ValueError(f"input {str(input)!r} is not a file")
    kernel_tensor = blur_kernel(kernel, kernel_name, blur_std)
    if input is None:
        x = builtin_image(channels, size or BUILTIN_SIZE)
        source = "built-in " + ("camera" if channels == 1 else "astronaut") + " image"
    else:
        x, source = center_crop(load_image(input, channels), size), str(input)
    if alpha is None and denoiser == "default":
        alpha = accepted_alpha(channels, algorithm)
    model = load_denoiser(denoiser, channels, alpha)
    options = {"max_iter": max_iter, "relaxation": relaxation}
    if stepsize is not None:
        options["stepsize"] = stepsize
    if sigma_denoiser is not None:
        options["sigma_denoiser"] = sigma_denoiser / 255
    print(
        f"deblurring {source} ({tuple(x.shape)}), kernel {kernel} "
        f"{tuple(kernel_tensor.shape[-2:])}, noise {noise:g}/255, {algorithm}"
    )
    result = deblur(x[None], kernel_tensor, noise / 255, model, algorithm.upper(), **options)
    print(result.certificate)
    print(result.report)
    print(
        f"PSNR: blurred {result.psnr_blurred:.2f} dB -> restored {result.psnr:.2f} dB "
        f"in {result.seconds:.1f} s"
    )
    out.mkdir(parents=True, exist_ok=True)
    image = result.x_hat[0].clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()
    Image.fromarray((image * 255).round().astype("uint8")).save(out / "deblurred.png")
    print(f"  image: {out / 'deblurred.png'}")
    deblur_figure(result, out / "deblur.png")
    return result


def run_demo(
    out: str | Path = "dynnets_output",
    size: int = 160,
    max_iter: int = 100,
    n: int = 200,
    n_timing: int = 10_000,
) -> None:
    """The main job on built-in defaults, with no download: certified PnP deblurring of a
    built-in image, a SympFlow rollout of Henon-Heiles to T = 100 against torchdiffeq, and
    the structured networks' guarantees checked on random inputs.

    :param out: folder for the figures.
    :param int size: side of the deblurred image.
    :param int max_iter: PnP iterations at most.
    :param int n: initial conditions for the accuracy of the rollout.
    :param int n_timing: initial conditions for the speed comparison.
    :raises ValueError: a bad argument or output folder (before any work).
    """
    from .dynamics import EulerStep, FlowNetwork, MLPField, VolumePreservingNet
    from .flows import SympFlow
    from .flows.evaluation import flow_errors, time_rollout
    from .models import EulerDenoiser
    from .pnp import deblur

    size = check_positive_int(size, "size")
    max_iter = check_positive_int(max_iter, "max_iter")
    n, n_timing = check_positive_int(n, "n"), check_positive_int(n_timing, "n_timing")
    out = check_output_folder(out)
    image = builtin_image(1, size)
    print(f"dynnets demo: writing figures to {out.resolve()}")
    out.mkdir(parents=True, exist_ok=True)
    alpha = accepted_alpha(1, "HQS")
    print(
        f"\n[1] Certified Plug-and-Play deblurring: built-in camera image ({size} x {size}), "
        f"motion blur, noise 12.75/255, shipped Euler denoiser (alpha {alpha:g}), PnP-HQS"
    )
    tic = time.perf_counter()
    result = deblur(
        image[None],
        blur_kernel("motion"),
        12.75 / 255,
        EulerDenoiser(in_channels=1, alpha=alpha, pretrained="default"),
        "HQS",
        max_iter=max_iter,
    )
    print("  " + str(result.certificate).replace("\n", "\n  "))
    print("  " + str(result.report).replace("\n", "\n  "))
    print(
        f"  PSNR: blurred {result.psnr_blurred:.2f} dB -> restored {result.psnr:.2f} dB "
        f"({time.perf_counter() - tic:.1f} s with the certificate)"
    )
    deblur_figure(result, out / "pnp_deblur.png")

    system = systems.HenonHeiles()
    flow = SympFlow.from_pretrained("henon-heiles")
    gen = torch.Generator().manual_seed(0)
    print("\n[2] SympFlow: Henon-Heiles rolled out to T = 100 with the shipped weights")
    y0 = system.sample(n, generator=gen, dtype=torch.float64)
    errors = flow_errors(flow.double(), system, y0, times=(1.0, 10.0, 100.0))
    for t, rel, de in zip(
        errors["times"], errors["relative_state_error"], errors["energy_error"], strict=True
    ):
        print(f"  t = {t:5g}: mean relative state error {rel:.2e}, mean |dH| {de:.2e}")
    rollout_figure(flow, system, y0[:50], 100.0, out / "henon_heiles_rollout.png")
    big = system.sample(n_timing, generator=gen, dtype=torch.float64)
    # One thread for both: with two, a busy core made dopri5's small batched operations
    # spin-wait (277 s instead of about 40 s) and the demo ran for minutes. Both timings
    # come from this run, on the same thread: the ratio is honest under load.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timing = time_rollout(flow, system, big, T=100.0, flow_dtype=torch.float32)
    finally:
        torch.set_num_threads(threads)
    ratio = timing["speedup"]
    verdict = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
    print(
        f"  rollout of {n_timing} initial conditions to T = 100 ({timing['threads']} "
        f"thread(s)): SympFlow (float32) {timing['flow_s']:.2f} s, "
        f"{timing['compositions']} compositions; torchdiffeq dopri5 (float64, rtol 1e-8) "
        f"{timing['odeint_s']:.2f} s, {timing['odeint_evaluations']} field evaluations "
        f"-> SympFlow {verdict}"
    )
    print("\n[3] Structured networks: guarantees checked on random inputs (float64)")
    torch.manual_seed(0)
    vp = VolumePreservingNet(4, depth=6, h=0.9, width=16).double()
    resnet = FlowNetwork([EulerStep(MLPField(4, width=16), h=0.9) for _ in range(6)]).double()
    x = torch.randn(20, 4, dtype=torch.float64)
    for label, net in (("volume-preserving net", vp), ("plain ResNet", resnet)):
        dets = torch.stack(
            [torch.linalg.det(torch.autograd.functional.jacobian(net, xi)) for xi in x]
        )
        print(f"  {label:22s} max |det J - 1| = {(dets - 1).abs().max().item():.1e}")
    print(f"\ndone; figures in {out.resolve()}")
