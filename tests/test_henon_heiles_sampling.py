"""HenonHeiles's training sampler that draws part of the points uniformly in position."""

from __future__ import annotations

import pytest
import torch

from deepinv_dynnets.systems import HenonHeiles

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_position_fraction_zero_draws_the_uniform_points() -> None:
    a = HenonHeiles().sample(300, generator=gen(0), dtype=F64)
    b = HenonHeiles(position_fraction=0.0).sample(300, generator=gen(0), dtype=F64)
    assert torch.equal(a, b)


@pytest.mark.parametrize("max_energy", [1.0 / 6.0, 0.05])
@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_position_sampling_stays_in_the_domain(max_energy: float, fraction: float) -> None:
    system = HenonHeiles(max_energy=max_energy, position_fraction=fraction)
    y = system.sample(2000, generator=gen(1), dtype=F64)
    assert y.shape == (2000, 4)
    assert y.abs().max() <= 1.0
    assert system.energy(y).max() < max_energy
    assert bool(system.in_potential_well(y).all())


def test_position_sampling_is_uniform_in_position_and_on_the_momentum_disc() -> None:
    system = HenonHeiles(position_fraction=1.0)
    y = system.sample(40_000, generator=gen(2), dtype=F64)
    # Area fraction of {V > 0.15} in the well, from independent uniform positions.
    q = 2.0 * torch.rand(400_000, 2, generator=gen(3), dtype=F64) - 1.0
    q = q[(HenonHeiles.potential(q) < 1 / 6) & HenonHeiles.in_potential_well(q)]
    area = float((HenonHeiles.potential(q) > 0.15).double().mean())
    drawn = float((HenonHeiles.potential(y) > 0.15).double().mean())
    assert drawn == pytest.approx(area, abs=0.01)
    # Far above what uniform sampling of the phase space puts there (about 0.015).
    uniform = HenonHeiles().sample(40_000, generator=gen(4), dtype=F64)
    assert drawn > 5 * float((HenonHeiles.potential(uniform) > 0.15).double().mean())
    # Uniform on the disc |p|^2 < 2 (E_max - V): the squared radius fraction is U[0, 1].
    s = (y[:, 2:] ** 2).sum(-1) / (2 * (1 / 6 - HenonHeiles.potential(y)))
    assert float(s.mean()) == pytest.approx(0.5, abs=0.01)
    angle = torch.atan2(y[:, 3], y[:, 2])
    assert float((angle > 0).double().mean()) == pytest.approx(0.5, abs=0.01)


def test_position_fraction_splits_the_points() -> None:
    y = HenonHeiles(position_fraction=0.25).sample(400, generator=gen(5), dtype=F64)
    uniform = HenonHeiles().sample(300, generator=gen(5), dtype=F64)
    assert torch.equal(y[:300], uniform)  # the uniform part comes first, then 100 by position


def test_potential_is_the_energy_at_rest() -> None:
    y = HenonHeiles().sample(50, generator=gen(6), dtype=F64)
    y[:, 2:] = 0.0
    assert torch.allclose(HenonHeiles.potential(y), HenonHeiles().energy(y))
    assert torch.equal(HenonHeiles.potential(y), HenonHeiles.potential(y[:, :2]))


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_position_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(ValueError, match="position_fraction"):
        HenonHeiles(position_fraction=fraction)
