"""Property-based tests of SympFlow: any batch shape, dtype, even dimension and time grid
gives the right result (symplectic, agreeing with odeint of its own field) or a clear error."""

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import jacobian
from torchdiffeq import odeint

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import canonical_J

F64 = torch.float64
FAST = settings(max_examples=25, deadline=None)


@functools.cache
def _flow(dim: int, dt: float) -> SympFlow:
    torch.manual_seed(dim)
    flow = SympFlow(dim, n_layers=2, width=6, dt=dt).double()
    for p in flow.parameters():  # far from the identity
        torch.nn.init.normal_(p, std=0.4)
    return flow


dims = st.sampled_from([2, 4, 6])
dts = st.sampled_from([1.0, 0.5, 0.3])
batch_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
starts = st.floats(-3.0, 3.0, allow_nan=False).map(lambda v: round(v, 3))
increments = st.lists(st.floats(0.05, 1.5), min_size=0, max_size=4)
directions = st.sampled_from([1.0, -1.0])


def _grid(t0, steps, direction):
    return torch.tensor([t0 + direction * s for s in [0.0, *_cumsum(steps)]], dtype=F64)


def _cumsum(values):
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


@FAST
@given(dims, dts, batch_shapes, starts, increments, directions, st.integers(0, 2**31 - 1))
def test_call_is_the_two_time_flow_in_every_shape(dim, dt, batch, t0, steps, direction, seed):
    flow = _flow(dim, dt)
    gen = torch.Generator().manual_seed(seed)
    y0 = 0.5 * torch.randn(*batch, dim, generator=gen, dtype=F64)
    t = _grid(t0, steps, direction)
    out = flow(y0, t)
    assert out.shape == (len(t), *batch, dim) and out.dtype == F64
    assert torch.equal(out[0], y0)
    for i in range(1, len(t)):
        torch.testing.assert_close(out[i], flow.map(t[i], y0, t0=t[0]), atol=1e-11, rtol=0)
    # back to the start through the inverse
    torch.testing.assert_close(flow.inverse_map(t[-1], out[-1], t0=t[0]), y0, atol=1e-10, rtol=0)


@settings(max_examples=15, deadline=None)
@given(dims, dts, starts, st.floats(0.05, 2.5), directions, st.integers(0, 2**31 - 1))
def test_flow_from_any_start_is_symplectic(dim, dt, t0, span, direction, seed):
    flow = _flow(dim, dt)
    x = 0.5 * torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    D = jacobian(lambda z: flow.map(t0 + direction * span, z, t0=t0), x)
    J = canonical_J(dim // 2, dtype=F64)
    scale = max(1.0, torch.linalg.matrix_norm(D, ord=2).item() ** 2)
    assert (D.T @ J @ D - J).abs().max() < 1e-12 * scale


@settings(max_examples=4, deadline=None)
@given(st.sampled_from([2, 4]), starts, st.floats(0.2, 1.4), directions)
def test_call_agrees_with_odeint_of_its_own_field(dim, t0, span, direction):
    flow = _flow(dim, 1.0)
    y0 = 0.4 * torch.randn(2, dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.tensor([t0, t0 + direction * span / 2, t0 + direction * span], dtype=F64)
    lo, hi = float(t.min()), float(t.max())
    jumps = torch.arange(math.floor(lo) + 1, math.ceil(hi), dtype=F64)
    ref = odeint(flow.vector_field, y0, t, rtol=1e-10, atol=1e-10, options={"jump_t": jumps})
    torch.testing.assert_close(flow(y0, t), ref, atol=1e-7, rtol=0)


@FAST
@given(dims, st.integers(1, 4), st.integers(1, 5), starts, st.integers(0, 2**31 - 1))
def test_per_sample_grids_are_one_call_per_sample(dim, B, T, t0, seed):
    flow = _flow(dim, 0.5)
    gen = torch.Generator().manual_seed(seed)
    y0 = 0.5 * torch.randn(B, dim, generator=gen, dtype=F64)
    sign = torch.where(torch.rand(B, generator=gen) < 0.5, -1.0, 1.0).to(F64)
    steps = torch.rand(T, B, generator=gen, dtype=F64) * 1.2 + 0.05
    steps[0] = 0
    t = t0 + torch.rand(B, generator=gen, dtype=F64) + sign * steps.cumsum(0)
    out = flow(y0, t)
    assert out.shape == (T, B, dim)
    for b in range(B):
        torch.testing.assert_close(out[:, b], flow(y0[b], t[:, b]), atol=1e-11, rtol=0)


@FAST
@given(dims, batch_shapes, st.sampled_from([torch.float32, torch.float64]), starts, increments)
def test_any_dtype_keeps_its_dtype_and_stays_finite(dim, batch, dtype, t0, steps):
    flow = SympFlow(dim, n_layers=1, width=4).to(dtype)
    y0 = torch.rand(*batch, dim, dtype=dtype)
    out = flow(y0, _grid(t0, steps, 1.0).to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    wrong = torch.float64 if dtype == torch.float32 else torch.float32
    with pytest.raises(TypeError, match="y0 has dtype"):
        flow(y0.to(wrong), _grid(t0, steps, 1.0).to(wrong))


@FAST
@given(st.integers(1, 7).filter(lambda d: d % 2), batch_shapes)
def test_odd_dimensions_are_refused(dim, batch):
    with pytest.raises(ValueError, match="even"):
        SympFlow(dim)
    with pytest.raises(ValueError, match="y0 must have"):
        _flow(2, 1.0)(torch.rand(*batch, dim, dtype=F64), torch.zeros(1, dtype=F64))


@FAST
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=6))
def test_grids_that_are_not_strictly_monotone_are_refused(values):
    t = torch.tensor(values, dtype=F64)
    step = t[1:] - t[:-1]
    flow = _flow(2, 1.0)
    y0 = torch.rand(3, 2, dtype=F64)
    if bool((step > 0).all()) or bool((step < 0).all()):
        assert flow(y0, t).shape == (len(values), 3, 2)
    else:
        with pytest.raises(
            ValueError, match="t must be strictly increasing or strictly decreasing"
        ):
            flow(y0, t)
