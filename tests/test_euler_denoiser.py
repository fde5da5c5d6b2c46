"""EulerDenoiser: the guarantees, the step control during training, deepinv drop-in, files."""

import copy
import json

import deepinv as dinv
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from deepinv_dynnets.lipschitz.averagedness import compose_averaged
from deepinv_dynnets.lipschitz.certificates import certify
from deepinv_dynnets.lipschitz.operator_norms import conv2d_norm_bound
from deepinv_dynnets.models import PRETRAINED, AveragedEulerBlock, EulerDenoiser, save_dncnn
from deepinv_dynnets.models.euler_denoiser import _block_alpha

SIGMAS = [0.0, 0.05, 0.3]


def _small(**kwargs):
    config = {"in_channels": 1, "width": 5, "hidden": 7, "n_blocks": 3}
    config.update(kwargs)
    return EulerDenoiser(**config)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("channels", [1, 3])
def test_denoiser_is_non_expansive(activation, channels, large_weights):
    model = large_weights(_small(in_channels=channels, activation=activation, negative_slope=0.3))
    model = model.double().eval()
    x = torch.randn(16, channels, 9, 7, dtype=torch.float64)
    y = torch.cat([x[:8] + 1e-3 * torch.randn_like(x[:8]), torch.randn_like(x[8:])])
    for sigma in SIGMAS:
        with torch.no_grad():
            d = (model(x, sigma) - model(y, sigma)).flatten(1).norm(dim=1)
        assert bool((d <= (x - y).flatten(1).norm(dim=1) * (1 + 1e-12)).all())


def test_denoiser_is_averaged_with_the_certified_constant(large_weights):
    model = large_weights(_small(in_channels=2, width=4, hidden=6, n_blocks=4)).double().eval()
    alpha = certify(model).alpha
    assert alpha is not None and 0 < alpha <= model.alpha
    x = torch.randn(32, 2, 7, 9, dtype=torch.float64)
    y = torch.cat([x[:16] + 1e-4 * torch.randn_like(x[:16]), 2 * torch.randn_like(x[16:])])
    for sigma in SIGMAS:
        with torch.no_grad():
            Tx = (model(x, sigma) - (1 - alpha) * x) / alpha
            Ty = (model(y, sigma) - (1 - alpha) * y) / alpha
        ratio = (Tx - Ty).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
        assert float(ratio.max()) <= 1 + 1e-10


def test_block_constants_compose_to_the_target():
    for alpha in (0.1, 0.5, 0.9, 1.0):
        for n in (1, 2, 8):
            a = _block_alpha(alpha, n)
            assert compose_averaged(*([a] * n)) <= alpha
            if alpha < 1:
                assert a == pytest.approx(alpha / (n - (n - 1) * alpha), rel=1e-12)
    assert _small(alpha=0.5, n_blocks=8).block_alpha == pytest.approx(1 / 9)


def test_step_control_holds_during_training(large_weights):
    torch.manual_seed(1)
    model = large_weights(_small(width=6, hidden=9, n_blocks=3), theta=20.0).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.5)  # large: the weights jump
    model.train()
    safety = model.config["safety"]
    for _ in range(6):
        x = torch.rand(4, 1, 9, 7, dtype=torch.float64)
        out = model(x + 0.1 * torch.randn_like(x), 0.1)
        for block in model.blocks:  # the step this forward used, against the certified norm
            h = float(block.step_size(torch.float64).detach())
            cert = conv2d_norm_bound(block.weight) ** 2
            assert h * cert <= 2 * block.alpha  # the power iteration is within `safety`
            assert h * cert <= 2 * block.alpha / safety * 1.02  # and it is nearly exact
        loss = (out - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # eval after the last step: nu catches up with the last weights before it is used
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 1, 5, 5, dtype=torch.float64), 0.1)
    cert = certify(model)
    assert cert.margin > 0 and cert.alpha <= model.alpha


def test_step_bounds_are_estimated_in_float32_under_bfloat16_autocast():
    # Mixed-precision training must not round the step-size bound nu to bfloat16.
    torch.manual_seed(0)
    model = EulerDenoiser(in_channels=1, width=8, hidden=8, n_blocks=2).train()
    ref = copy.deepcopy(model)
    x = torch.rand(2, 1, 12, 12)
    ref(x, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, 0.1)
    assert out.dtype == torch.float32  # the state x - h A^T s(Ax + b) stays float32
    for block, ref_block in zip(model.blocks, ref.blocks, strict=True):
        assert block.nu.dtype == torch.float32
        torch.testing.assert_close(block.nu, ref_block.nu, rtol=1e-6, atol=0)


def test_power_estimate_and_its_gradient_match_the_fft_symbol():
    torch.manual_seed(3)
    block = AveragedEulerBlock(width=5, hidden=7, kernel_size=3, power_grid=16).double()
    block.refresh_nu(200)  # converged vectors
    vectors = block.power_vectors.clone()
    value = block._estimate_nu(0)
    (grad,) = torch.autograd.grad(value, block.weight)
    # reference: the symbol by FFT, the same vectors, autograd through the FFT
    weight = block.weight.detach().clone().requires_grad_(True)
    symbol = torch.fft.rfft2(weight, s=(16, 16)).permute(2, 3, 0, 1)
    v = torch.view_as_complex(vectors.contiguous())
    ref = (
        block.nu_factor
        * (torch.linalg.vector_norm(symbol @ v.unsqueeze(-1), dim=(-2, -1)) ** 2).max()
    )
    (ref_grad,) = torch.autograd.grad(ref, weight)
    assert float(value.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)
    svd_max = torch.linalg.svdvals(symbol.detach()).max() ** 2
    assert float(value.detach()) / block.nu_factor == pytest.approx(float(svd_max), rel=1e-8)


@pytest.mark.parametrize("n_blocks", [1, 3])
def test_forward_equals_the_explicit_lift_blocks_projection(n_blocks, large_weights):
    model = large_weights(_small(in_channels=2, n_blocks=n_blocks)).double().eval()
    x = torch.randn(3, 2, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        z = torch.cat([x, torch.zeros(3, model.blocks[0].width - 2, 9, 7, dtype=x.dtype)], 1)
        assert torch.equal(model.network.lift(x), z)
        sigma = torch.full((3,), 0.1, dtype=x.dtype)
        unfused = z
        for block in model.blocks:  # full width in and out
            z = block(z, sigma)
            # the optimised step is the Euler step x + h F(x) of its field
            unfused = unfused + block.step_size(x.dtype) * block.field(unfused, sigma)
        assert torch.allclose(model(x, 0.1), z[:, :2], rtol=0, atol=1e-12)
        assert torch.allclose(model(x, 0.1), model.network.project(unfused), rtol=0, atol=1e-12)


def test_calibrate_certifies_the_target_even_with_a_bad_estimate(large_weights):
    model = large_weights(_small()).double().eval()
    model.step_sizes()  # estimate nu
    with torch.no_grad():
        for block in model.blocks:
            block.nu.mul_(0.2)  # pretend the power iteration lagged badly
    assert certify(model).margin < 0
    model.calibrate()
    cert = certify(model)
    assert cert.margin > 0 and cert.alpha <= model.alpha


def test_shapes_dtypes_and_no_in_place_change():
    model = _small(in_channels=3).eval()
    x = torch.rand(2, 3, 9, 7)
    x0 = x.clone()
    with torch.no_grad():
        out = model(x, 0.1)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    torch.testing.assert_close(x, x0, rtol=0, atol=0)
    assert model.double()(x.double(), 0.1).dtype == torch.float64


def test_sigma_formats(large_weights):
    model = large_weights(_small()).double().eval()
    x = torch.rand(3, 1, 7, 5, dtype=torch.float64)
    sig = torch.tensor([0.0, 0.1, 0.4], dtype=torch.float64)
    with torch.no_grad():
        batch = model(x, sig)
        for i in range(3):
            one = model(x[i : i + 1], float(sig[i]))
            torch.testing.assert_close(batch[i : i + 1], one)
        torch.testing.assert_close(model(x, 0.1), model(x, torch.tensor(0.1)))
        torch.testing.assert_close(model(x, 0.1), model(x, torch.tensor([0.1])))
        torch.testing.assert_close(model(x, 0.1), model(x, torch.full((3, 1, 1, 1), 0.1)))
        assert not torch.allclose(model(x, 0.0), model(x, 0.5))  # sigma is used
    plain = _small(sigma_conditioning=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x.float()), plain(x.float(), 0.7))


def test_bad_inputs():
    model = _small(in_channels=1).eval()
    x = torch.rand(2, 1, 9, 7)
    with pytest.raises(ValueError, match="1 channel"):
        model(torch.rand(2, 3, 9, 7), 0.1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.rand(1, 9, 7), 0.1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(torch.full_like(x, float("nan")), 0.1)
    with pytest.raises(ValueError, match="non-negative"):
        model(x, -0.1)
    with pytest.raises(ValueError, match="non-negative"):
        model(x, torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="sigma is required"):
        model(x)
    with pytest.raises(ValueError, match="dtype"):
        model(x.double(), 0.1)
    with pytest.raises(ValueError):
        model(x, torch.ones(3))  # one sigma per image, but three of them for two images
    with pytest.raises(ValueError, match="width must be >= in_channels"):
        EulerDenoiser(in_channels=4, width=3)
    with pytest.raises(ValueError, match="kernel_size"):
        EulerDenoiser(kernel_size=4)
    with pytest.raises(ValueError, match="alpha"):
        EulerDenoiser(alpha=1.5)
    with pytest.raises(ValueError, match="activation"):
        EulerDenoiser(activation="tanh")
    with pytest.raises(ValueError, match="negative_slope"):
        EulerDenoiser(activation="leaky_relu", negative_slope=2.0)


def test_save_and_load_round_trip(tmp_path, large_weights):
    model = large_weights(_small(width=4, hidden=6)).eval()
    x = torch.rand(2, 1, 9, 7)
    with torch.no_grad():
        expected = model(x, 0.2)
    model.save(tmp_path / "d.pt", note="test")
    same = _small(width=4, hidden=6, pretrained=tmp_path / "d.pt")
    built = EulerDenoiser.from_pretrained(str(tmp_path / "d.pt"))
    for loaded in (same, built):
        assert not loaded.training
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, 0.2), expected, rtol=0, atol=0)
        assert certify(loaded).blocks == certify(model).blocks  # nu came with the weights


def test_corrupt_foreign_and_mismatched_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable weights file"):
        _small(pretrained=bad)
    foreign = tmp_path / "dncnn.pt"
    save_dncnn(dinv.models.DnCNN(1, 1, depth=3, pretrained=None), foreign, {"depth": 3})
    with pytest.raises(ValueError, match="kind 'dncnn', not 'euler_denoiser'"):
        _small(pretrained=foreign)
    _small(width=4, hidden=6).save(tmp_path / "d.pt")
    with pytest.raises(ValueError, match="different architecture.*width"):
        _small(width=5, hidden=6, pretrained=tmp_path / "d.pt")
    card = json.loads((tmp_path / "d.json").read_text())
    card["config"]["hidden"] = 8  # the config no longer matches the weights
    (tmp_path / "d.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="different architecture"):
        EulerDenoiser.from_pretrained(tmp_path / "d.pt")
    with pytest.raises(ValueError, match="weights file"):
        _small(pretrained=tmp_path / "missing.pt")


def test_files_of_format_version_0_still_load(tmp_path):
    # The single-file checkpoint EulerDenoiser.save wrote before deepinv_dynnets.pretrained.
    model = _small(width=4, hidden=6).eval()
    x = torch.rand(1, 1, 9, 7)
    with torch.no_grad():
        expected = model(x, 0.1)  # estimates nu, which the file then holds
    legacy = {
        k.replace("network.steps.", "blocks.").replace("fields.0.", ""): v
        for k, v in model.state_dict().items()
    }
    torch.save(
        {
            "format": "deepinv_dynnets.EulerDenoiser",
            "version": 1,
            "config": model.config,
            "state_dict": legacy,
            "metadata": {},
        },
        tmp_path / "old.pt",
    )
    loaded = EulerDenoiser.from_pretrained(tmp_path / "old.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x, 0.1), expected)


SHIPPED = [(c, a) for c, by_alpha in PRETRAINED["default"].items() for a in by_alpha]
EVERY_SHIPPED = [
    (name, c, a)
    for name, files in PRETRAINED.items()
    for c, by_alpha in files.items()
    for a in by_alpha
]


@pytest.mark.parametrize(("name", "channels", "target"), EVERY_SHIPPED)
def test_shipped_weights_are_certified_and_averaged(name, channels, target):
    model = EulerDenoiser(in_channels=channels, alpha=target, pretrained=name).double()
    cert = certify(model)
    assert cert.lipschitz <= 1 and cert.alpha is not None and cert.alpha <= model.alpha
    assert cert.margin > 0
    alpha = cert.alpha
    torch.manual_seed(1)
    x = torch.rand(8, channels, 16, 16, dtype=torch.float64)
    y = torch.cat([x[:4] + 0.02 * torch.randn_like(x[:4]), torch.rand_like(x[4:])])
    for sigma in (5 / 255, 25 / 255, 50 / 255):
        with torch.no_grad():
            dx, dy = model(x, sigma), model(y, sigma)
        dist = (x - y).flatten(1).norm(dim=1)
        assert bool(((dx - dy).flatten(1).norm(dim=1) <= dist * (1 + 1e-12)).all())
        tx, ty = (dx - (1 - alpha) * x) / alpha, (dy - (1 - alpha) * y) / alpha
        assert bool(((tx - ty).flatten(1).norm(dim=1) <= dist * (1 + 1e-10)).all())


def test_shipped_weights_errors():
    assert sorted(SHIPPED) == [(1, 0.5), (1, 0.95), (3, 0.5), (3, 0.95)]
    with pytest.raises(ValueError, match="for in_channels=2, alpha=0.5: shipped are"):
        EulerDenoiser(in_channels=2, pretrained="default")
    with pytest.raises(ValueError, match="for in_channels=3, alpha=0.9: shipped are"):
        EulerDenoiser(in_channels=3, alpha=0.9, pretrained="default")
    assert EulerDenoiser(in_channels=1, alpha=0.95, pretrained="default").alpha == 0.95
    model = EulerDenoiser(in_channels=1, pretrained="default")
    with pytest.raises(ValueError, match="1 channel"):
        model(torch.rand(1, 3, 8, 8), 0.1)
    with pytest.raises(ValueError, match="different architecture"):
        EulerDenoiser(in_channels=1, width=32, pretrained="default")


def test_device_argument(device):
    model = _small(device=device).eval()
    x = torch.rand(1, 1, 5, 5, device=device)
    assert model(x, 0.1).device == x.device


def test_pnp_pgd_drop_in():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 11, 9)
    physics = dinv.physics.BlurFFT(
        img_size=(1, 11, 9),
        filter=dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0)),
        noise_model=dinv.physics.GaussianNoise(0.02),
    )
    y = physics(x)
    denoiser = _small().eval()
    model = dinv.optim.PGD(
        data_fidelity=dinv.optim.data_fidelity.L2(),
        prior=dinv.optim.PnP(denoiser),
        stepsize=1.0,
        sigma_denoiser=0.05,
        max_iter=5,
    )
    with torch.no_grad():
        x_hat, metrics = model(y, physics, x_gt=x, compute_metrics=True)
    assert x_hat.shape == x.shape and bool(torch.isfinite(x_hat).all())
    assert len(metrics["psnr"][0]) >= 5
    # an averaged denoiser after an averaged gradient step (stepsize 1 < 2 / ||A||^2):
    # Krasnosel'skii-Mann, the fixed-point residual does not increase
    residual = torch.tensor(metrics["residual"][0][1:])
    assert bool((residual[1:] <= residual[:-1] * (1 + 1e-4)).all())


@pytest.mark.parametrize("random", [True, False])
def test_equivariant_wrapper_drop_in(random):
    denoiser = dinv.models.EquivariantDenoiser(_small().eval(), random=random)
    x = torch.rand(2, 1, 7, 7)
    with torch.no_grad():
        assert denoiser(x, 0.1).shape == x.shape


class _Images(Dataset):
    def __init__(self):
        self.x = torch.rand(4, 1, 9, 7, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


def test_deepinv_trainer_runs_one_epoch(tmp_path):
    denoiser = _small()
    before = denoiser.blocks[0].weight.detach().clone()
    model = dinv.models.ArtifactRemoval(denoiser, mode="direct")
    trainer = dinv.Trainer(
        model=model,
        physics=dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        train_dataloader=DataLoader(_Images(), batch_size=2),
        epochs=1,
        online_measurements=True,
        save_path=None,
        plot_images=False,
        verbose=False,
        show_progress_bar=False,
        device="cpu",
        non_blocking_transfers=False,
    )
    trainer.train()
    assert not torch.equal(denoiser.blocks[0].weight, before)
    denoiser.eval()
    cert = certify(denoiser)
    assert cert.lipschitz == 1.0 and cert.alpha <= denoiser.alpha


def test_deepinv_test_evaluates_the_denoiser():
    model = dinv.models.ArtifactRemoval(_small().eval(), mode="direct")
    results = dinv.test(
        model,
        DataLoader(_Images(), batch_size=2),
        dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)),
        metrics=dinv.metric.PSNR(),
        online_measurements=True,
        verbose=False,
        show_progress_bar=False,
    )
    assert any("PSNR" in key for key in results)
    assert all(torch.isfinite(torch.tensor(float(v))) for v in results.values())
