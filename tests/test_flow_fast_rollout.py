"""The compiled rollout agrees with the PyTorch path; rollouts restore the thread setting."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import sympflow as sympflow_module
from deepinv_dynnets.flows.fast_rollout import compiled_powers, kernel_available

F64 = torch.float64
pytestmark = pytest.mark.skipif(not kernel_available(), reason="no C compiler")


def _flow(dtype=F64, dim=4, depth=2):
    flow = SympFlow(dim, n_layers=2, width=8, depth=depth).to(dtype)
    for p in flow.parameters():
        torch.nn.init.normal_(p, std=0.4)
    return flow


def _both(flow, fn):
    """``fn()`` through the compiled loop and through PyTorch, without autograd."""
    with torch.no_grad():
        flow.compiled_rollout = True
        fast = fn()
        flow.compiled_rollout = False
        slow = fn()
    flow.compiled_rollout = True
    return fast, slow


@pytest.mark.parametrize(("dim", "depth"), [(2, 1), (4, 2), (6, 3)])
def test_compiled_powers_are_the_network_composed(dim, depth):
    flow = _flow(dim=dim, depth=depth)
    x = 0.5 * torch.randn(5, dim, dtype=F64)
    with torch.no_grad():
        out = compiled_powers(flow, x, torch.tensor([0, 1, 3, -2]))
        torch.testing.assert_close(out[0], x, atol=0, rtol=0)
        one = flow.network(flow.dt, x)
        three = flow.network(flow.dt, flow.network(flow.dt, one))
        back = flow.network_inverse(flow.dt, flow.network_inverse(flow.dt, x))
    torch.testing.assert_close(out[1], one, atol=1e-13, rtol=0)
    torch.testing.assert_close(out[2], three, atol=1e-13, rtol=0)
    torch.testing.assert_close(out[3], back, atol=1e-13, rtol=0)


@pytest.mark.parametrize(("dtype", "atol"), [(F64, 1e-11), (torch.float32, 2e-4)])
def test_rollouts_agree_with_the_pytorch_path(dtype, atol):
    flow = _flow(dtype)
    y0 = 0.5 * torch.randn(3, 4, dtype=dtype)
    grids = [
        torch.arange(0, 41, dtype=dtype),
        torch.tensor([0.3, 2.5, 2.75, 9.1, 30.0], dtype=dtype),
        -torch.arange(0, 25, dtype=dtype) / 2,
    ]
    for t in grids:
        fast, slow = _both(flow, lambda t=t: flow(y0, t))
        torch.testing.assert_close(fast, slow, atol=atol, rtol=0)
    per_sample = torch.stack([grids[0][:5], grids[1].flip(0) - 1, grids[2][:5] + 0.2], 1)
    fast, slow = _both(flow, lambda: flow(y0, per_sample))
    torch.testing.assert_close(fast, slow, atol=atol, rtol=0)
    fast, slow = _both(flow, lambda: flow.map(17.3, y0, t0=-2.2))
    torch.testing.assert_close(fast, slow, atol=atol, rtol=0)


def test_progress_pieces_cover_long_gaps(monkeypatch, capsys):
    monkeypatch.setattr(sympflow_module, "_KERNEL_PIECE", 7)
    flow = _flow()
    y0 = 0.5 * torch.randn(2, 4, dtype=F64)
    t = torch.tensor([0.0, 3.0, 5.0, 30.0, 31.0, 50.5], dtype=F64)
    fast, slow = _both(flow, lambda: flow(y0, t, progress=True))
    torch.testing.assert_close(fast, slow, atol=1e-11, rtol=0)
    assert "/50 " in capsys.readouterr().err


def test_not_used_when_a_graph_is_needed():
    flow = _flow()
    y0 = (0.5 * torch.randn(2, 4, dtype=F64)).requires_grad_(True)
    out = flow(y0, torch.arange(0, 4, dtype=F64))
    out[-1].sum().backward()  # the PyTorch path, which autograd can go through
    assert y0.grad is not None and bool(torch.isfinite(y0.grad).all())


@pytest.mark.parametrize(
    ("needs_graph", "states", "threads"),
    [
        (False, 3000, 1),  # inference: slices of at most _CHUNK states, one thread
        (False, sympflow_module._CHUNK + 1, 1),
        (True, sympflow_module._CHUNK, 1),  # a graph but no more than one slice of states
        (True, 1000, 1),
        (True, sympflow_module._CHUNK + 1, 2),  # a large graph: the user's setting
    ],
)
def test_rollout_thread_policy(monkeypatch, needs_graph, states, threads):
    flow = _flow()
    flow.compiled_rollout = False
    seen = []
    network = flow.network

    def spy(t, x):
        seen.append(torch.get_num_threads())
        return network(t, x)

    monkeypatch.setattr(flow, "network", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        y0 = 0.1 * torch.randn(states, 4, dtype=F64)
        with torch.set_grad_enabled(needs_graph):
            flow(y0, torch.tensor([0.0, 1.5], dtype=F64))
        assert seen and set(seen) == {threads}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    st.sampled_from([2, 4, 6]),
    st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    st.floats(-3.0, 3.0),
    st.lists(st.floats(0.05, 2.0), min_size=0, max_size=4),
    st.sampled_from([1.0, -1.0]),
)
def test_compiled_and_pytorch_rollouts_agree_on_any_grid(dim, batch, t0, steps, direction):
    flow = _flow(dim=dim)
    y0 = 0.5 * torch.randn(*batch, dim, dtype=F64)
    t = t0 + direction * torch.tensor([0.0, *steps], dtype=F64).cumsum(0)
    fast, slow = _both(flow, lambda: flow(y0, t))
    torch.testing.assert_close(fast, slow, atol=1e-9, rtol=0)
