"""Numerical steps: definitions, norm preservation, step-size checks."""

import pytest
import torch

from deepinv_dynnets.dynamics import (
    EulerStep,
    MLPField,
    ShearField,
    SpherePreservingField,
    SphereStep,
    SplittingStep,
)


def test_euler_step_is_x_plus_h_f():
    field = MLPField(3).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(EulerStep(field, h=0.3).double()(x), x + 0.3 * field(x))


def test_splitting_step_applies_sub_fields_in_order_on_the_updated_state():
    f1, f2 = ShearField(4, "first").double(), ShearField(4, "second").double()
    x = torch.randn(3, 4, dtype=torch.float64)
    y = x + 0.7 * f1(x)
    y = y + 0.7 * f2(y)
    torch.testing.assert_close(SplittingStep([f1, f2], h=0.7).double()(x), y)


@pytest.mark.parametrize("h", [0.01, 0.5, 3.0])
def test_sphere_step_keeps_the_norm(h):
    step = SphereStep(SpherePreservingField(4, width=8), h=h).double()
    for p in step.parameters():
        torch.nn.init.normal_(p, std=2.0)
    x = 5 * torch.randn(200, 4, dtype=torch.float64)
    y = x
    for _ in range(20):
        y = step(y)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-12, atol=0)
    assert (y - x).abs().max() > 1e-3  # it does move the points


def test_sphere_step_is_first_order_consistent_with_euler():
    field = SpherePreservingField(3).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    errors = []
    for h in (1e-2, 1e-3):
        errors.append((SphereStep(field, h=h).double()(x) - (x + h * field(x))).abs().max())
    # the gap to Euler is O(h^2): dividing h by 10 divides it by about 100
    assert errors[1] < errors[0] / 50


def test_sphere_step_at_the_origin_is_zero_with_finite_gradient():
    step = SphereStep(SpherePreservingField(3), h=0.5).double()
    x = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    y = step(x)
    assert (y == 0).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("h", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_step_size_is_rejected(h):
    with pytest.raises(ValueError, match="h must be"):
        EulerStep(MLPField(2), h=h)


def test_step_fields_must_agree():
    with pytest.raises(ValueError, match="same features"):
        SplittingStep([ShearField(4), ShearField(6)])
    with pytest.raises(ValueError, match="at least one"):
        SplittingStep([])


def test_sphere_step_keeps_the_norm_where_its_square_overflows():
    torch.manual_seed(0)
    step = SphereStep(SpherePreservingField(3), h=0.3)
    x = torch.tensor([[1e10, -2e10, 3e9]])  # |X(x)| ~ |x|^2 ~ 1e20: |X|^2 overflows float32
    out = step(x)
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=0)
