"""The benchmark scripts' building blocks on tiny inputs (the scripts themselves need the data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from deepinv_dynnets import EulerDenoiser
from deepinv_dynnets.pnp import deblur
from deepinv_dynnets.pnp.deblurring import blur_physics

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blur_physics_gives_the_measurement_of_deblur():
    x = torch.rand(1, 3, 12, 10)
    kernel = torch.rand(3, 3)
    kernel = kernel / kernel.sum()
    result = deblur(x, kernel, 0.05, EulerDenoiser(in_channels=3, width=4, hidden=4, n_blocks=1),
                    seed=3, max_iter=2)  # fmt: skip
    y = blur_physics(x, kernel, 0.05, seed=3)(x)
    assert torch.equal(y, result.y)
    assert not torch.equal(y, blur_physics(x, kernel, 0.05, seed=4)(x))


@pytest.mark.parametrize(
    ("x", "kernel", "noise", "match"),
    [
        (torch.rand(1, 8, 8), torch.ones(3, 3), 0.1, "x must be"),
        (torch.rand(1, 1, 8, 8), torch.ones(2, 3, 3), 0.1, "kernel must"),
        (torch.rand(1, 1, 8, 8), torch.ones(3, 3), -0.1, "noise_level"),
        (torch.full((1, 1, 8, 8), float("nan")), torch.ones(3, 3), 0.1, "x contains"),
    ],
)
def test_blur_physics_refuses_bad_input(x, kernel, noise, match):
    with pytest.raises(ValueError, match=match):
        blur_physics(x, kernel, noise)


def test_image_roles_follow_the_model_card(tmp_path):
    denoise = _script("denoise")
    train = tmp_path / "train" / "color"
    val = tmp_path / "val" / "gray_set12"
    other = tmp_path / "elsewhere"
    for folder in (train, val, other):
        folder.mkdir(parents=True)
    card = {"train_folder": "train/color", "val_folder": None, "holdout": ["kodak_2[1-4].png"]}
    assert denoise.image_role(card, train, "kodak_05.png") == "training"
    assert denoise.image_role(card, train, "kodak_22.png") == "validation"
    assert denoise.image_role(card, other, "kodak_22.png") == "test"
    grey = {"train_folder": "train/gray_bsd400", "val_folder": "val/gray_set12"}
    assert denoise.image_role(grey, val, "01.png") == "validation"
    assert denoise.image_role(grey, train, "kodak_05.png") == "test"
    assert denoise.image_role(None, val, "01.png").startswith("unknown")
    # the colour campaign: trained on CBSD432, validated on four McMaster images of train/color
    colour = {"train_folder": "train/color_cbsd432", "val_folder": "train/color",
              "val_only": ["mcmaster_0[1-4].png"]}  # fmt: skip
    assert denoise.image_role(colour, train, "mcmaster_02.png") == "validation"
    assert denoise.image_role(colour, train, "mcmaster_05.png") == "test"
    assert denoise.image_role(colour, train, "kodak_01.png") == "test"


def test_convex_anchor_reports_the_best_weight_of_its_grid():
    import deepinv as dinv

    bench = _script("pnp_deblur")
    x = torch.rand(1, 1, 16, 16)
    result = bench.run_convex(
        x, torch.ones(3, 3) / 9, 0.05, dinv.optim.TVPrior(n_it_max=10), [1e-3, 1e-1],
        stepsize=1.9, max_iter=5, seed=0, threshold=1e-5,
    )  # fmt: skip
    assert set(result["psnr_by_lambda"]) == {"0.001", "0.1"}
    assert result["psnr"] == max(result["psnr_by_lambda"].values())
    assert result["psnr_by_lambda"][f"{result['lambda']:g}"] == result["psnr"]
    assert result["iterations"] == 5 and not result["guaranteed"]


def test_blind_denoiser_estimates_the_noise_level_and_passes_it_on():
    pytest.importorskip("pywt")  # scikit-image's estimator needs PyWavelets (bench extra)
    denoise = _script("denoise")
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, y, sigma):
            seen.append(sigma)
            return y

    gen = torch.Generator().manual_seed(0)
    clean = torch.linspace(0, 1, 96).repeat(2, 3, 96, 1)  # smooth: the estimate is the noise
    levels = torch.tensor([0.05, 0.2])
    y = clean + levels.view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=gen)
    blind = denoise.BlindDenoiser(Recorder())
    out = blind(y, sigma=123.0)  # the true level is never used
    assert torch.equal(out, y)
    (estimate,) = seen
    assert estimate.shape == (2,) and estimate.dtype == y.dtype
    torch.testing.assert_close(estimate, levels, rtol=0.1, atol=0)


def test_sympflow_benchmark_counts_escapes_and_scores_targets():
    sympflow = _script("sympflow")
    from deepinv_dynnets.systems import HenonHeiles

    states = torch.zeros(3, 4, 4)  # (times, orbits, dim): all at the bottom of the well
    states[2, 1, 1] = 1.1  # orbit 1 leaves the triangle (y < 1 - sqrt(3)|x| fails)
    states[1, 2, 0] = float("nan")  # orbit 2 goes non-finite at step 1
    states[1:, 3, :2] = 20.0  # orbit 3 runs off
    result = sympflow.escapes(HenonHeiles(), states)
    assert result["left_region"] == 3 and result["ran_off"] == 2
    assert result["first_exit_step"] == [1, 1, 2]
    missed = sympflow.target("energy", 4e-4, 3.2e-4, "max")
    assert not missed["passed"] and missed["gap"] == pytest.approx(1.25)
    met = sympflow.target("speed-up", 11.0, 10.0, "min")
    assert met["passed"] and met["gap"] == pytest.approx(10 / 11)
    assert sympflow.target("escapes", 0, 0, "max")["passed"]
    assert sympflow.target("escapes", 15, 0, "max")["gap"] == 15


def test_supervised_sympflow_targets_compare_with_the_better_baseline():
    targets = _script("sympflow_supervised").targets

    def result(state, energy, median, left):
        return {
            "state_error": {"100": state},
            "energy_error": {"1000": energy},
            "energy_error_median": {"1000": median},
            "left_well": left,
        }

    results = {
        "SympFlow": result(0.9, 5e-3, 2e-3, 60),
        "SympFlow dt=1/2": result(0.9, 1e-3, 1e-3, 10),
        "HNN": result(1.4, 2e-3, 1.5e-3, 30),
        "PINN": result(1.2, 1e7, 1e7, 500),  # better state error than the HNN: the bound
    }
    rows = {r["target"]: r for r in targets(results)}
    assert len(rows) == 8
    assert rows["SympFlow state error at t=100 < HNN and PINN"]["bound"] == 1.2
    assert rows["SympFlow energy error at t=1000 < HNN and PINN"]["bound"] == 2e-3
    assert not rows["SympFlow energy error at t=1000 < HNN and PINN"]["passed"]
    assert not rows["SympFlow left well < HNN and PINN"]["passed"]
    assert all(r["passed"] for name, r in rows.items() if name.startswith("SympFlow dt=1/2"))


def test_pnp_tuning_grid_is_certified_and_summarised(tmp_path, monkeypatch):
    import json

    import numpy as np
    from PIL import Image

    data = tmp_path / "images"
    data.mkdir()
    Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8)).save(
        data / "a.png"
    )
    kernels = tmp_path / "k.npz"
    np.savez(kernels, box=np.ones((3, 3)))
    out = tmp_path / "tuning.json"
    argv = ["pnp_tuning.py", "--data", str(data), "--kernels", str(kernels), "--noise", "12.75",
            "--images", "1", "--size", "16", "--sigma-factors", "1,2", "--hqs-steps", "5",
            "--max-iter", "3", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    _script("pnp_tuning").main()
    record = json.loads(out.read_text())
    assert record["complete"] and len(record["runs"]) == 4
    assert set(record["table"]["12.75"]) == {
        "PGD step 0.95 sigma x1", "PGD step 0.95 sigma x2",
        "HQS step 5 sigma x1", "HQS step 5 sigma x2",
    }  # fmt: skip
    assert all(r["guaranteed"] for r in record["runs"])
    # the grid really changes the run: the denoiser's noise level is passed on
    psnrs = {(r["algorithm"], r["sigma_factor"]): r["psnr"] for r in record["runs"]}
    assert psnrs[("PGD", 1.0)] != psnrs[("PGD", 2.0)]
    monkeypatch.setattr("sys.argv", argv[:-2] + ["--pgd-steps", "1.0", "--out", str(out)])
    with pytest.raises(SystemExit):
        _script("pnp_tuning").main()


def test_large_image_tiling_cost_on_a_window_of_the_large_image(tmp_path, monkeypatch):
    import json

    script = _script("pnp_large_image")
    out = tmp_path / "cost.json"
    argv = ["pnp_large_image.py", "--size", "96", "--procs", "none", "--crop", "32",
            "--crop-source", "large", "--crop-tile", "16", "--crop-iter", "2",
            "--out", str(out)]  # fmt: skip
    windows = []
    real_make_problem = script.make_problem

    def spy(x, args):
        windows.append(x.clone())
        return real_make_problem(x, args)

    monkeypatch.setattr(script, "make_problem", spy)
    monkeypatch.setattr("sys.argv", argv)
    script.main()
    record = json.loads(out.read_text())
    assert record["timing"] == [] and record["certificate"] == "GUARANTEED"
    assert [r["variant"] for r in record["psnr_cost"]] == [
        "untiled", "tiled 16", "alternating 16",
    ]  # fmt: skip
    assert all(r["iterations"] == 2 and r["seconds"] > 0 for r in record["psnr_cost"])
    # the window is the centre of the upscaled image, not of the original one
    large, window = windows
    assert window.shape[-2:] == (32, 32)
    torch.testing.assert_close(window, large[..., 32:64, 32:64], rtol=0, atol=0)
