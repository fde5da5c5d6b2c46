"""Vector-field families: the structure each one claims."""

import pytest
import torch

from deepinv_dynnets.dynamics import (
    ACTIVATIONS,
    GradientField,
    MLPField,
    ShearField,
    SpherePreservingField,
    activation_from_name,
    get_activation,
)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("kernel_size", [None, 3])
def test_gradient_field_is_gradient_of_its_potential(activation, kernel_size):
    field = GradientField(4, width=6, activation=activation, kernel_size=kernel_size).double()
    with torch.no_grad():
        field.c.normal_()
    shape = (5, 4) if kernel_size is None else (2, 4, 7, 5)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(field.potential(x).sum(), x)
    torch.testing.assert_close(field(x), grad, rtol=1e-12, atol=1e-12)


def test_conv_gradient_field_uses_the_adjoint_convolution():
    # <A x, z> = <x, A^T z> for the convolution and its transposed convolution.
    field = GradientField(3, width=5, kernel_size=3).double()
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    z = torch.randn(2, 5, 9, 8, dtype=torch.float64)
    Ax = torch.nn.functional.conv2d(x, field.A.weight, padding=1)
    lhs = (Ax * z).sum()
    rhs = (x * field._adjoint(z)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_sphere_preserving_field_is_tangent_to_spheres():
    field = SpherePreservingField(5, width=7).double()
    x = 3 * torch.randn(100, 5, dtype=torch.float64)
    torch.testing.assert_close(
        (field(x) * x).sum(-1), torch.zeros(100, dtype=torch.float64), atol=1e-11, rtol=0
    )
    assert field(torch.zeros(1, 5, dtype=torch.float64)).abs().max() == 0


@pytest.mark.parametrize("kernel_size", [None, 3])
def test_shear_field_moves_one_half_from_the_other(kernel_size):
    first = ShearField(6, "first", kernel_size=kernel_size).double()
    second = ShearField(6, "second", width=4, kernel_size=kernel_size).double()
    shape = (3, 6) if kernel_size is None else (2, 6, 5, 7)
    dim = -1 if kernel_size is None else -3
    x = torch.randn(shape, dtype=torch.float64)
    v1, v2 = first(x).chunk(2, dim), second(x).chunk(2, dim)
    assert (v1[1] == 0).all() and (v2[0] == 0).all()
    # the moving half does not depend on itself
    y = x.clone()
    y.narrow(dim, 0, 3).add_(1.0)
    torch.testing.assert_close(first(y), first(x))


def test_fields_keep_shape_for_any_batch_shape():
    for field in (MLPField(4), GradientField(4), SpherePreservingField(4), ShearField(4)):
        for shape in [(4,), (3, 4), (2, 3, 4)]:
            assert field(torch.randn(shape)).shape == shape


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="features must be even"):
        ShearField(5)
    with pytest.raises(ValueError, match="features"):
        MLPField(0)
    with pytest.raises(ValueError, match="kernel_size"):
        MLPField(4, kernel_size=2)
    with pytest.raises(ValueError, match="activation"):
        activation_from_name("swish")
    with pytest.raises(ValueError, match="activation"):
        GradientField(4, activation="gelu")
    with pytest.raises(ValueError, match="part"):
        ShearField(4, part="third")


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_table_entries_agree_with_autograd(name):
    act = get_activation(name)
    z = torch.linspace(-3, 3, 61, dtype=torch.float64).requires_grad_()
    z = z[z.detach() != 0].detach().requires_grad_()  # ReLU-type kinks at 0
    (d1,) = torch.autograd.grad(act.fn(z).sum(), z, create_graph=True)
    if act.derivative is not None:
        torch.testing.assert_close(act.derivative(z), d1)
    if act.second_derivative is not None:
        (d2,) = torch.autograd.grad(d1.sum(), z, retain_graph=True)
        torch.testing.assert_close(act.second_derivative(z), d2)
    if act.antiderivative is not None:
        (g,) = torch.autograd.grad(act.antiderivative(z).sum(), z)
        torch.testing.assert_close(g, act.fn(z))
    if act.inplace is not None:
        fresh = z.detach().clone()
        torch.testing.assert_close(act.inplace(fresh), act.fn(z.detach()))
    if act.with_derivative is not None:  # the fused forms of the SympFlow potentials
        value, slope = act.with_derivative(z.detach())
        torch.testing.assert_close(value, act.fn(z.detach()))
        torch.testing.assert_close(slope, d1.detach())
        (d2,) = torch.autograd.grad(d1.sum(), z)
        torch.testing.assert_close(act.second_from_first(value, slope), d2)
    if act.unit_slope:  # monotone, slopes in [0, 1]: what an averaged step needs
        assert bool((d1 >= 0).all()) and bool((d1 <= 1).all())
    with pytest.raises(ValueError, match="activation must be one of"):
        get_activation(name + "_x")
