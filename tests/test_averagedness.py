"""The averagedness algebra, checked on operators that realise the constants."""

import pytest
import torch

from deepinv_dynnets.lipschitz import compose_averaged, euler_step_alpha, relax_averaged


def _averaged_matrix(alpha, n=6):
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))  # non-expansive R
    return (1 - alpha) * torch.eye(n, dtype=torch.float64) + alpha * q


def _is_averaged(T, alpha, tol=1e-12):
    n = T.shape[0]
    R = (T - (1 - alpha) * torch.eye(n, dtype=torch.float64)) / alpha
    return torch.linalg.matrix_norm(R, ord=2) <= 1 + tol


@pytest.mark.parametrize("a1,a2", [(0.5, 0.5), (0.2, 0.9), (0.7, 0.3), (0.99, 0.01)])
def test_composition_constant_holds_for_random_averaged_operators(a1, a2):
    alpha = compose_averaged(a1, a2)
    for _ in range(20):
        T = _averaged_matrix(a2) @ _averaged_matrix(a1)
        assert _is_averaged(T, alpha)


def test_composition_edge_cases():
    assert compose_averaged(0.4) == 0.4
    assert compose_averaged(0.0, 0.3) == pytest.approx(0.3)
    assert compose_averaged(1.0, 1.0) == 1.0
    assert compose_averaged(0.5, 0.5, 0.5) == pytest.approx(compose_averaged(0.5, 2 / 3))


def test_relaxation_constant_holds():
    for _ in range(10):
        D = _averaged_matrix(0.8)
        lam = 0.6
        Dl = (1 - lam) * torch.eye(6, dtype=torch.float64) + lam * D
        assert _is_averaged(Dl, relax_averaged(0.8, lam))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
def test_euler_layer_is_averaged_with_the_stated_constant(activation):
    act = getattr(torch.nn.functional, activation)
    A = torch.randn(12, 5, dtype=torch.float64)
    b = torch.randn(12, dtype=torch.float64)
    sq = torch.linalg.matrix_norm(A, ord=2).item() ** 2
    h = 1.5 / sq
    alpha = euler_step_alpha(h, sq)

    def layer(x):
        return x - h * act(x @ A.T + b) @ A

    x, y = (
        3 * torch.randn(2000, 5, dtype=torch.float64),
        3 * torch.randn(2000, 5, dtype=torch.float64),
    )
    Rx = (layer(x) - (1 - alpha) * x) / alpha
    Ry = (layer(y) - (1 - alpha) * y) / alpha
    ratio = (Rx - Ry).norm(dim=-1) / (x - y).norm(dim=-1)
    assert ratio.max() <= 1 + 1e-12


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        compose_averaged(1.5)
    with pytest.raises(ValueError, match="at least one"):
        compose_averaged()
    with pytest.raises(ValueError, match="lam"):
        relax_averaged(0.5, 3.0)
    with pytest.raises(ValueError, match="h must be"):
        euler_step_alpha(-1.0, 1.0)
    with pytest.raises(ValueError, match="not non-expansive"):
        euler_step_alpha(3.0, 1.0)
