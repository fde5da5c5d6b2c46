"""Certificates checked where they are nearly attained, against dense ground truth.

A certificate that is a few per cent too optimistic must fail these tests: the operators
are built so that the bound is (almost) attained, and the truth is the SVD of the dense
matrix of the operator or of the network's autograd Jacobian, never the code under test.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from deepinv_dynnets.lipschitz import circular_conv2d_norm, conv2d_norm_bound, grid_correction
from deepinv_dynnets.lipschitz.certificates import certify
from deepinv_dynnets.models import EulerDenoiser


def _dense(weight: torch.Tensor, size: int, circular: bool) -> torch.Tensor:
    """The matrix of the stride-1 convolution on size x size images (zero "same" or circular
    padding), column by column from the canonical basis."""
    c_in, k = weight.shape[1], weight.shape[-1]
    basis = torch.eye(c_in * size * size, dtype=torch.float64).reshape(-1, c_in, size, size)
    if circular:
        out = F.conv2d(F.pad(basis, (k // 2,) * 4, mode="circular"), weight)
    else:
        out = F.conv2d(basis, weight, padding=k // 2)
    return out.reshape(basis.shape[0], -1).T


def _sqnorm(matrix: torch.Tensor) -> float:
    """||M||^2, the largest eigenvalue of M^T M (float64)."""
    return float(torch.linalg.eigvalsh(matrix.T @ matrix)[-1])


def _peaked_kernel(c_out: int, c_in: int, seed: int) -> torch.Tensor:
    """K_p = a_p M with a_p >= 0: the symbol a(w) M has its largest norm at w = 0, a point of
    every frequency grid, so the circular operator on any grid has exactly the norm S(K)."""
    gen = torch.Generator().manual_seed(seed)
    taps = torch.rand(3, 3, generator=gen, dtype=torch.float64) + 0.5
    mix = torch.randn(c_out, c_in, generator=gen, dtype=torch.float64)
    return mix[:, :, None, None] * taps


def test_certified_block_norms_dominate_the_dense_truth_where_it_is_the_supremum():
    model = EulerDenoiser(in_channels=2, width=2, hidden=3, n_blocks=2).double().eval()
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            block.weight.copy_(_peaked_kernel(3, 2, seed=i))
    cert = certify(model)
    for row, block in zip(cert.blocks, model.blocks, strict=True):
        truth = _sqnorm(_dense(block.weight.detach(), 24, circular=True))  # = S(K)^2 exactly
        # any estimate from below, however converged, stays under truth * (1 + 1e-12)
        assert row["sqnorm"] >= truth * (1 + 1e-6)
        assert row["sqnorm"] <= truth * grid_correction(3, 64) ** 2 * (1 + 1e-5)
        zero_padded = _sqnorm(_dense(block.weight.detach(), 24, circular=False))
        assert zero_padded <= truth * (1 + 1e-12)  # the compression argument


def test_bounds_dominate_the_zero_padded_truth_where_the_grid_correction_matters():
    below_uncorrected = 0
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64)
        for size in (24, 32):
            truth = _sqnorm(_dense(w, size, circular=False))
            for n_freq in (16, 64):
                assert conv2d_norm_bound(w, n_freq=n_freq) ** 2 >= truth
            assert conv2d_norm_bound(w, "gram") ** 2 >= truth
        # the plain maximum over a coarse grid is not a bound: the correction is needed
        below_uncorrected += circular_conv2d_norm(w, 16) ** 2 < truth
    assert below_uncorrected >= 1


@pytest.mark.parametrize("safety", [1.05, 1.5])
def test_the_safety_factor_divides_the_converged_step_bound(safety):
    torch.manual_seed(0)
    model = EulerDenoiser(in_channels=1, width=3, hidden=4, n_blocks=3, safety=safety).double()
    theta = 6.0
    with torch.no_grad():
        for block in model.blocks:
            block.weight.normal_()
            block.theta.fill_(theta)
            block.refresh_nu(300)  # converged: nu = kappa c_P^2 max_j ||A(w_j)||^2
    cert = certify(model)
    fraction = 1 / (1 + math.exp(-theta))
    for row in cert.blocks:
        # h beta / 2 = alpha_i sigmoid(theta) / kappa, up to the round-off margin
        assert row["alpha"] <= row["alpha_target"] / safety * (1 + 1e-5)
        assert row["alpha"] >= row["alpha_target"] * fraction / safety * (1 - 1e-4)


def test_averagedness_is_checked_at_the_worst_case_pair(jacobian):
    # One block, all activations on (large bias): T(x) = x - h A^T (A x + b), and the
    # zero-padded ||A||^2 on 16 x 16 images is within 5 % of its supremum.
    model = EulerDenoiser(
        in_channels=2, width=2, hidden=3, n_blocks=1, sigma_conditioning=False, step_init=0.99
    ).double()
    with torch.no_grad():
        block = model.blocks[0]
        block.weight.copy_(_peaked_kernel(3, 2, seed=3))
        block.bias.fill_(1e3)
    model.eval()
    alpha = certify(model).alpha
    x = torch.rand(1, 2, 16, 16, dtype=torch.float64)
    J = jacobian(model, x)
    eye = torch.eye(J.shape[0], dtype=J.dtype)

    def worst(a: float) -> tuple[float, torch.Tensor]:
        _, s, vh = torch.linalg.svd((J - (1 - a) * eye) / a)
        return float(s[0]), vh[0]

    ratio, v = worst(alpha)
    assert 0.85 < ratio <= 1 + 1e-10  # nearly attained, never exceeded
    assert worst(0.9 * alpha)[0] > 1  # a certificate 10 % too optimistic is refuted
    # the same at a pair of points along the worst direction (the map is affine here)
    y = x + 1e-2 * v.reshape(x.shape)
    with torch.no_grad():
        r = (model(y) - model(x) - (1 - alpha) * (y - x)) / alpha
    assert float(r.norm() / (y - x).norm()) == pytest.approx(ratio, rel=1e-8)


@pytest.mark.parametrize("sigma", [0.0, 0.1, 0.4])
def test_certify_bounds_the_dense_jacobian_with_a_trained_spline_activation(sigma, jacobian):
    torch.manual_seed(0)
    model = EulerDenoiser(in_channels=1, width=3, hidden=4, n_blocks=2, activation="spline")
    with torch.no_grad():
        for block in model.blocks:
            block.weight.normal_()
            block.bias.normal_()
            block.sigma_weight.normal_()
            block.theta.fill_(6.0)
            # slopes anywhere in (0, 1), as after aggressive training
            block.field.spline.slope_logits.normal_(std=0.5)
            block.field.spline.log_scale.normal_()
    model = model.double().eval()
    cert = certify(model)
    assert cert.alpha is not None and cert.alpha <= model.alpha and cert.lipschitz == 1.0
    x = torch.rand(1, 1, 7, 6, dtype=torch.float64)
    J = jacobian(lambda z: model(z, sigma), x)
    assert float(torch.linalg.matrix_norm(J, ord=2)) <= cert.lipschitz * (1 + 1e-10)
    R = (J - (1 - cert.alpha) * torch.eye(J.shape[0], dtype=J.dtype)) / cert.alpha
    assert float(torch.linalg.matrix_norm(R, ord=2)) <= 1 + 1e-10


def test_a_spline_denoiser_saves_loads_and_trains(tmp_path):
    model = EulerDenoiser(in_channels=1, width=3, hidden=4, n_blocks=2, activation="spline")
    x = torch.rand(2, 1, 8, 8)
    model(x, 0.1).square().mean().backward()
    assert model.blocks[0].field.spline.slope_logits.grad is not None
    model.eval()
    with torch.no_grad():
        expected = model(x, 0.1)
    model.save(tmp_path / "s.pt")
    loaded = EulerDenoiser.from_pretrained(tmp_path / "s.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x, 0.1), expected)
