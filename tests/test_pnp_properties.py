"""Property-based tests of convergent_pnp (issue 13): over image sizes (odd included),
channels, noise levels, physics, algorithms and dtypes, a run is either certified with a
residual that does what the theorem says, or the input is refused with a ValueError or
TypeError naming the argument."""

import math

import deepinv as dinv
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepinv_dynnets import EulerDenoiser, convergent_pnp

ALGORITHMS = ["PGD", "HQS", "DRS", "ADMM"]
PHYSICS = ["BlurFFT", "Blur circular", "Blur reflect", "Inpainting", "Denoising"]
# derandomized: the examples are the same on every run, so the suite cannot flicker (a
# stress run with max_examples=300, not derandomized, passes)
FAST = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

_DENOISERS = {}


def _denoiser(channels: int, dtype: torch.dtype) -> EulerDenoiser:
    key = (channels, dtype)
    if key not in _DENOISERS:
        torch.manual_seed(channels)
        model = EulerDenoiser(in_channels=channels, width=4, hidden=4, n_blocks=2, alpha=0.5)
        _DENOISERS[key] = model.to(dtype).eval()
    return _DENOISERS[key]


def _physics(kind, size, noise, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    kernel = torch.rand(1, 1, 3, 3, generator=gen, dtype=dtype) + 0.1
    kernel = 2 * kernel / kernel.sum()  # gain 2: L = 4, not 1
    noise_model = dinv.physics.GaussianNoise(noise, rng=torch.Generator().manual_seed(seed))
    if kind == "BlurFFT":
        return dinv.physics.BlurFFT(size, filter=kernel, noise_model=noise_model)
    if kind.startswith("Blur"):
        padding = kind.split()[1]
        return dinv.physics.Blur(filter=kernel, padding=padding, noise_model=noise_model)
    if kind == "Inpainting":
        mask = (torch.rand(size, generator=gen) > 0.3).to(dtype)
        return dinv.physics.Inpainting(size, mask=mask, noise_model=noise_model)
    return dinv.physics.Denoising(noise_model)


@FAST
@given(
    height=st.integers(5, 11),
    width=st.integers(5, 11),
    channels=st.sampled_from([1, 3]),
    noise=st.floats(0.0, 0.2),
    algorithm=st.sampled_from(ALGORITHMS),
    kind=st.sampled_from(PHYSICS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_a_run_is_certified_and_behaves_as_the_theorem_says(
    height, width, channels, noise, algorithm, kind, dtype, seed
):
    size = (channels, height, width)
    physics = _physics(kind, size, noise, dtype, seed)
    x = torch.rand(1, *size, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    y = physics(x)
    y_before = y.clone()
    model, cert = convergent_pnp(
        physics, _denoiser(channels, dtype), algorithm, img_size=size, max_iter=300, thres_conv=1e-4
    )
    assert cert.guaranteed, str(cert)
    with torch.no_grad():
        x_hat = model(y, physics)
    assert x_hat.shape == x.shape and x_hat.dtype == dtype
    assert bool(torch.isfinite(x_hat).all())
    assert torch.equal(y, y_before)
    report = model.monitor.report()
    assert report.monotone, (str(report), report.violations[:3])
    # an accelerated certified run reaches 1e-4 well within 300 iterations on these problems
    assert report.converged, str(report)


@FAST
@given(
    stepsize=st.one_of(
        st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf), st.just(-math.inf)
    )
)
def test_a_bad_stepsize_is_refused_by_name(stepsize):
    physics = _physics("BlurFFT", (1, 7, 7), 0.05, torch.float32, 0)
    with pytest.raises(ValueError, match="stepsize"):
        convergent_pnp(physics, _denoiser(1, torch.float32), stepsize=stepsize)


@FAST
@given(
    name=st.sampled_from(["sigma_denoiser", "max_iter", "thres_conv", "beta"]),
    value=st.one_of(
        st.floats(max_value=-1e-9), st.just(math.nan), st.just(math.inf), st.integers(-5, 0)
    ),
)
def test_bad_numbers_are_refused_by_name(name, value):
    physics = _physics("BlurFFT", (1, 7, 7), 0.05, torch.float32, 0)
    if name == "sigma_denoiser" and value == 0:
        return  # 0 is a valid denoiser level
    with pytest.raises(ValueError, match=name):
        convergent_pnp(physics, _denoiser(1, torch.float32), **{name: value})


@FAST
@given(algorithm=st.text(min_size=0, max_size=6).filter(lambda s: s.upper() not in ALGORITHMS))
def test_an_unknown_algorithm_is_refused_by_name(algorithm):
    physics = _physics("BlurFFT", (1, 7, 7), 0.05, torch.float32, 0)
    with pytest.raises(ValueError, match="algorithm"):
        convergent_pnp(physics, _denoiser(1, torch.float32), algorithm)


@FAST
@given(
    height=st.integers(5, 11).filter(lambda h: h != 9),
    channels=st.sampled_from([1, 3]),
)
def test_a_measurement_that_does_not_fit_is_refused(height, channels):
    physics = _physics("BlurFFT", (1, 9, 9), 0.05, torch.float32, 0)
    model, _ = convergent_pnp(physics, _denoiser(1, torch.float32), max_iter=2)
    with pytest.raises(ValueError, match="does not fit the physics"):
        model(torch.rand(1, channels, height, 9), physics)


@FAST
@given(
    y_dtype=st.sampled_from([torch.float16, torch.float64, torch.int64, torch.bool]),
    size=st.integers(5, 9),
)
def test_a_measurement_of_another_dtype_is_refused(y_dtype, size):
    physics = _physics("Denoising", (1, size, size), 0.05, torch.float32, 0)
    model, _ = convergent_pnp(physics, _denoiser(1, torch.float32), max_iter=2)
    y = torch.ones(1, 1, size, size).to(y_dtype)
    with pytest.raises(ValueError, match="measurement y"):
        model(y, physics)
