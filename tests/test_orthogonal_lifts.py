"""Tests of the orthonormal Haar lift: orthogonality, exact adjoint, kept averagedness."""

import pytest
import torch
import torch.nn.functional as F

from deepinv_dynnets.dynamics.orthogonal_lifts import HaarAnalysis, HaarSynthesis


def _dense(fn, shape):
    n = int(torch.tensor(shape).prod())
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape[1:])
    return fn(basis).reshape(n, -1).T  # column k: image of basis vector k


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (1, 2, 4, 6), (1, 3, 6, 2)])
def test_dense_matrix_is_orthogonal_and_synthesis_is_its_transpose(shape):
    q = _dense(HaarAnalysis(), shape)
    eye = torch.eye(q.shape[0], dtype=torch.float64)
    torch.testing.assert_close(q.T @ q, eye, rtol=0, atol=1e-14)
    torch.testing.assert_close(q @ q.T, eye, rtol=0, atol=1e-14)
    c, h, w = shape[1:]
    qt = _dense(HaarSynthesis(), (1, 4 * c, h // 2, w // 2))
    torch.testing.assert_close(qt, q.T, rtol=0, atol=1e-15)


def test_random_inputs_inner_products_and_round_trip():
    torch.manual_seed(0)
    analysis, synthesis = HaarAnalysis(), HaarSynthesis()
    x = torch.randn(3, 2, 8, 10, dtype=torch.float64)
    y = torch.randn(3, 8, 4, 5, dtype=torch.float64)
    saved = x.clone()
    torch.testing.assert_close((analysis(x) * y).sum(), (x * synthesis(y)).sum())
    torch.testing.assert_close(synthesis(analysis(x)), x, rtol=0, atol=1e-14)
    torch.testing.assert_close(analysis(synthesis(y)), y, rtol=0, atol=1e-14)
    torch.testing.assert_close(analysis(x).norm(), x.norm())
    assert torch.equal(x, saved)
    torch.testing.assert_close(analysis.adjoint(analysis(x)), x)
    torch.testing.assert_close(synthesis.adjoint(x), analysis(x))


def test_average_band_is_the_scaled_block_mean():
    x = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)
    low = HaarAnalysis()(x)[:, 0]
    torch.testing.assert_close(low, 2 * F.avg_pool2d(x, 2)[:, 0])


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="even height and width"):
        HaarAnalysis()(torch.zeros(1, 1, 5, 4))
    with pytest.raises(ValueError, match="even height and width"):
        HaarAnalysis()(torch.zeros(1, 1, 4, 3))
    with pytest.raises(ValueError, match="multiple of 4"):
        HaarSynthesis()(torch.zeros(1, 6, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        HaarAnalysis()(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="x must be"):
        HaarAnalysis()([[0.0]])


def test_conjugated_averaged_map_keeps_the_averagedness_inequality():
    # T(x) = x - h A^T relu(Ax + b) with h ||A||^2 = 2 alpha is alpha-averaged; so is
    # Q^T T Q: ||T'x - T'y||^2 <= ||x - y||^2 - (1 - alpha)/alpha ||(I-T')x - (I-T')y||^2.
    torch.manual_seed(1)
    weight = torch.randn(5, 8, 3, 3, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64)
    # the exact norm of the zero-padded conv on this grid, from its dense matrix
    dense = _dense(lambda v: F.conv2d(v, weight, padding=1), (1, 8, 3, 4))
    alpha = 0.3
    h = 2 * alpha / float(torch.linalg.matrix_norm(dense, 2)) ** 2

    def averaged(v):
        z = F.relu(F.conv2d(v, weight, bias, padding=1))
        return v - h * F.conv_transpose2d(z, weight, padding=1)

    analysis, synthesis = HaarAnalysis(), HaarSynthesis()

    def conjugated(x):
        return synthesis(averaged(analysis(x)))

    for _ in range(20):
        x = torch.randn(4, 2, 6, 8, dtype=torch.float64)
        y = x + 0.3 * torch.randn_like(x)
        tx, ty = conjugated(x), conjugated(y)
        for i in range(4):
            lhs = (tx[i] - ty[i]).square().sum()
            residual = (x[i] - tx[i]) - (y[i] - ty[i])
            rhs = (x[i] - y[i]).square().sum() - (1 - alpha) / alpha * residual.square().sum()
            assert float(lhs) <= float(rhs) + 1e-12
