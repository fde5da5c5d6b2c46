"""One weights format for every model: plain state dict + checked model card."""

import json

import deepinv as dinv
import pytest
import torch
from torch import nn

from deepinv_dynnets.models import EulerDenoiser, load_dncnn, save_dncnn
from deepinv_dynnets.pretrained import (
    KINDS,
    SHIPPED,
    WEIGHTS_DIR,
    WEIGHTS_FORMAT_VERSION,
    load_denoiser,
    load_weights,
    read_card,
    resolve_weights,
    save_weights,
)

DNCNN = {"in_channels": 1, "out_channels": 1, "depth": 3, "nf": 8}


def _shipped_files():
    for kind, names in SHIPPED.items():
        for entry in names.values():
            for name in entry.values() if isinstance(entry, dict) else [entry]:
                yield kind, WEIGHTS_DIR / name


def test_every_shipped_file_exists_and_cards_hold_no_machine_paths():
    files = list(_shipped_files())
    assert len(files) == 13
    for kind, path in files:
        assert path.is_file(), path
        card = path.with_suffix(".json").read_text()
        assert "/work/" not in card and "/home/" not in card, path
        if kind in ("euler_denoiser", "dncnn"):  # converted by scripts/convert_weights.py
            state, meta = load_weights(path, kind=kind)
            assert meta["format_version"] == WEIGHTS_FORMAT_VERSION
            assert all(
                isinstance(v, torch.Tensor) or k.endswith("_extra_state") for k, v in state.items()
            )


def test_plain_state_dict_and_card_round_trip(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "lin.pt"
    save_weights(model, path, kind="pinn", config={"width": 3}, command="x", history=[1, 2])
    # the .pt is a plain state dict that torch reads safely
    plain = torch.load(path, weights_only=True)
    assert sorted(plain) == ["bias", "weight"] and torch.equal(plain["weight"], model.weight)
    state, card = load_weights(path, kind="pinn")
    assert card["kind"] == "pinn" and card["config"] == {"width": 3} and card["history"] == [1, 2]
    assert read_card(path)["weights_file"] == "lin.pt"


def test_dncnn_file_loads_with_deepinvs_own_constructor(tmp_path):
    torch.manual_seed(0)
    model = dinv.models.DnCNN(**DNCNN, pretrained=None).eval()
    path = tmp_path / "dncnn.pt"
    save_dncnn(model, path, DNCNN, command="test")
    theirs = dinv.models.DnCNN(**DNCNN, pretrained=str(path))
    ours = load_dncnn(path)
    x = torch.rand(1, 1, 12, 10)
    with torch.no_grad():
        assert torch.equal(theirs(x, 0.1), model(x, 0.1))
        assert torch.equal(ours(x, 0.1), model(x, 0.1))
    assert ours.metadata["command"] == "test"
    shipped = WEIGHTS_DIR / "dncnn_baseline_gray.pt"
    dinv.models.DnCNN(1, 1, depth=17, pretrained=str(shipped))  # strict=True inside


def test_corrupt_truncated_replaced_and_missing_files(tmp_path):
    path = tmp_path / "d.pt"
    EulerDenoiser(width=4, hidden=4, n_blocks=2).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="checksum.*truncated, corrupt"):
        load_weights(path, kind="euler_denoiser")
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    with pytest.raises(ValueError, match="checksum"):
        EulerDenoiser.from_pretrained(path)
    path.write_bytes(data)
    load_weights(path, kind="euler_denoiser")  # intact again
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ValueError, match="no model card|not a readable"):
        load_weights(path, kind="euler_denoiser")
    with pytest.raises(ValueError, match="no weights file"):
        load_weights(tmp_path / "missing.pt", kind="dncnn")
    stray = tmp_path / "stray.pt"
    torch.save(nn.Linear(1, 1).state_dict(), stray)  # no card, no legacy tag
    with pytest.raises(ValueError, match="no model card stray.json"):
        load_weights(stray, kind="pinn")


def test_wrong_kind_newer_version_and_bad_kind(tmp_path):
    path = tmp_path / "d.pt"
    save_dncnn(dinv.models.DnCNN(**DNCNN, pretrained=None), path, DNCNN)
    with pytest.raises(ValueError, match="kind 'dncnn', not 'sympflow'"):
        load_weights(path, kind="sympflow")
    with pytest.raises(ValueError, match="kind must be one of"):
        load_weights(path, kind="resnet")
    card = json.loads(path.with_suffix(".json").read_text())
    card["format_version"] = WEIGHTS_FORMAT_VERSION + 1
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="newer deepinv-dynnets"):
        load_dncnn(path)


def test_save_refuses_bad_arguments_before_writing(tmp_path):
    model = nn.Linear(1, 1)
    with pytest.raises(ValueError, match="must end in .pt"):
        save_weights(model, tmp_path / "a.pth", kind="pinn", config=None)
    with pytest.raises(ValueError, match="reserved"):
        save_weights(model, tmp_path / "a.pt", kind="pinn", config=None, kind_note=1, format=2)
    with pytest.raises(ValueError, match="JSON-able"):
        save_weights(model, tmp_path / "a.pt", kind="pinn", config=None, loss=float("nan"))
    with pytest.raises(ValueError, match="JSON-able"):
        save_weights(model, tmp_path / "a.pt", kind="pinn", config=None, obj=object())
    with pytest.raises(ValueError, match="kind must be one of"):
        save_weights(model, tmp_path / "a.pt", kind="mlp", config=None)
    assert list(tmp_path.iterdir()) == []


def test_data_paths_are_stored_relative_to_the_data_folder(tmp_path):
    root = tmp_path / "data"
    path = tmp_path / "m.pt"
    save_weights(
        nn.Linear(1, 1),
        path,
        kind="pinn",
        config=None,
        data_root=root,
        settings={"train_folder": str(root / "train" / "gray")},
        command=f"dynnets train --data {root}/train/gray --val {root}",
    )
    card = read_card(path)
    assert card["settings"]["train_folder"] == "train/gray"
    assert card["command"] == "dynnets train --data train/gray --val ."


def test_every_kind_round_trips(tmp_path):
    for kind in KINDS:
        path = tmp_path / f"{kind}.pt"
        save_weights(nn.Linear(2, 2), path, kind=kind, config={"n": 2})
        assert load_weights(path, kind=kind)[1]["kind"] == kind


def test_sympflow_files_of_the_older_format_are_read():
    state, card = load_weights(WEIGHTS_DIR / "sympflow_henon_heiles.pt", kind="sympflow")
    assert card["format_version"] in (0, WEIGHTS_FORMAT_VERSION) and card["config"]["dim"] == 4
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_resolve_weights_names_and_keys():
    assert resolve_weights("default", "euler_denoiser", in_channels=1, alpha=0.95).name == (
        "euler_denoiser_gray_a095.pt"
    )
    assert resolve_weights("campaign", "euler_denoiser", in_channels=1, alpha=0.95).name == (
        "euler_denoiser_gray_a095_campaign.pt"
    )
    with pytest.raises(ValueError, match="campaign.*in_channels=3, alpha=0.95"):
        resolve_weights("campaign", "euler_denoiser", in_channels=3, alpha=0.95)
    with pytest.raises(ValueError, match="in_channels=2, alpha=0.5"):
        resolve_weights("default", "euler_denoiser", in_channels=2, alpha=0.5)
    with pytest.raises(ValueError, match="pretrained must be one of"):
        resolve_weights("no-such-name", "dncnn")
    with pytest.raises(ValueError, match="a name or a path"):
        resolve_weights(3, "dncnn")


def test_load_denoiser_dispatches_on_the_card(tmp_path):
    assert load_denoiser("default", channels=3, alpha=0.95).alpha == 0.95
    assert load_denoiser("default").alpha == 0.5
    campaign = load_denoiser("campaign")  # its only alpha, not the default's 0.5
    assert campaign.alpha == 0.95 and not campaign.training
    with pytest.raises(ValueError, match="alpha=0.5"):
        load_denoiser("campaign", alpha=0.5)
    assert type(load_denoiser("dncnn-gray")).__name__ == "DnCNN"
    assert type(load_denoiser("dncnn-gray-bf16")).__name__ == "DnCNN"
    EulerDenoiser(width=4, hidden=4, n_blocks=2).save(tmp_path / "e.pt")
    assert isinstance(load_denoiser(str(tmp_path / "e.pt")), EulerDenoiser)
    save_dncnn(dinv.models.DnCNN(**DNCNN, pretrained=None), tmp_path / "d.pt", DNCNN)
    assert type(load_denoiser(str(tmp_path / "d.pt"))).__name__ == "DnCNN"
    save_weights(nn.Linear(1, 1), tmp_path / "p.pt", kind="pinn", config=None)
    with pytest.raises(ValueError, match="pinn weights, not a denoiser"):
        load_denoiser(str(tmp_path / "p.pt"))
    with pytest.raises(ValueError, match="alpha 0.5"):
        load_denoiser(str(tmp_path / "e.pt"), alpha=0.95)
    with pytest.raises(ValueError, match="--denoiser must be"):
        load_denoiser("no-such-file.pt")
