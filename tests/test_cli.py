"""The dynnets command: every subcommand on tiny inputs, and clear errors."""

import functools
import json
import re
import subprocess
import sys

import pytest
import torch

from deepinv_dynnets.cli import build_parser, main

SUBCOMMANDS = ["demo", "rollout", "train-sympflow", "train-denoiser", "deblur", "certify"]


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([name, "--help"])
    assert "usage: dynnets " + name in capsys.readouterr().out


def _train(out, *extra):
    return main(
        ["train-sympflow", "--system", "harmonic-oscillator", "--epochs", "3", "--n-points", "16",
         "--width", "4", "--n-eval", "4", "--quiet", "--out", str(out), *extra]
    )  # fmt: skip


def test_train_sympflow_writes_flow_and_record(tmp_path):
    out = tmp_path / "run"
    assert _train(out) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["system"] == "harmonic-oscillator" and len(record["evaluation"]["times"]) == 3
    assert record["command"].startswith("dynnets train-sympflow --system harmonic-oscillator")
    from deepinv_dynnets import SympFlow

    assert SympFlow.from_pretrained(out / "flow.pt").dim == 2
    # resuming a finished run is a no-op that still writes the outputs
    assert _train(out, "--resume") == 0
    assert _train(tmp_path / "lbfgs", "--lbfgs-steps", "20", "--lbfgs-points", "32") == 0


def test_train_supervised_and_pinn(tmp_path):
    assert (
        main(
            [
                "train-sympflow",
                "--system",
                "pendulum",
                "--supervised",
                "--epochs",
                "2",
                "--n-trajectories",
                "4",
                "--n-times",
                "2",
                "--noise",
                "0.01",
                "--width",
                "4",
                "--n-eval",
                "2",
                "--quiet",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train-sympflow",
                "--system",
                "harmonic-oscillator",
                "--model",
                "pinn",
                "--epochs",
                "2",
                "--n-points",
                "8",
                "--width",
                "4",
                "--n-eval",
                "2",
                "--quiet",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )


def test_rollout_writes_a_figure(tmp_path, capsys):
    assert (
        main(
            [
                "rollout",
                "--flow",
                "harmonic-oscillator",
                "--T",
                "3",
                "--n",
                "3",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert (tmp_path / "harmonic-oscillator_rollout.png").is_file()
    assert "mean |H(y(T)) - H(y0)|" in capsys.readouterr().out


def test_demo_runs_on_tiny_settings(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["demo", "--n", "4", "--n-timing", "20", "--size", "32", "--max-iter", "3",
                     "--out", str(tmp_path)]) == 0  # fmt: skip
        assert torch.get_num_threads() == 2  # the one-thread timing restores the setting
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    # the speed comparison runs on one thread, immune to spin-waiting on a busy machine
    assert re.search(r"\(1 thread\(s\)\): SympFlow .* -> SympFlow \d+\.\dx (faster|slower)", out)
    assert "PnP-HQS convergence: GUARANTEED" in out
    assert "det J - 1" in out
    assert "convergence: GUARANTEED" in out and "PSNR: blurred" in out
    assert (tmp_path / "henon_heiles_rollout.png").is_file()
    assert (tmp_path / "pnp_deblur.png").is_file()


def test_errors_exit_non_zero_with_one_line(tmp_path):
    # python -m deepinv_dynnets runs the same command as dynnets
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepinv_dynnets",
            "rollout",
            "--flow",
            str(tmp_path / "nope.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dynnets: error:")


def _image_folder(path, n=3, size=(37, 31)):
    import numpy as np
    from PIL import Image

    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random(size) * 255).astype("uint8")).save(path / f"im{i}.png")
    return path


@pytest.mark.parametrize(
    "model,bf16,activation",
    [("euler", False, None), ("dncnn", False, None), ("euler", True, "spline")],
)
def test_train_denoiser_on_a_tiny_folder(tmp_path, model, bf16, activation, capsys):
    data = _image_folder(tmp_path / "train")
    out = tmp_path / "run"
    args = ["train-denoiser", "--data", str(data), "--val", str(data), "--model", model,
            "--width", "4", "--n-blocks", "2", "--epochs", "1",
            "--batch-size", "4", "--patch-size", "16", "--patches-per-image", "2", "--quiet",
            "--out", str(out), "--val-only", "im[01].png"] + ["--bf16"] * bf16 + ["--hidden", "4"] * (model == "euler")  # fmt: skip
    args += ["--activation", activation] if activation else []
    assert main(args) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["settings"]["n_val_images"] == 2
    assert record["settings"]["autocast"] == ("torch.bfloat16" if bf16 else None)
    assert set(record["history"][-1]["val_psnr"]) == {"15", "25", "50"}
    assert record["command"].startswith("dynnets train-denoiser --data")
    assert record["wall_time_s"] > 0 and "thread" in record["hardware"]
    if model == "euler":
        from deepinv_dynnets import EulerDenoiser, certify

        loaded = EulerDenoiser.from_pretrained(out / "model.pt")
        assert loaded.config["activation"] == (activation or "relu")
        assert certify(loaded).lipschitz <= 1
        assert "Lipschitz" in capsys.readouterr().out


def test_train_denoiser_errors_on_a_missing_folder(tmp_path, capsys):
    assert main(["train-denoiser", "--data", str(tmp_path / "nope"), "--quiet",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "dynnets: error:" in capsys.readouterr().err


def _tiny_denoisers(tmp_path):
    import deepinv as dinv

    from deepinv_dynnets import EulerDenoiser
    from deepinv_dynnets.models import save_dncnn

    euler = tmp_path / "euler.pt"
    EulerDenoiser(width=4, hidden=4, n_blocks=2).save(euler)
    dncnn = tmp_path / "dncnn.pt"
    config = dict(in_channels=1, out_channels=1, depth=3, nf=4)
    save_dncnn(dinv.models.DnCNN(**config, pretrained=None), dncnn, config)
    return euler, dncnn


def test_deblur_on_the_builtin_image_and_a_file(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    euler, dncnn = _tiny_denoisers(tmp_path)
    out = tmp_path / "out"
    args = ["deblur", "--denoiser", str(euler), "--size", "24", "--max-iter", "4",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "convergence: GUARANTEED" in text and "PSNR: blurred" in text
    assert (out / "deblurred.png").is_file() and (out / "deblur.png").is_file()
    image = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((30, 28, 3)) * 255).astype("uint8")).save(
        image
    )
    kernels = tmp_path / "k.npz"
    np.savez(kernels, kernel_0=np.ones((3, 5)))
    args = ["deblur", "--input", str(image), "--kernel", str(kernels), "--kernel-name",
            "kernel_0", "--denoiser", str(dncnn), "--max-iter", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "NOT guaranteed" in capsys.readouterr().out  # DnCNN has no certificate
    assert main(["deblur", "--kernel", "nope.npy", "--out", str(out)]) == 2
    assert main(["deblur", "--size", "4000", "--denoiser", str(euler)]) == 2
    assert "size 4000 is larger than the image" in capsys.readouterr().err


@pytest.mark.parametrize(("algorithm", "alpha"), [("PGD", 0.95), ("HQS", 0.95), ("DRS", 0.5)])
def test_deblur_picks_the_shipped_weights_the_algorithm_accepts(tmp_path, capsys, algorithm, alpha):
    args = ["deblur", "--algorithm", algorithm, "--size", "16", "--max-iter", "2",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "convergence: GUARANTEED" in text
    certified = float(text.split("denoiser (EulerDenoiser) is ")[1].split("-averaged")[0])
    assert certified <= alpha and (alpha == 0.5 or certified > 0.5)
    assert main(args[:-2] + ["--alpha", "0.7", "--out", str(tmp_path)]) == 2
    assert "alpha=0.7" in capsys.readouterr().err  # no shipped weights with that alpha


def test_certify_prints_the_table_and_rejects_uncertified_weights(tmp_path, capsys):
    euler, dncnn = _tiny_denoisers(tmp_path)
    assert main(["certify", "--weights", str(euler)]) == 0
    assert "Lipschitz <= 1" in capsys.readouterr().out
    assert main(["certify", "--weights", str(dncnn)]) == 2
    assert "no certificate" in capsys.readouterr().err
    # --alpha selects shipped weights; it cannot relabel a file
    assert main(["certify", "--weights", str(euler), "--alpha", "0.95"]) == 2
    assert "--alpha 0.95 selects shipped weights" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["certify", "--weights", str(tmp_path / "bad.pt")]) == 2


# -- arguments checked before any work (issue 13 item 8) -------------------------------------
def _refused(capsys, argv, message):
    """``main(argv)`` exits 2 with one line naming the problem."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dynnets: error:"), err
    assert message in err[0], err[0]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts working: every worker raises."""
    import deepinv_dynnets.demo as demo
    import deepinv_dynnets.pnp as pnp
    import deepinv_dynnets.training.denoiser as denoiser
    import deepinv_dynnets.training.flow as flow

    def forbid(original):
        @functools.wraps(original)  # keeps the signature, which the commands read
        def forbidden(*args, **kwargs):
            raise AssertionError("work started before the arguments were checked")

        return forbidden

    for module, name in [(pnp, "deblur"), (demo, "builtin_image"), (demo, "load_image"),
                         (flow, "train_unsupervised"), (flow, "train_supervised"),
                         (denoiser, "train_denoiser"), (denoiser, "ImagePatches")]:  # fmt: skip
        monkeypatch.setattr(module, name, forbid(getattr(module, name)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["deblur", "--max-iter", "0"], "argument --max-iter: must be a finite number > 0, got 0"),
        (["deblur", "--threads", "0"], "argument --threads: must be a finite number > 0"),
        (["deblur", "--size", "-4"], "argument --size: must be a finite number > 0, got -4"),
        (["deblur", "--size", "0"], "argument --size: must be a finite number > 0, got 0"),
        (["deblur", "--noise", "-1"], "argument --noise: must be a finite number >= 0, got -1"),
        (["deblur", "--noise", "nan"], "argument --noise: must be a finite number >= 0"),
        (["deblur", "--relaxation", "3"], "relaxation must lie in (0, 1] for a certificate"),
        (["deblur", "--relaxation", "0"], "relaxation must lie in (0, 1] for a certificate"),
        (["deblur", "--stepsize", "-1"], "argument --stepsize: must be a finite number > 0"),
        (["deblur", "--input", "no-such-image.png"], "input 'no-such-image.png' is not a file"),
        (["deblur", "--algorithm", "FISTA"], "argument --algorithm: invalid choice"),
        (["rollout", "--T", "-5"], "argument --T: must be a finite number > 0, got -5"),
        (["rollout", "--n", "0"], "argument --n: must be a finite number > 0, got 0"),
        (["demo", "--size", "0"], "argument --size: must be a finite number > 0"),
        (["train-sympflow", "--system", "pendulum", "--epochs", "0"], "argument --epochs"),
        (["train-sympflow", "--system", "pendulum", "--noise", "-0.1"], "argument --noise"),
        (["train-sympflow", "--system", "pendulum", "--threads", "0"], "argument --threads"),
        (
            ["train-sympflow", "--system", "pendulum", "--model", "pinn", "--layers", "2"],
            "unknown pinn architecture option(s): n_layers",
        ),
        (
            ["train-sympflow", "--system", "pendulum", "--device", "tpu"],
            "device must be 'cpu' or 'cuda'",
        ),
        (["train-denoiser", "--data", ".", "--sigma-max", "-5"], "argument --sigma-max"),
        (["train-denoiser", "--data", ".", "--lr", "0"], "argument --lr"),
        (
            ["train-denoiser", "--data", ".", "--checkpoint-minutes", "0"],
            "argument --checkpoint-minutes",
        ),
        (
            ["train-sympflow", "--system", "pendulum", "--checkpoint-every", "0"],
            "argument --checkpoint-every",
        ),
        (
            ["train-denoiser", "--data", ".", "--model", "dncnn", "--alpha", "0.5"],
            "--hidden, --alpha and --activation apply to the Euler denoiser",
        ),
        (["train-denoiser", "--data", "no-such-folder"], "'no-such-folder' is not a folder"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(capsys, no_work, tmp_path, argv, message):
    _refused(capsys, [*argv, "--out", str(tmp_path / "out")], message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["deblur"],
        ["demo"],
        ["rollout"],
        ["train-sympflow", "--system", "pendulum"],
        ["train-denoiser", "--data", "."],
    ],  # fmt: skip
)
def test_an_out_that_is_a_file_is_refused_before_any_work(capsys, no_work, tmp_path, argv):
    existing = tmp_path / "taken.png"
    existing.write_bytes(b"someone's file")
    _refused(capsys, [*argv, "--out", str(existing)], "is a file, not a folder")
    _refused(capsys, [*argv, "--out", str(existing / "below")], "is a file, not a folder")
    assert existing.read_bytes() == b"someone's file"


def test_cuda_is_refused_clearly_without_a_gpu(capsys, no_work, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (["train-sympflow", "--system", "pendulum"], ["train-denoiser", "--data", "."]):
        _refused(capsys, [*argv, "--device", "cuda", "--out", str(tmp_path / "o")],
                 "device 'cuda': CUDA is not available on this machine")  # fmt: skip


def test_certify_says_what_a_foreign_file_is(tmp_path, capsys):
    from deepinv_dynnets import SympFlow

    SympFlow(2, n_layers=1, width=4).save(tmp_path / "flow.pt")
    _refused(capsys, ["certify", "--weights", str(tmp_path / "flow.pt")], "sympflow")


def test_defaults_come_from_the_library():
    import inspect

    from deepinv_dynnets.demo import run_deblur, run_demo
    from deepinv_dynnets.training import train_denoiser, train_unsupervised

    def default(function, name):
        return inspect.signature(function).parameters[name].default

    parser = build_parser()
    deblur = parser.parse_args(["deblur"])
    assert deblur.max_iter == default(run_deblur, "max_iter")
    assert deblur.noise == default(run_deblur, "noise")
    assert deblur.blur_std == default(run_deblur, "blur_std")
    assert parser.parse_args(["demo"]).size == default(run_demo, "size")
    flow = parser.parse_args(["train-sympflow", "--system", "pendulum"])
    assert flow.epochs == default(train_unsupervised, "epochs")
    assert flow.lr == default(train_unsupervised, "lr")
    denoiser = parser.parse_args(["train-denoiser", "--data", "."])
    assert denoiser.patch_size == default(train_denoiser, "patch_size")
    assert denoiser.sigma_max / 255 == pytest.approx(default(train_denoiser, "sigma_range")[1])


def test_nothing_outside_the_cli_imports_it():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [
        str(path.relative_to(root))
        for folder in ("benchmarks", "examples", "deepinv_dynnets")
        for path in (root / folder).rglob("*.py")
        if path.name not in ("cli.py", "__main__.py") and "deepinv_dynnets.cli" in path.read_text()
    ]
    assert offenders == []
