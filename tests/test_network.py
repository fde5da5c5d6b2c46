"""Composition utilities and the generic flow network."""

import pytest
import torch

from deepinv_dynnets import FlowNetwork, compose
from deepinv_dynnets.dynamics import EulerStep, MLPField, Truncation, ZeroPadLift


def test_compose_is_mathematical_order():
    f = torch.nn.Linear(2, 2).double()
    g = torch.nn.Linear(2, 2).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(compose(f, g)(x), f(g(x)))
    assert not torch.allclose(compose(f, g)(x), g(f(x)))


def test_flow_network_applies_steps_in_list_order_between_lift_and_projection():
    steps = [EulerStep(MLPField(5), h=0.2).double() for _ in range(3)]
    lift, proj = ZeroPadLift(3, 5), Truncation(3)
    net = FlowNetwork(steps, lift=lift, project=proj)
    x = torch.randn(4, 3, dtype=torch.float64)
    y = lift(x)
    for s in steps:
        y = s(y)
    torch.testing.assert_close(net(x), proj(y))
    # a different order gives a different map: the order is really the list order
    reversed_net = FlowNetwork(steps[::-1], lift=lift, project=proj)
    assert not torch.allclose(net(x), reversed_net(x))


def test_lift_and_projection_are_adjoint():
    lift, proj = ZeroPadLift(3, 7), Truncation(3)
    x, z = torch.randn(2, 3), torch.randn(2, 7)
    torch.testing.assert_close((lift(x) * z).sum(), (x * proj(z)).sum())
    torch.testing.assert_close(proj(lift(x)), x)


def test_feature_map_lift_pads_channels():
    lift = ZeroPadLift(1, 4, dim=-3)
    x = torch.randn(2, 1, 5, 3)
    y = lift(x)
    assert y.shape == (2, 4, 5, 3) and (y[:, 1:] == 0).all()


def test_network_rejects_bad_input():
    net = FlowNetwork([EulerStep(MLPField(4))])
    with pytest.raises(ValueError, match="x must have 4 entries along its last dimension"):
        net(torch.randn(3, 5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        net(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        net(torch.tensor([[0.0, float("inf"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="floating-point"):
        net(torch.ones(2, 4, dtype=torch.long))


def test_network_does_not_modify_its_input():
    net = FlowNetwork([EulerStep(MLPField(4))], lift=None)
    x = torch.randn(3, 4)
    x0 = x.clone()
    net(x)
    assert torch.equal(x, x0)


def test_bad_lift_and_projection_sizes():
    with pytest.raises(ValueError, match="out_features"):
        ZeroPadLift(4, 2)
    with pytest.raises(ValueError, match="out_features"):
        Truncation(0)
    with pytest.raises(ValueError, match="steps"):
        FlowNetwork([])
