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
