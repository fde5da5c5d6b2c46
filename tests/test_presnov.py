"""The Presnov network: its sphere steps keep norms, and it fits unstructured maps."""

import pytest
import torch

from deepinv_dynnets import PresnovNet
from deepinv_dynnets.dynamics import SphereStep


def test_sphere_steps_inside_the_network_keep_norms():
    net = PresnovNet(3, depth=4, width=8).double()
    x = torch.randn(50, 3, dtype=torch.float64)
    for step in net.steps:
        y = step(x)
        if isinstance(step, SphereStep):
            torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-13, atol=0)
        x = y


def test_fits_a_map_that_is_neither_norm_nor_volume_preserving():
    torch.manual_seed(1)

    def target(x):
        return torch.stack([x[:, 0] ** 2 - 0.5 * x[:, 1], torch.sin(2 * x[:, 0]) + x[:, 1]], 1)

    net = PresnovNet(2, depth=4, width=16, h=0.5)
    x = 2 * torch.rand(512, 2) - 1
    y = target(x)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    initial = torch.mean((net(x) - y) ** 2).item()
    for _ in range(400):
        opt.zero_grad()
        loss = torch.mean((net(x) - y) ** 2)
        loss.backward()
        opt.step()
    x_test = 2 * torch.rand(512, 2) - 1
    test_loss = torch.mean((net(x_test) - target(x_test)) ** 2).item()
    assert test_loss < initial / 20 and test_loss < 1e-2


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        PresnovNet(2, depth=0)
    with pytest.raises(ValueError, match="h must be"):
        PresnovNet(2, h=-0.1)


@pytest.mark.parametrize("scale", [1e5, 1e10])
def test_huge_inputs_give_finite_outputs_of_the_same_norm_growth(scale):
    torch.manual_seed(0)
    net = PresnovNet(3, depth=2)
    x = torch.full((2, 3), scale)
    out = net(x)
    assert bool(torch.isfinite(out).all())
    # the sphere steps keep the norm, the gradient steps move it by a bounded amount
    ref = net.double()(x.double())
    torch.testing.assert_close(out.norm(dim=-1).double(), ref.norm(dim=-1), rtol=1e-4, atol=0)


def test_inputs_that_overflow_the_dtype_are_refused():
    net = PresnovNet(3, depth=1)
    with pytest.raises(ValueError, match="x is too large for torch.float32"):
        net(torch.full((1, 3), 1e30))
    assert bool(torch.isfinite(net.double()(torch.full((1, 3), 1e30, dtype=torch.float64))).all())
