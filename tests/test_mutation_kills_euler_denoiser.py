"""EulerDenoiser: its block constant, arguments, noise levels, layouts and files, exactly.

Written for the mutation testing of ``models/euler_denoiser.py`` (see the guarantees
page). The block constant is checked to be the largest float whose composition meets the
target (not just close to the formula), the constructor's arguments to reach every step,
refusals to name the argument with their exact text, and the weight files to round-trip
every configuration entry and to be refused, naming the file, when they do not fit.
"""

import copy
import hashlib
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from deepinv_dynnets.dynamics.averaged_step import AVERAGING_ACTIVATIONS, REFRESH_ITERS
from deepinv_dynnets.lipschitz.averagedness import compose_averaged
from deepinv_dynnets.lipschitz.operator_norms import grid_correction
from deepinv_dynnets.models import EulerDenoiser
from deepinv_dynnets.models.euler_denoiser import _block_alpha


def _model(dtype=torch.float64, **kwargs) -> EulerDenoiser:
    """A small two-channel denoiser with random weights far from their initialisation."""
    config = {"in_channels": 2, "width": 3, "hidden": 4, "n_blocks": 2} | kwargs
    model = EulerDenoiser(**config)
    with torch.no_grad():
        for block in model.blocks:
            for p in (block.weight, block.bias, block.sigma_weight):
                if p is not None:
                    p.normal_()
    return model.to(dtype).eval()


def _message(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


# -- the block constant ------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 8])
@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.3, 0.5, 0.6, 0.75, 0.9, 0.95])
def test_block_alpha_is_the_largest_float_whose_composition_meets_the_target(alpha, n):
    a = _block_alpha(alpha, n)
    assert compose_averaged(*[a] * n) <= alpha
    # the next float up composes to more than the target: nothing of the target is lost
    # (several of these cases compose to exactly alpha, so "<" in place of "<=" shows)
    assert compose_averaged(*[math.nextafter(a, 1.0)] * n) > alpha


def test_one_block_or_a_target_of_one_keeps_the_target_exactly():
    for alpha in (0.3, 0.6, 0.9, 1.0):  # a bisection would stop one float below these
        assert _block_alpha(alpha, 1) == alpha
    for n in (2, 3, 7):  # only non-expansive: every block may be non-expansive
        assert _block_alpha(1.0, n) == 1.0
    model = EulerDenoiser(width=2, hidden=2, n_blocks=3, alpha=1.0)
    assert model.block_alpha == 1.0 and all(b.alpha == 1.0 for b in model.blocks)
    model = EulerDenoiser(width=2, hidden=2, n_blocks=3, alpha=0.5)
    assert model.block_alpha == 0.25 and all(b.alpha == 0.25 for b in model.blocks)


# -- the constructor -----------------------------------------------------------------------

CONFIG = {
    "in_channels": 2,
    "width": 3,
    "hidden": 4,
    "n_blocks": 2,
    "kernel_size": 5,
    "alpha": 0.7,
    "activation": "leaky_relu",
    "negative_slope": 0.2,
    "sigma_conditioning": False,
    "safety": 1.2,
    "n_power_iter": 2,
    "power_grid": 40,
    "step_init": 0.6,
}


def _check_built_as(model: EulerDenoiser, config: dict) -> None:
    """Every constructor argument reached the model and each of its steps."""
    assert model.config == config
    assert model.in_channels == config["in_channels"] and model.alpha == config["alpha"]
    assert model.sigma_conditioning is config["sigma_conditioning"]
    assert model.block_alpha == _block_alpha(config["alpha"], config["n_blocks"])
    assert len(model.blocks) == config["n_blocks"]
    k = config["kernel_size"]
    for block in model.blocks:
        assert tuple(block.weight.shape) == (config["hidden"], config["width"], k, k)
        assert block.alpha == model.block_alpha
        assert block.field.negative_slope == config["negative_slope"]
        assert (block.sigma_weight is not None) is config["sigma_conditioning"]
        assert block.safety == config["safety"] and block.n_power_iter == config["n_power_iter"]
        assert block.power_grid == config["power_grid"]
        assert block.nu_factor == config["safety"] * grid_correction(k, config["power_grid"]) ** 2
        assert float(torch.sigmoid(block.theta.detach())) == pytest.approx(config["step_init"])


def test_every_argument_reaches_the_steps_and_the_saved_file(tmp_path):
    model = EulerDenoiser(**CONFIG)
    _check_built_as(model, CONFIG)
    x = torch.rand(2, 2, 6, 5)
    with torch.no_grad():
        expected = model.eval()(x)
    model.save(tmp_path / "d.pt", note="kill", epochs=3)
    card = json.loads((tmp_path / "d.json").read_text())
    assert card["config"] == CONFIG and card["note"] == "kill" and card["epochs"] == 3
    for loaded in (
        EulerDenoiser.from_pretrained(tmp_path / "d.pt"),
        EulerDenoiser(**CONFIG, pretrained=tmp_path / "d.pt"),
    ):
        _check_built_as(loaded, CONFIG)
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)
    # the defaults: no power grid given, the steps' default max(8, 32 (k - 1))
    default = EulerDenoiser(width=2, hidden=2, n_blocks=1)
    assert default.config["power_grid"] is None and default.blocks[0].power_grid == 64


def test_argument_boundaries_are_accepted():
    for slope in (0.0, 1.0):
        model = EulerDenoiser(
            width=2, hidden=2, n_blocks=1, activation="leaky_relu", negative_slope=slope
        )
        assert model.blocks[0].field.negative_slope == slope
    assert EulerDenoiser(width=2, hidden=2, n_blocks=1, safety=1.0).blocks[0].safety == 1.0
    assert EulerDenoiser(in_channels=3, width=3, hidden=2, n_blocks=1).in_channels == 3
    assert EulerDenoiser(width=2, hidden=2, n_blocks=1, kernel_size=1).blocks[0].kernel_size == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 0}, "in_channels must be a positive integer, got 0"),
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"hidden": -1}, "hidden must be a positive integer, got -1"),
        ({"n_blocks": 2.0}, "n_blocks must be a positive integer, got 2.0"),
        ({"n_power_iter": 0}, "n_power_iter must be a positive integer, got 0"),
        ({"kernel_size": True}, "kernel_size must be a positive integer, got True"),
        ({"kernel_size": 4}, "kernel_size must be a positive odd integer, got 4"),
        ({"in_channels": 3}, "width must be >= in_channels, got 2 < 3"),
        ({"alpha": True}, "alpha must be a real number, got True"),
        ({"alpha": 0.0}, "alpha must lie in (0, 1], got 0.0"),
        ({"alpha": 1.5}, "alpha must lie in (0, 1], got 1.5"),
        ({"negative_slope": True}, "negative_slope must be a real number, got True"),
        ({"negative_slope": -0.01}, "negative_slope must lie in [0, 1], got -0.01"),
        ({"negative_slope": 1.5}, "negative_slope must lie in [0, 1], got 1.5"),
        ({"safety": True}, "safety must be a real number, got True"),
        ({"safety": 0.99}, "safety must be a finite number >= 1, got 0.99"),
        ({"safety": math.inf}, "safety must be a finite number >= 1, got inf"),
        ({"step_init": "0.5"}, "step_init must be a real number, got '0.5'"),
        ({"power_grid": 0}, "power_grid must be a positive integer, got 0"),
        ({"power_grid": 2.0}, "power_grid must be a positive integer, got 2.0"),
        (
            {"activation": "tanh"},
            f"activation must be one of {AVERAGING_ACTIVATIONS}, got 'tanh'",
        ),
    ],
)
def test_constructor_refusals_name_the_argument_exactly(kwargs, message):
    config = {"width": 2, "hidden": 2, "n_blocks": 1} | kwargs
    assert _message(lambda: EulerDenoiser(**config)) == message


def test_a_power_grid_too_coarse_for_the_kernel_is_refused():
    message = _message(lambda: EulerDenoiser(width=2, hidden=2, kernel_size=5, power_grid=8))
    assert message.startswith("grid_size (8, 8) is too coarse for kernel_size (5, 5)")


def test_device_argument_places_every_tensor(tmp_path):
    model = EulerDenoiser(width=3, hidden=4, n_blocks=2, device="meta")
    tensors = [*model.parameters(), *model.buffers()]
    assert {t.device.type for t in tensors} == {"meta"}
    EulerDenoiser(width=3, hidden=4, n_blocks=2).save(tmp_path / "d.pt")
    for device, expected in ((None, "cpu"), ("meta", "meta")):
        loaded = EulerDenoiser.from_pretrained(tmp_path / "d.pt", device=device)
        assert {t.device.type for t in [*loaded.parameters(), *loaded.buffers()]} == {expected}


# -- the map ---------------------------------------------------------------------------------


def test_the_cpu_forward_runs_the_steps_channels_last_and_returns_x_layout():
    model = _model()
    seen = []
    model.network.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.rand(2, 2, 5, 4, dtype=torch.float64)
    assert not x.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x, 0.1)
    assert seen == [True] and out.is_contiguous()  # oneDNN's fast layout, then x's
    # a strided view (neither layout) comes back contiguous, with the same values
    view = torch.rand(2, 2, 4, 5, dtype=torch.float64).transpose(2, 3)
    assert not view.is_contiguous() and not view.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(view, 0.1)
        assert out.is_contiguous()
        torch.testing.assert_close(out, model(view.contiguous(), 0.1), rtol=0, atol=1e-12)


def test_every_device_gives_the_cpu_map(device):
    # Off the CPU the forward takes its own branch (no channels-last copy): x and the levels
    # (a number, or a per-image tensor left on the CPU) must reach the steps there too.
    model = _model()
    x = torch.rand(2, 2, 5, 4, dtype=torch.float64)
    per_image = torch.tensor([0.1, 0.4], dtype=torch.float64)
    moved = copy.deepcopy(model).to(device)
    with torch.no_grad():
        for sigma in (0.3, per_image):
            out = moved(x.to(device), sigma)
            assert out.device == x.to(device).device
            torch.testing.assert_close(out.cpu(), model(x, sigma), rtol=1e-10, atol=1e-12)
        assert not torch.allclose(model(x, 0.3), model(x, 0.0))  # the levels matter


def test_noise_levels_up_to_one_are_accepted_and_above_refused():
    model = _model()
    x = torch.rand(2, 2, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        at_one = model(x, 1.0)
        for sigma in (torch.tensor(1.0), np.float64(1.0), torch.ones(2), [1.0, 1.0]):
            assert torch.equal(model(x, sigma), at_one)
        assert not torch.allclose(at_one, model(x, 0.5))
    above = math.nextafter(1.0, 2.0)
    assert _message(lambda: model(x, above)) == (
        f"sigma must be a noise level for images in [0, 1] (at most 1), got {above!r}: "
        "pass sigma / 255 for a level on the 0-255 scale"
    )


def test_noise_levels_of_another_dtype_or_kind_are_converted_to_x_dtype():
    model = _model(torch.float32)
    x = torch.rand(2, 2, 5, 4)
    per_image = torch.tensor([0.1, 0.3], dtype=torch.float64)
    with torch.no_grad():
        out = model(x, per_image)
        assert out.dtype == torch.float32
        assert torch.equal(out, model(x, per_image.float()))
    # a list of real numbers of any kind, as a single level may be any real number
    model = _model()
    x = x.double()
    with torch.no_grad():
        expected = model(x, torch.tensor([0.1, 0.3], dtype=torch.float64))
        assert torch.equal(model(x, [Fraction(1, 10), Fraction(3, 10)]), expected)
        assert torch.equal(model(x, Fraction(1, 10)), model(x, 0.1))


def test_input_refusals_name_the_argument_exactly():
    model = _model()
    x = torch.rand(1, 2, 5, 4, dtype=torch.float64)
    assert _message(lambda: model(x.numpy(), 0.1)) == "x must be a torch.Tensor, got ndarray"
    bad = x.clone()
    bad[0, 1, 2, 3] = math.inf
    assert _message(lambda: model(bad, 0.1)) == "x contains NaN or Inf values"
    assert _message(lambda: model(x)) == (
        "sigma is required: this EulerDenoiser is noise-level conditioned"
    )
    assert _message(lambda: model(x, "0.1")) == (
        "sigma must be a number, a tensor or an array, got str"
    )


# -- the step sizes ----------------------------------------------------------------------


def test_step_sizes_are_float64_for_a_float32_model():
    model = _model(torch.float32)
    h = model.step_sizes()
    assert h.dtype == torch.float64
    expected = [
        2 * model.block_alpha * torch.sigmoid(b.theta.double()) / b.nu.double()
        for b in model.blocks
    ]
    assert torch.equal(h, torch.stack(expected).detach())
    assert [b["h"] for b in model.averaged_blocks()] == h.tolist()


def test_refresh_nu_runs_the_power_iterations_asked_for_on_every_block():
    model = _model(power_grid=16)
    twin = copy.deepcopy(model)
    for n_iter in (1, None):  # 1 iteration from random vectors, then the default 10
        model.refresh_nu(n_iter)
        for block, ref in zip(model.blocks, twin.blocks, strict=True):
            ref.refresh_nu(n_iter or REFRESH_ITERS)
            assert torch.equal(block.nu, ref.nu)
    fresh = copy.deepcopy(twin)
    for block in fresh.blocks:
        block.refresh_nu(1)
    assert not torch.equal(fresh.blocks[0].nu, twin.blocks[0].nu)  # 1 and 10 differ


# -- weight files --------------------------------------------------------------------------


def test_from_pretrained_selects_the_shipped_weights_by_channels_and_alpha():
    gray = EulerDenoiser.from_pretrained("default")
    assert (gray.in_channels, gray.alpha) == (1, 0.5)
    color = EulerDenoiser.from_pretrained("default", in_channels=3, alpha=0.95)
    assert (color.in_channels, color.alpha) == (3, 0.95)
    # every default argument of the constructor is the shipped gray model's
    built = EulerDenoiser(pretrained="default")
    assert built.config == gray.config
    theirs = gray.state_dict()
    for key, value in built.state_dict().items():  # tensors, and the steps' extra state
        assert torch.equal(value, theirs[key]) if torch.is_tensor(value) else value == theirs[key]


def _saved(tmp_path, **kwargs):
    path = tmp_path / "d.pt"
    model = EulerDenoiser(width=4, hidden=6, n_blocks=1, **kwargs).eval()
    with torch.no_grad():
        model(torch.rand(1, 1, 5, 5), 0.1)  # estimate nu, which the file then holds
    model.save(path)
    return model, path, path.with_suffix(".json")


def _rewrite_card(card_path, edit):
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))


def test_mismatched_files_are_refused_naming_the_file_and_the_differences(tmp_path):
    _, path, card_path = _saved(tmp_path)
    assert _message(lambda: EulerDenoiser(width=5, hidden=7, n_blocks=1, pretrained=path)) == (
        f"{path} holds an EulerDenoiser of a different architecture (width: file 4 vs model "
        f"5, hidden: file 6 vs model 7); build it with EulerDenoiser.from_pretrained("
        f"{str(path)!r})"
    )
    _rewrite_card(card_path, lambda card: card["config"].update(depth=3))
    message = _message(lambda: EulerDenoiser.from_pretrained(path))
    assert message.startswith(f"{path} has an invalid EulerDenoiser config: ")
    assert "'depth'" in message
    _rewrite_card(card_path, lambda card: card.pop("config"))
    assert _message(lambda: EulerDenoiser.from_pretrained(path)) == (
        f"{path} has no EulerDenoiser config in its model card"
    )


def test_weights_that_do_not_fit_their_config_are_refused_with_strict_loading(tmp_path):
    _, path, card_path = _saved(tmp_path)
    state = torch.load(path, weights_only=True)
    for edit in ("missing", "extra"):
        changed = dict(state)
        if edit == "missing":
            del changed["network.steps.0.theta"]
        else:
            changed["network.steps.0.extra"] = torch.zeros(1)
        torch.save(changed, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        _rewrite_card(card_path, lambda card, d=digest: card.update(weights_sha256=d))
        prefix = f"{path} holds weights of a different architecture than its config says: "
        for load in (
            lambda: EulerDenoiser.from_pretrained(path),
            lambda: EulerDenoiser(width=4, hidden=6, n_blocks=1, pretrained=path),
        ):
            message = _message(load)
            assert message.startswith(prefix)
            assert ("theta" if edit == "missing" else "extra") in message


def test_a_card_without_a_later_config_entry_loads_with_the_model_value(tmp_path):
    model, path, card_path = _saved(tmp_path)
    _rewrite_card(card_path, lambda card: card["config"].pop("step_init"))
    loaded = EulerDenoiser(width=4, hidden=6, n_blocks=1, pretrained=path)
    x = torch.rand(2, 1, 5, 5)
    with torch.no_grad():
        assert torch.equal(loaded(x, 0.2), model(x, 0.2))
