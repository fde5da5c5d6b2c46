r"""Equal-compute ablation of certified averaged Euler denoisers (issue 14, item 3).

Trains one variant of the averaged Euler network

.. math::

    D(x) = L^\top\, T_n \circ \dots \circ T_1 (Lx), \qquad
    T_i(z) = Q_i^\top\big(w - h_i A_i^\top s_i(A_i w + b_i + \sigma c_i)\big),\ w = Q_i z,

(:math:`L` the zero lift, :math:`Q_i` the identity or the orthonormal Haar transform, so
each :math:`T_i` is :math:`h_i\|A_i\|^2/2`-averaged whatever :math:`s_i` with slopes in
:math:`[0, 1]`) for a fixed *training* CPU time (``--minutes`` of process CPU time, validation excluded) on random 40x40 BSD400 patches with
per-patch noise levels in :math:`[0, 55]/255`, validates on held-out training images
(centre crops), and at the end certifies it: each :math:`\nu_i` is raised to the certified
:math:`\|A_i\|^2` (:func:`deepinv_dynnets.lipschitz.conv2d_norm_bound`) where the running
estimate was below it, and the certified :math:`\alpha` is the composition of the
:math:`h_i\|A_i\|^2_{\mathrm{cert}}/2`. Validation and Set12 PSNRs of the calibrated
network are reported, with outputs clipped to :math:`[0, 1]`.

The step is :math:`h_i = 2\alpha_i\operatorname{sigmoid}(\theta_i)/\nu_i`,
:math:`\nu_i = \kappa\,\widehat{\|A_i\|^2}` with :math:`\kappa = 1.05` and the estimate one
power iteration per training step (circular convolution on a 32x32 grid, persistent
vector, differentiable in :math:`A_i` as in spectral normalisation).

Example (the command of one result file is stored in it)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/ablations/denoiser_ablation.py \
        --data ../shared/data/train/gray_bsd400 --val 16 --minutes 12 \
        --activation spline --out benchmarks/ablations/results/spline_w64_b8.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from deepinv_dynnets.dynamics.linear_spline import MonotoneLinearSpline
from deepinv_dynnets.dynamics.orthogonal_lifts import HaarAnalysis, HaarSynthesis
from deepinv_dynnets.lipschitz import ROUNDOFF_MARGIN, compose_averaged, conv2d_norm_bound

SAFETY = 1.05  # kappa
POWER_GRID = 32
VAL_SIGMAS = (15, 25, 50)


def block_alpha(alpha: float, n_blocks: int) -> float:
    """Largest a with compose_averaged(a, ..., a) <= alpha (bisection)."""
    lo, hi = 0.0, alpha
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if compose_averaged(*([mid] * n_blocks)) <= alpha else (lo, mid)
    return lo


class Block(nn.Module):
    """x -> x - h A^T s(Ax + b + sigma c) on a state of ``width`` channels."""

    def __init__(self, width, hidden, kernel, alpha, activation, level, spline_kwargs):
        super().__init__()
        conv = nn.Conv2d(width, hidden, kernel)
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.sigma_weight = nn.Parameter(torch.zeros(hidden))
        self.theta = nn.Parameter(torch.tensor(math.log(0.95 / 0.05)))
        self.act = MonotoneLinearSpline(hidden, **spline_kwargs) if activation == "spline" else None
        self.alpha, self.level, self.pad = alpha, level, kernel // 2
        self.register_buffer("vector", torch.randn(1, width, POWER_GRID, POWER_GRID))
        self.register_buffer("nu", torch.tensor(1.0))
        self.warm = False

    def _circ(self, v: Tensor, transpose: bool) -> Tensor:
        if transpose:
            v = F.pad(v, (self.pad,) * 4, mode="circular")
            return F.conv_transpose2d(v, self.weight.detach(), padding=2 * self.pad)
        return F.conv2d(F.pad(v, (self.pad,) * 4, mode="circular"), self.weight.detach())

    def estimate_nu(self, n_iter: int) -> Tensor:
        # Power iteration on A^T A (circular), then ||A v||^2 differentiable in A (v fixed).
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            v = self.vector
            for _ in range(n_iter):
                v = self._circ(self._circ(v, False), True)
                v = v / v.norm()
            self.vector.copy_(v)
        with torch.autocast("cpu", enabled=False):
            av = F.conv2d(F.pad(v, (self.pad,) * 4, mode="circular"), self.weight)
            return SAFETY * av.square().sum()

    def step(self) -> Tensor:
        if self.training:
            nu = self.estimate_nu(1 if self.warm else 20)
            self.warm = True
            self.nu.copy_(nu.detach())
        else:
            nu = self.nu
        return 2 * self.alpha * torch.sigmoid(self.theta) / nu

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        bias = self.bias.view(1, -1, 1, 1) + sigma.view(-1, 1, 1, 1) * self.sigma_weight.view(
            1, -1, 1, 1
        )
        z = F.conv2d(x, self.weight, padding=self.pad) + bias
        z = F.relu(z) if self.act is None else self.act(z, sigma)
        return x - F.conv_transpose2d(z, self.step() * self.weight, padding=self.pad)


class AveragedEulerNet(nn.Module):
    def __init__(
        self, channels, width, hidden, n_blocks, kernel, alpha, activation, levels, spline_kwargs
    ):
        super().__init__()
        if len(levels) != n_blocks:
            raise ValueError(f"levels must have n_blocks={n_blocks} entries, got {levels}")
        self.channels, self.width = channels, width
        a = block_alpha(alpha, n_blocks)
        self.blocks = nn.ModuleList(
            Block(width * 4**lv, hidden, kernel, a, activation, lv, spline_kwargs) for lv in levels
        )
        self.down, self.up = HaarAnalysis(), HaarSynthesis()

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        z = F.pad(x, (0, 0, 0, 0, 0, self.width - self.channels))  # zero lift L
        level = 0
        for block in self.blocks:
            while level < block.level:
                z, level = self.down(z), level + 1
            while level > block.level:
                z, level = self.up(z), level - 1
            z = block(z, sigma)
        while level > 0:
            z, level = self.up(z), level - 1
        return z[:, : self.channels]  # L^T

    @torch.no_grad()
    def calibrate(self) -> dict:
        """Raise nu_i to the certified ||A_i||^2 where needed; return the certificate."""
        raised, alphas = [], []
        for b in self.blocks:
            cert = conv2d_norm_bound(b.weight.detach().double()) ** 2
            raised.append(float(cert * (1 + ROUNDOFF_MARGIN) / float(b.nu)))
            b.nu.copy_(torch.clamp_min(b.nu, cert * (1 + 2 * ROUNDOFF_MARGIN)))
            h = 2 * b.alpha * float(torch.sigmoid(b.theta.double())) / float(b.nu)
            alphas.append(h * cert / 2)
        return {
            "certified_alpha": compose_averaged(*alphas),
            "block_alphas": alphas,
            "cert_over_running_nu": raised,
        }


def load_gray(path: Path) -> Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)


def sample_batch(images, batch, patch, gen) -> Tensor:
    out = torch.empty(batch, 1, patch, patch)
    idx = torch.randint(len(images), (batch,), generator=gen)
    for k, i in enumerate(idx.tolist()):
        img = images[i]
        r = int(torch.randint(img.shape[0] - patch + 1, (1,), generator=gen))
        c = int(torch.randint(img.shape[1] - patch + 1, (1,), generator=gen))
        p = img[r : r + patch, c : c + patch]
        p = torch.rot90(p, int(torch.randint(4, (1,), generator=gen)))
        out[k, 0] = p.flip(1) if int(torch.randint(2, (1,), generator=gen)) else p
    return out


def center_crop(img: Tensor, size: int) -> Tensor:
    h, w = img.shape
    size_h, size_w = min(size, h) // 2 * 2, min(size, w) // 2 * 2
    r, c = (h - size_h) // 2, (w - size_w) // 2
    return img[r : r + size_h, c : c + size_w]


@torch.no_grad()
def evaluate(model, images, sigmas=VAL_SIGMAS, seed=1234) -> dict:
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for s in sigmas:
        psnrs = []
        for img in images:
            x = img[None, None]
            y = x + (s / 255) * torch.randn(x.shape, generator=gen)
            d = model(y, torch.full((1,), s / 255)).clamp(0, 1)
            psnrs.append(float(-10 * torch.log10((d - x).square().mean())))
        out[str(s)] = float(np.mean(psnrs))
    model.train()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder of training images")
    p.add_argument(
        "--val",
        type=int,
        default=16,
        help="hold out the last VAL images of --data (name order) for validation",
    )
    p.add_argument("--val-crop", type=int, default=128, help="centre crop of validation images")
    p.add_argument("--test", type=Path, default=None, help="Set12 folder, evaluated at the end")
    p.add_argument("--minutes", type=float, default=12.0, help="training CPU time (process time)")
    p.add_argument(
        "--val-every", type=float, default=3.0, help="training CPU minutes between validations"
    )
    p.add_argument("--out", type=Path, required=True, help="result JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", type=Path, default=None, help="where to save the state_dict")
    p.add_argument("--activation", choices=("relu", "spline"), default="relu")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument(
        "--levels",
        default=None,
        help="comma-separated Haar level of each block (0 full, 1 half resolution)",
    )
    p.add_argument("--alpha", type=float, default=0.95)
    p.add_argument("--knots", type=int, default=21)
    p.add_argument("--knot-range", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--patch", type=int, default=40)
    p.add_argument("--sigma-max", type=float, default=55.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    files = sorted(f for f in args.data.iterdir() if f.suffix.lower() in (".png", ".jpg", ".bmp"))
    if not 0 < args.val < len(files):
        raise ValueError(f"--val must lie in (0, {len(files)}), got {args.val}")
    train_images = [load_gray(f) for f in files[: -args.val]]
    val_images = [center_crop(load_gray(f), args.val_crop) for f in files[-args.val :]]
    levels = [0] * args.blocks if args.levels is None else [int(v) for v in args.levels.split(",")]
    spline_kwargs = {"n_knots": args.knots, "knot_range": args.knot_range}
    model = AveragedEulerNet(
        1,
        args.width,
        args.hidden,
        args.blocks,
        args.kernel,
        args.alpha,
        args.activation,
        levels,
        spline_kwargs,
    )
    n_params = sum(q.numel() for q in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    budget = 60 * args.minutes
    record = {
        "command": "python " + " ".join(sys.argv),
        "settings": vars(args)
        | {
            "data": str(args.data),
            "out": str(args.out),
            "test": None if args.test is None else str(args.test),
            "levels": levels,
            "n_params": n_params,
            "torch_threads": torch.get_num_threads(),
            "train_images": len(train_images),
            "val_images": [f.name for f in files[-args.val :]],
        },
        "curve": [],
    }
    # The budget is CPU time of this process (training steps only): on a machine shared with
    # other jobs, wall time would reward whichever run met the least load.
    trained, step, next_val, losses = 0.0, 0, 60 * args.val_every, []
    wall_start = time.perf_counter()
    bar = tqdm(total=int(budget), unit="s", desc=args.out.stem)
    while trained < budget:
        # cosine decay of the learning rate over the training wall time, to lr / 100
        for group in optimizer.param_groups:
            group["lr"] = args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * trained / budget)))
        start = time.process_time()
        x = sample_batch(train_images, args.batch, args.patch, gen)
        sigma = torch.rand(args.batch, generator=gen) * args.sigma_max / 255
        y = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model(y, sigma)
        loss = F.mse_loss(out.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.process_time() - start
        trained += elapsed
        step += 1
        losses.append(float(loss))
        bar.update(int(trained) - bar.n)
        if trained >= next_val or trained >= budget:
            next_val += 60 * args.val_every
            psnr = evaluate(model, val_images)
            record["curve"].append(
                {
                    "train_s": round(trained, 1),
                    "step": step,
                    "loss": float(np.mean(losses[-50:])),
                    "val_psnr": psnr,
                }
            )
            bar.set_postfix(step=step, psnr25=f"{psnr['25']:.2f}")
            # the curve so far, so that a run stopped early still leaves its record
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".partial.json").write_text(json.dumps(record, indent=1))
    bar.close()
    model.eval()
    for b in model.blocks:  # the weights of the last step: nu from converged power iterations
        b.nu.copy_(b.estimate_nu(50).detach())
    record["uncalibrated_val_psnr"] = evaluate(model, val_images)
    record["certificate"] = model.calibrate()
    record["val_psnr"] = evaluate(model, val_images)
    record["steps"] = step
    record["train_s"] = round(trained, 1)
    record["s_per_step"] = trained / step
    record["wall_s"] = round(time.perf_counter() - wall_start, 1)
    if args.test is not None:
        test = [load_gray(f) for f in sorted(args.test.glob("*.png"))]
        record["set12_psnr"] = evaluate(model, test, seed=4321)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    if args.weights is not None:
        torch.save(model.state_dict(), args.weights)
    print(json.dumps({k: record[k] for k in ("steps", "val_psnr", "certificate")}, indent=1))


if __name__ == "__main__":
    main()
