"""Convergent PnP: the certificate's conditions, the runtime monitor, the solver helper."""

import math

import deepinv as dinv
import pytest
import torch
from torch import nn

from deepinv_dynnets import EulerDenoiser, RelaxedDenoiser, certify, convergent_pnp
from deepinv_dynnets.lipschitz.averagedness import compose_averaged
from deepinv_dynnets.pnp import (
    ConvergenceMonitor,
    deblur,
    default_parameters,
    operator_sqnorm,
    pnp_certificate,
)

PSNR = dinv.loss.metric.PSNR(max_pixel=1.0)
SIZE = (1, 12, 12)
KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).view(1, 1, 3, 3) / 16


def _physics(noise=0.03, size=SIZE):
    return dinv.physics.BlurFFT(size, filter=KERNEL, noise_model=dinv.physics.GaussianNoise(noise))


def _denoiser(large_weights, alpha=0.5, channels=1):
    model = EulerDenoiser(in_channels=channels, width=4, hidden=6, n_blocks=3, alpha=alpha)
    return large_weights(model, theta=2.0).eval()


def _dense_sqnorm(physics, size):
    n = math.prod(size)
    eye = torch.eye(n, dtype=torch.float32).reshape(n, *size)
    A = physics.A(eye).reshape(n, -1).to(torch.float64)
    return float(torch.linalg.matrix_norm(A, ord=2)) ** 2


def test_operator_sqnorm_bounds_the_dense_norm():
    blur_fft = _physics()
    sq, method = operator_sqnorm(blur_fft)
    assert method == "exact"
    assert sq == pytest.approx(_dense_sqnorm(blur_fft, SIZE), rel=1e-5)
    kernel = torch.rand(1, 1, 5, 5)
    blur = dinv.physics.Blur(filter=kernel, padding="valid")
    sq, method = operator_sqnorm(blur)
    assert method == "young" and sq >= _dense_sqnorm(blur, SIZE) * (1 - 1e-6)
    inpainting = dinv.physics.Inpainting(SIZE, mask=0.5)
    assert operator_sqnorm(inpainting) == (1.0, "exact")
    down = dinv.physics.Downsampling(SIZE, filter="gaussian", factor=2)
    sq, method = operator_sqnorm(down)
    assert method == "bound" and sq >= _dense_sqnorm(down, SIZE)


def test_certificate_accepts_a_certified_denoiser_with_a_valid_stepsize(large_weights):
    physics, denoiser = _physics(), _denoiser(large_weights)
    alpha = certify(denoiser).alpha
    L = operator_sqnorm(physics)[0]
    cert = pnp_certificate(physics, denoiser, "PGD", stepsize=1.5 / L)
    assert cert.guaranteed and not cert.failures
    assert cert.composite_alpha == pytest.approx(compose_averaged(alpha, 0.75))
    for algorithm in ("HQS", "DRS", "ADMM"):
        cert = pnp_certificate(physics, denoiser, algorithm, stepsize=100.0)
        assert cert.guaranteed, str(cert)
    assert pnp_certificate(physics, denoiser, "PGD", stepsize=50.0, g_first=True).guaranteed


def test_certificate_rejects_with_the_reason(large_weights):
    physics, denoiser = _physics(), _denoiser(large_weights)
    L = operator_sqnorm(physics)[0]
    cert = pnp_certificate(physics, denoiser, "PGD", stepsize=2.5 / L)
    assert not cert.guaranteed and cert.composite_alpha is None
    assert len(cert.failures) == 1 and "exceeds 2/L" in cert.failures[0]
    assert f"below {2 / L:.4g}" in cert.failures[0]
    dncnn = dinv.models.DnCNN(1, 1, depth=3, pretrained=None)
    cert = pnp_certificate(physics, dncnn, "PGD", stepsize=1 / L)
    assert not cert.guaranteed and "no certified averagedness" in cert.failures[0]
    loose = _denoiser(large_weights, alpha=0.9)
    cert = pnp_certificate(physics, loose, "DRS")
    assert not cert.guaranteed and "alpha <= 1/2" in cert.failures[0]
    assert pnp_certificate(physics, loose, "HQS").guaranteed  # HQS only needs alpha < 1
    assert not pnp_certificate(physics, denoiser, "DRS", beta=2.0).guaranteed
    assert not pnp_certificate(physics, denoiser, "ADMM", beta=0.5).guaranteed
    relaxed = pnp_certificate(physics, denoiser, "PGD", stepsize=1 / L, beta=100.0)
    assert not relaxed.guaranteed and "1/alpha_T" in relaxed.failures[0]


def test_relaxed_denoiser_certificate_is_true(large_weights):
    base = _denoiser(large_weights).double()
    for lam in (0.3, 1.5):
        relaxed = RelaxedDenoiser(base, lam)
        cert = certify(relaxed)
        assert cert.alpha == pytest.approx(lam * certify(base).alpha)
        a = cert.alpha
        x = torch.randn(16, 1, 7, 7, dtype=torch.float64)
        y = x + 0.5 * torch.randn_like(x)
        with torch.no_grad():
            tx = (relaxed(x, 0.1) - (1 - a) * x) / a
            ty = (relaxed(y, 0.1) - (1 - a) * y) / a
        ratio = (tx - ty).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
        assert float(ratio.max()) <= 1 + 1e-10


@pytest.mark.parametrize("algorithm", ["PGD", "HQS", "DRS", "ADMM"])
def test_monitored_residual_is_non_increasing_and_converges(algorithm, large_weights):
    torch.manual_seed(0)
    x = torch.rand(2, *SIZE)
    physics = _physics()
    y = physics(x)
    # a fixed number of iterations: deepinv's stopping rule looks at x, the theorem at v
    model, cert = convergent_pnp(
        physics,
        _denoiser(large_weights),
        algorithm,
        max_iter=200,
        early_stop=False,
        acceleration=False,
    )
    assert cert.guaranteed
    x_hat, metrics = model(y, physics, x_gt=x, compute_metrics=True)
    report = model.monitor.report()
    assert report.monotone, report.violations[:3]
    assert report.converged and report.iterations >= 199, str(report)
    assert report.envelope_ratio is not None and report.envelope_ratio <= 1.01
    assert x_hat.shape == x.shape and len(metrics["psnr"]) == 2


def test_monitor_flags_a_broken_setting():
    class Expansive(nn.Module):  # "denoiser" with Lipschitz constant 1.3: no certificate
        def forward(self, x, sigma=None):
            return 1.3 * x - 0.1

    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.0))
    model, cert = convergent_pnp(physics, Expansive(), stepsize=0.1, sigma_denoiser=0.1)
    assert not cert.guaranteed
    model(torch.rand(1, 1, 6, 6), physics)
    report = model.monitor.report()
    assert not report.converged and not report.monotone
    assert report.violations[0]["residual"] > report.violations[0]["previous"]


def test_monitor_tolerates_round_off_only():
    monitor = ConvergenceMonitor()
    v0 = torch.ones(1, 100)
    states = [{"est": (v0 * (1 + 0.5**k),)} for k in range(5)]
    for previous, current in zip(states[:-1], states[1:], strict=True):
        monitor.record(previous, current)
    assert monitor.report().monotone
    bumped = {"est": (states[-1]["est"][0] - 0.2,)}  # a step larger than the last one
    monitor.record(states[-1], bumped)
    report = monitor.report()
    assert not report.monotone and report.violations[0]["iteration"] == 4


def test_defaults_come_from_the_physics(large_weights):
    physics = _physics(noise=0.05)
    params = default_parameters(physics)
    assert params["stepsize"] < 2 / operator_sqnorm(physics)[0]
    assert params["sigma_denoiser"] > 0
    model, cert = convergent_pnp(physics, _denoiser(large_weights))
    assert cert.guaranteed and cert.stepsize == pytest.approx(params["stepsize"])
    noiseless = dinv.physics.BlurFFT(SIZE, filter=KERNEL)
    with pytest.raises(ValueError, match="noise level"):
        default_parameters(dinv.physics.Denoising(dinv.physics.PoissonNoise(0.1)))
    assert default_parameters(noiseless)["sigma_denoiser"] > 0  # floored


def test_convergent_pnp_estimates_the_operator_norm_once(large_weights, monkeypatch):
    # a power iteration is costly: defaults and certificate share one estimate
    import deepinv_dynnets.pnp.certificate as certificate
    import deepinv_dynnets.pnp.solvers as solvers

    calls = []
    original = certificate.operator_sqnorm
    for module in (certificate, solvers):
        monkeypatch.setattr(module, "operator_sqnorm", lambda *a: calls.append(a) or original(*a))
    physics = dinv.physics.Downsampling(
        SIZE, filter="gaussian", factor=2, noise_model=dinv.physics.GaussianNoise(0.05)
    )
    model, cert = convergent_pnp(physics, _denoiser(large_weights))
    assert len(calls) == 1 and cert.guaranteed and cert.sqnorm_method == "bound"


def test_uncertified_denoiser_runs_but_is_reported(large_weights):
    physics = _physics()
    x = torch.rand(1, *SIZE)
    dncnn = dinv.models.DnCNN(1, 1, depth=3, pretrained=None)
    model, cert = convergent_pnp(physics, dncnn, max_iter=5)
    assert not cert.guaranteed and "not guaranteed" in str(cert).lower()
    x_hat = model(physics(x), physics)
    assert x_hat.shape == x.shape and model.monitor.report().iterations == 5


def test_bad_inputs(large_weights):
    physics, denoiser = _physics(), _denoiser(large_weights)
    nonlinear = dinv.physics.Physics(A=lambda x: x**2)
    with pytest.raises(ValueError, match="linear physics"):
        convergent_pnp(nonlinear, denoiser, stepsize=1.0, sigma_denoiser=0.1)
    with pytest.raises(ValueError, match="linear physics"):
        pnp_certificate(nonlinear, denoiser)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="stepsize"):
            convergent_pnp(physics, denoiser, stepsize=bad)
    with pytest.raises(ValueError, match="sigma_denoiser"):
        convergent_pnp(physics, denoiser, sigma_denoiser=-0.1)
    with pytest.raises(TypeError, match="denoiser"):
        convergent_pnp(physics, lambda x, sigma: x)
    with pytest.raises(ValueError, match="algorithm"):
        convergent_pnp(physics, denoiser, "FISTA")
    with pytest.raises(ValueError, match="relaxation"):
        convergent_pnp(physics, denoiser, relaxation=0.0)
    model, _ = convergent_pnp(physics, denoiser, max_iter=3)
    y = physics(torch.rand(1, *SIZE))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full_like(y, math.nan), physics)
    with pytest.raises(ValueError, match="does not fit the physics"):
        model(torch.rand(1, 1, 10, 10), physics)
    y_before = y.clone()
    model(y, physics)
    assert torch.equal(y, y_before)  # nothing the user passed in is modified


def test_deblur_experiment(large_weights):
    x = torch.rand(2, 1, 12, 12)
    before = x.clone()
    denoiser = _denoiser(large_weights)
    result = deblur(x, KERNEL[0, 0], 0.03, denoiser, max_iter=30, seed=3)
    assert torch.equal(x, before) and result.x_hat.shape == x.shape
    assert result.certificate.guaranteed and result.report.monotone
    assert result.psnr == pytest.approx(float(PSNR(result.x_hat.clamp(0, 1), x).mean()))
    again = deblur(x, KERNEL, 0.03, denoiser, max_iter=30, seed=3)
    assert torch.equal(result.y, again.y) and torch.equal(result.x_hat, again.x_hat)
    other = deblur(x, KERNEL, 0.03, denoiser, max_iter=2, seed=4)
    assert not torch.equal(result.y, other.y)
    with pytest.raises(ValueError, match="B, C, H, W"):
        deblur(x[0], KERNEL, 0.03, denoiser)
    with pytest.raises(ValueError, match="NaN"):
        deblur(torch.full_like(x, float("nan")), KERNEL, 0.03, denoiser)
    with pytest.raises(ValueError, match="kernel must have shape"):
        deblur(x, torch.ones(1, 3, 3, 3), 0.03, denoiser)
    with pytest.raises(ValueError, match="noise_level"):
        deblur(x, KERNEL, -0.1, denoiser)
