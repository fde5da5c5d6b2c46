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


def test_volume_preserving_net_is_invertible_layerwise_shape():
    net = VolumePreservingNet(6, depth=2)
    assert net(torch.randn(7, 5, 6)).shape == (7, 5, 6)
    assert VolumePreservingNet(2, kernel_size=3)(torch.randn(1, 2, 37, 31)).shape == (1, 2, 37, 31)


def test_bad_arguments():
    with pytest.raises(ValueError, match="features must be even"):
        VolumePreservingNet(3)
    with pytest.raises(ValueError, match="h must be"):
        VolumePreservingNet(4, h=0)
    with pytest.raises(ValueError, match="depth"):
        VolumePreservingNet(4, depth=0)
    with pytest.raises(ValueError, match="x must have 4 entries along its dimension -3"):
        VolumePreservingNet(4, kernel_size=3)(torch.randn(1, 3, 5, 5))
