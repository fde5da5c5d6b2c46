"""det of the Jacobian of the volume-preserving network is exactly one."""

import pytest
import torch

from deepinv_dynnets import FlowNetwork, VolumePreservingNet
from deepinv_dynnets.dynamics import EulerStep, MLPField


@pytest.mark.parametrize("depth", [1, 3, 8])
@pytest.mark.parametrize("features", [2, 6])
def test_det_jacobian_is_one_for_vectors(depth, features, jacobian):
    net = VolumePreservingNet(features, depth=depth, h=0.9, width=12).double()
    for p in net.parameters():  # large weights: far from the identity
        torch.nn.init.normal_(p, std=1.5)
    for _ in range(5):
        x = 2 * torch.randn(features, dtype=torch.float64)
        det = torch.linalg.det(jacobian(net, x))
        assert abs(det.item() - 1) < 1e-10


@pytest.mark.parametrize("depth", [1, 4])
def test_det_jacobian_is_one_for_feature_maps(depth, jacobian):
    net = VolumePreservingNet(4, depth=depth, h=0.8, kernel_size=3).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.7)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    det = torch.linalg.det(jacobian(net, x))
    assert abs(det.item() - 1) < 1e-10


def test_unconstrained_resnet_does_not_preserve_volume(jacobian):
    # the same check fails for an ordinary ResNet: it is a real test of the structure
    net = FlowNetwork([EulerStep(MLPField(4, width=12), h=0.9) for _ in range(3)]).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=1.5)
    det = torch.linalg.det(jacobian(net, torch.randn(4, dtype=torch.float64)))
    assert abs(det.item() - 1) > 1e-3


@pytest.mark.parametrize(
    ("features", "kernel_size", "shape"), [(6, None, (7, 5, 6)), (2, 3, (1, 2, 37, 31))]
)
def test_volume_preserving_net_is_inverted_by_its_shears_run_backwards(
    features, kernel_size, shape
):
    # Each sub-step moves one half by a function of the other half only, so
    # x -> x - h F(x) undoes x -> x + h F(x) exactly: the network is invertible.
    torch.manual_seed(0)
    net = VolumePreservingNet(features, depth=3, kernel_size=kernel_size).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=1.0)
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
        assert y.shape == x.shape and not torch.allclose(y, x)
        z = y
        for step in reversed(net.steps):
            for field in reversed(step.fields):
                z = z - step.h * field(z)
    torch.testing.assert_close(z, x, rtol=0, atol=1e-10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="features must be even"):
        VolumePreservingNet(3)
    with pytest.raises(ValueError, match="h must be"):
        VolumePreservingNet(4, h=0)
    with pytest.raises(ValueError, match="depth"):
        VolumePreservingNet(4, depth=0)
    with pytest.raises(ValueError, match="x must have 4 entries along its dimension -3"):
        VolumePreservingNet(4, kernel_size=3)(torch.randn(1, 3, 5, 5))
