"""Tests of MonotoneLinearSpline: slope bound by construction, reference values, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from deepinv_dynnets.dynamics.linear_spline import MonotoneLinearSpline
from deepinv_dynnets.lipschitz import conv2d_norm_bound


def _reference(spline: MonotoneLinearSpline, z: torch.Tensor, sigma) -> torch.Tensor:
    # The definition, one interval at a time: phi(u) = sum_j a_j (clip_j(u) - clip_j(0)).
    a = spline.slopes().to(z.dtype)
    knots = spline.knots().to(z.dtype).tolist()
    bounds = [-math.inf] + knots + [math.inf]
    scale = torch.exp(spline.log_scale.to(z.dtype)).view(1, -1, 1, 1)
    if sigma is not None:
        s = torch.as_tensor(sigma, dtype=z.dtype).expand(z.shape[0])
        scale = scale * (1 + s / spline.sigma_ref).view(-1, 1, 1, 1)
    u = z / scale
    phi = torch.zeros_like(u)
    for j in range(spline.n_knots + 1):
        lo, hi = bounds[j], bounds[j + 1]
        piece = u.clamp(lo, hi) - min(max(0.0, lo), hi)
        phi = phi + a[:, j].view(1, -1, 1, 1) * piece
    return scale * phi


def _random_spline(seed: int = 0, **kwargs) -> MonotoneLinearSpline:
    torch.manual_seed(seed)
    spline = MonotoneLinearSpline(**kwargs).double()
    with torch.no_grad():
        spline.slope_logits.normal_(0, 0.3)
        spline.log_scale.normal_(0, 0.5)
    return spline


@pytest.mark.parametrize("sigma", [None, 0.07, "batch"])
def test_matches_reference_values_and_gradients(sigma):
    spline = _random_spline(channels=3, n_knots=7, knot_range=1.5)
    z = 3 * torch.randn(4, 3, 5, 6, dtype=torch.float64)
    if sigma == "batch":
        sigma = torch.tensor([0.0, 0.05, 0.1, 0.3], dtype=torch.float64)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    out, ref = spline(z1, sigma), _reference(spline, z2, sigma)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(out)
    params = [spline.slope_logits, spline.log_scale]
    grads = torch.autograd.grad((out * weights).sum(), [z1, *params])
    ref_grads = torch.autograd.grad((ref * weights).sum(), [z2, *params])
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_gradcheck_in_input_and_sigma():
    spline = _random_spline(channels=2, n_knots=5)
    z = (2 * torch.randn(2, 2, 3, 3, dtype=torch.float64)).requires_grad_()
    sigma = torch.tensor([0.05, 0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spline, (z, sigma))


def test_slopes_in_unit_interval_after_aggressive_training():
    torch.manual_seed(1)
    spline = MonotoneLinearSpline(channels=2, n_knots=9).double()
    optimizer = torch.optim.Adam(spline.parameters(), lr=1.0)
    z = 4 * torch.randn(8, 2, 6, 6, dtype=torch.float64)
    target = 10 * torch.randn_like(z)  # steeper and non-monotone: pushes every slope out
    sigma = torch.rand(8, dtype=torch.float64)
    for _ in range(300):
        optimizer.zero_grad()
        loss = (spline(z, sigma) - target).square().mean()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(spline.slope_logits).all()
    grid = torch.linspace(-20, 20, 40001, dtype=torch.float64).view(1, 1, -1, 1).expand(1, 2, -1, 1)
    for s in (None, 0.0, 0.1, 0.5):
        values = spline(grid, s)
        quotients = values.diff(dim=2) / grid.diff(dim=2)
        assert bool((quotients >= -1e-12).all()) and bool((quotients <= 1 + 1e-12).all())
    # it did train: some slopes were pushed against the bounds
    slopes = spline.slopes().detach()
    assert float(slopes.max()) > 0.99 and float(slopes.min()) < 0.01


def test_gradients_finite_at_knots_and_extremes():
    spline = _random_spline(channels=1, n_knots=5, knot_range=1.0)
    z = torch.tensor([-1e6, -1.0, -0.5, 0.0, 0.5, 1.0, 1e6], dtype=torch.float64)
    z = z.view(1, 1, -1, 1).requires_grad_()
    out = spline(z, 0.0)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(z.grad).all()
    assert torch.isfinite(spline.slope_logits.grad).all()
    with torch.no_grad():
        assert float(spline(torch.zeros(1, 1, 1, 1, dtype=torch.float64), 0.3)) == 0.0


def test_relu_init_is_near_relu_at_every_sigma_and_identity_init_near_identity():
    z = torch.linspace(-3, 3, 61).view(1, 1, -1, 1).expand(2, 4, -1, 1)
    relu_like = MonotoneLinearSpline(4)
    for sigma in (None, 0.0, torch.tensor([0.02, 0.2])):
        with torch.no_grad():
            assert float((relu_like(z, sigma) - torch.relu(z)).abs().max()) < 0.02 * 3
    identity_like = MonotoneLinearSpline(4, init="identity")
    with torch.no_grad():
        assert float((identity_like(z) - z).abs().max()) < 0.02 * 3


def test_sigma_scaling_rescales_the_knots():
    spline = _random_spline(channels=2, n_knots=7)
    z = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    # s(z; sigma) = g phi(z / g) with g = e^rho (1 + sigma / sigma_ref)
    factor = 1 + 0.2 / spline.sigma_ref
    torch.testing.assert_close(spline(z * factor, 0.2), factor * spline(z, None))
    fixed = MonotoneLinearSpline(2, sigma_ref=None).double()
    torch.testing.assert_close(fixed(z, 0.3), fixed(z, None))


def test_shapes_dtypes_and_no_in_place_change():
    spline = MonotoneLinearSpline(3)
    for shape in [(2, 3), (2, 3, 5), (2, 3, 4, 5)]:
        z = torch.randn(shape)
        saved = z.clone()
        out = spline(z)
        assert out.shape == z.shape and out.dtype == z.dtype
        assert torch.equal(z, saved)
    z = torch.randn(2, 3, 4, 4)
    out = spline(z.to(torch.bfloat16), torch.tensor([0.1, 0.2]))
    assert out.dtype == torch.bfloat16
    # the look-up runs in float32: only the output is rounded
    expected = spline(z.to(torch.bfloat16).float(), [0.1, 0.2]).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_knots"):
        MonotoneLinearSpline(2, n_knots=4)
    with pytest.raises(ValueError, match="channels"):
        MonotoneLinearSpline(0)
    with pytest.raises(ValueError, match="knot_range"):
        MonotoneLinearSpline(2, knot_range=-1.0)
    with pytest.raises(ValueError, match="init"):
        MonotoneLinearSpline(2, init="tanh")
    spline = MonotoneLinearSpline(2)
    with pytest.raises(ValueError, match="z must have shape"):
        spline(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="sigma"):
        spline(torch.zeros(2, 2, 2, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="sigma"):
        spline(torch.zeros(2, 2, 2, 2), -0.1)
    with pytest.raises(TypeError, match="z must be"):
        spline([[0.0, 1.0]])


def test_euler_block_with_spline_keeps_the_certified_spectrum():
    # T(x) = x - h A^T s(Ax + b): dense Jacobian symmetric, spectrum in [1 - h ||A||^2, 1]
    # with ||A|| the certified conv bound, so h ||A||^2 <= 2 alpha certifies alpha-averaged.
    spline = _random_spline(seed=3, channels=3, n_knots=9, knot_range=0.5)
    torch.manual_seed(3)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64)
    norm_sq = conv2d_norm_bound(weight) ** 2
    alpha = 0.6
    h = 2 * alpha / norm_sq

    def block(x):
        z = F.conv2d(x.view(1, 2, 5, 4), weight, bias, padding=1)
        return (
            x.view(1, 2, 5, 4) - h * F.conv_transpose2d(spline(z, 0.1), weight, padding=1)
        ).reshape(-1)

    for seed in range(3):
        x = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        jac = torch.autograd.functional.jacobian(block, x)
        torch.testing.assert_close(jac, jac.T)
        eig = torch.linalg.eigvalsh(jac)
        assert float(eig.max()) <= 1 + 1e-12 and float(eig.min()) >= 1 - h * norm_sq - 1e-12
        # the alpha-averaged inequality with R = (T - (1 - alpha) I) / alpha non-expansive
        r = (jac - (1 - alpha) * torch.eye(40, dtype=torch.float64)) / alpha
        assert float(torch.linalg.matrix_norm(r, 2)) <= 1 + 1e-12
