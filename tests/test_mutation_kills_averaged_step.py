"""The averaged Euler step and its step-size control, against formulas computed here.

Written for the mutation testing of ``dynamics/averaged_step.py`` (see the guarantees
page). The field :math:`F(x) = -A^\\top s(Ax + b_0 + \\sigma c)` is rebuilt from
``conv2d`` and the adjoint of :math:`A` from autograd (not from ``conv_transpose2d``), in
float64; the step-size control's constants are checked against their definitions.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from deepinv_dynnets.dynamics import AveragedEulerStep, ConvRidgeField
from deepinv_dynnets.dynamics.averaged_step import REFRESH_ITERS
from deepinv_dynnets.lipschitz.operator_norms import (
    ROUNDOFF_MARGIN,
    conv2d_norm_bound,
    grid_correction,
)


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    return module.double()


def _field_by_hand(field: ConvRidgeField, x: torch.Tensor, sigma: torch.Tensor, slope: float):
    """-A^T s(Ax + b + sigma c) with A^T y the gradient of <Ax, y> (padding 'same')."""
    pad = field.kernel_size // 2
    w = field.weight.detach()
    bias = field.bias.detach().view(1, -1, 1, 1)
    if field.sigma_weight is not None:
        bias = bias + sigma.view(-1, 1, 1, 1) * field.sigma_weight.detach().view(1, -1, 1, 1)
    full = torch.cat([x, x.new_zeros(x.shape[0], w.shape[1] - x.shape[1], *x.shape[2:])], 1)
    z = F.conv2d(full, w, padding=pad) + bias
    s = torch.where(z > 0, z, slope * z)
    with torch.enable_grad():
        probe = full.clone().requires_grad_(True)
        (adjoint,) = torch.autograd.grad(F.conv2d(probe, w, padding=pad), probe, s)
    return -adjoint


@pytest.mark.parametrize(
    ("activation", "slope", "used"),
    [("relu", 0.3, 0.0), ("leaky_relu", 0.3, 0.3), ("leaky_relu", 1.0, 1.0)],
)
def test_field_is_minus_the_adjoint_of_the_activated_convolution(activation, slope, used):
    field = _randomize(ConvRidgeField(4, 6, 3, activation, negative_slope=slope))
    assert field.negative_slope == used
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64)
    per_image = torch.tensor([0.1, 0.5, 0.2], dtype=torch.float64)
    same = torch.full((3,), 0.4, dtype=torch.float64)
    for sigma in (per_image, same):
        expected = _field_by_hand(field, x, sigma, used)
        torch.testing.assert_close(field(x, sigma), expected, rtol=1e-12, atol=1e-12)
    # a state holding the first channels only (the others zero)
    expected = _field_by_hand(field, x[:, :2], per_image, used)
    pre = field.preactivation(x[:, :2], per_image)
    out = -F.conv_transpose2d(field.activation(pre, per_image), field.weight, padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    unconditioned = _randomize(ConvRidgeField(4, 6, 3, activation, slope, False))
    zero = torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(
        unconditioned(x, per_image), _field_by_hand(unconditioned, x, zero, used)
    )


def test_field_argument_boundaries():
    for slope in (0.0, 1.0):
        assert ConvRidgeField(2, 2, activation="leaky_relu", negative_slope=slope)
    for slope in (-1e-9, 1 + 1e-9):
        with pytest.raises(ValueError, match="negative_slope must lie in"):
            ConvRidgeField(2, 2, negative_slope=slope)
    with pytest.raises(ValueError, match="activation must be one of"):
        ConvRidgeField(2, 2, activation="tanh")


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_step_control_constants_follow_their_definitions(kernel_size):
    step = AveragedEulerStep(3, 4, kernel_size, alpha=0.4, safety=1.1, step_init=0.8)
    grid = max(8, 32 * (kernel_size - 1))
    assert step.power_grid == grid
    assert step.nu_factor == 1.1 * grid_correction(kernel_size, grid) ** 2
    assert tuple(step.power_vectors.shape) == (grid, grid // 2 + 1, 3, 2)
    assert float(torch.sigmoid(step.theta.detach())) == pytest.approx(0.8, rel=1e-6)
    # before any estimate: the proven crude bound ||A|| <= sum_p ||A_p||_F
    w = step.weight.detach().double()
    crude = w.square().sum(dim=(0, 1)).sqrt().sum() ** 2 * (1 + ROUNDOFF_MARGIN)
    assert float(step.nu) == pytest.approx(float(crude), rel=1e-6)
    assert float(step.nu) >= conv2d_norm_bound(step.weight) ** 2
    assert AveragedEulerStep(3, 4, 3, power_grid=20).power_grid == 20


def test_step_init_must_lie_strictly_between_zero_and_one():
    for value in (0.0, 1.0):
        with pytest.raises(ValueError, match="step_init must lie in"):
            AveragedEulerStep(2, 2, step_init=value)


def test_step_is_x_minus_h_times_the_field_with_the_controlled_h():
    step = _randomize(AveragedEulerStep(4, 6, 3, alpha=0.3, activation="leaky_relu")).eval()
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.3], dtype=torch.float64)
    with torch.no_grad():
        out = step(x, sigma)
        h = 2 * 0.3 * torch.sigmoid(step.theta) / step.nu
        assert float(step.step_size()) == float(h)
        expected = x + h * _field_by_hand(step.field, x, sigma, 0.01)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        # fewer input channels (zero-padded) and fewer kept outputs
        part = x[:, :2]
        full = torch.cat([part, torch.zeros_like(x[:, 2:])], 1)
        expected = full + h * _field_by_hand(step.field, full, sigma, 0.01)
        torch.testing.assert_close(step(part, sigma), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(step(part, sigma, keep=3), expected[:, :3])
        torch.testing.assert_close(step(x, sigma, keep=1), step(x, sigma)[:, :1])


def test_refresh_calibrate_and_sync():
    torch.manual_seed(2)
    step = _randomize(AveragedEulerStep(3, 5, 3, alpha=0.5, power_grid=16))
    grid_max = (
        torch.linalg.svdvals(torch.fft.rfft2(step.weight.detach(), s=(16, 16)).permute(2, 3, 0, 1))
        .max()
        .item()
        ** 2
    )
    step.refresh_nu(300)
    assert float(step.nu) == pytest.approx(step.nu_factor * grid_max, rel=1e-9)
    cert = conv2d_norm_bound(step.weight) ** 2
    # a low nu is raised to the certified bound (with the margin), a high one is kept
    with torch.no_grad():
        step.nu.mul_(0.5)
    assert step.calibrate() == cert
    assert float(step.nu) == cert * (1 + ROUNDOFF_MARGIN)
    with torch.no_grad():
        step.nu.fill_(3 * cert)
    step.calibrate()
    assert float(step.nu) == 3 * cert
    # eval: nu is kept while the weights are, refreshed once they change
    step.eval()
    step(torch.randn(1, 3, 5, 5, dtype=torch.float64))
    assert float(step.nu) == 3 * cert
    with torch.no_grad():
        step.weight.mul_(2)
    step(torch.randn(1, 3, 5, 5, dtype=torch.float64))
    assert float(step.nu) == pytest.approx(4 * step.nu_factor * grid_max, rel=0.02)
    assert float(step.nu) <= 4 * step.nu_factor * grid_max * (1 + 1e-9)


def test_a_cold_start_runs_the_refresh_iterations_in_training():
    torch.manual_seed(4)
    a = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16, n_power_iter=1)).train()
    b = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16, n_power_iter=1))
    b.load_state_dict(a.state_dict())
    b.power_vectors.copy_(a.power_vectors)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    a(x)  # cold: REFRESH_ITERS iterations
    expected = b._estimate_nu(REFRESH_ITERS)
    assert float(a.nu) == pytest.approx(float(expected.detach()), rel=1e-12)
    assert not a._cold


def test_fingerprints_tell_weights_apart_at_round_off_size_only():
    from deepinv_dynnets.dynamics.averaged_step import _fingerprint, _same_fingerprint

    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    fp = _fingerprint(w)
    assert fp[0] == pytest.approx(float(w.sum()), rel=1e-12)
    assert fp[1] == pytest.approx(float(w.square().sum()), rel=1e-12)
    ramp = torch.sin(torch.arange(1, w.numel() + 1, dtype=torch.float64))
    assert fp[2] == pytest.approx(float((w.reshape(-1) * ramp).sum()), rel=1e-12)
    assert _same_fingerprint(fp, fp) and not _same_fingerprint(None, fp)
    assert not _same_fingerprint(fp, None)
    nudged = tuple(v * (1 + 3e-10) for v in fp)
    close = tuple(v * (1 + 1e-12) for v in fp)
    assert _same_fingerprint(fp, close) and not _same_fingerprint(fp, nudged)
    # a permutation of the weights changes only the ramp statistic
    swapped = w.clone().reshape(-1)
    swapped[[0, 1]] = swapped[[1, 0]]
    assert not _same_fingerprint(fp, _fingerprint(swapped))
    assert math.isfinite(sum(fp))


def _spline_by_hand(spline, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """g phi(z / g), g = e^rho (1 + sigma / sigma_ref), phi(u) = int_0^u a(t) dt summed over
    the intervals of the knots: sum_j a_j (clip(u, I_j) - clip(0, I_j))."""
    a = torch.sigmoid(spline.logit_gain * spline.slope_logits.detach().double())
    m = spline.n_knots // 2
    delta = spline.knot_range / m
    edges = [-math.inf] + [(k - m) * delta for k in range(spline.n_knots)] + [math.inf]
    g = torch.exp(spline.log_scale.detach().double()).view(1, -1, 1, 1)
    g = g * (1 + sigma.reshape(-1, 1, 1, 1) / spline.sigma_ref)
    u = z / g
    phi = torch.zeros_like(u)
    for j in range(spline.n_knots + 1):
        lo, hi = edges[j], edges[j + 1]
        phi = phi + a[:, j].view(1, -1, 1, 1) * (u.clamp(lo, hi) - min(max(0.0, lo), hi))
    return g * phi


def _spline_field_by_hand(field: ConvRidgeField, x: torch.Tensor, sigma: torch.Tensor):
    """-A^T s(Ax + b + sigma c) with the spline s evaluated by hand."""
    pad = field.kernel_size // 2
    w = field.weight.detach()
    sigma = sigma.expand(x.shape[0])
    bias = field.bias.detach().view(1, -1, 1, 1)
    bias = bias + sigma.view(-1, 1, 1, 1) * field.sigma_weight.detach().view(1, -1, 1, 1)
    z = F.conv2d(x, w, padding=pad) + bias
    s = _spline_by_hand(field.spline, z, sigma)
    with torch.enable_grad():
        probe = x.clone().requires_grad_(True)
        (adjoint,) = torch.autograd.grad(F.conv2d(probe, w, padding=pad), probe, s)
    return -adjoint


def test_spline_knots_are_scaled_with_each_images_sigma():
    # guards: the field and the step pass sigma to the spline (its knots scale with sigma)
    torch.manual_seed(6)
    step = _randomize(AveragedEulerStep(3, 4, 3, activation="spline", power_grid=16)).eval()
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    for sigma in (
        torch.tensor([0.05, 0.4], dtype=torch.float64),  # per image
        torch.tensor([0.3, 0.3], dtype=torch.float64),  # one for the batch
        torch.tensor(0.2, dtype=torch.float64),  # a scalar
    ):
        expected = _spline_field_by_hand(step.field, x, sigma)
        # sigma really matters here: without it the spline has another scale
        assert (expected - _spline_field_by_hand(step.field, x, 0 * sigma)).abs().max() > 1e-3
        torch.testing.assert_close(step.field(x, sigma), expected, rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            out = step(x, sigma)
            h = 2 * step.alpha * torch.sigmoid(step.theta) / step.nu
            torch.testing.assert_close(out, x + h * expected, rtol=1e-12, atol=1e-12)


def test_a_kernel_of_size_5_is_padded_by_2():
    # guards: "same" padding kernel_size // 2 in the field, its preactivation and the step
    torch.manual_seed(7)
    step = _randomize(AveragedEulerStep(3, 4, 5, alpha=0.4, power_grid=32)).eval()
    x = torch.randn(2, 3, 8, 7, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.3], dtype=torch.float64)
    expected = _field_by_hand(step.field, x, sigma, 0.0)
    torch.testing.assert_close(step.field(x, sigma), expected, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        out = step(x, sigma)
        h = 2 * 0.4 * torch.sigmoid(step.theta) / step.nu
    torch.testing.assert_close(out, x + h * expected, rtol=1e-12, atol=1e-12)


def test_a_scalar_sigma_is_one_bias_for_the_batch():
    # guards: a 0-d sigma (one noise level for the batch) takes the fused-bias path
    torch.manual_seed(8)
    field = _randomize(ConvRidgeField(3, 4, 3))
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    sigma = torch.tensor(0.25, dtype=torch.float64)
    expected = _field_by_hand(field, x, sigma.expand(2), 0.0)
    torch.testing.assert_close(field(x, sigma), expected, rtol=1e-12, atol=1e-12)
    one = torch.tensor([0.25], dtype=torch.float64)
    torch.testing.assert_close(field(x[:1], one), expected[:1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_the_activation_overwrites_its_input_only_when_asked(activation):
    # guards: activation(z) and activation(z, inplace=False) leave z alone (z may be needed)
    field = ConvRidgeField(2, 3, activation=activation, negative_slope=0.2).double()
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    kept = z.clone()
    slope = 0.2 if activation == "leaky_relu" else 0.0
    expected = torch.where(kept > 0, kept, slope * kept)
    for out in (field.activation(z), field.activation(z, None, inplace=False)):
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        torch.testing.assert_close(z, kept, rtol=0, atol=0)
    # a leaf that requires grad cannot be overwritten: the default must not try
    leaf = kept.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(field.activation(leaf).sum(), leaf)
    torch.testing.assert_close(grad, torch.where(kept > 0, 1.0, slope).double())


def test_constructor_defaults():
    # guards: the defaults: alpha 1/2 (firmly non-expansive), sigma conditioning on, one
    # power iteration per warm training forward
    step = AveragedEulerStep(2, 3)
    assert step.alpha == 0.5
    assert step.n_power_iter == 1
    assert step.sigma_weight is not None
    assert tuple(step.sigma_weight.shape) == (3,)
    assert step.safety == 1.05


def test_a_warm_training_forward_runs_n_power_iter_iterations():
    # guards: REFRESH_ITERS only while cold, n_power_iter (default 1) afterwards
    torch.manual_seed(9)
    step = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16)).train()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    step(x)  # cold
    with torch.no_grad():
        step.weight.add_(0.7 * torch.randn_like(step.weight))  # an optimizer step, say
    estimates = {
        n: float(copy.deepcopy(step)._estimate_nu(n).detach()) for n in (1, 2, REFRESH_ITERS)
    }
    assert abs(estimates[1] - estimates[2]) > 1e-9 * estimates[1]
    assert abs(estimates[1] - estimates[REFRESH_ITERS]) > 1e-9 * estimates[1]
    step(x)
    assert float(step.nu) == pytest.approx(estimates[1], rel=1e-12)


def test_a_kept_nu_carries_the_gradient_of_the_estimate():
    # guards: nu = stored + (estimate - estimate.detach()) for unchanged weights: the stored
    # value with the estimate's gradient, not its negative
    torch.manual_seed(10)
    step = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16)).train()
    step(torch.randn(1, 3, 5, 5, dtype=torch.float64))
    with torch.no_grad():
        step.nu.mul_(1.5)  # a calibrated value, say
    stored = float(step.nu)
    twin = copy.deepcopy(step)
    nu = step._current_nu()
    assert float(nu.detach()) == stored
    (grad,) = torch.autograd.grad(nu, step.weight)
    estimate = twin._estimate_nu(twin.n_power_iter)
    (expected,) = torch.autograd.grad(estimate, twin.weight)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    # the estimate is homogeneous of degree 2 in the weights (vectors fixed): Euler's identity
    w = step.weight.detach()
    assert float((grad * w).sum()) == pytest.approx(2 * float(estimate.detach()), rel=1e-9)


def test_loading_a_checkpoint_makes_the_power_vectors_cold():
    # guards: after load_state_dict the next training forward runs REFRESH_ITERS iterations
    torch.manual_seed(11)
    source = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16))
    step = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16)).train()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    step(x)  # warm, tuned to its own weights
    step.load_state_dict(source.state_dict())  # never estimated: no fingerprint
    cold = float(copy.deepcopy(step)._estimate_nu(REFRESH_ITERS).detach())
    warm = float(copy.deepcopy(step)._estimate_nu(step.n_power_iter).detach())
    assert abs(cold - warm) > 1e-9 * cold
    step(x)
    assert float(step.nu) == pytest.approx(cold, rel=1e-12)


def test_an_extra_state_that_is_not_a_dict_means_no_fingerprint():
    # guards: an unrecognised extra state is ignored (nu re-estimated), not an error
    torch.manual_seed(12)
    source = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16))
    source.calibrate()
    state = source.state_dict()
    state["nu"] = torch.tensor(1e-3, dtype=torch.float64)  # stale: far below ||A||^2
    for extra in (None, "v0", 3):
        state["_extra_state"] = extra
        step = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16)).eval()
        step.load_state_dict(state)
        step(torch.randn(1, 3, 5, 5, dtype=torch.float64))
        assert float(step.nu) >= conv2d_norm_bound(step.weight) ** 2 / step.nu_factor
        assert float(step.nu) > 0.9 * step.nu_factor * conv2d_norm_bound(step.weight) ** 2


def test_a_fingerprint_of_another_length_never_matches():
    # guards: zip(..., strict=True): a truncated fingerprint (a foreign checkpoint) must not
    # keep a stale nu by matching on a prefix (rejecting it or re-estimating nu are both safe)
    from deepinv_dynnets.dynamics.averaged_step import _fingerprint, _same_fingerprint

    def matches(a, b) -> bool:
        try:
            return _same_fingerprint(a, b)
        except ValueError:
            return False

    torch.manual_seed(13)
    fp = _fingerprint(torch.randn(4, 3, 3, 3, dtype=torch.float64))
    assert matches(fp, fp)
    for a, b in ((fp[:2], fp), (fp, fp[:2]), (fp, (*fp, 1.0))):
        assert not matches(a, b)
    source = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16))
    cert = source.calibrate()
    state = source.state_dict()
    state["nu"] = torch.tensor(1e-3, dtype=torch.float64)  # stale: far below ||A||^2
    saved = list(_fingerprint(source.weight))
    step = _randomize(AveragedEulerStep(3, 5, 3, power_grid=16)).eval()
    for bad in (saved[:2], [*saved, 1.0], [True, 1.0, 2.0], ["1", 2.0, 3.0], 3.0):
        state["_extra_state"] = {"fingerprint": bad}
        with pytest.raises(ValueError, match="corrupt weights.*fingerprint must be 3 numbers"):
            step.load_state_dict(state)
    state["_extra_state"] = {"fingerprint": saved}
    step.load_state_dict(state)
    state["_extra_state"] = {"fingerprint": [2 * f for f in saved]}  # other weights': stale
    step.load_state_dict(state)
    step(torch.randn(1, 3, 5, 5, dtype=torch.float64))
    assert float(step.nu) > 0.9 * step.nu_factor * cert  # re-estimated


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_an_all_zero_kernel_is_the_identity_not_nan(dtype):
    # nu = 0: h = 2 alpha sigmoid(theta) / nu would be inf and h * A = inf * 0 = NaN
    step = AveragedEulerStep(3, 5, 3, power_grid=16).to(dtype)
    with torch.no_grad():
        step.weight.zero_()
    x = torch.rand(2, 3, 6, 6, dtype=dtype)
    for mode in (step.train, step.eval):
        mode()
        assert torch.equal(step(x, torch.full((2,), 0.1, dtype=dtype)), x)
        assert float(step.nu) == 0 and math.isfinite(float(step.step_size().detach()))


def test_a_calibrated_nu_survives_for_a_zero_mean_kernel():
    # guards: the tolerance test is <=, so that a fingerprint with an exact 0 (the sum of a
    # zero-mean kernel) still matches itself and a calibrated nu is kept in eval mode
    from deepinv_dynnets.dynamics.averaged_step import _fingerprint, _same_fingerprint

    torch.manual_seed(14)
    step = AveragedEulerStep(3, 4, 3, power_grid=16).double()
    half = torch.randint(-3, 4, (2, 3, 3, 3)).double()
    with torch.no_grad():
        step.weight.copy_(torch.cat([half, -half]))  # integers: the sum is exactly 0
    fp = _fingerprint(step.weight)
    assert fp[0] == 0.0 and fp[1] > 0
    assert _same_fingerprint(fp, fp)
    assert _same_fingerprint((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    cert = step.calibrate()
    with torch.no_grad():
        step.nu.fill_(3 * cert)
    step.eval()
    step(torch.randn(1, 3, 5, 5, dtype=torch.float64))
    assert float(step.nu) == 3 * cert


def test_step_size_in_a_requested_dtype_is_computed_in_it():
    # guards: step_size(dtype) converts theta and nu before the formula (certify asks float64
    # of a float32 model: sigmoid(theta) must not be rounded to float32 first)
    torch.manual_seed(15)
    step = AveragedEulerStep(3, 4, 3, alpha=0.3, power_grid=16)
    with torch.no_grad():
        step.theta.fill_(0.123456789)
        step.nu.fill_(7.654321)
    h = step.step_size(torch.float64).detach()
    assert h.dtype == torch.float64
    theta, nu = step.theta.detach().double(), step.nu.double()
    assert float(h) == float(2 * 0.3 * torch.sigmoid(theta) / nu)
    assert float(h) != float(2 * 0.3 * torch.sigmoid(step.theta.detach()).double() / nu)
    assert step.step_size().dtype == torch.float32
    # and a float64 model asked for float32 gets float32
    step.double()
    h32 = step.step_size(torch.float32).detach()
    assert h32.dtype == torch.float32
    expected = 2 * 0.3 * torch.sigmoid(step.theta.detach().float()) / step.nu.float()
    assert float(h32) == float(expected)


def test_fingerprint_statistics_are_float64_on_the_weights_device():
    # guards: _fingerprint sums in float64 (float32 sums depend on the summation order at
    # 1e-7, far above the 1e-10 tolerance: a loaded, calibrated nu could be dropped) and
    # builds its ramp on the weights' device whatever the default device is
    from deepinv_dynnets.dynamics.averaged_step import _fingerprint

    torch.manual_seed(16)
    w = torch.randn(8, 8, 3, 3)  # float32
    w64 = w.double().reshape(-1)
    ramp = torch.sin(torch.arange(1, w64.numel() + 1, dtype=torch.float64))
    expected = (float(w64.sum()), float((w64 * w64).sum()), float((w64 * ramp).sum()))
    fp = _fingerprint(w)
    for got, want in zip(fp, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-13, abs=0)
    assert abs(float(w.sum()) - expected[0]) > 1e-13 * abs(expected[0])  # float32 would tell
    with torch.device("meta"):  # another default device (as after set_default_device)
        assert _fingerprint(w) == fp


def test_the_step_passes_its_arguments_to_the_field():
    # guards: sigma_conditioning=False reaches the field (no c, no "sigma_weight" in the
    # checkpoint); the field conditions on sigma by default; the recorded slope and width
    step = AveragedEulerStep(3, 5, 3, sigma_conditioning=False, power_grid=16)
    assert step.sigma_weight is None and step.field.sigma_weight is None
    assert not any("sigma_weight" in key for key in step.state_dict())
    field = ConvRidgeField(2, 7)
    assert field.hidden == 7
    assert field.sigma_weight is not None and tuple(field.sigma_weight.shape) == (7,)
    assert (
        AveragedEulerStep(2, 3, activation="leaky_relu", negative_slope=0.3).negative_slope == 0.3
    )
    assert AveragedEulerStep(2, 3, activation="relu", negative_slope=0.3).negative_slope == 0.0


def test_the_step_bound_is_estimated_in_the_weights_dtype_under_autocast():
    # guards: autocast is disabled inside _estimate_nu: a float32 step's nu is not rounded to
    # bfloat16 (about 2e-3 relative, enough to push h ||A||^2 above 2 alpha / kappa)
    torch.manual_seed(17)
    step = AveragedEulerStep(3, 5, 3, power_grid=16)
    with torch.no_grad():
        step.weight.copy_(torch.randn_like(step.weight))
    symbol = torch.fft.rfft2(step.weight.detach().double(), s=(16, 16)).permute(2, 3, 0, 1)
    expected = step.nu_factor * torch.linalg.svdvals(symbol).max().item() ** 2
    twin = copy.deepcopy(step)
    step.refresh_nu(300)
    assert step.nu.dtype == torch.float32
    assert float(step.nu) == pytest.approx(expected, rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        twin.refresh_nu(300)
        estimate = twin._estimate_nu(5)
    assert estimate.dtype == torch.float32
    assert float(twin.nu) == pytest.approx(expected, rel=1e-5)
    assert float(estimate.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, "alpha must lie in"),
        ({"alpha": -1.0}, "alpha must lie in"),
        ({"alpha": float("nan")}, "alpha must lie in"),
        ({"safety": 0.5}, "safety must be"),
        ({"safety": float("inf")}, "safety must be"),
        ({"n_power_iter": 0}, "^n_power_iter must be"),
    ],
)
def test_the_step_used_on_its_own_refuses_parameters_that_break_its_bound(kwargs, match):
    # EulerDenoiser checks these too; a step built directly must not accept an expansive alpha
    with pytest.raises(ValueError, match=match):
        AveragedEulerStep(2, 3, **kwargs)


def test_the_boundaries_safety_one_and_alpha_one_are_accepted():
    step = AveragedEulerStep(2, 3, alpha=1.0, safety=1.0, n_power_iter=1)
    assert (step.alpha, step.safety, step.n_power_iter) == (1.0, 1.0, 1)
