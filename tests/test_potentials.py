"""Closed-form derivatives of the MLP potentials agree with autograd."""

import pytest
import torch

from deepinv_dynnets.flows.potentials import MLPPotential


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus", "sin"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_closed_form_derivatives_match_autograd(activation, depth):
    P = MLPPotential(3, width=7, depth=depth, activation=activation).double()
    u = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)
    t = torch.rand(11, dtype=torch.float64, requires_grad=True)
    du = torch.randn(11, 3, dtype=torch.float64)
    dt = torch.randn(11, dtype=torch.float64)
    grad_u, dt_P, d_grad = P.derivatives(u, t, du, dt)
    gu, gt = torch.autograd.grad(P(u, t).sum(), (u, t), create_graph=True)
    torch.testing.assert_close(grad_u, gu, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dt_P, gt, rtol=1e-12, atol=1e-12)
    # directional derivative of grad_u along (du, dt) = Hessian-vector product
    hu, ht = torch.autograd.grad((gu * du).sum(), (u, t), retain_graph=True)
    hu2, _ = torch.autograd.grad((gt * dt).sum(), (u, t), allow_unused=True)
    torch.testing.assert_close(d_grad, hu + hu2, rtol=1e-11, atol=1e-11)


def test_derivatives_without_tangent_and_partial_tangents():
    P = MLPPotential(2, width=5).double()
    u, t = torch.randn(4, 2, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    g, _, none = P.derivatives(u, t)
    assert none is None
    _, _, only_t = P.derivatives(u, t, dt=torch.ones(4, dtype=torch.float64))
    _, _, both = P.derivatives(
        u, t, du=torch.zeros(4, 2, dtype=torch.float64), dt=torch.ones(4, dtype=torch.float64)
    )
    torch.testing.assert_close(only_t, both)


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        MLPPotential(2, activation="relu")
    with pytest.raises(ValueError, match="width"):
        MLPPotential(2, width=0)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_inference_path_matches_the_general_path(depth):
    # Without autograd, tanh potentials take a folded, in-place path: same numbers.
    P = MLPPotential(2, width=9, depth=depth).double()
    U = torch.randn(2, 40, dtype=torch.float64)
    T = torch.rand(1, 40, dtype=torch.float64)
    g, dt, _ = P.derivatives_t(U, T)
    with torch.no_grad():
        g_fast, dt_fast, _ = P.derivatives_t(U, T)
    torch.testing.assert_close(g_fast, g, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(dt_fast, dt, rtol=1e-13, atol=1e-13)


def test_inference_cache_follows_weight_updates():
    P = MLPPotential(2, width=5).double()
    U, T = torch.randn(2, 7, dtype=torch.float64), torch.rand(1, 7, dtype=torch.float64)
    with torch.no_grad():
        P.derivatives_t(U, T)  # fills the cache
        P.weights[1].add_(0.5)  # an optimiser step, in place
        fast, _, _ = P.derivatives_t(U, T)
    slow, _, _ = P.derivatives_t(U, T)
    torch.testing.assert_close(fast, slow, rtol=1e-13, atol=1e-13)
