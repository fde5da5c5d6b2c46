"""SympFlow's own code against identities computed here, in float64.

Written for the mutation testing of ``flows/sympflow.py`` (see the guarantees page): the
periodic extension of the network's Hamiltonian and the long-time flow it generates, the
layer lists that the forward map, the inverse and the Hamiltonian walk together, the
messages of refused states and names, and the loading of weights.
"""

import pytest
import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import base
from deepinv_dynnets.flows import sympflow as sympflow_module
from deepinv_dynnets.flows.fast_rollout import kernel_available

F64 = torch.float64


def _random_flow(dim=4, n_layers=2, width=8, std=0.5, dt=1.0, activation="tanh"):
    flow = SympFlow(dim, n_layers=n_layers, width=width, dt=dt, activation=activation).double()
    with torch.no_grad():
        for p in flow.parameters():  # far from the identity
            p.normal_(std=std)
    return flow


def _apply_J(v):
    n = v.shape[-1] // 2
    return torch.cat([v[..., n:], -v[..., :n]], -1)


def test_hamiltonian_is_the_periodic_extension_beyond_the_window():
    # H(t + k dt) = H(t) for the window's H, with dt != 1 (t / dt and t * dt then differ)
    flow = _random_flow(dt=0.5)
    x = torch.randn(6, 4, dtype=F64)
    t = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.4, 0.45], dtype=F64)
    inside = flow.hamiltonian(t, x)
    for k in (-3, -1, 1, 2, 7):
        torch.testing.assert_close(flow.hamiltonian(t + k * 0.5, x), inside, atol=1e-12, rtol=0)
        torch.testing.assert_close(
            flow.vector_field(t + k * 0.5, x), flow.vector_field(t, x), atol=1e-12, rtol=0
        )
    # and the window's H is not constant in t: the check above can fail
    assert (flow.hamiltonian(t.flip(0), x) - inside).abs().max() > 1e-3


@pytest.mark.parametrize("t", [1.3, 2.05, -0.7])
def test_periodic_hamiltonian_generates_the_long_time_flow(t):
    # d/dt psi(t, x) = J grad H(t, psi(t, x)) beyond [0, dt], both sides computed here
    flow = _random_flow(dt=0.5)
    x = 0.5 * torch.randn(5, 4, dtype=F64)
    tt = torch.tensor(t, dtype=F64, requires_grad=True)
    y = flow.map(tt, x)
    dy = torch.stack(
        [torch.autograd.grad(y[:, k].sum(), tt, retain_graph=True)[0] for k in range(4)]
    )
    z = y.detach().requires_grad_(True)
    times = torch.full((5,), t, dtype=F64)
    (grad,) = torch.autograd.grad(flow.hamiltonian(times, z).sum(), z)
    field = _apply_J(grad)
    torch.testing.assert_close(field.sum(0), dy, atol=1e-10, rtol=0)
    torch.testing.assert_close(flow.vector_field(times, z).sum(0), dy, atol=1e-10, rtol=0)


def test_layer_lists_of_different_lengths_are_an_error_not_a_shorter_network():
    # K and V are walked in pairs: a K list edited to a different length must not drop layers
    flow = _random_flow(n_layers=2)
    flow.K.append(_random_flow(n_layers=1).K[0])
    x = torch.randn(3, 4, dtype=F64)
    for call in (
        lambda: flow.network(0.3, x),
        lambda: flow.network_with_time_derivative(0.3, x),
        lambda: flow.network_inverse(0.3, x),
        lambda: flow.hamiltonian(0.3, x),
    ):
        with pytest.raises(ValueError, match="zip"):
            call()


def test_vector_field_refusals_name_what_was_passed():
    flow = _random_flow()
    with pytest.raises(
        ValueError,
        match=r"y must be a floating-point torch.Tensor, got dtype "
        r"torch.int64",
    ):
        flow.vector_field(0.3, torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="y must be a floating-point torch.Tensor, got list$"):
        flow.vector_field(0.3, [[0.0] * 4])


def test_from_pretrained_names_the_bad_name_and_passes_map_location_on(tmp_path, monkeypatch):
    with pytest.raises(
        ValueError,
        match=r"or a path to a SympFlow weights file, got "
        r"'no-such-flow'",
    ):
        SympFlow.from_pretrained("no-such-flow")
    flow = SympFlow(2, n_layers=1, width=4)
    flow.save(tmp_path / "f.pt")
    seen = []
    load = sympflow_module.load_weights

    def spy(path, *, kind, map_location=None):
        seen.append(map_location)
        return load(path, kind=kind, map_location=map_location)

    monkeypatch.setattr(sympflow_module, "load_weights", spy)
    device = torch.device("cpu")
    SympFlow.from_pretrained(tmp_path / "f.pt", map_location=device)
    SympFlow.from_pretrained(tmp_path / "f.pt")
    assert seen == [device, "cpu"]


def test_a_card_of_another_architecture_names_the_file(tmp_path):
    flow = SympFlow(2, n_layers=1, width=4)
    flow.save(tmp_path / "f.pt")
    card = tmp_path / "f.json"
    card.write_text(card.read_text().replace('"width": 4', '"width": 5'))
    with pytest.raises(ValueError, match=str(tmp_path / "f.pt")):
        SympFlow.from_pretrained(tmp_path / "f.pt")


def test_vector_field_jacobian_is_j_times_a_symmetric_hessian():
    # with y requiring grad, f(t, y) keeps its graph: Df = J Hess H, checked against central
    # differences; J^T Df = Hess H is symmetric
    flow = _random_flow(dt=0.5)
    y = 0.5 * torch.randn(4, dtype=F64)
    t = torch.tensor(0.8, dtype=F64)  # in the second window
    D = torch.autograd.functional.jacobian(lambda z: flow.vector_field(t, z), y)
    h = 1e-5
    fd = torch.stack(
        [
            (flow.vector_field(t, y + h * e) - flow.vector_field(t, y - h * e)) / (2 * h)
            for e in torch.eye(4, dtype=F64)
        ],
        1,
    )
    torch.testing.assert_close(D, fd, atol=1e-7, rtol=0)
    assert D.abs().max() > 1e-2  # not trivial
    J = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1], [-1, 0, 0, 0], [0, -1, 0, 0]], dtype=F64)
    S = J.T @ D
    torch.testing.assert_close(S, S.T, atol=1e-12, rtol=0)
    # the same through a graph the caller built (y0 requires grad, as in odeint)
    y0 = (y / 2).requires_grad_(True)
    (g,) = torch.autograd.grad(flow.vector_field(t, 2 * y0)[0], y0)
    torch.testing.assert_close(g, 2 * D[0], atol=1e-12, rtol=0)


def test_times_must_be_real_floating_point_and_refusals_say_what_came():
    flow = _random_flow()
    x = torch.randn(3, 4, dtype=F64)
    for call in (flow.hamiltonian, flow.vector_field):
        for bad in (torch.tensor(1), torch.tensor([1, 0, 2]), torch.tensor(True)):
            with pytest.raises(
                ValueError, match=f"t must be a real floating-point time, got dtype {bad.dtype}"
            ):
                call(bad, x)
        with pytest.raises(ValueError, match="got dtype torch.complex128"):
            call(torch.tensor(0.5 + 0j, dtype=torch.complex128), x)
        with pytest.raises(ValueError, match="t must be a real number or a tensor, got str"):
            call("0.5", x)
        with pytest.raises(ValueError, match="t must be a real number or a tensor, got bool"):
            call(True, x)


def test_batch_shape_and_non_finite_time_messages():
    flow = _random_flow()
    x = torch.randn(3, 5, 4, dtype=F64)
    for call in (flow.hamiltonian, flow.vector_field):
        with pytest.raises(
            ValueError, match=r"batch shape \(3, 5\) of the states, got shape \(4,\)$"
        ):
            call(torch.zeros(4, dtype=F64), x)
        with pytest.raises(ValueError, match=r"^t contains NaN or Inf values$"):
            call(torch.full((5,), float("nan"), dtype=F64), x)


def test_times_in_another_dtype_are_converted_before_the_periodic_reduction():
    # a float32 time for float64 states: the window and the offset in it are computed in
    # float64 (dt = 0.3 is not a binary fraction: in float32 the offset moves by ~4e-8)
    flow = _random_flow(dt=0.3)
    x = torch.randn(4, 4, dtype=F64)
    t32 = torch.tensor([1.0, 2.2, 0.7, 5.3], dtype=torch.float32)
    t64 = t32.double()
    assert flow.hamiltonian(t64, x).dtype == F64
    torch.testing.assert_close(
        flow.hamiltonian(t32, x), flow.hamiltonian(t64, x), atol=1e-14, rtol=0
    )
    torch.testing.assert_close(
        flow.vector_field(t32, x), flow.vector_field(t64, x), atol=1e-14, rtol=0
    )


class _Bar:
    """Stands in for tqdm: records every update of the progress bar."""

    made: list = []

    def __init__(self, total, **kwargs):
        self.total, self.n, self.updates = total, 0, []
        _Bar.made.append(self)

    def update(self, n=1):
        self.updates.append(n)
        self.n += n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _bars(monkeypatch):
    monkeypatch.setattr(base, "tqdm", _Bar)
    monkeypatch.setattr(_Bar, "made", [])
    return _Bar.made


@pytest.mark.parametrize("compiled", [False, True])
def test_progress_bar_counts_every_composition(monkeypatch, compiled):
    if compiled and not kernel_available():
        pytest.skip("no C compiler")
    flow = _random_flow(std=0.3)
    flow.compiled_rollout = compiled
    y0 = 0.5 * torch.randn(3, 4, dtype=F64)
    grid = torch.tensor([0.0, 3.0, 12.5], dtype=F64)
    per_sample = torch.tensor([[0.0, 0.5, 1.0], [2.0, -1.5, 4.0], [6.0, -3.5, 9.5]], dtype=F64)
    bars = _bars(monkeypatch)
    with torch.no_grad():
        # per sample, each step of the grid costs its longest move: max(2, 2, 3) + max(4, 2, 5)
        for t, moves in ((grid, 12), (per_sample, 3 + 5)):
            out = flow(y0, t, progress=True)
            bar = bars.pop()
            assert (bar.total, bar.n) == (moves, moves)
            torch.testing.assert_close(out, flow(y0, t, progress=False), atol=1e-12, rtol=0)
        for go, moves in ((flow.map, 12), (flow.inverse_map, 12)):
            out = go(12.5, y0, t0=0.3, progress=True)
            bar = bars.pop()
            assert (bar.total, bar.n) == (moves, moves)
            torch.testing.assert_close(
                out, go(12.5, y0, t0=0.3, progress=False), atol=1e-12, rtol=0
            )
    assert not bars


@pytest.mark.skipif(not kernel_available(), reason="no C compiler")
@pytest.mark.parametrize(
    ("grid", "moves"),
    [
        ([0.0, 3.0, 5.0, 30.0, 31.0, 50.5], 50),
        ([0.0, -20.5], 21),  # backward, one gap of 3 pieces
        ([0.4, -1.5, -9.0, -30.2], 31),
        ([0.1, 0.5], 0),  # within one window: no composition
    ],
)
def test_compiled_rollout_bar_moves_piece_by_piece(monkeypatch, grid, moves):
    monkeypatch.setattr(sympflow_module, "_KERNEL_PIECE", 7)
    flow = _random_flow(std=0.3)
    y0 = 0.5 * torch.randn(2, 4, dtype=F64)
    t = torch.tensor(grid, dtype=F64)
    bars = _bars(monkeypatch)
    with torch.no_grad():
        out = flow(y0, t, progress=True)
        (bar,) = bars
        assert bar.n == bar.total == moves
        assert len(bar.updates) >= moves // 7 and max(bar.updates, default=0) <= 7
        flow.compiled_rollout = False
        torch.testing.assert_close(out, flow(y0, t, progress=False), atol=1e-11, rtol=0)


# -- the network, its inverse and its Hamiltonian, rebuilt here from the potentials ----------
def _grad(P, u, t):
    """grad_u P(t, u) and d/dt P(t, u) by autograd (P's forward only)."""
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        s = torch.as_tensor(t, dtype=u.dtype).expand(u.shape[:-1]).clone().requires_grad_(True)
        return torch.autograd.grad(P(u, s).sum(), (u, s))


def _shift(P, u, t):
    return _grad(P, u, t)[0] - _grad(P, u, torch.zeros_like(torch.as_tensor(t)))[0]


def _network_by_hand(flow, t, x):
    q, p = x[:, : flow.n], x[:, flow.n :]
    for K, V in zip(flow.K, flow.V, strict=True):
        q = q + _shift(K, p, t)
        p = p - _shift(V, q, t)
    return torch.cat([q, p], -1)


def _inverse_by_hand(flow, t, x):
    q, p = x[:, : flow.n], x[:, flow.n :]
    for K, V in zip(reversed(flow.K), reversed(flow.V), strict=True):
        p = p + _shift(V, q, t)
        q = q - _shift(K, p, t)
    return torch.cat([q, p], -1)


def _hamiltonian_by_hand(flow, t, x):
    # composition theorem: H_{A o B}(x) = H_A(x) + H_B(A^-1 x), from the last block back;
    # the block phi_p^i is the time-t flow of d/dt V_i(t, q), phi_q^i that of d/dt K_i(t, p)
    q, p = x[:, : flow.n], x[:, flow.n :]
    total = flow.energy_offset.detach().clone()
    for K, V in zip(reversed(flow.K), reversed(flow.V), strict=True):
        total = total + _grad(V, q, t)[1]
        p = p + _shift(V, q, t)
        total = total + _grad(K, p, t)[1]
        q = q - _shift(K, p, t)
    return total


@pytest.mark.parametrize("activation", ["tanh", "sin"])
@pytest.mark.parametrize("t", [0.13, 0.5, 0.97])
def test_network_inverse_and_hamiltonian_match_the_formulas(activation, t):
    flow = _random_flow(dim=6, n_layers=3, activation=activation)
    x = torch.randn(5, 6, dtype=F64)
    torch.testing.assert_close(flow.network(t, x), _network_by_hand(flow, t, x), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        flow.network_inverse(t, x), _inverse_by_hand(flow, t, x), atol=1e-12, rtol=0
    )
    assert SympFlow(6).energy_offset.item() == 0.0  # a fresh H_N is the composition itself
    with torch.no_grad():
        flow.energy_offset.zero_()
    h = _hamiltonian_by_hand(flow, t, x)
    torch.testing.assert_close(flow.hamiltonian(t, x), h, atol=1e-12, rtol=0)
    with torch.no_grad():
        flow.energy_offset.fill_(0.7)
    torch.testing.assert_close(flow.hamiltonian(t, x), h + 0.7, atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.network(t, x), _network_by_hand(flow, t, x), atol=1e-12, rtol=0)


def test_time_zero_in_a_batch_and_with_a_gradient_is_the_identity_exactly():
    flow = _random_flow()
    x = torch.randn(6, 4, dtype=F64)
    t = torch.tensor([0.0, 0.4, 0.0, 0.9, 0.0, 0.2], dtype=F64)
    zero = t == 0
    for tt in (t, t.clone().requires_grad_(True)):
        y = flow.network(tt, x)
        assert torch.equal(y[zero], x[zero])
        torch.testing.assert_close(
            y[~zero], _network_by_hand(flow, t[~zero], x[~zero]), atol=1e-12, rtol=0
        )
        back = flow.network_inverse(tt, x)
        assert torch.equal(back[zero], x[zero])
    # d/dt at t = 0 is kept: the generator J grad H_N(0, x), against the closed form
    tt = torch.zeros(6, dtype=F64, requires_grad=True)
    y = flow.network(tt, x)
    assert torch.equal(y, x)
    dy = torch.stack(
        [torch.autograd.grad(y[:, k].sum(), tt, retain_graph=True)[0] for k in range(4)], 1
    )
    _, closed = flow.network_with_time_derivative(torch.zeros(6, dtype=F64), x)
    torch.testing.assert_close(dy, closed, atol=1e-12, rtol=0)
    assert dy.abs().max() > 1e-2
    torch.testing.assert_close(dy, flow.vector_field(0.0, x), atol=1e-12, rtol=0)


def test_large_batches_in_chunks_give_the_same_states():
    # beyond _CHUNK states without autograd the batch is cut into slices
    flow = _random_flow(dim=2, n_layers=1, width=4)
    n = 2 * sympflow_module._CHUNK + 37
    x = torch.randn(3, n, 2, dtype=F64)
    t = torch.rand(3, n, dtype=F64)
    for fn in (flow.network, flow.network_inverse):
        for tt in (t, 0.6):
            whole = fn(tt, x)  # parameters require grad: one piece
            with torch.no_grad():
                cut = fn(tt, x)
            assert cut.shape == x.shape
            torch.testing.assert_close(cut, whole.detach(), atol=1e-13, rtol=0)
    y = flow.network(t, x).detach()
    with torch.no_grad():
        torch.testing.assert_close(flow.network_inverse(t, y), x, atol=1e-12, rtol=0)


def test_compiled_loop_runs_exactly_where_documented(monkeypatch):
    calls = []
    compiled = sympflow_module.compiled_powers

    def spy(flow, x, marks):
        calls.append(x.shape)
        return compiled(flow, x, marks)

    monkeypatch.setattr(sympflow_module, "compiled_powers", spy)
    limit = sympflow_module.KERNEL_MAX_BATCH

    def used(flow, y0, grad=False):
        t = torch.tensor([0.0, 2.5], dtype=y0.dtype)
        calls.clear()
        with torch.set_grad_enabled(grad):
            out = flow(y0, t)
            ref = flow.map(2.5, y0)
        flow.compiled_rollout = False
        with torch.no_grad():
            slow = flow(y0, t)
        flow.compiled_rollout = True
        atol = {F64: 1e-11, torch.float32: 1e-4, torch.bfloat16: 0.1}[y0.dtype]
        torch.testing.assert_close(out.detach(), slow, atol=atol, rtol=0)
        torch.testing.assert_close(ref.detach(), slow[-1], atol=atol, rtol=0)
        return bool(calls)

    flow = _random_flow(std=0.3)
    available = kernel_available()
    assert used(flow, torch.randn(limit, 4, dtype=F64)) == available
    assert used(flow, torch.randn(2, 4, dtype=F64)) == available
    assert not used(flow, torch.randn(limit + 1, 4, dtype=F64))
    assert not used(flow, torch.randn(2, 4, dtype=F64), grad=True)  # parameters need a graph
    flow.requires_grad_(False)
    assert used(flow, torch.randn(2, 4, dtype=F64), grad=True) == available
    assert not used(flow, torch.randn(2, 4, dtype=F64).requires_grad_(True), grad=True)
    # map composes N(dt)^m in the loop for every m != 0 (m = 0: nothing to compose)
    y0 = torch.randn(2, 4, dtype=F64)
    for t, m in ((0.5, 0), (1.5, 1), (2.5, 2), (-0.5, -1), (-3.5, -4)):
        calls.clear()
        with torch.no_grad():
            out = flow.map(t, y0)
        assert bool(calls) == (available and m != 0)
        flow.compiled_rollout = False
        with torch.no_grad():
            torch.testing.assert_close(out, flow.map(t, y0), atol=1e-11, rtol=0)
        flow.compiled_rollout = True
    assert used(flow.float(), torch.randn(2, 4)) == available
    assert not used(flow.to(torch.bfloat16), torch.randn(2, 4, dtype=torch.bfloat16))
    for activation in ("sigmoid", "sin"):
        other = _random_flow(std=0.3, activation=activation)
        assert not used(other, torch.randn(2, 4, dtype=F64))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus", "sin"])
def test_constructor_defaults_activation_and_refusal(activation):
    flow = SympFlow(4, activation=activation)
    assert flow.config == dict(dim=4, n_layers=3, width=16, depth=2, activation=activation, dt=1.0)
    for P in [*flow.K, *flow.V]:  # every potential uses the activation asked for
        assert (P.activation, P.width, P.depth, P.n) == (activation, 16, 2, 2)
    assert len(flow.K) == len(flow.V) == 3
    with pytest.raises(ValueError, match="^n_layers must be >= 1, got 0$"):
        SympFlow(4, n_layers=0)


def test_time_zero_with_a_gradient_is_the_identity_where_the_halves_round_apart():
    # The potentials see (t, u) and (0, u) in one doubled batch; for some widths and batch
    # sizes (width 33 here: a vector loop's tail) the two halves of the same input round
    # differently, so N(0, .) = id holds exactly only through the t = 0 mask.
    torch.manual_seed(0)
    for width in (8, 16, 33):
        flow = _random_flow(width=width)
        for batch in (14, 20, 100):
            x = torch.randn(batch, 4, dtype=F64)
            t = torch.zeros(batch, dtype=F64, requires_grad=True)
            assert torch.equal(flow.network(t, x), x)
            assert torch.equal(flow.network_inverse(t, x), x)


def test_a_time_of_one_with_a_gradient_is_not_treated_as_time_zero():
    # only exact zeros are masked: t = 1 (inside the window when dt = 2) must move the states
    flow = _random_flow(dt=2.0)
    x = torch.randn(4, 4, dtype=F64)
    t = torch.tensor([0.0, 1.0, 1.0, 0.5], dtype=F64)
    plain = flow.network(t, x)
    with_grad = flow.network(t.clone().requires_grad_(True), x)
    torch.testing.assert_close(with_grad, plain, atol=1e-14, rtol=0)
    assert (plain[1:] - x[1:]).abs().min(dim=-1).values.min() > 0


@pytest.mark.parametrize("compiled", [True, False])
def test_a_cpu_flow_works_under_another_default_device(compiled):
    # A user may set torch's default device (e.g. to CUDA) and still run a CPU flow: every
    # tensor the flow makes must follow the states. On "meta" a tensor has no data, so one
    # made on the default device fails loudly instead of silently moving.
    if compiled and not kernel_available():
        pytest.skip("no compiled rollout here")
    flow = _random_flow(dt=0.5)
    flow.compiled_rollout = compiled
    x = 0.5 * torch.randn(6, 4, dtype=F64)
    many = 0.5 * torch.randn(sympflow_module._CHUNK + 3, 4, dtype=F64)
    grid = torch.tensor([0.0, 0.7, 2.6], dtype=F64)
    grids = torch.sort(3 * torch.rand(3, 6, dtype=F64), dim=0).values
    calls = {
        "network": lambda: flow.network(0.3, x),
        "network_inverse": lambda: flow.network_inverse(0.3, x),
        "in slices": lambda: flow.network(0.3, many),
        "inverse in slices": lambda: flow.network_inverse(0.3, many),
        "with d/dt": lambda: torch.cat(flow.network_with_time_derivative(0.3, x)),
        "hamiltonian": lambda: flow.hamiltonian(2.3, x),
        "vector_field": lambda: flow.vector_field(2.3, x),
        "flow": lambda: flow(x, grid),
        "per-sample grids": lambda: flow(x, grids),
    }
    if not compiled:  # the compiled map makes its power on the CPU, which meta cannot copy
        calls["map"] = lambda: flow.map(2.3, x)
    with torch.no_grad():
        expected = {name: call() for name, call in calls.items()}
        with torch.device("meta"):
            for name, call in calls.items():
                got = call()
                assert got.device.type == "cpu", name
                torch.testing.assert_close(got, expected[name], atol=0, rtol=0, msg=name)
