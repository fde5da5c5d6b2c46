"""The averaged Euler step and its step-size control, against formulas computed here.

Written for the mutation testing of ``dynamics/averaged_step.py`` (see the guarantees
page). The field :math:`F(x) = -A^\\top s(Ax + b_0 + \\sigma c)` is rebuilt from
``conv2d`` and the adjoint of :math:`A` from autograd (not from ``conv_transpose2d``), in
float64; the step-size control's constants are checked against their definitions.
"""

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
