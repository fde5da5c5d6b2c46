"""Training denoisers on image patches: dataset, PSNR, loop, checkpoints, certificate."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from deepinv.models import DnCNN
from PIL import Image

from deepinv_dynnets.data import ImagePatches, load_images
from deepinv_dynnets.models import EulerDenoiser
from deepinv_dynnets.training import TrainingRecord, evaluate_psnr, train_denoiser
from deepinv_dynnets.training import denoiser as denoiser_training

SIZES = [(37, 31), (33, 41), (40, 35)]  # (H, W), odd on purpose


def _smooth_image(rng: np.random.Generator, h: int, w: int, channels: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    planes = []
    for _ in range(channels):
        a, b, c = rng.uniform(1, 4, 3)
        planes.append(0.5 + 0.4 * np.sin(a * 3 * xx + c) * np.cos(b * 3 * yy))
    img = np.stack(planes, -1) if channels == 3 else planes[0]
    return np.clip(255 * img, 0, 255).astype(np.uint8)


def _make_folder(path, channels=1, sizes=SIZES, seed=0, ext="png"):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(_smooth_image(rng, h, w, channels)).save(path / f"img{i}.{ext}")
    return path


@pytest.fixture
def gray_folder(tmp_path):
    return _make_folder(tmp_path / "train")


@pytest.fixture
def val_folder(tmp_path):
    return _make_folder(tmp_path / "val", sizes=[(29, 35), (31, 27)], seed=1)


def _tiny_euler():
    torch.manual_seed(0)
    return EulerDenoiser(in_channels=1, width=4, hidden=8, n_blocks=2)


def _tiny_dncnn(channels=1):
    torch.manual_seed(0)
    return DnCNN(in_channels=channels, out_channels=channels, depth=3, nf=8, pretrained=None)


FAST = dict(batch_size=8, patch_size=16, patches_per_image=8, progress=False)


def _is_crop(image, patch) -> bool:
    p = patch.shape[-1]
    windows = image.unfold(0, p, 1).unfold(1, p, 1)
    return bool((windows == patch).flatten(2).all(-1).any())


# -- data ------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_patches_shapes_and_range(tmp_path, channels):
    folder = _make_folder(tmp_path / "f", channels=3, ext="jpg")  # RGB files, read either way
    data = ImagePatches(folder, patch_size=13, patches_per_image=5, channels=channels, seed=0)
    assert len(data) == 5 * len(SIZES)
    assert [tuple(im.shape) for im in data.images] == [(channels, h, w) for h, w in SIZES]
    batch = torch.stack([data[i] for i in range(len(data))])
    assert batch.shape == (len(data), channels, 13, 13)
    assert batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 1 and batch.max() > 0.5


def test_patches_determinism_and_augmentation(gray_folder):
    a = ImagePatches(gray_folder, patch_size=16, patches_per_image=4, seed=3)
    b = ImagePatches(gray_folder, patch_size=16, patches_per_image=4, seed=3)
    c = ImagePatches(gray_folder, patch_size=16, patches_per_image=4, seed=4)
    pa = torch.stack([a[i] for i in range(len(a))])
    assert torch.equal(pa, torch.stack([b[i] for i in range(len(b))]))
    assert torch.equal(a[5], a[5])  # an item does not depend on what was read before
    assert not torch.equal(pa, torch.stack([c[i] for i in range(len(c))]))
    a.set_epoch(1)
    assert not torch.equal(pa, torch.stack([a[i] for i in range(len(a))]))
    # Without augmentation, a patch is a crop of its image.
    plain = ImagePatches(gray_folder, patch_size=16, patches_per_image=4, augment=False, seed=3)
    assert all(_is_crop(plain.images[i // 4][0], plain[i][0]) for i in range(len(plain)))
    # With it, some patch is not (a rotation or flip of a non-symmetric image).
    found = [_is_crop(a.images[i // 4][0], a[i][0]) for i in range(len(a))]
    assert not all(found)


def test_data_errors(tmp_path, gray_folder):
    with pytest.raises(ValueError, match="does not exist"):
        ImagePatches(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(ValueError, match="no image"):
        ImagePatches(tmp_path / "empty")
    with pytest.raises(ValueError, match="channels"):
        ImagePatches(gray_folder, channels=2)
    with pytest.raises(ValueError, match="larger than"):
        ImagePatches(gray_folder, patch_size=32)
    with pytest.raises(ValueError, match="patch_size"):
        ImagePatches(gray_folder, patch_size=0)
    with pytest.raises(ValueError, match="channels"):
        load_images(gray_folder, channels=4)
    assert len(load_images(gray_folder, max_images=2)) == 2


def test_evaluate_psnr_fixed_noise(val_folder):
    model = _tiny_dncnn().train()
    images = load_images(val_folder)
    first = evaluate_psnr(model, images, [25 / 255])
    assert list(first) == ["25"] and math.isfinite(first["25"])
    assert evaluate_psnr(model, images, [25 / 255]) == first
    assert model.training  # the mode is restored


# -- training --------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [_tiny_euler, _tiny_dncnn], ids=["euler", "dncnn"])
def test_loss_decreases(gray_folder, make):
    model = make()
    record = train_denoiser(model, gray_folder, epochs=5, lr=1e-2, **FAST)
    losses = record.train_losses
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    assert min(losses[-2:]) < 0.8 * losses[0]  # per-epoch losses are noisy (random sigma)
    assert not model.training
    assert record.settings["model"] == type(model).__name__
    assert [e["epoch"] for e in record.history] == [1, 2, 3, 4, 5]
    lrs = [e["lr"] for e in record.history]
    assert lrs[0] == pytest.approx(1e-2) and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


@pytest.mark.parametrize("make", [_tiny_euler, _tiny_dncnn], ids=["euler", "dncnn"])
def test_bfloat16_autocast_trains_float32_weights(gray_folder, make, monkeypatch):
    model = make()
    # on a CPU without native bfloat16 the run warns (emulated, ~20x slower), else not
    monkeypatch.setattr(denoiser_training, "cpu_supports_bfloat16", lambda: False)
    with pytest.warns(RuntimeWarning, match="without native bfloat16"):
        train_denoiser(make(), gray_folder, epochs=1, autocast=torch.bfloat16, **FAST)
    monkeypatch.setattr(denoiser_training, "cpu_supports_bfloat16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        record = train_denoiser(
            model, gray_folder, epochs=4, lr=1e-2, autocast=torch.bfloat16, **FAST
        )
    losses = record.train_losses
    assert all(math.isfinite(v) for v in losses) and min(losses[-2:]) < 0.8 * losses[0]
    assert record.settings["autocast"] == "torch.bfloat16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    if isinstance(model, EulerDenoiser):
        assert record.certificate["lipschitz"] <= 1.0
        assert record.certificate["alpha"] <= model.alpha + 1e-12
    with pytest.raises(ValueError, match="autocast"):
        train_denoiser(model, gray_folder, epochs=1, autocast=torch.int8, **FAST)


def test_sigma_per_image_and_fixed_levels(gray_folder):
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _tiny_dncnn()

        def forward(self, x, sigma):
            seen.append(sigma.detach().clone())
            return self.net(x, sigma)

    levels = [10 / 255, 30 / 255]
    train_denoiser(Spy(), gray_folder, epochs=1, sigmas=levels, **FAST)
    assert all(s.shape == (8,) for s in seen)
    values = torch.cat(seen)
    assert set(values.tolist()) == set(torch.tensor(levels).tolist())
    seen.clear()
    train_denoiser(Spy(), gray_folder, epochs=1, sigma_range=(0.1, 0.2), **FAST)
    values = torch.cat(seen)
    assert values.min() >= 0.1 and values.max() <= 0.2 and values.unique().numel() > 8


def test_validation_record_and_json(gray_folder, val_folder, tmp_path):
    record = train_denoiser(
        _tiny_dncnn(), gray_folder, val_folder, epochs=2, max_val_images=1, **FAST
    )
    assert record.settings["n_val_images"] == 1
    assert len(record.val_psnr) == 2
    for entry in record.val_psnr:
        assert list(entry) == ["15", "25", "50"]
        assert all(math.isfinite(v) for v in entry.values())
    assert record.certificate is None  # DnCNN: nothing certified
    path = tmp_path / "record.json"
    record.to_json(path)
    assert TrainingRecord.from_json(path) == record


@pytest.mark.parametrize("make", [_tiny_euler, _tiny_dncnn], ids=["euler", "dncnn"])
def test_resumed_run_equals_the_uninterrupted_one(gray_folder, tmp_path, make):
    reference = make()
    full = train_denoiser(reference, gray_folder, epochs=3, **FAST)

    class Interrupted(Exception):
        pass

    model = make()
    calls = {"n": 0}
    forward = model.forward

    def failing_forward(x, sigma=None):
        calls["n"] += 1
        if calls["n"] > 2 * 3:  # 3 batches per epoch: fail during epoch 3
            raise Interrupted
        return forward(x, sigma)

    model.forward = failing_forward
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupted):
        train_denoiser(model, gray_folder, epochs=3, checkpoint=ckpt, **FAST)
    state = torch.load(ckpt, weights_only=True)  # tensors and plain values only
    assert state["epoch"] == 2 and len(state["record"]["history"]) == 2

    torch.manual_seed(1)  # other initial weights: the checkpoint's must be restored
    resumed = make().apply(
        lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None
    )
    record = train_denoiser(resumed, gray_folder, epochs=3, checkpoint=ckpt, resume=True, **FAST)
    assert [e["epoch"] for e in record.history] == [1, 2, 3]
    # The same data, order and noise as the uninterrupted run: the same weights, exactly.
    # EulerDenoiser marks its power-iteration vectors cold when its state is loaded (they
    # are not in its state dict), so its first resumed step runs more power iterations
    # than the uninterrupted one: close, not bit for bit.
    exact = not isinstance(reference, EulerDenoiser)
    if exact:
        assert record.train_losses == full.train_losses
    for (name, p), q in zip(
        resumed.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        if not isinstance(p, torch.Tensor):
            continue  # EulerDenoiser's extra state: a fingerprint of the weights
        if exact:
            assert torch.equal(p, q), name
        else:
            # 6 Adam steps of lr 1e-3 move a weight by up to 6e-3; the cold start by < 3e-5
            torch.testing.assert_close(p, q, rtol=0, atol=2e-4)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3
    assert record.extra["resumes"] == [{"epoch": 2, "changed_settings": {}}]


def test_resume_with_other_settings_is_recorded(gray_folder, tmp_path):
    # e.g. a campaign resumed without --bf16 on a machine without native bfloat16: the
    # card must not claim one precision for the whole run
    ckpt = tmp_path / "run.pt"
    small = dict(width=4, hidden=4, n_blocks=1)
    train_denoiser(EulerDenoiser(1, **small), gray_folder, epochs=2, checkpoint=ckpt,
                   checkpoint_every=1, lr=2e-3, **FAST)  # fmt: skip
    state = torch.load(ckpt, weights_only=True)
    state["epoch"], state["record"]["history"] = 1, state["record"]["history"][:1]
    torch.save(state, ckpt)  # as if stopped after epoch 1
    record = train_denoiser(EulerDenoiser(1, **small), gray_folder, epochs=2, checkpoint=ckpt,
                            resume=True, **FAST)  # fmt: skip
    (resume,) = record.extra["resumes"]
    assert resume == {"epoch": 1, "changed_settings": {"lr": {"before": 2e-3, "now": 1e-3}}}
    assert record.settings["lr"] == 2e-3  # the settings the run started with
    assert [e["epoch"] for e in record.history] == [1, 2]


def test_corrupt_checkpoint_is_refused(gray_folder, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read the training checkpoint"):
        train_denoiser(_tiny_dncnn(), gray_folder, epochs=1, checkpoint=bad, resume=True, **FAST)
    ckpt = tmp_path / "euler.pt"
    train_denoiser(_tiny_euler(), gray_folder, epochs=1, checkpoint=ckpt, **FAST)
    with pytest.raises(ValueError, match="trains a EulerDenoiser, not a DnCNN"):
        train_denoiser(_tiny_dncnn(), gray_folder, epochs=2, checkpoint=ckpt, resume=True, **FAST)


def test_record_names_data_folders_relative_to_the_data_folder(gray_folder, val_folder):
    record = train_denoiser(_tiny_dncnn(), gray_folder, val_folder, epochs=1, **FAST)
    assert record.settings["train_folder"] == "train"
    assert record.settings["val_folder"] == "val"
    root = gray_folder.parent.parent
    record = train_denoiser(_tiny_dncnn(), gray_folder, epochs=1, data_root=root, **FAST)
    assert record.settings["train_folder"] == f"{gray_folder.parent.name}/train"
    assert record.world_size == 1 and record.settings["device"] == "cpu"


def test_euler_certificate_after_training(gray_folder, val_folder, tmp_path):
    model = _tiny_euler()
    ckpt = tmp_path / "euler.pt"
    record = train_denoiser(
        model, gray_folder, val_folder, epochs=2, lr=2e-2, checkpoint=ckpt, **FAST
    )
    cert = record.certificate
    assert cert is not None
    assert cert["lipschitz"] <= 1.0
    assert cert["alpha"] is not None and cert["alpha"] <= model.alpha + 1e-12
    assert cert["margin"] >= 0
    assert record.settings["config"] == model.config
    # The final checkpoint holds the calibrated model and the certificate.
    state = torch.load(ckpt, weights_only=True)
    assert state["record"]["certificate"] == cert
    loaded = EulerDenoiser(**state["record"]["settings"]["config"])
    loaded.load_state_dict(state["model"])
    x = torch.rand(1, 1, 19, 23)
    torch.testing.assert_close(loaded.eval()(x, 0.1), model(x, 0.1))


def test_argument_errors(gray_folder):
    model = _tiny_dncnn()
    with pytest.raises(ValueError, match="epochs"):
        train_denoiser(model, gray_folder, epochs=0, **FAST)
    with pytest.raises(ValueError, match="sigma_range"):
        train_denoiser(model, gray_folder, epochs=1, sigma_range=(0.2, 0.1), **FAST)
    with pytest.raises(ValueError, match="sigmas"):
        train_denoiser(model, gray_folder, epochs=1, sigmas=[], **FAST)
    with pytest.raises(ValueError, match="lr"):
        train_denoiser(model, gray_folder, epochs=1, lr=0.0, **FAST)


def test_holdout_images_are_left_out_and_validate(gray_folder):
    n = len(SIZES)
    assert len(load_images(gray_folder, exclude=["img0.*"])) == n - 1
    assert len(load_images(gray_folder, only=["img0.*", "img1.*"])) == 2
    record = train_denoiser(_tiny_dncnn(), gray_folder, epochs=1, holdout=["img0.png"], **FAST)
    assert record.settings["n_train_images"] == n - 1
    assert record.settings["n_val_images"] == 1 and record.settings["holdout"] == ["img0.png"]
    assert list(record.history[0]["val_psnr"]) == ["15", "25", "50"]
    with pytest.raises(ValueError, match="no image"):
        train_denoiser(_tiny_dncnn(), gray_folder, epochs=1, holdout=["img*"], **FAST)


def test_val_only_selects_validation_images(gray_folder, val_folder):
    record = train_denoiser(
        _tiny_dncnn(), gray_folder, val_folder, epochs=1, val_only=["img1.png"], **FAST
    )
    assert record.settings["n_val_images"] == 1 and record.settings["val_only"] == ["img1.png"]
    assert record.settings["n_train_images"] == len(SIZES)
    with pytest.raises(ValueError, match="give a val_folder"):
        train_denoiser(_tiny_dncnn(), gray_folder, epochs=1, val_only=["img1.png"], **FAST)
    with pytest.raises(ValueError, match="no image"):
        train_denoiser(_tiny_dncnn(), gray_folder, val_folder, epochs=1, val_only=["x*"], **FAST)


def _export_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "export_checkpoint.py"
    spec = importlib.util.spec_from_file_location("export_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exported_checkpoint_is_the_trained_model_with_its_card(gray_folder, tmp_path):
    ckpt = tmp_path / "run.pt"
    model = _tiny_euler()
    record = train_denoiser(
        model, gray_folder, epochs=2, checkpoint=ckpt, val_folder=gray_folder, **FAST
    )
    out = tmp_path / "model.pt"
    _export_script().export(ckpt, out, command="test")
    loaded = EulerDenoiser.from_pretrained(out)
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # train_denoiser leaves the model calibrated, as export does
        assert torch.equal(loaded(x, 0.1), model(x, 0.1))
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["epoch"] == 2 and card["export_command"] == "test"
    assert card["command"] == "test"  # the record has no training command outside the CLI
    assert card["certificate"]["alpha"] == card["certified_alpha"]
    assert card["certificate"]["method"] == "fourier" and card["hardware"]
    _export_script().export(ckpt, out, command="export", training_command="train")
    card = json.loads(out.with_suffix(".json").read_text())
    assert (card["command"], card["export_command"]) == ("train", "export")
    assert card["val_psnr"] == record.history[-1]["val_psnr"] != {}
    assert card["certified_alpha"] <= model.config["alpha"]


def test_export_refuses_what_is_not_an_euler_checkpoint(gray_folder, tmp_path):
    script = _export_script()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read the training checkpoint"):
        script.export(bad, tmp_path / "a.pt")
    ckpt = tmp_path / "dncnn.pt"
    train_denoiser(_tiny_dncnn(), gray_folder, epochs=1, checkpoint=ckpt, **FAST)
    with pytest.raises(ValueError, match="not an EulerDenoiser"):
        script.export(ckpt, tmp_path / "b.pt")
    torch.save({"epoch": 1}, bad)
    with pytest.raises(ValueError, match="not a deepinv_dynnets training checkpoint"):
        script.export(bad, tmp_path / "c.pt")
    assert not any(tmp_path.glob("[abc].pt"))
