"""SympFlow and PINNFlow weights in the package's one format (plain state dict + model card)."""

import json

import pytest
import torch

from deepinv_dynnets import SympFlow
from deepinv_dynnets.flows import PINNFlow
from deepinv_dynnets.pretrained import WEIGHTS_DIR, read_card


@pytest.mark.parametrize("name", ["harmonic-oscillator", "henon-heiles"])
def test_shipped_flows_are_in_the_current_format(name):
    path = WEIGHTS_DIR / f"sympflow_{name.replace('-', '_')}.pt"
    card = read_card(path)
    assert card["kind"] == "sympflow" and card["format_version"] == 1
    assert isinstance(torch.load(path, weights_only=True), dict)  # a plain state dict
    flow = SympFlow.from_pretrained(name)
    assert flow.config == card["config"]
    assert flow.metadata["system"] == name and "format" not in flow.metadata
    assert "evaluation" in flow.metadata and "settings" in flow.metadata


def test_sympflow_round_trip_keeps_outputs_and_metadata(tmp_path):
    flow = SympFlow(4, n_layers=2, width=6, dt=0.5)
    flow.save(tmp_path / "f.pt", note="test", evaluation={"times": [1.0]})
    assert read_card(tmp_path / "f.pt")["kind"] == "sympflow"
    loaded = SympFlow.from_pretrained(tmp_path / "f.pt")
    x = torch.rand(3, 4)
    assert torch.equal(loaded.network(0.4, x), flow.network(0.4, x))
    assert loaded.dt == 0.5 and not loaded.training
    assert loaded.metadata == {"note": "test", "evaluation": {"times": [1.0]}}


def test_files_of_version_0_1_still_load(tmp_path):
    flow = SympFlow(2, n_layers=1, width=4)
    legacy = {
        "format": "deepinv_dynnets.SympFlow",
        "config": flow.config,
        "state_dict": flow.state_dict(),
        "metadata": {"note": "old"},
    }
    torch.save(legacy, tmp_path / "old.pt")
    loaded = SympFlow.from_pretrained(tmp_path / "old.pt")
    x = torch.rand(5, 2)
    assert torch.equal(loaded.network(0.7, x), flow.network(0.7, x))
    assert loaded.metadata == {"note": "old"}


def test_pinn_round_trip(tmp_path):
    pinn = PINNFlow(dim=2, width=8, depth=2, dt=0.5)
    pinn.save(tmp_path / "p.pt", note="pinn")
    loaded = PINNFlow.from_pretrained(tmp_path / "p.pt")
    x = torch.rand(4, 2)
    assert torch.equal(loaded.network(0.3, x), pinn.network(0.3, x))
    with pytest.raises(ValueError, match="kind 'pinn', not 'sympflow'"):
        SympFlow.from_pretrained(tmp_path / "p.pt")


def test_bad_files_and_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        SympFlow.from_pretrained("no-such-flow")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not weights at all")
    with pytest.raises(
        ValueError, match="not a SympFlow weights file: .*bad.pt is not a readable weights file"
    ):
        SympFlow.from_pretrained(bad)
    with pytest.raises(ValueError, match="must end in .pt"):
        SympFlow(2, n_layers=1, width=4).save(tmp_path / "f.pth")
    flow = SympFlow(4, n_layers=2, width=6)
    flow.save(tmp_path / "f.pt")
    card_path = tmp_path / "f.json"
    card = json.loads(card_path.read_text())
    card["config"]["width"] = 8  # the card no longer matches the weights
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="different architecture"):
        SympFlow.from_pretrained(tmp_path / "f.pt")
    (tmp_path / "f.pt").write_bytes((tmp_path / "f.pt").read_bytes()[:-10])  # truncated
    with pytest.raises(ValueError, match="checksum"):
        SympFlow.from_pretrained(tmp_path / "f.pt")
