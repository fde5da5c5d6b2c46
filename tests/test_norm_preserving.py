"""Norm preservation: the restricted architecture and the regulariser."""

import pytest
import torch

from deepinv_dynnets import NormPreservingNet, norm_preservation_loss
from deepinv_dynnets.dynamics import EulerStep, FlowNetwork, MLPField


def _base():
    return FlowNetwork([EulerStep(MLPField(5, width=10), h=0.5) for _ in range(3)]).double()


def test_restricted_net_preserves_norms_exactly():
    net = NormPreservingNet(_base())
    x = 10 * torch.randn(500, 5, dtype=torch.float64)
    torch.testing.assert_close(net(x).norm(dim=-1), x.norm(dim=-1), rtol=1e-14, atol=0)
    assert not torch.allclose(net(x), x)


def test_restricted_net_on_feature_maps():
    net = NormPreservingNet(torch.nn.Conv2d(2, 2, 3, padding=1).double(), dim=(-3, -2, -1))
    x = torch.randn(3, 2, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(
        net(x).flatten(1).norm(dim=-1), x.flatten(1).norm(dim=-1), rtol=1e-14, atol=0
    )


def test_well_defined_at_zero_input_and_zero_output():
    class Zero(torch.nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    y = NormPreservingNet(Zero())(x)
    torch.testing.assert_close(y, x.detach())  # fallback: identity where the base vanishes
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    z = NormPreservingNet(torch.nn.Linear(2, 2).double())(torch.zeros(1, 2, dtype=torch.float64))
    assert (z == 0).all()


def test_regulariser_value_and_zero_for_norm_preserving_maps():
    x = torch.randn(20, 5, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    assert norm_preservation_loss(x, x @ q.T) < 1e-28
    expected = ((x.norm(dim=-1) - (3 * x).norm(dim=-1)) ** 2).mean()
    torch.testing.assert_close(norm_preservation_loss(x, 3 * x), expected)


def test_regulariser_drives_a_network_towards_norm_preservation():
    net = _base()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(256, 5, dtype=torch.float64)
    before = norm_preservation_loss(x, net(x)).item()
    for _ in range(150):
        opt.zero_grad()
        loss = norm_preservation_loss(x, net(x))
        loss.backward()
        opt.step()
    assert loss.item() < before / 10


def test_bad_input():
    net = NormPreservingNet(torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="base must return"):
        net(torch.randn(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        NormPreservingNet(torch.nn.Identity())(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="same shape"):
        norm_preservation_loss(torch.randn(2, 3), torch.randn(2, 4))
