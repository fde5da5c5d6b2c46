"""The PnP certificate never says GUARANTEED on a false premise (issue 13, items 1-4; issue 18,
item 1): ||A||^2 is an upper bound checked against dense matrices where it is nearly
attained, a power estimate is reported as such and guarded at run time, the certified
parameters cannot be replaced, the defaults follow the data fidelity, and stepsize bounds
are tested with L != 1."""

import math

import deepinv as dinv
import pytest
import torch

from deepinv_dynnets import EulerDenoiser, convergent_pnp
from deepinv_dynnets.lipschitz.averagedness import compose_averaged
from deepinv_dynnets.pnp import (
    POWER_SAFETY_FACTOR,
    ConvergenceMonitor,
    default_parameters,
    operator_sqnorm,
    pnp_certificate,
)

SIZE = (1, 12, 12)


def _dense_sqnorm(physics, size, dtype=torch.float32):
    n = math.prod(size)
    eye = torch.eye(n, dtype=dtype).reshape(n, *size)
    matrix = physics.A(eye).reshape(n, -1).to(torch.float64)
    return float(torch.linalg.matrix_norm(matrix, ord=2)) ** 2


def _denoiser(large_weights, alpha=0.5):
    model = EulerDenoiser(in_channels=1, width=4, hidden=6, n_blocks=3, alpha=alpha)
    return large_weights(model, theta=2.0).eval()


def _kernel(seed, shape=(1, 1, 5, 5), gain=1.0):
    k = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    return gain * k / k.sum()


def test_low_gain_reflect_blur_gets_a_bound_not_a_low_estimate(large_weights):
    # the case: a reflect-padded Blur with filter gain 1e-3, where deepinv's power
    # method (absolute tolerance 1e-6) stopped at 55-75% of ||A||^2
    size = (1, 16, 16)
    physics = dinv.physics.Blur(
        filter=_kernel(1, gain=1e-3),
        padding="reflect",
        noise_model=dinv.physics.GaussianNoise(0.01),
    )
    truth = _dense_sqnorm(physics, size)
    state = torch.get_rng_state()
    values = {operator_sqnorm(physics, size) for _ in range(3)}
    assert torch.equal(state, torch.get_rng_state())  # the global generator is untouched
    assert len(values) == 1  # the same verdict on every call
    ((sqnorm, method),) = values
    assert method == "bound" and truth <= sqnorm <= 1.01 * truth
    model, cert = convergent_pnp(
        physics, _denoiser(large_weights), img_size=size, max_iter=60, acceleration=False
    )
    assert cert.guaranteed and cert.verdict == "GUARANTEED"
    x = torch.rand(1, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(physics(x), physics)
    report = model.monitor.report()
    assert report.monotone, report.violations[:3]


@pytest.mark.parametrize("padding", ["reflect", "replicate", "circular", "valid", "constant"])
@pytest.mark.parametrize("kind", ["nonnegative", "signed", "two channels", "shift"])
def test_convolution_bounds_hold_against_the_dense_norm(padding, kind):
    gen = torch.Generator().manual_seed(3)
    if kind == "nonnegative":
        kernel = torch.rand(1, 1, 5, 5, generator=gen)
    elif kind == "signed":
        kernel = torch.randn(1, 1, 3, 3, generator=gen)
    elif kind == "two channels":
        kernel = torch.rand(1, 2, 3, 3, generator=gen) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    else:  # all the mass off-centre: reflect/replicate read border pixels several times
        kernel = torch.zeros(1, 1, 3, 3)
        kernel[0, 0, 0, 0] = 1.0
    size = (kernel.shape[1], 11, 13)
    physics = dinv.physics.Blur(filter=kernel, padding=padding)
    sqnorm, method = operator_sqnorm(physics, size)
    truth = _dense_sqnorm(physics, size)
    assert sqnorm >= truth * (1 - 1e-6), (method, sqnorm, truth)
    assert method == ("young" if padding in ("circular", "valid", "constant") else "bound")
    if kind == "shift" and padding in ("reflect", "replicate"):
        # ||A||^2 = 4 ||k||_1^2 here: the kernel's l1 norm is no bound for these paddings
        assert truth == pytest.approx(4.0) and sqnorm == pytest.approx(4.0, rel=1e-4)
    if kind == "nonnegative" and method == "bound":
        assert sqnorm <= 1.01 * truth  # the Collatz-Wielandt bound is tight here


@pytest.mark.parametrize("padding", ["reflect", "replicate", "circular", "constant"])
def test_downsampling_bound_holds_against_the_dense_norm(padding):
    physics = dinv.physics.Downsampling((1, 12, 12), filter="gaussian", factor=2, padding=padding)
    sqnorm, method = operator_sqnorm(physics)
    truth = _dense_sqnorm(physics, (1, 12, 12))
    assert method == "bound" and truth * (1 - 1e-6) <= sqnorm <= 1.01 * truth


def test_exact_norms():
    kernel = _kernel(4, gain=3.0)
    physics = dinv.physics.BlurFFT(SIZE, filter=kernel)
    sqnorm, method = operator_sqnorm(physics)
    assert method == "exact" and sqnorm == pytest.approx(_dense_sqnorm(physics, SIZE), rel=1e-5)
    mask = torch.full(SIZE, 0.5)
    mask[0, 3, 4] = 0.8
    assert operator_sqnorm(dinv.physics.Inpainting(SIZE, mask=mask)) == (
        pytest.approx(0.64),
        "exact",
    )
    assert operator_sqnorm(dinv.physics.Denoising()) == (1.0, "exact")


def _scaled_identity(scale=2.0, noise=0.05):
    return dinv.physics.LinearPhysics(
        A=lambda x: scale * x,
        A_adjoint=lambda y: scale * y,
        noise_model=dinv.physics.GaussianNoise(noise),
    )


def test_a_power_estimate_is_seeded_and_reported_as_an_estimate():
    physics = _scaled_identity()
    state = torch.get_rng_state()
    first = operator_sqnorm(physics, SIZE)
    assert torch.equal(state, torch.get_rng_state())
    assert first == operator_sqnorm(physics, SIZE)
    sqnorm, method = first
    assert method == "estimate" and sqnorm == pytest.approx(4.0 * POWER_SAFETY_FACTOR, rel=1e-4)
    cert = pnp_certificate(physics, 0.5, "PGD", stepsize=0.4, img_size=SIZE)
    assert not cert.guaranteed and cert.estimated and cert.verdict == "ESTIMATE"
    assert str(cert).startswith("PnP-PGD convergence: ESTIMATE")
    assert any("estimate" in note for note in cert.notes)
    # HQS accepts any stepsize: the estimate plays no role in its verdict
    assert pnp_certificate(physics, 0.5, "HQS", stepsize=0.4, img_size=SIZE).guaranteed
    with pytest.raises(ValueError, match="img_size"):
        operator_sqnorm(physics)


def test_an_estimate_for_a_physics_with_buffers():
    # physics that keep tensors in buffers or parameters: the estimate runs where they live
    physics = _scaled_identity(scale=3.0)
    physics.register_buffer("weights", torch.ones(4))
    sqnorm, method = operator_sqnorm(physics, SIZE)
    assert method == "estimate"
    assert 9.0 <= sqnorm <= POWER_SAFETY_FACTOR * 9.0 * (1 + 1e-4)
    cs = dinv.physics.CompressedSensing(
        m=20, img_size=(1, 6, 6), rng=torch.Generator().manual_seed(0)
    )
    sqnorm, method = operator_sqnorm(cs)
    truth = _dense_sqnorm(cs, (1, 6, 6))
    assert method == "estimate" and truth <= sqnorm <= POWER_SAFETY_FACTOR * truth * (1 + 1e-4)


def test_a_low_estimate_is_caught_at_run_time(large_weights, monkeypatch):
    # a power estimate 4x too low makes the default PGD stepsize about 3.5/L: the safeguard
    # must halve it until the residual decreases, and say so in the report
    import deepinv_dynnets.pnp.physics_norms as physics_norms

    physics = _scaled_identity()
    low = lambda physics, size: 1.0  # noqa: E731 (the true ||A||^2 is 4)
    monkeypatch.setattr(physics_norms, "_power_estimate", low)
    denoiser = _denoiser(large_weights)
    model, cert = convergent_pnp(physics, denoiser, img_size=SIZE, max_iter=300)
    assert cert.estimated and cert.stepsize > 2 / 4.0
    x = torch.rand(2, *SIZE, generator=torch.Generator().manual_seed(0))
    y = physics(x)
    with torch.no_grad():
        model(y, physics)
    report = model.monitor.report()
    assert report.restarts and report.restarts[-1]["new"] < 2 / 4.0
    assert report.monotone and report.converged, str(report)
    assert "stepsize halved" in str(report)
    # without the safeguard the same stepsize breaks monotonicity: the safeguard was needed
    unguarded, _ = convergent_pnp(
        dinv.physics.Denoising(dinv.physics.GaussianNoise(0.05)),
        denoiser,
        stepsize=cert.stepsize * 4,
        max_iter=30,
        acceleration=False,
    )
    with torch.no_grad():
        unguarded(y / 2, dinv.physics.Denoising())
    assert not unguarded.monitor.report().monotone


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("params_algo", {"stepsize": 10.0, "g_param": 0.05, "lambda": 1.0}),
        ("stepsize_list", [1.0]),
        ("lambda_reg", 3.0),
        ("backtracking", True),
        ("anderson_acceleration", True),
        ("DEQ", True),
        ("unfold", True),
        ("prior", None),
    ],
)
def test_solver_keywords_that_would_replace_the_certified_parameters_are_refused(
    keyword, value, large_weights
):
    physics = dinv.physics.BlurFFT(
        SIZE, filter=_kernel(0), noise_model=dinv.physics.GaussianNoise(0.05)
    )
    with pytest.raises(ValueError, match=keyword):
        convergent_pnp(physics, _denoiser(large_weights), **{keyword: value})


def test_harmless_solver_keywords_are_passed_on(large_weights):
    physics = dinv.physics.BlurFFT(
        SIZE, filter=_kernel(0), noise_model=dinv.physics.GaussianNoise(0.05)
    )
    model, cert = convergent_pnp(physics, _denoiser(large_weights), verbose=False, max_iter=3)
    assert cert.guaranteed and model.init_params_algo["stepsize"][0] == pytest.approx(cert.stepsize)


@pytest.mark.parametrize(
    "algorithm, step_times_l, sigma_factor",
    [("PGD", 0.95 * 2, 1.0), ("HQS", 8.0, 2.0), ("DRS", 5.0, 1.0), ("ADMM", 5.0, 1.0)],
)
def test_defaults_follow_the_data_fidelity(algorithm, step_times_l, sigma_factor, large_weights):
    # kernel gain 3 and L2(sigma=0.5): L = ||A||^2 / s^2 = 9 * 4 = 36, not 1
    physics = dinv.physics.BlurFFT(
        SIZE, filter=_kernel(2, gain=3.0), noise_model=dinv.physics.GaussianNoise(0.05)
    )
    fidelity = dinv.optim.L2(sigma=0.5)
    sqnorm = operator_sqnorm(physics)[0]
    lipschitz = sqnorm / 0.25
    params = default_parameters(physics, algorithm, data_fidelity=fidelity)
    assert params["stepsize"] == pytest.approx(step_times_l / lipschitz)
    assert params["sigma_denoiser"] == pytest.approx(sigma_factor * 0.05)
    model, cert = convergent_pnp(
        physics, _denoiser(large_weights), algorithm, data_fidelity=fidelity, max_iter=100
    )
    assert cert.guaranteed and cert.lipschitz_constant == pytest.approx(lipschitz)
    x = torch.rand(1, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x_hat = model(physics(x), physics)
    assert bool(torch.isfinite(x_hat).all()) and model.monitor.report().ok


def test_pgd_stepsize_bound_with_lipschitz_constant_not_one():
    # L = 36: the bound is 2/L = 0.0556 (2/sqrt(L) = 0.333 and 1/L = 0.0278 are wrong)
    physics = dinv.physics.BlurFFT(SIZE, filter=_kernel(2, gain=3.0))
    fidelity = dinv.optim.L2(sigma=0.5)
    lipschitz = operator_sqnorm(physics)[0] / 0.25
    assert lipschitz == pytest.approx(36.0, rel=1e-5)
    below = pnp_certificate(physics, 0.5, "PGD", stepsize=1.99 / lipschitz, data_fidelity=fidelity)
    above = pnp_certificate(physics, 0.5, "PGD", stepsize=2.01 / lipschitz, data_fidelity=fidelity)
    assert below.guaranteed and not above.guaranteed
    assert below.stepsize_bound == pytest.approx(2 / lipschitz)
    assert below.composite_alpha == pytest.approx(compose_averaged(0.5, 1.99 / 2))
    # the same stepsizes with sigma = 1: L = 9, both certified
    assert pnp_certificate(physics, 0.5, "PGD", stepsize=2.01 / lipschitz).guaranteed


def test_broken_inputs_fail_clearly():
    physics = dinv.physics.BlurFFT(SIZE, filter=_kernel(0))
    for bad in (math.nan, math.inf, -0.5, 0.0):
        with pytest.raises(ValueError, match="denoiser"):
            pnp_certificate(physics, bad, "PGD")
    with pytest.raises(TypeError, match="denoiser"):
        pnp_certificate(physics, "0.5", "PGD")
    too_large = pnp_certificate(physics, 1.5, "HQS")
    assert not too_large.guaranteed and not any(
        r.startswith("ok: denoiser") for r in too_large.reasons
    )
    l1 = pnp_certificate(physics, 0.5, "PGD", data_fidelity=dinv.optim.L1())
    assert not l1.guaranteed
    assert "gradient Lipschitz constant is not known" in l1.failures[0]
    with pytest.raises(ValueError, match="stepsize"):
        default_parameters(
            dinv.physics.BlurFFT(
                SIZE, filter=_kernel(0), noise_model=dinv.physics.GaussianNoise(0.1)
            ),
            data_fidelity=dinv.optim.L1(),
        )
    with pytest.raises(TypeError, match="data_fidelity"):
        pnp_certificate(physics, 0.5, "PGD", data_fidelity=0.5)
    zero = torch.zeros(1, 1, 3, 3)
    for physics in (
        dinv.physics.BlurFFT(SIZE, filter=zero),
        dinv.physics.Blur(filter=zero, padding="reflect"),
        dinv.physics.Blur(filter=zero, padding="valid"),
        dinv.physics.Inpainting(SIZE, mask=0.0),
    ):
        with pytest.raises(ValueError, match="physics"):
            operator_sqnorm(physics, SIZE)
    with pytest.raises(ValueError, match="physics"):
        convergent_pnp(
            dinv.physics.BlurFFT(SIZE, filter=zero, noise_model=dinv.physics.GaussianNoise(0.1)),
            EulerDenoiser(width=4, hidden=4, n_blocks=2),
        )


def test_a_denoiser_whose_certificate_is_nan_fails(monkeypatch):
    import deepinv_dynnets.pnp.certificate as certificate

    class Broken:
        alpha = math.nan

    monkeypatch.setattr(certificate, "certify", lambda module: Broken())
    physics = dinv.physics.BlurFFT(SIZE, filter=_kernel(0))
    cert = pnp_certificate(physics, EulerDenoiser(width=4, hidden=4, n_blocks=2), "PGD")
    assert not cert.guaranteed and "nan" in cert.failures[0]
    assert not any(r.startswith("ok: denoiser") for r in cert.reasons)


def test_monitor_tolerance_is_at_the_size_of_round_off():
    # the relative tolerance is 1e-3: a 0.2% increase is a violation, a 0.05% one is not,
    # with norms such that the absolute (round-off) term plays no role
    def run(growth):
        monitor = ConvergenceMonitor()
        v = torch.zeros(1, 1000, dtype=torch.float64)
        states = [v]
        for step in (1.0, 0.5, 0.5 * growth):
            states.append(states[-1] + step / math.sqrt(1000))
        for previous, current in zip(states[:-1], states[1:], strict=True):
            monitor.record({"est": (previous,)}, {"est": (current,)})
        return monitor.report()

    assert run(1.0005).monotone
    flagged = run(1.002)
    assert not flagged.monotone and flagged.violations[0]["iteration"] == 2
    # the absolute term is 100 eps of the dtype relative to ||v||: in float32 an increase
    # of 1e-4 ||v|| is far above round-off and is flagged
    monitor = ConvergenceMonitor()
    base = torch.ones(1, 100)
    for a, b in ((0.0, 1e-3), (1e-3, 1.5e-3), (1.5e-3, 1.5e-3 + 6e-4)):
        monitor.record({"est": (base + a,)}, {"est": (base + b,)})
    assert not monitor.report().monotone


@pytest.mark.parametrize(
    "options, error, name",
    [
        ({"stepsize": "1.0"}, TypeError, "stepsize"),
        ({"stepsize": True}, TypeError, "stepsize"),
        ({"stepsize": -1.0}, ValueError, "stepsize"),
        ({"sigma_denoiser": math.nan}, ValueError, "sigma_denoiser"),
        ({"sigma_denoiser": "0.1"}, TypeError, "sigma_denoiser"),
        ({"beta": 0.0}, ValueError, "beta"),
        ({"relaxation": -0.5}, ValueError, "relaxation"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"max_iter": 2.5}, ValueError, "max_iter"),
        ({"thres_conv": 0.0}, ValueError, "thres_conv"),
        ({"data_fidelity": "L2"}, TypeError, "data_fidelity"),
        ({"acceleration": 1}, TypeError, "acceleration"),
        ({"params_algo": {}}, ValueError, "params_algo"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(options, error, name, monkeypatch):
    import deepinv_dynnets.pnp.certificate as certificate
    import deepinv_dynnets.pnp.solvers as solvers

    def no_work(*args):
        raise AssertionError("the operator norm was computed before the arguments were checked")

    for module in (certificate, solvers):
        monkeypatch.setattr(module, "operator_sqnorm", no_work)
    physics = dinv.physics.BlurFFT(
        SIZE, filter=_kernel(0), noise_model=dinv.physics.GaussianNoise(0.05)
    )
    denoiser = EulerDenoiser(width=4, hidden=4, n_blocks=2)
    with pytest.raises(error, match=name):
        convergent_pnp(physics, denoiser, **options)
    certificate_options = {
        k: v for k, v in options.items() if k in ("stepsize", "beta", "data_fidelity")
    }
    if certificate_options:
        with pytest.raises(error, match=name):
            pnp_certificate(physics, 0.5, **certificate_options)
    with pytest.raises(ValueError, match="denoiser"):
        pnp_certificate(physics, math.nan)
