"""Operator norms: estimates stay below, certified bounds stay above, the true dense norm."""

import math

import pytest
import torch
import torch.nn.functional as F

from deepinv_dynnets.lipschitz.estimates import power_iteration
from deepinv_dynnets.lipschitz.operator_norms import (
    ROUNDOFF_MARGIN,
    circular_conv2d_norm,
    conv2d_norm_bound,
    grid_correction,
    linear_norm_bound,
)


def _conv(w):
    pad = (w.shape[-2] // 2, w.shape[-1] // 2)
    return (
        lambda x: F.conv2d(x, w, padding=pad),
        lambda y: F.conv_transpose2d(y, w, padding=pad),
    )


def _dense(op, c_in, H, W):
    """Matrix of a linear map on (c_in, H, W) images, built from the basis vectors."""
    n = c_in * H * W
    basis = torch.eye(n, dtype=torch.float64).reshape(n, c_in, H, W)
    return op(basis).reshape(n, -1).T


def _true_norm(w, H, W):
    return float(torch.linalg.matrix_norm(_dense(_conv(w)[0], w.shape[1], H, W), ord=2))


CASES = [  # (c_out, c_in, kernel, H, W)
    (1, 1, (3, 3), 9, 7),
    (4, 3, (3, 3), 9, 7),
    (2, 5, (3, 3), 6, 5),
    (3, 2, (5, 5), 7, 11),
    (3, 3, (3, 5), 8, 9),
    (2, 4, (1, 1), 5, 3),
    (5, 2, (3, 3), 1, 1),
]


@pytest.mark.parametrize("c_out,c_in,k,H,W", CASES)
def test_certified_bounds_dominate_the_dense_zero_padded_norm(c_out, c_in, k, H, W):
    for scale in (1.0, 1e-3, 1e3):
        w = scale * torch.randn(c_out, c_in, *k, dtype=torch.float64)
        true = _true_norm(w, H, W)
        for bound in (
            conv2d_norm_bound(w),
            conv2d_norm_bound(w, "gram", n_iter=3),
            conv2d_norm_bound(w, "circulant", input_size=(H, W)),
        ):
            assert bound >= true


@pytest.mark.parametrize("c_out,c_in,k,H,W", CASES[:5])
def test_the_sizes_free_bounds_dominate_the_sharp_one_size_bound(c_out, c_in, k, H, W):
    w = torch.randn(c_out, c_in, *k, dtype=torch.float64)
    sharp = conv2d_norm_bound(w, "circulant", input_size=(H, W))
    assert conv2d_norm_bound(w) >= sharp
    assert conv2d_norm_bound(w, "gram", n_iter=4) >= sharp
    # the supremum over all frequencies, approached on a fine grid
    fine = circular_conv2d_norm(w, 512)
    assert conv2d_norm_bound(w) >= fine
    default_grid = tuple(max(ki, 32 * (ki - 1)) for ki in k)
    assert conv2d_norm_bound(w) <= fine * grid_correction(k, default_grid) * 1.001


@pytest.mark.parametrize("N", [2, 3, 5, 8])
def test_circular_norm_is_the_dense_circular_norm(N):
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)

    def circ(x):  # circular "same" convolution, wrapping taps when N < 3
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w)

    dense = float(torch.linalg.matrix_norm(_dense(circ, 2, N, N), ord=2))
    assert circular_conv2d_norm(w, N) == pytest.approx(dense, rel=1e-12)


def test_the_grid_correction_is_needed_and_sufficient():
    # Single-channel kernels (symbol = DFT), many at once; their peaks fall between the
    # points of a coarse grid.
    w = torch.randn(200, 3, 3, dtype=torch.float64)
    fine = torch.fft.rfft2(w, s=(256, 256)).abs().amax((-2, -1))
    coarse = torch.fft.rfft2(w, s=(16, 16)).abs().amax((-2, -1))
    assert bool((coarse * grid_correction(3, 16) >= fine).all())
    assert bool((coarse < fine * (1 - 1e-2)).any())  # the raw grid maximum is not enough
    for i in range(3):
        assert circular_conv2d_norm(w[i, None, None], 16) == pytest.approx(float(coarse[i]))
        assert conv2d_norm_bound(w[i, None, None], n_freq=16) >= float(fine[i])


def test_power_iteration_is_below_the_norm_and_converges():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    op, adj = _conv(w)
    true = _true_norm(w, 9, 7)
    x0 = torch.randn(1, 3, 9, 7, dtype=torch.float64)
    previous = 0.0
    for n in (0, 1, 3, 10, 30):
        est, v = power_iteration(op, adj, x0, n)
        assert previous - 1e-12 <= float(est) <= true * (1 + 1e-12)  # monotone, below
        assert float(v.norm()) == pytest.approx(1.0)
        previous = float(est)
    est, v = power_iteration(op, adj, x0, 300)
    assert float(est) == pytest.approx(true, rel=1e-4)
    # persistent vector: one more iteration from it continues, it does not restart
    again, _ = power_iteration(op, adj, v, 1)
    assert float(est) - 1e-12 <= float(again) <= true * (1 + 1e-12)


def test_power_iteration_is_differentiable_in_the_operator():
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    op, adj = _conv(w)
    est, v = power_iteration(op, adj, torch.randn(1, 2, 7, 7, dtype=torch.float64), 20)
    est.backward()
    assert w.grad is not None and bool(torch.isfinite(w.grad).all())
    assert not v.requires_grad


def test_bounds_are_tight_on_a_moderate_image():
    # Measured (seed 0): bound / power-iteration estimate on 48 x 48 is about 1.01 for
    # "fourier" and 1.01-1.02 for "gram" with 5 iterations; we allow 5 %.
    for c_out, c_in in ((4, 4), (6, 3)):
        w = torch.randn(c_out, c_in, 3, 3, dtype=torch.float64)
        op, adj = _conv(w)
        est, _ = power_iteration(op, adj, torch.randn(1, c_in, 48, 48, dtype=torch.float64), 300)
        assert conv2d_norm_bound(w) <= 1.05 * float(est)
        assert conv2d_norm_bound(w, "gram", n_iter=5) <= 1.05 * float(est)
        assert conv2d_norm_bound(w, "circulant", input_size=(48, 48)) <= 1.01 * float(est)


def test_linear_bound():
    W = torch.randn(7, 4, dtype=torch.float64)
    exact = float(torch.linalg.svdvals(W)[0])
    assert exact <= linear_norm_bound(W) <= exact * (1 + 2 * ROUNDOFF_MARGIN)
    assert linear_norm_bound(W, margin=0.0) == pytest.approx(exact, rel=1e-14)


def test_margin_and_degenerate_kernels():
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    assert conv2d_norm_bound(w) == pytest.approx(
        conv2d_norm_bound(w, margin=0.0) * (1 + ROUNDOFF_MARGIN), rel=1e-14
    )
    zero = torch.zeros(2, 3, 3, 3)
    assert conv2d_norm_bound(zero) == 0.0
    assert conv2d_norm_bound(zero, "gram") == 0.0
    one = torch.zeros(1, 1, 3, 3)
    one[0, 0, 1, 1] = -2.5
    assert conv2d_norm_bound(one, "circulant", input_size=4) == pytest.approx(2.5, rel=2e-6)
    assert 2.5 <= conv2d_norm_bound(one) <= 2.5 * grid_correction(3, 64) * (1 + 2e-6)
    assert math.isclose(grid_correction(1, 1), 1.0)


def test_bad_arguments():
    w = torch.randn(2, 2, 3, 3)
    with pytest.raises(ValueError, match="weight must be a conv2d kernel"):
        conv2d_norm_bound(torch.randn(2, 2))
    with pytest.raises(ValueError, match="NaN or Inf"):
        conv2d_norm_bound(torch.full((1, 1, 3, 3), float("nan")))
    with pytest.raises(ValueError, match="method must be"):
        conv2d_norm_bound(w, "svd")
    with pytest.raises(ValueError, match="input_size"):
        conv2d_norm_bound(w, "circulant")
    with pytest.raises(ValueError, match="too coarse"):
        conv2d_norm_bound(w, n_freq=8)
    with pytest.raises(ValueError, match="n_iter"):
        conv2d_norm_bound(w, "gram", n_iter=0)
    with pytest.raises(ValueError, match="margin"):
        conv2d_norm_bound(w, margin=-1)
    with pytest.raises(ValueError, match="2-D matrix"):
        linear_norm_bound(w)
    with pytest.raises(ValueError, match="non-zero"):
        power_iteration(lambda x: x, lambda x: x, torch.zeros(3), 1)
    with pytest.raises(ValueError, match="n_iter"):
        power_iteration(lambda x: x, lambda x: x, torch.ones(3), -1)


def test_power_iteration_stops_at_its_relative_tolerance():
    # With rtol, the iteration stops once two Rayleigh quotients agree, and still converges.
    A = torch.diag(torch.tensor([3.0, 2.9, 1.0], dtype=torch.float64))
    calls = []

    def op(x):
        calls.append(1)
        return A @ x

    s, _ = power_iteration(op, lambda y: A.T @ y, torch.ones(3, dtype=torch.float64), 10_000, 1e-6)
    assert len(calls) < 2_000 and abs(float(s) - 3.0) < 1e-2
    full, _ = power_iteration(
        lambda x: A @ x, lambda y: A.T @ y, torch.ones(3, dtype=torch.float64), 10_000
    )
    assert abs(float(full) - 3.0) < 1e-12
