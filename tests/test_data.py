"""Reading images at their real bit depth, crops, built-in images, blur kernels, PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from deepinv.loss.metric import PSNR
from PIL import Image

from deepinv_dynnets.data import (
    blur_kernel,
    builtin_image,
    center_crop,
    load_image,
    load_images,
)
from deepinv_dynnets.metrics import psnr

RAMP = np.linspace(0, 1, 6 * 5).reshape(6, 5)  # the same picture at every bit depth


def test_8_bit_grey(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.round(255 * RAMP).astype(np.uint8)).save(path)
    x = load_image(path)
    assert x.shape == (1, 6, 5) and x.dtype == torch.float32
    torch.testing.assert_close(
        x[0], torch.tensor(RAMP, dtype=torch.float32), atol=0.5 / 255, rtol=0
    )


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_grey_keeps_its_depth(tmp_path, suffix):
    # Read as all-white before: Pillow's conversion to 8 bits clips 16-bit values.
    path = tmp_path / f"a.{suffix}"
    Image.fromarray(np.round(65535 * RAMP).astype(np.uint16)).save(path)
    for channels in (1, 3):
        x = load_image(path, channels)
        assert x.shape == (channels, 6, 5)
        for c in range(channels):
            torch.testing.assert_close(
                x[c], torch.tensor(RAMP, dtype=torch.float32), atol=0.5 / 65535, rtol=0
            )
    # finer than 8 bits: two values 1/65535 apart stay apart
    Image.fromarray(np.array([[1000, 1001]], np.uint16)).save(path)
    x = load_image(path)
    assert x[0, 0, 1] - x[0, 0, 0] == pytest.approx(1 / 65535, rel=1e-3)


def test_float_tiff_in_unit_range_and_out_of_it(tmp_path):
    # Read as all-black before (float values clipped to 8 bits).
    path = tmp_path / "f.tif"
    Image.fromarray(RAMP.astype(np.float32)).save(path)
    x = load_image(path, channels=3)
    assert x.shape == (3, 6, 5)
    torch.testing.assert_close(x[1], torch.tensor(RAMP, dtype=torch.float32))
    Image.fromarray(255 * RAMP.astype(np.float32)).save(path)  # a 0-255 float image
    with pytest.raises(
        ValueError, match=r"floating-point image must have finite values in \[0, 1\]"
    ):
        load_image(path)
    Image.fromarray(np.array([[0.5, np.nan]], np.float32)).save(path)
    with pytest.raises(ValueError, match="finite"):
        load_image(path)


def test_32_bit_integer_beyond_16_bits_is_refused(tmp_path):
    path = tmp_path / "i.tif"
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(path)
    with pytest.raises(ValueError, match="not 16-bit"):
        load_image(path)


def test_palette_rgba_and_grey_to_rgb(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[2:, :, 2] = 200, 100, 50
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(
        tmp_path / "p.png"
    )
    x = load_image(tmp_path / "p.png", channels=3)
    torch.testing.assert_close(x, torch.tensor(rgb / 255, dtype=torch.float32).permute(2, 0, 1))
    rgba = np.dstack([rgb, np.full((4, 6), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", channels=3)  # alpha dropped, colours kept
    torch.testing.assert_close(x, torch.tensor(rgb / 255, dtype=torch.float32).permute(2, 0, 1))
    grey = np.arange(24, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(grey).save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png", channels=3)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.equal(x[0], torch.tensor(grey / 255, dtype=torch.float32))


def test_read_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="channels"):
        load_image(tmp_path / "bad.png", channels=2)
    with pytest.raises(ValueError, match="max_images"):
        load_images(tmp_path, max_images=0)


def test_center_crop():
    x = torch.arange(30.0).reshape(1, 5, 6)
    assert torch.equal(center_crop(x, 3), x[:, 1:4, 1:4])
    assert center_crop(x, None) is x
    for size in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="size must be a positive integer"):
            center_crop(x, size)
    with pytest.raises(ValueError, match="larger than the image"):
        center_crop(x, 6)


def test_builtin_images():
    grey, colour = builtin_image(1, 32), builtin_image(3)
    assert grey.shape == (1, 32, 32) and colour.shape == (3, 512, 512)
    assert 0 <= float(grey.min()) and float(colour.max()) <= 1


def test_blur_kernels(tmp_path):
    for spec in ("gaussian", "motion"):
        k = blur_kernel(spec)
        assert k.dim() == 4 and k.shape[:2] == (1, 1)
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-5) and float(k.min()) >= 0
    wide, narrow = blur_kernel("gaussian", blur_std=3.0), blur_kernel("gaussian", blur_std=1.0)
    assert wide.shape[-1] > narrow.shape[-1]
    np.save(tmp_path / "k.npy", np.ones((3, 2)))
    torch.testing.assert_close(blur_kernel(tmp_path / "k.npy"), torch.full((1, 1, 3, 2), 1 / 6))
    np.savez(tmp_path / "k.npz", a=np.ones((2, 2)), b=np.eye(3))
    assert blur_kernel(tmp_path / "k.npz").shape == (1, 1, 2, 2)
    assert blur_kernel(tmp_path / "k.npz", "b").shape == (1, 1, 3, 3)
    with pytest.raises(ValueError, match="has no array 'c'"):
        blur_kernel(tmp_path / "k.npz", "c")
    with pytest.raises(ValueError, match="'gaussian' or 'motion' or a .npy/.npz file"):
        blur_kernel("box")
    np.save(tmp_path / "z.npy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="positive sum"):
        blur_kernel(tmp_path / "z.npy")
    with pytest.raises(ValueError, match="blur_std"):
        blur_kernel("gaussian", blur_std=-1.0)


def test_psnr_and_deepinv_psnr():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(psnr(x + 0.01, x), torch.full((2,), 40.0), atol=1e-3)
    assert psnr(x[0], x[0]).item() == math.inf
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[:1])
    # deepinv's PSNR adds 1e-8 to the MSE: close to ours, but not to 1e-6 dB, and capped
    # at 80 dB, so the benchmarks keep ours (see deepinv_dynnets.metrics).
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 32, 32, generator=g, dtype=torch.float64)
    y = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    gap = (PSNR(max_pixel=1)(y, x) - psnr(y, x)).abs()
    assert float(gap.max()) < 1e-4 and float(gap.max()) > 1e-6
    assert float(PSNR(max_pixel=1)(x, x)[0]) == pytest.approx(80.0)
