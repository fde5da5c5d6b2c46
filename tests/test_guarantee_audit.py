"""Tests written for the mutants that survived ``benchmarks/mutation_testing.py``.

Each test kills one or more surviving mutants of a bound computation: the constants must
be *exact* (a pessimistic constant is still true but wastes the guarantee, and a test that
only checks validity cannot tell), the boundaries of the accepted ranges must be where the
theory puts them, and a refusal must name the argument. The docs page "What is guaranteed
and how it is checked" lists the mutants and the tests that kill them.
"""

import math

import pytest
import torch

from deepinv_dynnets.lipschitz import compose_averaged, euler_step_alpha, relax_averaged
from deepinv_dynnets.lipschitz.operator_norms import (
    ROUNDOFF_MARGIN,
    circular_conv2d_norm,
    conv2d_norm_bound,
    grid_correction,
    linear_norm_bound,
)

F64 = torch.float64


def _smallest_averagedness(T: torch.Tensor) -> float:
    """Smallest alpha with T = (1 - alpha) I + alpha R, ||R|| <= 1, for a normal matrix T.

    For T with eigenvalues lambda, ||(T - (1 - a) I) / a|| <= 1 iff every lambda lies in the
    disc of centre 1 - a and radius a; found by bisection on a.
    """
    eig = torch.linalg.eigvals(T)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        a = (lo + hi) / 2
        if bool(((eig - (1 - a)).abs() <= a * (1 + 1e-12)).all()):
            hi = a
        else:
            lo = a
    return hi


def test_relaxation_constant_is_exact_on_the_reflection():
    # D = (1 - alpha) I - alpha I realises alpha exactly; so does its relaxation lam * alpha
    for alpha, lam in [(0.8, 0.6), (0.5, 1.9), (0.25, 2.0), (0.5, 2.0)]:
        D = (1 - 2 * alpha) * torch.eye(3, dtype=F64)
        relaxed = (1 - lam) * torch.eye(3, dtype=F64) + lam * D
        assert relax_averaged(alpha, lam) == pytest.approx(lam * alpha, rel=1e-15)
        assert _smallest_averagedness(relaxed) == pytest.approx(lam * alpha, rel=1e-9)


def test_relaxation_range_boundaries():
    assert relax_averaged(0.5, 2.0) == 1.0  # lam * alpha = 1: non-expansive, accepted
    for lam in (0.0, -1.0, math.nan, math.inf, 2.0 + 1e-9):
        with pytest.raises(ValueError, match=r"\blam\b"):
            relax_averaged(0.5, lam)


def test_composition_constant_is_exact_on_reflections():
    # T_i = (1 - 2 a_i) I commute; their product realises the composition constant
    for a1, a2 in [(0.5, 0.5), (0.2, 0.9), (0.7, 0.3)]:
        T = (1 - 2 * a1) * (1 - 2 * a2) * torch.eye(2, dtype=F64)
        # the product of the reflections is c-averaged with 1 - 2c = (1 - 2a1)(1 - 2a2) at
        # least; compose_averaged may not be below that
        assert compose_averaged(a1, a2) >= _smallest_averagedness(T) - 1e-12
    assert compose_averaged(0.5, 0.5) == pytest.approx(2 / 3, rel=1e-15)


def test_euler_step_constant_and_boundaries():
    assert euler_step_alpha(0.5, 0.5) == 0.125
    assert euler_step_alpha(1.0, 0.0) == 0.0  # A = 0: the identity
    assert euler_step_alpha(2.0, 1.0) == 1.0  # h ||A||^2 = 2: non-expansive, accepted
    for h in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"\bh\b"):
            euler_step_alpha(h, 1.0)
    for sqnorm in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"\bsqnorm\b"):
            euler_step_alpha(1.0, sqnorm)


def test_euler_step_refusal_says_which_step_would_do():
    with pytest.raises(ValueError, match=r"take h <= 0\.5\b"):
        euler_step_alpha(1.0, 4.0)


def test_composition_refusals_name_the_argument():
    with pytest.raises(ValueError, match=r"\balphas\b"):
        compose_averaged()
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"\balpha\b"):
            compose_averaged(0.5, bad)


def _adversarial_lower_bound(weight: torch.Tensor, size: int = 256) -> float:
    """||A x|| / ||x|| for the zero-padded convolution A on a size x size image and x a
    Hann-windowed plane wave along the top singular vector of the kernel's symbol.

    Any x gives a lower bound of ||A||; this one is within a few 1e-4 of
    sup_w ||K(w)||, the image-size-free norm that certify must bound, while the norm on a
    small image (32 x 32) is about 1 % below it.
    """
    w = weight.detach().to(F64)
    k1, k2 = w.shape[-2:]
    grid = size // 2  # the frequency grid on which the top singular vector is found
    symbol = torch.fft.fft2(w, s=(grid, grid)).permute(2, 3, 0, 1)
    _, s, vh = torch.linalg.svd(symbol)
    j1, j2 = divmod(int(s[..., 0].argmax()), grid)
    p = torch.arange(size, dtype=F64)
    window = torch.sin(torch.pi * (p + 0.5) / size) ** 2
    window = window[:, None] * window[None, :]
    best = 0.0
    # conv2d is a correlation: try the frequency and its mirror, either vector conjugated
    for sign in (1, -1):
        phase = torch.exp(1j * sign * 2 * torch.pi * (j1 * p[:, None] + j2 * p[None, :]) / grid)
        for v in (vh[j1, j2, 0], vh[j1, j2, 0].conj()):
            x = (v[:, None, None] * phase).real * window
            y = torch.nn.functional.conv2d(x[None], w, padding=(k1 // 2, k2 // 2))
            best = max(best, float(y.norm() / x.norm()))
    return best


@pytest.mark.parametrize("method", ["fourier", "gram"])
def test_certified_block_norms_dominate_an_adversarial_lower_bound(method, large_weights):
    from deepinv_dynnets import EulerDenoiser, certify

    model = large_weights(EulerDenoiser(in_channels=1, width=4, hidden=6, n_blocks=2)).eval()
    cert = certify(model, method)
    for block, row in zip(model.averaged_blocks(), cert.blocks, strict=True):
        truth = _adversarial_lower_bound(block["weight"]) ** 2
        # a bound, and a tight one (fourier: the 2 % grid correction of squared norms)
        assert truth <= row["sqnorm"] <= truth * (1.03 if method == "fourier" else 1.05)


def test_certified_layer_norm_dominates_an_adversarial_lower_bound():
    from deepinv_dynnets import certify

    conv = torch.nn.Conv2d(3, 5, 5, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.normal_()
    truth = _adversarial_lower_bound(conv.weight)
    assert truth <= certify(conv).lipschitz <= truth * 1.02


def _linear_regime_denoiser(alpha: float):
    """One Euler block, no lift, biases so large that the ReLU is the identity on inputs in
    [0, 1]: the denoiser is x - h A^T (A x + b) with Jacobian I - h A^T A, whose smallest
    eigenvalue 1 - h ||A||^2 nearly attains the certified 1 - 2 alpha."""
    from deepinv_dynnets import EulerDenoiser

    model = EulerDenoiser(in_channels=1, width=1, hidden=4, n_blocks=1, alpha=alpha)
    with torch.no_grad():
        for block in model.averaged_blocks():
            block["weight"].normal_()
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.fill_(1e3)
            if name.endswith("theta"):
                p.fill_(8.0)  # sigmoid(theta) ~ 1: the step at its largest allowed value
    model = model.double().eval()
    model.calibrate()
    return model


def _jacobian(f, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(
        lambda z: f(z.reshape(x.shape)).reshape(-1), x.reshape(-1)
    )


@pytest.mark.parametrize("alpha", [0.5, 0.95])
def test_euler_denoiser_certificate_holds_where_it_is_nearly_attained(alpha):
    from deepinv_dynnets import certify

    model = _linear_regime_denoiser(alpha)
    cert = certify(model)
    x = torch.rand(1, 1, 24, 24, dtype=F64)
    J = _jacobian(lambda z: model(z, 0.1), x)
    assert torch.allclose(J, J.T, atol=1e-12)  # the linear regime: J = I - h A^T A
    smallest = float(torch.linalg.eigvalsh(J).min())
    # spectrum in [1 - 2 alpha, 1]: alpha-averaged with the certified constant ...
    assert smallest >= 1 - 2 * cert.alpha - 1e-9
    # ... which is within 7 % of the truth (24 x 24 images reach 96 % of sup ||A(w)||^2)
    assert smallest <= 1 - 2 * cert.alpha * 0.93


@pytest.mark.parametrize("lam", [0.5, 1.5, 3.0])
def test_relaxed_denoiser_lipschitz_certificate_holds_beyond_averagedness(lam):
    from deepinv_dynnets import certify
    from deepinv_dynnets.models import RelaxedDenoiser

    # base alpha about 0.9: for lam > 1 / alpha the relaxation is not averaged and its
    # Jacobian has an eigenvalue near 1 - 2 lam alpha, beyond lam in modulus
    relaxed = RelaxedDenoiser(_linear_regime_denoiser(0.95), relaxation=lam)
    x = torch.rand(1, 1, 24, 24, dtype=F64)
    J = _jacobian(lambda z: relaxed(z, 0.1), x)
    assert float(torch.linalg.matrix_norm(J, ord=2)) <= certify(relaxed).lipschitz * (1 + 1e-9)


@pytest.mark.parametrize("shape", [(3, 3), (2, 3), (3, 2), (4, 2)])
@pytest.mark.parametrize("n_iter", [1, 4, 5])
def test_gram_bound_is_exact_on_alternating_kernels(shape, n_iter):
    # w[p, q] = (-1)^(p + q): sup ||K(w)|| = sum |w|, at w = (pi, pi), and the coefficients of
    # every power of the Gram symbol have the sign (-1)^(r1 + r2): the triangle inequality
    # over the taps is an equality and the bound is exact. A coefficient grid too coarse
    # for the symbol's degree folds coefficients of opposite signs together: a smaller value.
    k1, k2 = shape
    signs = (-1.0) ** (torch.arange(k1)[:, None] + torch.arange(k2)[None, :])
    w = signs.to(F64)[None, None]
    bound = conv2d_norm_bound(w, "gram", n_iter=n_iter)
    assert bound == pytest.approx(k1 * k2 * (1 + ROUNDOFF_MARGIN), rel=1e-10)


def _dense_circular(w: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """The matrix of x -> sum_t w[:, :, t] x(. + t) on the periodic n1 x n2 grid."""
    c_out, c_in, k1, k2 = w.shape
    columns = []
    for c in range(c_in):
        for a in range(n1):
            for b in range(n2):
                x = torch.zeros(c_in, n1, n2, dtype=F64)
                x[c, a, b] = 1
                y = torch.zeros(c_out, n1, n2, dtype=F64)
                for t1 in range(k1):
                    for t2 in range(k2):
                        shifted = torch.roll(x, shifts=(-t1, -t2), dims=(1, 2))
                        y += torch.einsum("oc,chw->ohw", w[:, :, t1, t2], shifted)
                columns.append(y.reshape(-1))
    return torch.stack(columns, 1)


@pytest.mark.parametrize("grid", [(3, 2), (2, 4), (1, 1)])
def test_circular_norm_on_a_grid_smaller_than_the_kernel(grid):
    # taps beyond the grid wrap around: the kernel is folded onto the grid
    w = torch.randn(3, 2, 5, 3, dtype=F64)
    dense = torch.linalg.matrix_norm(_dense_circular(w, *grid), ord=2)
    assert circular_conv2d_norm(w, grid) == pytest.approx(float(dense), rel=1e-12)


def test_linear_bound_is_the_float64_norm_and_refusals_name_the_weight():
    w = torch.randn(7, 5)  # float32: the bound is computed in float64 all the same
    exact = float(torch.linalg.matrix_norm(w.to(F64), ord=2))
    assert linear_norm_bound(w) == pytest.approx(exact * (1 + ROUNDOFF_MARGIN), rel=1e-14)
    with pytest.raises(ValueError, match=r"\bweight\b.*2-D"):
        linear_norm_bound(torch.randn(2, 2, 2))
    with pytest.raises(ValueError, match=r"\bweight\b.*NaN or Inf"):
        linear_norm_bound(torch.tensor([[1.0, float("nan")]]))


def test_gram_bound_of_the_zero_kernel_is_zero_for_every_n_iter():
    zero = torch.zeros(2, 3, 3, 3, dtype=F64)
    assert [conv2d_norm_bound(zero, "gram", n_iter=t) for t in (1, 2, 5)] == [0.0, 0.0, 0.0]


def test_circular_norm_refusals_name_the_grid_size():
    for bad in (0, (3, 0), (2, 2, 2)):
        with pytest.raises(ValueError, match=r"\bgrid_size\b"):
            circular_conv2d_norm(torch.randn(1, 1, 3, 3), bad)


def test_circulant_bound_is_the_circular_norm_on_the_padded_grid():
    # a smaller grid than (H + k1 - 1, W + k2 - 1) is no upper bound of the zero-padded layer
    w = torch.randn(3, 2, 5, 3, dtype=F64)
    bound = conv2d_norm_bound(w, "circulant", input_size=(6, 9), margin=0.0)
    assert bound == circular_conv2d_norm(w, (10, 11))


def test_conv_bounds_are_computed_in_float64():
    w = torch.randn(4, 3, 3, 3)  # float32
    for method in ("fourier", "gram"):
        assert conv2d_norm_bound(w, method) == pytest.approx(
            conv2d_norm_bound(w.to(F64), method), rel=1e-13
        )


def test_conv_bound_refusals_name_the_argument():
    w = torch.randn(2, 2, 3, 3)
    with pytest.raises(ValueError, match=r"\bweight\b.*\(2, 2\)"):
        conv2d_norm_bound(torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"\bweight\b.*\blist\b"):
        conv2d_norm_bound([[1.0]])
    with pytest.raises(ValueError, match=r"\bweight\b.*NaN or Inf"):
        conv2d_norm_bound(torch.full((1, 1, 3, 3), float("nan")))
    for n_freq in (0, 2, (64, 2)):
        with pytest.raises(ValueError, match=r"\bn_freq\b"):
            conv2d_norm_bound(w, n_freq=n_freq)
    with pytest.raises(ValueError, match=r"^method='circulant' needs input_size=\(H, W\)"):
        conv2d_norm_bound(w, "circulant")
    with pytest.raises(ValueError, match=r"\binput_size\b"):
        conv2d_norm_bound(w, "circulant", input_size=0)
    with pytest.raises(ValueError, match=r"\bgrid_size\b"):
        grid_correction(3, 0)
    with pytest.raises(ValueError, match=r"\bkernel_size\b"):
        grid_correction(0, 64)


@pytest.mark.parametrize("kernel, grid", [(3, 64), ((5, 3), (40, 24)), ((1, 7), (9, 96))])
def test_grid_correction_is_the_proven_factor(kernel, grid):
    # (1 - q^2/2)^(-1/2) is what Bernstein's inequality proves; a smaller factor is unproven
    (k1, k2), (n1, n2) = [(v, v) if isinstance(v, int) else v for v in (kernel, grid)]
    q = math.pi * ((k1 - 1) / n1 + (k2 - 1) / n2)
    assert grid_correction(kernel, grid) == pytest.approx((1 - q * q / 2) ** -0.5, rel=1e-15)
