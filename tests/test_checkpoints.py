"""Saving and loading SympFlow checkpoints, shipped and user-made."""

import json

import pytest
import torch

from deepinv_dynnets import SympFlow


@pytest.mark.parametrize("name,dim", [("harmonic-oscillator", 2), ("henon-heiles", 4)])
def test_shipped_flows_load_offline_and_are_symplectic(name, dim, jacobian):
    flow = SympFlow.from_pretrained(name).double()
    assert flow.dim == dim
    J = torch.zeros(dim, dim, dtype=torch.float64)
    n = dim // 2
    J[:n, n:], J[n:, :n] = torch.eye(n), -torch.eye(n)
    D = jacobian(lambda z: flow.map(3.3, z), 0.3 * torch.randn(dim, dtype=torch.float64))
    torch.testing.assert_close(D.T @ J @ D, J, atol=1e-10, rtol=0)


def test_round_trip(tmp_path):
    flow = SympFlow(4, n_layers=2, width=6)
    flow.save(tmp_path / "f.pt", note="test")
    loaded = SympFlow.from_pretrained(tmp_path / "f.pt")
    x = torch.rand(3, 4)
    torch.testing.assert_close(loaded.network(0.4, x), flow.network(0.4, x))
    assert loaded.metadata == {"note": "test"}


def test_corrupt_and_foreign_files_are_rejected(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable weights file"):
        SympFlow.from_pretrained(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a SympFlow weights file.*no model card"):
        SympFlow.from_pretrained(foreign)
    with pytest.raises(ValueError, match="name must be one of"):
        SympFlow.from_pretrained("no-such-flow")


def test_checkpoint_from_a_different_architecture_is_rejected(tmp_path):
    flow = SympFlow(4, n_layers=2, width=6)
    flow.save(tmp_path / "f.pt")
    card = json.loads((tmp_path / "f.json").read_text())
    card["config"]["width"] = 8  # the card's config no longer matches the weights
    (tmp_path / "f.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="different architecture"):
        SympFlow.from_pretrained(tmp_path / "f.pt")
