"""Tests of the symplectic helpers and of the Hamiltonian systems."""

from __future__ import annotations

import math

import pytest
import torch
from torchdiffeq import odeint

from deepinv_dynnets.flows.symplectic import apply_J, canonical_J, check_phase_space
from deepinv_dynnets.systems import (
    HamiltonianSystem,
    HarmonicOscillator,
    HenonHeiles,
    Kepler,
    Pendulum,
)

F64 = torch.float64

# Non-default parameters where they exist, so a forgotten parameter shows up.
SYSTEMS = {
    "harmonic": lambda: HarmonicOscillator(omega=1.7),
    "henon_heiles": lambda: HenonHeiles(),
    "pendulum": lambda: Pendulum(g_over_l=0.8),
    "kepler": lambda: Kepler(),
}


@pytest.fixture(params=list(SYSTEMS), ids=list(SYSTEMS))
def system(request: pytest.FixtureRequest) -> HamiltonianSystem:
    return SYSTEMS[request.param]()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- symplectic


@pytest.mark.parametrize("n", [1, 2, 5])
def test_apply_J_agrees_with_canonical_J(n: int) -> None:
    J = canonical_J(n, dtype=F64)
    assert J.shape == (2 * n, 2 * n) and J.dtype == F64
    v = torch.randn(3, 4, 2 * n, generator=gen(n), dtype=F64)
    # Row-vector convention: (J v)^T = v^T J^T.
    torch.testing.assert_close(apply_J(v), v @ J.T, rtol=0, atol=0)
    eye = torch.eye(2 * n, dtype=F64)
    torch.testing.assert_close(J.T @ J, eye, rtol=0, atol=0)
    torch.testing.assert_close(J @ J, -eye, rtol=0, atol=0)
    torch.testing.assert_close(apply_J(apply_J(v)), -v, rtol=0, atol=0)


def test_canonical_J_dtype_device_and_bad_n() -> None:
    J = canonical_J(2, dtype=torch.float32, device="cpu")
    assert J.dtype == torch.float32 and J.device.type == "cpu"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            canonical_J(bad)


def test_apply_J_rejects_odd_and_scalar() -> None:
    with pytest.raises(ValueError, match=r"v must have an even last dimension 2n"):
        apply_J(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="v must have at least one dimension"):
        apply_J(torch.tensor(1.0))


def test_check_phase_space_accepts_valid() -> None:
    check_phase_space(torch.zeros(4), dim=4)
    check_phase_space(torch.zeros(2, 3, 6, dtype=F64), name="z")


@pytest.mark.parametrize(
    ("y", "kwargs", "match"),
    [
        ([0.0, 1.0], {}, "y must be a torch.Tensor"),
        (torch.zeros(2, 4, dtype=torch.int64), {}, "y must be a floating-point tensor"),
        (torch.tensor(0.0), {}, "y must have at least one dimension"),
        (
            torch.zeros(5, 3),
            {},
            r"^y must have an even last dimension 2n \(positions q then momenta p\), "
            r"got shape \(5, 3\)$",
        ),
        (torch.zeros(5, 4), {"name": "state", "dim": 6}, r"state must have last dimension 6"),
        (torch.tensor([0.0, float("nan")]), {"name": "y0"}, "y0 contains NaN or Inf"),
        (torch.tensor([0.0, float("inf")]), {}, "y contains NaN or Inf"),
    ],
)
def test_check_phase_space_rejects(y: object, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_phase_space(y, **kwargs)


# --------------------------------------------------------------------------- vector fields


def test_forward_matches_autograd(system: HamiltonianSystem) -> None:
    y = system.sample(64, generator=gen(1), dtype=F64).requires_grad_(True)
    (grad,) = torch.autograd.grad(system.energy(y).sum(), y)
    with torch.no_grad():
        torch.testing.assert_close(system.grad_hamiltonian(y), grad, rtol=1e-12, atol=1e-12)
        f = system(torch.tensor(0.0, dtype=F64), y)
    torch.testing.assert_close(f, apply_J(grad), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch", [(), (5,), (3, 4)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
def test_forward_batch_shapes(
    system: HamiltonianSystem, batch: tuple[int, ...], dtype: torch.dtype
) -> None:
    flat = system.sample(math.prod(batch), generator=gen(2), dtype=dtype)
    y = flat.reshape(*batch, system.dim)
    t = torch.tensor(0.3, dtype=dtype)  # 0-d, as odeint passes it
    f = system(t, y)
    assert f.shape == y.shape and f.dtype == dtype and f.device == y.device
    assert system.energy(y).shape == batch
    # Batching must not mix points: compare with one point at a time.
    rows = torch.stack([system(t, row) for row in flat])
    torch.testing.assert_close(f.reshape(-1, system.dim), rows, rtol=0, atol=0)


def test_forward_rejects_wrong_last_dim(system: HamiltonianSystem) -> None:
    bad = torch.zeros(3, system.dim + 2)
    t = torch.tensor(0.0)
    with pytest.raises(ValueError, match=f"y must have last dimension {system.dim}"):
        system(t, bad)
    with pytest.raises(ValueError, match="y must have last dimension"):
        system(t, torch.tensor(1.0))
    with pytest.raises(ValueError, match="y must have last dimension"):
        system.energy(bad)
    with pytest.raises(ValueError, match="y must have last dimension"):
        system.grad_hamiltonian(bad)


def test_closed_form_values() -> None:
    y = torch.tensor([0.5, -0.25, 0.75, 1.0], dtype=F64)
    x, yy, px, py = y.tolist()
    hh = HenonHeiles().energy(y).item()
    assert hh == pytest.approx(0.5 * (px**2 + py**2 + x**2 + yy**2) + x**2 * yy - yy**3 / 3)
    kep = Kepler().energy(y).item()
    assert kep == pytest.approx(0.5 * (px**2 + py**2) - 1 / math.hypot(x, yy))
    assert Kepler().angular_momentum(y).item() == pytest.approx(x * py - yy * px)
    pend = Pendulum(g_over_l=2.0).energy(torch.tensor([1.0, 0.5], dtype=F64)).item()
    assert pend == pytest.approx(0.125 + 2.0 * (1 - math.cos(1.0)))


def test_constructor_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="omega"):
        HarmonicOscillator(omega=0.0)
    with pytest.raises(ValueError, match="g_over_l"):
        Pendulum(g_over_l=-1.0)
    with pytest.raises(ValueError, match="max_energy"):
        HenonHeiles(max_energy=0.2)
    with pytest.raises(ValueError, match="max_energy"):
        HenonHeiles(max_energy=0.0)
    with pytest.raises(TypeError):
        HamiltonianSystem(dim=2)  # abstract


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
def test_sample_shape_dtype_reproducible(system: HamiltonianSystem, dtype: torch.dtype) -> None:
    y = system.sample(50, generator=gen(3), dtype=dtype)
    assert y.shape == (50, system.dim) and y.dtype == dtype and y.device.type == "cpu"
    torch.testing.assert_close(y, system.sample(50, generator=gen(3), dtype=dtype))
    # Drawn in float64 then cast: the dtype does not change the points.
    torch.testing.assert_close(y, system.sample(50, generator=gen(3), dtype=F64).to(dtype))
    assert not torch.equal(y, system.sample(50, generator=gen(4), dtype=dtype))
    torch.manual_seed(0)
    assert system.sample(1).shape == (1, system.dim)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_sample_rejects_bad_n(system: HamiltonianSystem, n: object) -> None:
    with pytest.raises(ValueError, match="n must be a positive integer"):
        system.sample(n)


def test_sample_rejects_integer_dtype() -> None:
    with pytest.raises(ValueError, match="dtype must be a floating-point"):
        Kepler().sample(3, dtype=torch.int64)


def test_sample_harmonic_oscillator_domain() -> None:
    y = HarmonicOscillator().sample(2000, generator=gen(5), dtype=F64)
    assert y.abs().max() <= 1.0
    assert y.min() < -0.99 and y.max() > 0.99  # fills the square


@pytest.mark.parametrize("max_energy", [1.0 / 6.0, 0.05])
def test_sample_henon_heiles_domain(max_energy: float) -> None:
    system = HenonHeiles(max_energy=max_energy)
    y = system.sample(2000, generator=gen(6), dtype=F64)
    assert y.abs().max() <= 1.0
    assert system.energy(y).max() < max_energy
    x, yy = y[:, 0], y[:, 1]
    # Open triangle with vertices (0, 1) and (+-sqrt(3)/2, -1/2).
    assert bool((yy > -0.5).all())
    assert bool((yy < 1 - math.sqrt(3) * x.abs()).all())
    assert bool(system.in_potential_well(y).all())


def test_henon_heiles_energy_alone_does_not_bound_orbits() -> None:
    # Outside the triangle, in an escape channel, yet with energy below 1/6.
    y = torch.tensor([0.9, -0.55, 0.0, 0.0], dtype=F64)
    assert HenonHeiles().energy(y) < 1 / 6
    assert not HenonHeiles.in_potential_well(y)


@pytest.mark.parametrize("g_over_l", [1.0, 0.3])
def test_sample_pendulum_domain(g_over_l: float) -> None:
    system = Pendulum(g_over_l=g_over_l)
    y = system.sample(2000, generator=gen(7), dtype=F64)
    assert y[:, 0].abs().max() <= math.pi / 2 and y[:, 1].abs().max() <= 1.0
    assert system.energy(y).max() < 2 * g_over_l  # below the separatrix: librating
    assert system.separatrix_energy == 2 * g_over_l


def test_sample_kepler_domain() -> None:
    system = Kepler()
    y = system.sample(2000, generator=gen(8), dtype=F64)
    energy = system.energy(y)
    L = system.angular_momentum(y)
    a = -1 / (2 * energy)
    ecc = torch.sqrt((1 + 2 * energy * L**2).clamp(min=0))
    assert energy.min() >= -1 / 1.6 - 1e-12 and energy.max() <= -1 / 2.4 + 1e-12
    assert a.min() >= 0.8 - 1e-12 and a.max() <= 1.2 + 1e-12
    assert ecc.max() <= 0.5 + 1e-9
    assert bool((L > 0).all())
    assert y[:, :2].norm(dim=-1).min() >= 0.4 - 1e-12
    # The elements fill their ranges (catches a sampler stuck on one value).
    assert a.min() < 0.82 and a.max() > 1.18 and ecc.min() < 0.05 and ecc.max() > 0.45


# --------------------------------------------------------------------------- trajectories


def test_reference_trajectory_conserves_energy(system: HamiltonianSystem) -> None:
    y0 = system.sample(6, generator=gen(9), dtype=F64)
    t = torch.linspace(0, 10, 21, dtype=F64)
    ys = system.reference_trajectory(y0, t)
    assert ys.shape == (21, 6, system.dim) and ys.dtype == F64
    torch.testing.assert_close(ys[0], y0, rtol=0, atol=0)
    e0 = system.energy(y0)
    rel = ((system.energy(ys) - e0).abs() / e0.abs()).max()
    assert rel < 1e-8
    if isinstance(system, Kepler):
        L0 = system.angular_momentum(y0)
        assert ((system.angular_momentum(ys) - L0).abs() / L0).max() < 1e-8


@pytest.mark.parametrize("batch", [(), (2, 3)], ids=str)
def test_reference_trajectory_shapes_and_dtype(
    system: HamiltonianSystem, batch: tuple[int, ...]
) -> None:
    y0 = system.sample(math.prod(batch), generator=gen(10)).reshape(*batch, system.dim)
    t = torch.linspace(0, 1, 4)
    ys = system.reference_trajectory(y0.requires_grad_(True), t)
    assert ys.shape == (4, *batch, system.dim)
    assert ys.dtype == torch.float32 and not ys.requires_grad


@pytest.mark.parametrize("t_end", [10.0, -5.0], ids=["forward", "backward"])
def test_harmonic_oscillator_exact_rotation(t_end: float) -> None:
    omega = 1.7
    system = HarmonicOscillator(omega=omega)
    y0 = system.sample(16, generator=gen(11), dtype=F64)
    t = torch.linspace(0, t_end, 11, dtype=F64)
    ys = system.reference_trajectory(y0, t)
    c, s = torch.cos(omega * t)[:, None], torch.sin(omega * t)[:, None]
    q0, p0 = y0[:, 0], y0[:, 1]
    exact = torch.stack([q0 * c + p0 / omega * s, -omega * q0 * s + p0 * c], dim=-1)
    torch.testing.assert_close(ys, exact, rtol=0, atol=1e-8)


def test_odeint_accepts_system_as_func(system: HamiltonianSystem) -> None:
    y0 = system.sample(4, generator=gen(12), dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    ys = odeint(system, y0, t, rtol=1e-9, atol=1e-9)
    assert ys.shape == (5, 4, system.dim)
    torch.testing.assert_close(ys, system.reference_trajectory(y0, t), rtol=0, atol=1e-6)
    ys32 = odeint(system, y0.float(), t.float(), method="rk4", options={"step_size": 0.05})
    assert ys32.dtype == torch.float32
    torch.testing.assert_close(ys32, ys.float(), rtol=0, atol=1e-3)


def test_reference_trajectory_rejects_bad_y0(system: HamiltonianSystem) -> None:
    t = torch.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="y0 must have an even last dimension"):
        system.reference_trajectory(torch.zeros(system.dim + 1), t)
    with pytest.raises(ValueError, match=f"y0 must have last dimension {system.dim}"):
        system.reference_trajectory(torch.zeros(2, system.dim + 2), t)
    nan = torch.zeros(system.dim)
    nan[0] = float("nan")
    with pytest.raises(ValueError, match="y0 contains NaN"):
        system.reference_trajectory(nan, t)


@pytest.mark.parametrize(
    ("t", "match"),
    [
        (torch.tensor([0.0, 1.0, 0.5]), "t must be strictly increasing or strictly decreasing"),
        (torch.tensor([0.0, 1.0, 1.0]), "t must be strictly"),
        (torch.zeros(2, 3), "t must be a non-empty 1-D tensor"),
        (torch.tensor(1.0), "t must be a non-empty 1-D tensor"),
        (torch.tensor([0.0, float("nan")]), "t contains NaN"),
        ([0.0, 1.0], "t must be a torch.Tensor"),
    ],
)
def test_reference_trajectory_rejects_bad_t(t: object, match: str) -> None:
    system = Pendulum()
    with pytest.raises(ValueError, match=match):
        system.reference_trajectory(torch.zeros(2), t)


def test_reference_trajectory_rejects_bad_tolerances() -> None:
    system = HarmonicOscillator()
    t = torch.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="rtol"):
        system.reference_trajectory(torch.zeros(2), t, rtol=0.0)
    with pytest.raises(ValueError, match="atol"):
        system.reference_trajectory(torch.zeros(2), t, atol=-1.0)


def test_angular_momentum_rejects_wrong_dim() -> None:
    with pytest.raises(ValueError, match="y must have last dimension 4"):
        Kepler().angular_momentum(torch.zeros(3, 2))


def test_runs_on_device(system: HamiltonianSystem, device: torch.device) -> None:
    y0 = system.sample(3, generator=gen(13), dtype=F64, device=device)
    assert y0.device.type == device.type
    f = system(torch.tensor(0.0, device=device), y0)
    assert f.device == y0.device and system.energy(y0).device == y0.device
    # A generator on the device draws there; t may live on another device than y0.
    y_dev = system.sample(3, generator=torch.Generator(device=device).manual_seed(0), dtype=F64)
    assert y_dev.device.type == device.type
    t = torch.linspace(0, 1, 3, dtype=F64)
    ys = system.reference_trajectory(y0, t)
    assert ys.device == y0.device
    torch.testing.assert_close(
        ys.cpu(), system.reference_trajectory(y0.cpu(), t), rtol=0, atol=1e-8
    )
