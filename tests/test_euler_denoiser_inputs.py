"""EulerDenoiser on every kind of input: the right result or a ValueError naming the argument."""

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinv_dynnets.lipschitz.certificates import certify
from deepinv_dynnets.models import EulerDenoiser, RelaxedDenoiser


def _model(**kwargs):
    """A small denoiser with weights far from their initialisation and steps near the bound."""
    config = {"in_channels": 2, "width": 4, "hidden": 5, "n_blocks": 2} | kwargs
    torch.manual_seed(0)
    model = EulerDenoiser(**config)
    with torch.no_grad():
        for block in model.blocks:
            for p in (block.weight, block.bias, block.sigma_weight):
                p.normal_()
            block.theta.fill_(2.0)
    return model.eval()


MODEL32 = _model()
MODEL64 = copy.deepcopy(MODEL32).double()


def _explicit(model, x, sigma):
    """Lift, unfused steps x + h F(x) of their fields, projection: image by image."""
    out = []
    for i in range(x.shape[0]):
        z = model.network.lift(x[i : i + 1])
        for step in model.blocks:
            z = z + step.step_size(x.dtype) * step.field(z, sigma[i : i + 1])
        out.append(model.network.project(z))
    return torch.cat(out)


SIGMA_FORMS = (
    "float",
    "numpy scalar",
    "0-d tensor",
    "0-d array",
    "(B,) tensor",
    "(B,) array",
    "list",
)


def _as(form: str, levels: np.ndarray):
    if form == "float":
        return float(levels[0])
    if form == "numpy scalar":
        return np.float32(levels[0])
    if form == "0-d tensor":
        return torch.tensor(float(levels[0]), dtype=torch.float64)
    if form == "0-d array":
        return np.array(levels[0])
    if form == "(B,) tensor":
        return torch.from_numpy(levels)
    if form == "(B,) array":
        return levels
    return list(levels)


def _levels(form: str, levels: np.ndarray) -> np.ndarray:
    """The levels ``_as(form, levels)`` stands for, one per image."""
    first = np.float32(levels[0]) if form == "numpy scalar" else levels[0]
    return np.full_like(levels, first) if form in SIGMA_FORMS[:4] else levels


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    height=st.integers(1, 37),
    width=st.integers(1, 31),
    double=st.booleans(),
    form=st.sampled_from(SIGMA_FORMS),
    seed=st.integers(0, 2**16),
    channels_last=st.booleans(),
)
def test_any_shape_dtype_and_noise_level_format_gives_the_explicit_map(
    batch, height, width, double, form, seed, channels_last
):
    gen = torch.Generator().manual_seed(seed)
    model = MODEL64 if double else MODEL32
    dtype = torch.float64 if double else torch.float32
    x = torch.rand(batch, 2, height, width, generator=gen, dtype=dtype)
    if channels_last:  # the forward runs channels-last on CPUs; either layout goes in
        x = x.contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    levels = torch.rand(batch, generator=gen, dtype=torch.float64).numpy() * 0.3
    sigma = _as(form, levels)
    x0 = x.clone()
    with torch.no_grad():
        out = model(x, sigma)
        expected = _explicit(model, x, torch.from_numpy(_levels(form, levels)).to(dtype))
    assert out.shape == x.shape and out.dtype == dtype
    assert out.is_contiguous(memory_format=layout)  # the input's layout comes back
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12 if double else 1e-5)
    assert torch.equal(x, x0)  # never modified in place


BAD_SIGMAS = [
    (-0.1, "non-negative"),
    (float("nan"), "non-negative"),
    (float("inf"), "non-negative"),
    (25, "0-255 scale"),  # 25 meant as 25/255
    (np.float64(25.0), "0-255 scale"),
    (torch.tensor([0.1, 30.0]), "0-255 scale"),
    (True, "sigma must be a number"),
    (torch.tensor([True, False]), "sigma must be real"),
    (torch.tensor(0.1 + 0.1j), "sigma must be real"),
    (np.array(["a", "b"]), "sigma must hold real numbers"),
    # read as 1 and 0, parsed, or stripped of the imaginary part by np.asarray(float)
    ([True, False], "sigma must hold real numbers"),
    (np.array([True, False]), "sigma must hold real numbers"),
    ([0.1, True], "sigma must hold real numbers"),
    (["0.1", "0.2"], "sigma must hold real numbers"),
    (np.array([0.1 + 1j, 0.2]), "sigma must hold real numbers"),
    (np.complex128(0.1), "sigma must hold real numbers"),
    ([[0.1], [0.2, 0.3]], "sigma must hold real numbers"),
    ("0.1", "sigma must be a number"),
    (torch.ones(3), r"sigma must .*shape \(\) or \(2,\)"),
    (np.ones((2, 2)), r"sigma must .*shape \(\) or \(2,\)"),
]


@pytest.mark.parametrize(("sigma", "message"), BAD_SIGMAS)
def test_bad_noise_levels_are_refused_naming_sigma(sigma, message):
    x = torch.rand(2, 2, 6, 5)
    with pytest.raises(ValueError, match=message):
        MODEL32(x, sigma)


@pytest.mark.parametrize(
    "shape", [(0, 2, 8, 8), (1, 2, 0, 8), (1, 2, 8, 0)], ids=["empty batch", "no rows", "no cols"]
)
def test_empty_inputs_are_refused(shape):
    with pytest.raises(ValueError, match="x must hold at least one pixel"):
        MODEL32(torch.rand(shape), 0.1)


def test_non_finite_wrong_type_and_channels():
    x = torch.rand(1, 2, 6, 5)
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[0, 1, 2, 3] = bad
        with pytest.raises(ValueError, match="x contains NaN or Inf"):
            MODEL32(y, 0.1)
    with pytest.raises(ValueError, match="x must be a torch.Tensor"):
        MODEL32(x.numpy(), 0.1)
    with pytest.raises(ValueError, match="2 channel"):
        MODEL32(torch.rand(1, 3, 6, 5), 0.1)
    with pytest.raises(ValueError, match="dtype"):
        MODEL32(x.to(torch.float16), 0.1)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (np.float32(0.5), True),
        (np.float64(0.95), True),
        (1, True),
        (True, False),
        (np.bool_(True), False),
        ("0.5", False),
        (0.0, False),
        (float("nan"), False),
    ],
)
def test_alpha_accepts_real_numbers_only(value, ok):
    if ok:
        assert EulerDenoiser(width=2, hidden=2, n_blocks=1, alpha=value).alpha == float(value)
    else:
        with pytest.raises(ValueError, match="alpha"):
            EulerDenoiser(width=2, hidden=2, n_blocks=1, alpha=value)


@pytest.mark.parametrize("name", ["width", "hidden", "n_blocks", "kernel_size", "in_channels"])
@pytest.mark.parametrize("value", [True, 2.0, 0, -1, "3"])
def test_integer_arguments_refuse_bools_floats_and_non_positive(name, value):
    with pytest.raises(ValueError, match=name):
        EulerDenoiser(**{name: value})


def test_numpy_integer_arguments_are_accepted():
    model = EulerDenoiser(
        in_channels=np.int64(1), width=np.int32(3), hidden=3, n_blocks=np.int64(2)
    )
    assert model.config["width"] == 3 and type(model.config["width"]) is int


def test_a_training_mode_forward_keeps_the_steps_of_a_loaded_model(tmp_path):
    trained = _model()
    trained.calibrate()  # nu at its certified value, as for the shipped weights
    trained.save(tmp_path / "m.pt")
    model = EulerDenoiser.from_pretrained(tmp_path / "m.pt")
    steps, cert = model.step_sizes(), certify(model)
    model.train()
    model(torch.rand(1, 2, 8, 8), 0.1)
    model.eval()
    assert torch.equal(model.step_sizes(), steps)
    assert certify(model).blocks == cert.blocks


def test_training_still_moves_nu_once_the_weights_change():
    model = _model().train()
    x = torch.rand(2, 2, 8, 8)
    model(x, 0.1).square().mean().backward()
    assert model.blocks[0].theta.grad is not None and model.blocks[0].weight.grad is not None
    before = model.blocks[0].nu.clone()
    with torch.no_grad():
        model.blocks[0].weight.mul_(2)
    model(x, 0.1)
    assert float(model.blocks[0].nu) == pytest.approx(4 * float(before), rel=0.05)


def test_relaxed_certificate_prints_what_it_certifies():
    base = _model(in_channels=1)
    base.calibrate()
    relaxed = RelaxedDenoiser(base, relaxation=1.5)
    cert = certify(relaxed)
    assert cert.alpha is not None and cert.alpha < 1
    assert cert.lipschitz == 1.0  # averaged, hence non-expansive: not |1 - 1.5| + 1.5 = 2
    assert "Lipschitz <= 1 " in str(cert)
    lam = 1 / cert.alpha * 1.5 + 0.5  # lam * alpha_D > 1: not averaged any more
    over = certify(RelaxedDenoiser(base, relaxation=lam))
    assert over.alpha is None and over.alpha_target is None
    assert over.lipschitz == pytest.approx(abs(1 - lam) + lam * certify(base).lipschitz)
    with pytest.raises(ValueError, match="relaxation"):
        RelaxedDenoiser(base, relaxation=True)
    assert math.isfinite(certify(RelaxedDenoiser(base, relaxation=np.float32(0.5))).alpha)
