"""Power-iteration estimates against references computed here, in numpy and float64.

Written for the mutation testing of ``lipschitz/estimates.py`` (see the guarantees page).
``power_iteration``: its default, its argument checks (exact messages), the kernel branch
and the relative stopping rule at its boundary and at scales where ``rtol * |r|`` and
``rtol / |r|`` differ. ``conv2d_symbol_power_estimate``: the per-frequency power iteration
on :math:`\\hat A(\\omega)^*\\hat A(\\omega)`, rebuilt in numpy with complex symbols, the
vectors it updates in place, its gradient, its dtypes, and its value against the dense
matrix of the circular convolution and the supremum of the symbol on a fine grid.
"""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepinv_dynnets.lipschitz.estimates import conv2d_symbol_power_estimate, power_iteration
from deepinv_dynnets.lipschitz.operator_norms import grid_correction


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def _matrix_ops(A: torch.Tensor, calls: list | None = None):
    def op(x):
        if calls is not None:
            calls.append(1)
        return A @ x

    return op, lambda y: A.T @ y


# -- power_iteration -------------------------------------------------------------------------


def test_default_is_one_iteration():
    A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    op, adj = _matrix_ops(A)
    x0 = torch.ones(3, dtype=torch.float64)
    s, v = power_iteration(op, adj, x0)
    # v_1 = A^T A x0 / |A^T A x0| = (9, 4, 1) / sqrt(98), s = |A v_1| = sqrt(794 / 98)
    assert float(s) == pytest.approx(math.sqrt(794 / 98), rel=1e-15)
    assert torch.allclose(v, torch.tensor([9.0, 4.0, 1.0], dtype=torch.float64) / math.sqrt(98))
    s2, _ = power_iteration(op, adj, x0, 2)
    assert float(s2) > float(s) + 1e-3


@pytest.mark.parametrize(
    "x0",
    [
        [1.0, 2.0],
        np.ones(3),
        torch.ones(3, dtype=torch.int64),
        torch.ones(3, dtype=torch.bool),
        torch.ones(3, dtype=torch.complex128),
    ],
)
def test_x0_must_be_a_floating_point_tensor(x0):
    with pytest.raises(ValueError, match=_exactly("x0 must be a floating-point torch.Tensor")):
        power_iteration(lambda x: x, lambda x: x, x0, 1)


@pytest.mark.parametrize("fill", [0.0, float("nan"), float("inf"), -float("inf")])
def test_x0_must_be_finite_and_non_zero(fill):
    x0 = torch.ones(3, dtype=torch.float64)
    x0[1] = fill
    if fill == 0.0:
        x0.zero_()
    with pytest.raises(ValueError, match=_exactly("x0 must be finite and non-zero")):
        power_iteration(lambda x: x, lambda x: x, x0, 1)


@pytest.mark.parametrize("n_iter", [-1, 1.5, -2.0])
def test_n_iter_message(n_iter):
    message = f"n_iter must be a non-negative integer, got {n_iter!r}"
    with pytest.raises(ValueError, match=_exactly(message)):
        power_iteration(lambda x: x, lambda x: x, torch.ones(3), n_iter)
    s, _ = power_iteration(lambda x: 2 * x, lambda x: 2 * x, torch.ones(3), 2.0)  # integral
    assert float(s) == pytest.approx(2.0)


@pytest.mark.parametrize("rtol", [None, 1e-3])
def test_a_vector_in_the_kernel_is_kept_and_the_estimate_is_zero(rtol):
    A = torch.tensor([[2.0, 0.0], [1.0, 0.0]], dtype=torch.float64)  # kernel: (0, t)
    op, adj = _matrix_ops(A)
    s, v = power_iteration(op, adj, torch.tensor([0.0, -3.0], dtype=torch.float64), 5, rtol)
    assert isinstance(s, torch.Tensor) and s.dim() == 0 and float(s) == 0.0
    assert v.tolist() == [0.0, -1.0]


def _reference_power_iteration(
    M: np.ndarray, x0: np.ndarray, n_iter: int, rtol: float, divide=False
):
    """Iterations run and the last |ratio - 1| of the rule |r_t - r_{t-1}| <= rtol |r_t|
    (``divide``: the rule with rtol / |r_t|, for comparison)."""
    v = x0 / np.linalg.norm(x0)
    previous, closest = None, math.inf
    for t in range(n_iter):
        w = M @ v
        rayleigh = float(v @ w)
        v = w / np.linalg.norm(w)
        if previous is not None:
            tol = rtol / abs(rayleigh) if divide else rtol * abs(rayleigh)
            ratio = abs(rayleigh - previous) / tol
            closest = min(closest, abs(ratio - 1))
            if ratio <= 1:
                return t + 1, v, closest
        previous = rayleigh
    return n_iter, v, closest


@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e2])
def test_the_relative_stopping_rule_at_different_scales(scale):
    # r_t ~ 9 scale^2: rtol |r| and rtol / |r| stop at different iterations
    diag = scale * np.array([3.0, 2.9, 1.0])
    A = torch.diag(torch.tensor(diag, dtype=torch.float64))
    x0 = np.ones(3)
    rtol = 1e-6
    expected, v_ref, closest = _reference_power_iteration(np.diag(diag**2), x0, 10_000, rtol)
    assert closest > 1e-3  # no iteration sits at the boundary: the count is robust
    calls = []
    op, adj = _matrix_ops(A, calls)
    s, v = power_iteration(op, adj, torch.tensor(x0, dtype=torch.float64), 10_000, rtol)
    assert len(calls) == expected + 1  # the iterations, then |A v_T|
    assert np.allclose(v.numpy(), v_ref, rtol=1e-12, atol=1e-14)
    assert float(s) == pytest.approx(float(np.linalg.norm(diag * v_ref)), rel=1e-13)
    # the rule with rtol / |r| would not stop at the same iteration
    other, _, _ = _reference_power_iteration(np.diag(diag**2), x0, 10_000, rtol, divide=True)
    assert other != expected


def test_equal_rayleigh_quotients_stop_with_zero_tolerance():
    # At an eigenvector r_t = r_{t-1} exactly: |r_t - r_{t-1}| = 0 <= 0 * |r_t| stops.
    calls = []
    op, adj = _matrix_ops(2 * torch.eye(3, dtype=torch.float64), calls)
    x0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    s, v = power_iteration(op, adj, x0, 10, 0.0)
    assert len(calls) == 3  # two iterations (the first sets r_0), then |A v_T|
    assert float(s) == 2.0 and v.tolist() == [1.0, 0.0, 0.0]
    calls.clear()
    power_iteration(op, adj, x0, 10)  # without rtol: all of them
    assert len(calls) == 11


def test_the_estimate_is_differentiable_with_the_vector_fixed():
    A = torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    A.requires_grad_(True)
    s, v = power_iteration(
        lambda x: A @ x, lambda y: A.T @ y, torch.ones(2, dtype=torch.float64), 3
    )
    s.backward()
    Av = A.detach() @ v
    assert torch.allclose(A.grad, torch.outer(Av, v) / Av.norm(), rtol=1e-13, atol=1e-15)
    assert not v.requires_grad


# -- conv2d_symbol_power_estimate ------------------------------------------------------------


def _symbols(W: np.ndarray, p: int) -> np.ndarray:
    """A^(w_j) = sum_(a, b) exp(-i w_j . (a, b)) W[:, :, a, b] on the half grid, (p, p//2+1, o, i)."""
    k = W.shape[-1]
    j1 = np.arange(p).reshape(-1, 1, 1, 1)
    j2 = np.arange(p // 2 + 1).reshape(1, -1, 1, 1)
    a = np.arange(k).reshape(1, 1, -1, 1)
    b = np.arange(k).reshape(1, 1, 1, -1)
    phase = np.exp(-2j * np.pi * (j1 * a + j2 * b) / p)
    return np.einsum("oiab,xyab->xyoi", W, phase)


def _complex(vectors: torch.Tensor) -> np.ndarray:
    v = vectors.detach().double().numpy()
    return v[..., 0] + 1j * v[..., 1]


def _reference(W: np.ndarray, V: np.ndarray, n_iter: int):
    """Per-frequency power iteration on S^* S from V (a vector with S^* S v = 0 is kept),
    then unit vectors; the estimate max_j |S_j v_j|^2 and its frequency."""
    S = _symbols(W, V.shape[0])
    V = V.copy()
    for _ in range(n_iter):
        w = np.einsum("xyoi,xyo->xyi", S.conj(), np.einsum("xyoi,xyi->xyo", S, V))
        n = np.linalg.norm(w, axis=-1, keepdims=True)
        V = np.where(n > 0, w / np.where(n > 0, n, 1.0), V)
    n = np.linalg.norm(V, axis=-1, keepdims=True)
    V = V / np.maximum(n, np.finfo(np.float64).tiny)
    values = (np.abs(np.einsum("xyoi,xyi->xyo", S, V)) ** 2).sum(-1)
    return float(values.max()), V, np.unravel_index(values.argmax(), values.shape)


def _weights(c_out, c_in, k, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=g)


def _vectors(p, c_in, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(p, p // 2 + 1, c_in, 2, dtype=torch.float64, generator=g).to(dtype)


CASES = [  # (c_out, c_in, k, p, n_iter, scale)
    (3, 2, 3, 8, 5, 1.0),
    (2, 4, 5, 7, 3, 1.0),
    (4, 3, 3, 6, 0, 1.0),
    (1, 1, 1, 4, 2, 1.0),
    (2, 3, 3, 5, 4, 0.05),  # |S^* S v| < 1 at every frequency
    (3, 2, 3, 8, 1, 10.0),
]


@pytest.mark.parametrize("c_out,c_in,k,p,n_iter,scale", CASES)
def test_symbol_power_iteration_matches_the_numpy_reference(c_out, c_in, k, p, n_iter, scale):
    W = _weights(c_out, c_in, k, seed=p + k, scale=scale)
    vectors = _vectors(p, c_in, seed=c_out + 10 * c_in)
    V0 = _complex(vectors)
    storage = vectors.data_ptr()
    est = conv2d_symbol_power_estimate(W, vectors, n_iter)
    expected, V, _ = _reference(W.numpy(), V0, n_iter)
    assert isinstance(est, torch.Tensor) and est.dim() == 0 and est.dtype == torch.float64
    assert float(est) == pytest.approx(expected, rel=1e-12)
    # the vectors are updated in place, with the iterated unit vectors
    assert vectors.data_ptr() == storage and vectors.shape == (p, p // 2 + 1, c_in, 2)
    assert np.allclose(_complex(vectors), V, rtol=1e-11, atol=1e-12)
    assert np.allclose(np.linalg.norm(_complex(vectors), axis=-1), 1.0, rtol=1e-13)


def test_the_maximising_frequency_is_not_the_first():
    # a high-pass kernel: the frequency carrying the estimate is away from j = (0, 0)
    W = _weights(3, 2, 3, seed=3)
    W = W * torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]], dtype=W.dtype)
    W[:, :, 1, 1] += 3.0
    vectors = _vectors(8, 2, seed=4)
    expected, _, j = _reference(W.numpy(), _complex(vectors), 4)
    assert j != (0, 0)
    values = (
        np.abs(np.einsum("xyoi,xyi->xyo", _symbols(W.numpy(), 8), _complex(vectors))) ** 2
    ).sum(-1)
    assert values.min() < 0.5 * values.max()  # the choice of frequency matters
    assert float(conv2d_symbol_power_estimate(W, vectors, 4)) == pytest.approx(expected, rel=1e-12)


def test_vectors_persist_between_calls():
    W = _weights(3, 2, 3, seed=5)
    a, b = _vectors(8, 2, seed=6), _vectors(8, 2, seed=6)
    conv2d_symbol_power_estimate(W, a, 2)
    est_a = conv2d_symbol_power_estimate(W, a, 3)
    est_b = conv2d_symbol_power_estimate(W, b, 5)
    assert float(est_a) == pytest.approx(float(est_b), rel=1e-13)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-13)
    # the stored unit vectors give back the same value without any iteration
    again = a.clone()
    assert float(conv2d_symbol_power_estimate(W, again, 0)) == pytest.approx(
        float(est_a), rel=1e-14
    )
    assert torch.allclose(again, a, rtol=1e-14, atol=1e-15)


def _dense_circular(W: np.ndarray, p: int) -> np.ndarray:
    """Matrix of y[o, m] = sum_(i, t) W[o, i, t] x[i, m - t mod p] on a p x p grid."""
    c_out, c_in, k, _ = W.shape
    M = np.zeros((c_out, p, p, c_in, p, p))
    for m1 in range(p):
        for m2 in range(p):
            for a in range(k):
                for b in range(k):
                    M[:, m1, m2, :, (m1 - a) % p, (m2 - b) % p] += W[:, :, a, b]
    return M.reshape(c_out * p * p, c_in * p * p)


@pytest.mark.parametrize("p", [5, 6])
def test_converges_from_below_to_the_dense_circular_norm(p):
    W = _weights(3, 2, 3, seed=p)
    true = float(np.linalg.svd(_dense_circular(W.numpy(), p), compute_uv=False)[0] ** 2)
    # the circular convolution written with torch's conv2d: the same matrix
    x = torch.eye(2 * p * p, dtype=torch.float64).reshape(-1, 2, p, p)
    y = F.conv2d(F.pad(x, (2, 0, 2, 0), mode="circular"), W.flip(-1, -2))
    assert np.allclose(y.reshape(2 * p * p, -1).T.numpy(), _dense_circular(W.numpy(), p))
    vectors = _vectors(p, 2, seed=1)
    previous = 0.0
    for n_iter in (0, 1, 2, 5, 20, 300):
        est = float(conv2d_symbol_power_estimate(W, vectors, n_iter))  # n_iter more each time
        assert previous * (1 - 1e-13) <= est <= true * (1 + 1e-12)
        previous = est
    assert est == pytest.approx(true, rel=1e-10)


def test_approaches_the_supremum_of_the_symbol():
    W = _weights(4, 3, 3, seed=0)
    vectors = _vectors(64, 3, seed=1)
    est = float(conv2d_symbol_power_estimate(W, vectors, 50))
    # a 256 x 256 grid contains the 64 x 64 one: its maximum is between the two
    fine = float(np.linalg.svd(_symbols(W.numpy(), 256), compute_uv=False)[..., 0].max() ** 2)
    assert est <= fine * (1 + 1e-12)
    assert est >= fine / grid_correction(3, 64) ** 2
    assert est >= 0.999 * float(
        np.linalg.svd(_symbols(W.numpy(), 64), compute_uv=False)[..., 0].max() ** 2
    )


def test_gradient_is_that_of_the_value_at_the_maximising_frequency():
    W = _weights(3, 2, 3, seed=7).requires_grad_(True)
    vectors = _vectors(6, 2, seed=8)
    est = conv2d_symbol_power_estimate(W, vectors, 3)
    assert est.requires_grad and not vectors.requires_grad
    est.backward()
    Wn = W.detach().numpy()
    _, V, (x, y) = _reference(Wn, _complex(_vectors(6, 2, seed=8)), 3)
    v = V[x, y]
    u = _symbols(Wn, 6)[x, y] @ v
    a = np.arange(3).reshape(-1, 1)
    b = np.arange(3).reshape(1, -1)
    phase = np.exp(-2j * np.pi * (x * a + y * b) / 6)
    # d |sum_t e^(-i theta_t) W_t v|^2 / d W_t[o, i] = 2 Re(conj(u_o) e^(-i theta_t) v_i)
    grad = 2 * np.real(np.einsum("o,ab,i->oiab", u.conj(), phase, v))
    assert np.allclose(W.grad.numpy(), grad, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(
    "w_dtype,v_dtype", [(torch.float32, torch.float32), (torch.float32, torch.float64)]
)
def test_dtypes(w_dtype, v_dtype):
    W = _weights(3, 2, 3, seed=9)
    vectors = _vectors(8, 2, seed=10, dtype=v_dtype)
    V0 = _complex(vectors)
    est = conv2d_symbol_power_estimate(W.to(w_dtype), vectors, 4)
    assert est.dtype == w_dtype and est.dim() == 0
    assert vectors.dtype == v_dtype
    expected, V, _ = _reference(W.to(w_dtype).double().numpy(), V0, 4)
    assert float(est) == pytest.approx(expected, rel=1e-5)
    assert np.allclose(_complex(vectors), V, rtol=1e-4, atol=1e-5)
    # float64 weights with float32 vectors: computed in float64, stored in float32
    vectors = _vectors(8, 2, seed=10, dtype=torch.float32)
    est = conv2d_symbol_power_estimate(W, vectors, 4)
    assert est.dtype == torch.float64 and vectors.dtype == torch.float32
    expected, V, _ = _reference(
        W.numpy(), _complex(_vectors(8, 2, seed=10, dtype=torch.float32)), 4
    )
    assert float(est) == pytest.approx(expected, rel=1e-12)
    assert np.allclose(_complex(vectors), V, rtol=1e-6, atol=1e-7)


def test_a_vector_with_zero_image_is_kept():
    # A_(1,0) = B, A_(1,1) = -B: A^(w) = e^(-i w1) (1 - e^(-i w2)) B vanishes at w2 = 0
    g = torch.Generator().manual_seed(11)
    B = torch.randn(2, 2, dtype=torch.float64, generator=g)
    W = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    W[:, :, 1, 0], W[:, :, 1, 1] = B, -B
    vectors = _vectors(6, 2, seed=12)
    V0 = _complex(vectors)
    est = conv2d_symbol_power_estimate(W, vectors, 3)
    expected, V, _ = _reference(W.numpy(), V0, 3)
    assert float(est) == pytest.approx(expected, rel=1e-12)
    kept = V0[:, 0] / np.linalg.norm(V0[:, 0], axis=-1, keepdims=True)
    assert np.allclose(_complex(vectors)[:, 0], kept, rtol=1e-13, atol=1e-14)
    assert np.allclose(_complex(vectors), V, rtol=1e-11, atol=1e-12)


def test_zero_vectors_stay_zero():
    W = _weights(3, 2, 3, seed=13)
    vectors = _vectors(6, 2, seed=14)
    vectors[2, 1] = 0.0
    V0 = _complex(vectors)
    est = conv2d_symbol_power_estimate(W, vectors, 3)
    assert bool(torch.isfinite(vectors).all())
    assert vectors[2, 1].abs().max() == 0.0
    expected, V, _ = _reference(W.numpy(), V0, 3)
    assert float(est) == pytest.approx(expected, rel=1e-12)
    assert np.allclose(_complex(vectors), V, rtol=1e-11, atol=1e-12)
    # all zero: the estimate is 0, not NaN
    zero = torch.zeros(6, 4, 2, 2, dtype=torch.float64)
    assert float(conv2d_symbol_power_estimate(W, zero, 3)) == 0.0
    assert zero.abs().max() == 0.0


@pytest.mark.parametrize("scale", [1e-60, 1e60])
def test_the_estimate_scales_with_the_square_of_the_kernel(scale):
    W = _weights(3, 2, 3, seed=15)
    a, b = _vectors(6, 2, seed=16), _vectors(6, 2, seed=16)
    est = float(conv2d_symbol_power_estimate(W, a, 4))
    assert float(conv2d_symbol_power_estimate(scale * W, b, 4)) == pytest.approx(
        scale**2 * est, rel=1e-12
    )
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-13)


def test_runs_on_the_weights_device(device):
    # on CUDA, phases built on another device than the weight fail (run where a GPU exists)
    W = _weights(3, 2, 3, seed=17)
    cpu, here = _vectors(8, 2, seed=18), _vectors(8, 2, seed=18).to(device)
    est = conv2d_symbol_power_estimate(W.to(device), here, 4)
    assert est.device == W.to(device).device and here.device == est.device
    assert float(est) == pytest.approx(float(conv2d_symbol_power_estimate(W, cpu, 4)), rel=1e-10)
    assert torch.allclose(here.cpu(), cpu, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-30, 1e20, 1e38])
def test_power_iteration_takes_any_finite_scale_of_x0_and_of_the_operator(scale):
    # float32: the squares inside a norm of entries beyond about 1e19 overflow
    A = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    s, v = power_iteration(lambda x: A @ x, lambda y: A.T @ y, torch.ones(3) * scale, 60)
    assert float(s) == pytest.approx(3.0, rel=1e-6) and float(v.norm()) == pytest.approx(1.0)
    big = A * 1e15  # ||A^T A v|| about 1e31: its square overflows
    s, v = power_iteration(lambda x: big @ x, lambda y: big.T @ y, torch.ones(3), 200, 1e-9)
    assert float(s) == pytest.approx(3e15, rel=1e-5) and bool(torch.isfinite(v).all())


@pytest.mark.parametrize("scale", [1e-20, 1e9, 1e15])
def test_symbol_estimate_of_a_float32_kernel_scales_with_it(scale):
    # the iterates' squared norms overflowed for entries beyond about 1e9: estimate 0 or NaN
    torch.manual_seed(3)
    w = torch.randn(4, 3, 3, 3)
    v0 = torch.randn(16, 9, 3, 2)
    plain = float(conv2d_symbol_power_estimate(w, v0.clone(), 30))
    scaled = float(conv2d_symbol_power_estimate(w * scale, v0.clone(), 30))
    assert scaled / scale**2 == pytest.approx(plain, rel=1e-4)
