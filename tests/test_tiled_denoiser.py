"""TiledDenoiser: non-overlapping tiles give the certified block-diagonal map (issue 17)."""

import math
import time

import deepinv as dinv
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from deepinv.distributed import DistributedContext, distribute

from deepinv_dynnets import EulerDenoiser, certify
from deepinv_dynnets.lipschitz import compose_averaged
from deepinv_dynnets.models.distributed_tiling import certify_distributed, certify_tiling
from deepinv_dynnets.models.tiled_denoiser import (
    AlternatingTiledDenoiser,
    TiledDenoiser,
    tile_partition,
)

SIGMA = 0.1
TILE = (8, 10)
OFFSET = (3, 5)


def _tiny(n_blocks=2, seed=0):
    torch.manual_seed(seed)
    return EulerDenoiser(width=4, hidden=4, n_blocks=n_blocks).double().eval()


def _manual_tiled(model, x, tile, offset, sigma=SIGMA):
    # Independent of tile_partition: pixel i belongs to tile floor((i - o) / t).
    out = torch.full_like(x, math.nan)
    h, w = x.shape[-2:]
    rows = [[i for i in range(h) if (i - offset[0]) // tile[0] == k] for k in range(-1, h)]
    cols = [[j for j in range(w) if (j - offset[1]) // tile[1] == k] for k in range(-1, w)]
    for r in filter(None, rows):
        for c in filter(None, cols):
            rs, cs = slice(r[0], r[-1] + 1), slice(c[0], c[-1] + 1)
            out[..., rs, cs] = model(x[..., rs, cs], sigma)
    return out


def _slack(T, x, y, alpha):
    """||x - y||^2 - (1-a)/a ||(I-T)x - (I-T)y||^2 - ||Tx - Ty||^2, per pair, relative."""
    tx, ty = T(x), T(y)
    d = (x - y).flatten(1)
    lhs = (tx - ty).flatten(1).pow(2).sum(1)
    res = ((x - tx) - (y - ty)).flatten(1).pow(2).sum(1)
    rhs = d.pow(2).sum(1) - (1 - alpha) / alpha * res
    return (rhs - lhs) / d.pow(2).sum(1)


# -- the map ---------------------------------------------------------------------------------
def test_partition_covers_every_pixel_once():
    for h, w, t, o in [(37, 31, (8, 10), (3, 5)), (5, 4, 3, (1, 0)), (1, 1, 4, 2), (16, 16, 8, 8)]:
        count = torch.zeros(h, w, dtype=torch.long)
        for r, c in tile_partition(h, w, t, o):
            count[r, c] += 1
        assert bool((count == 1).all()), (h, w, t, o)


@pytest.mark.parametrize("tile, offset", [(TILE, OFFSET), (8, (0, 0)), (16, (8, 8)), (40, 0)])
def test_tiled_equals_manual_block_diagonal_on_odd_sizes(tile, offset):
    model = _tiny()
    x = torch.rand(2, 1, 37, 31, dtype=torch.float64)
    tiled = TiledDenoiser(model, tile, offset)
    t = (tile, tile) if isinstance(tile, int) else tile
    o = (offset, offset) if isinstance(offset, int) else offset
    with torch.no_grad():
        expected = _manual_tiled(model, x, t, o)
        got = tiled(x, SIGMA)
    assert not bool(got.isnan().any())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_max_batch_changes_the_calls_not_the_map():
    model = _tiny()
    x = torch.rand(1, 1, 37, 31, dtype=torch.float64)
    with torch.no_grad():
        expected = TiledDenoiser(model, TILE, OFFSET)(x, SIGMA)
        for max_batch in (1, 3):
            got = TiledDenoiser(model, TILE, OFFSET, max_batch=max_batch)(x, SIGMA)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_tiled_differs_from_untiled_only_through_the_borders():
    # A tile as large as the image is the denoiser itself; a smaller one is a different map.
    model = _tiny()
    x = torch.rand(1, 1, 37, 31, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(TiledDenoiser(model, 64)(x, SIGMA), model(x, SIGMA))
        assert not torch.allclose(TiledDenoiser(model, 8)(x, SIGMA), model(x, SIGMA))


def test_per_image_sigma_is_repeated_per_tile():
    model = _tiny()
    x = torch.rand(2, 1, 19, 17, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.3], dtype=torch.float64)
    tiled = TiledDenoiser(model, 8)
    with torch.no_grad():
        got = tiled(x, sigma)
        for b in range(2):
            torch.testing.assert_close(got[b : b + 1], tiled(x[b : b + 1], float(sigma[b])))


def test_inputs_not_modified_and_gradients_flow():
    model = _tiny()
    x = torch.rand(1, 1, 13, 11, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.1], dtype=torch.float64)
    x0, s0 = x.detach().clone(), sigma.clone()
    out = TiledDenoiser(model, 5, 2)(x, sigma)
    out.sum().backward()
    assert torch.equal(x.detach(), x0) and torch.equal(sigma, s0)
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


class _Spy(torch.nn.Module):
    in_channels = 1

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, sigma=None):
        self.calls += 1
        return x


def test_bad_input_is_refused_before_any_work():
    spy = _Spy()
    with pytest.raises(ValueError, match="tile_size"):
        TiledDenoiser(spy, 0)
    with pytest.raises(ValueError, match="tile_size"):
        TiledDenoiser(spy, (8, -2))
    for bad in (2.5, "8", True, (8, 1.0)):
        with pytest.raises(TypeError, match="tile_size"):
            TiledDenoiser(spy, bad)
    with pytest.raises(ValueError, match="offset"):
        TiledDenoiser(spy, 8, (-1, 0))
    with pytest.raises(ValueError, match="tile_size"):
        TiledDenoiser(spy, (8, 8, 8))
    with pytest.raises(TypeError, match="denoiser"):
        TiledDenoiser(lambda x, s: x, 8)
    with pytest.raises(ValueError, match="max_batch"):
        TiledDenoiser(spy, 8, max_batch=0)
    with pytest.raises(TypeError, match="max_batch"):
        TiledDenoiser(spy, 8, max_batch=(2, 2))
    with pytest.raises(TypeError, match="ctx"):
        TiledDenoiser(spy, 8, ctx="gloo")
    tiled = TiledDenoiser(spy, 4)
    with pytest.raises(ValueError, match="channel"):
        tiled(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        tiled(torch.rand(8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        tiled(torch.rand(1, 1, 0, 8))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        tiled([[0.0]])
    with pytest.raises(ValueError, match="sigma"):
        tiled(torch.rand(2, 1, 8, 8), torch.rand(3))
    for bad in ([True, False], ["0.1", "0.2"], np.array([0.1 + 1j, 0.2])):
        with pytest.raises(ValueError, match="sigma must hold real numbers"):
            tiled(torch.rand(2, 1, 8, 8), bad)
    assert spy.calls == 0
    with pytest.raises(ValueError, match="offsets"):
        AlternatingTiledDenoiser(spy, 4, offsets=[(0, 0)])


# -- the certificate ----------------------------------------------------------------------------
def test_certificate_is_the_wrapped_denoisers():
    model = _tiny()
    base, tiled = certify(model), TiledDenoiser(model, TILE, OFFSET).certificate()
    assert tiled.alpha == base.alpha and tiled.lipschitz == base.lipschitz
    assert "non-overlapping 8x10 tiles" in tiled.reason
    assert TiledDenoiser(model, 8).block_diagonal_of() == (model, (8, 8))
    assert TiledDenoiser(model, 8).averaged_constant() == base.alpha
    uncertified = TiledDenoiser(dinv.models.DnCNN(1, 1, depth=2, pretrained=None), 8)
    assert uncertified.averaged_constant() is None
    # a circulant bound on an image at least as large as a tile holds on every tile
    circulant = TiledDenoiser(model, 8).certificate("circulant", input_size=(8, 9))
    assert circulant.alpha == certify(model, "circulant", input_size=(8, 9)).alpha
    with pytest.raises(ValueError, match="input_size"):
        TiledDenoiser(model, 8).certificate("circulant", input_size=(8, 7))


@pytest.mark.parametrize("scale", [1e-3, 0.1, 1.0])
def test_tiled_map_is_averaged_on_random_pairs(scale):
    model = _tiny()
    tiled = TiledDenoiser(model, TILE, OFFSET)
    alpha = tiled.averaged_constant()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 37, 31, dtype=torch.float64, generator=gen)
    y = x + scale * torch.randn(x.shape, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        slack = _slack(lambda v: tiled(v, SIGMA), x, y, alpha)
    assert bool((slack >= -1e-10).all()), slack.min()


@pytest.mark.parametrize(
    "kernel, method", [("random", "fourier"), ("random", "circulant"), ("center", "gram")]
)
def test_tiled_map_is_averaged_on_pairs_close_to_equality(kernel, method):
    # One Euler step with every ReLU active (large bias) is affine on each tile,
    # x - h A^T (A x + b), and with in_channels = width the lift is the identity: along the
    # top eigenvector of the tiled h A^T A (eigenvalue mu) the relative slack of the
    # inequality is mu (2 alpha - mu) / alpha, zero when mu reaches the certified h beta.
    # A kernel with only its centre tap has the same norm on every tile, which the Gram
    # bound certifies exactly: the pairs are at equality up to the round-off margin.
    model = EulerDenoiser(in_channels=4, width=4, hidden=4, n_blocks=1).double().eval()
    field = model.blocks[0].fields[0]
    with torch.no_grad():
        if kernel == "center":
            weight = torch.zeros_like(field.weight)
            weight[:, :, 1, 1] = torch.randn(4, 4, dtype=torch.float64)
            field.weight.copy_(weight)
        field.bias.fill_(100.0)
    model.sync()
    tiled = TiledDenoiser(model, TILE, OFFSET)
    # "circulant" on the tile size: the sharpest bound, for tiles up to that size
    options = {"input_size": TILE} if method == "circulant" else {}
    alpha = tiled.certificate(method, **options).alpha
    x0 = torch.rand(1, 4, 37, 31, dtype=torch.float64)
    d = torch.randn_like(x0)
    with torch.no_grad():
        fx0 = tiled(x0, SIGMA)
        for _ in range(100):  # power iteration on h A^T A v = v - (T(x0 + v) - T(x0))
            d = d - (tiled(x0 + d, SIGMA) - fx0)
            d = d / d.norm()
        eps = torch.tensor([1e-3, 1e-1, 1.0], dtype=torch.float64).view(-1, 1, 1, 1)
        pairs = (x0.expand(3, -1, -1, -1), x0 + eps * d)
        slack = _slack(lambda v: tiled(v, SIGMA), *pairs, alpha)
    assert bool((slack >= -1e-10).all()), slack
    if kernel == "center":
        assert bool((slack < 1e-4).all()), slack


def test_certify_tiling_says_which_deepinv_tilings_are_partitions():
    assert certify_tiling((1, 1, 64, 48), patch_size=16, overlap=0)
    assert certify_tiling((2, 3, 64, 48), patch_size=(32, 16), overlap=0)
    not_dividing = certify_tiling((1, 1, 48, 40), patch_size=16, overlap=0)
    assert not not_dividing and "2 windows" in not_dividing.reason
    halo = certify_tiling((1, 1, 64, 64), patch_size=32, overlap=4)
    assert not halo and halo.reason.startswith("not certified")
    with pytest.raises(ValueError, match="img_size"):
        certify_tiling((64, 64), patch_size=16)
    with pytest.raises(ValueError, match="overlap"):
        certify_tiling((1, 1, 64, 64), patch_size=16, overlap=-1)


def test_certify_distributed_certifies_only_exact_partitions():
    model = _tiny()
    alpha = certify(model).alpha
    with DistributedContext(device_mode="cpu") as ctx:
        exact = distribute(model, ctx, patch_size=16, overlap=0, tiling_dims=(-2, -1))
        halo = distribute(model, ctx, patch_size=16, overlap=4, tiling_dims=(-2, -1))
    cert = certify_distributed(exact, (1, 1, 64, 48))
    assert cert.alpha == alpha and "certified: 12 disjoint windows" in cert.reason
    for module, size in [(exact, (1, 1, 48, 40)), (halo, (1, 1, 64, 48))]:
        refused = certify_distributed(module, size)
        assert refused.alpha is None and not refused.certified
        assert refused.reason.startswith("not certified")
    with pytest.raises(TypeError, match="DistributedProcessing"):
        certify_distributed(model, (1, 1, 64, 48))
    with pytest.raises(ValueError, match="tiling_dims"):
        certify_tiling((1, 1, 64, 64), patch_size=16, tiling_dims=(1, 2))


def test_deepinv_distribute_with_a_certified_tiling_is_the_block_diagonal_map():
    model = _tiny()
    x = torch.rand(1, 1, 32, 48, dtype=torch.float64)
    assert certify_tiling(x.shape, patch_size=16, overlap=0)
    with DistributedContext(device_mode="cpu") as ctx, torch.no_grad():
        engine = distribute(
            model, ctx, patch_size=16, overlap=0, tiling_dims=(-2, -1), dtype=torch.float64
        )
        torch.testing.assert_close(engine(x, SIGMA), TiledDenoiser(model, 16)(x, SIGMA))


# -- alternating partitions ------------------------------------------------------------------------
def _box_blur(v):  # circular 3x3 mean: self-adjoint, ||A|| = 1
    return sum(torch.roll(v, (i, j), (-2, -1)) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 9


def test_two_alternating_pnp_steps_form_an_averaged_map():
    model = _tiny()
    alt = AlternatingTiledDenoiser(model, TILE)
    assert alt.tilings[1].offset == (4, 5)
    # not one fixed map: a certifier of fixed iteration maps must not take it for one
    assert not hasattr(alt, "block_diagonal_of") and certify(alt).alpha is None
    gen = torch.Generator().manual_seed(2)
    truth = torch.rand(1, 1, 37, 31, dtype=torch.float64, generator=gen)
    y = _box_blur(truth) + 0.05 * torch.randn(truth.shape, dtype=torch.float64, generator=gen)
    gamma = 1.5  # < 2/L with L = ||A||^2 = 1

    def pgd_step(v):  # x <- D(x - gamma A^T (A x - y)), with the partition of this call
        return alt(v - gamma * _box_blur(_box_blur(v) - y), SIGMA)

    def two_steps(v):
        alt.reset()
        out = pgd_step(pgd_step(v))
        assert alt.phase == 0
        return out

    step_alpha = compose_averaged(alt.averaged_constant(), gamma / 2)
    pair_alpha = alt.two_step_alpha(step_alpha)
    assert pair_alpha == pytest.approx(2 * step_alpha / (1 + step_alpha))
    x = torch.rand(8, 1, 37, 31, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        for scale in (1e-3, 0.3):
            other = x + scale * torch.randn(x.shape, dtype=torch.float64, generator=gen)
            slack = _slack(two_steps, x, other, pair_alpha)
            assert bool((slack >= -1e-10).all()), slack.min()
        alt.reset()
        first, second = alt(x, SIGMA), alt(x, SIGMA)
        assert torch.equal(first, alt.tilings[0](x, SIGMA))
        assert torch.equal(second, alt.tilings[1](x, SIGMA))


# -- two processes --------------------------------------------------------------------------------
def _distributed_worker(rank, world_size, folder):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size
    )
    try:
        with DistributedContext(device_mode="cpu") as ctx, torch.no_grad():
            model = _tiny()
            model.load_state_dict(torch.load(f"{folder}/model.pt"))
            x, y = torch.load(f"{folder}/pairs.pt")
            assert ctx.use_dist and ctx.world_size == world_size
            tiled = TiledDenoiser(model, TILE, OFFSET, ctx=ctx)
            result = (tiled(x, SIGMA), tiled(y, SIGMA))
            local_tiles = len(tiled._engines[x.shape].local_indices)
            torch.save((*result, local_tiles), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
def test_two_gloo_processes_give_the_certified_block_diagonal_map(tmp_path):
    model = _tiny()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 37, 31, dtype=torch.float64, generator=gen)
    y = x + 0.1 * torch.randn(x.shape, dtype=torch.float64, generator=gen)
    torch.save((x, y), tmp_path / "pairs.pt")
    # fork (where available) reuses the imported modules: no re-import of torch and deepinv
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    procs = mp.start_processes(
        _distributed_worker, args=(2, str(tmp_path)), nprocs=2, join=False, start_method=method
    )
    deadline = time.monotonic() + 120
    while not procs.join(timeout=1):
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.kill()
            pytest.fail("the two gloo processes did not finish within 120 s")
    (tx0, ty0, n0), (tx1, ty1, n1) = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    # the tiles were split between the ranks, and every rank holds the whole result
    assert n0 > 0 and n1 > 0 and n0 + n1 == len(tile_partition(37, 31, TILE, OFFSET))
    assert torch.equal(tx0, tx1) and torch.equal(ty0, ty1)
    with torch.no_grad():
        torch.testing.assert_close(tx0, _manual_tiled(model, x, TILE, OFFSET), rtol=0, atol=1e-12)
        torch.testing.assert_close(ty0, _manual_tiled(model, y, TILE, OFFSET), rtol=0, atol=1e-12)
    alpha = certify(model).alpha
    d2 = (x - y).flatten(1).pow(2).sum(1)
    res = ((x - tx0) - (y - ty0)).flatten(1).pow(2).sum(1)
    lhs = (tx0 - ty0).flatten(1).pow(2).sum(1)
    assert bool((lhs <= d2 - (1 - alpha) / alpha * res + 1e-10 * d2).all())


def test_pnp_certificate_certifies_only_a_partitioning_deepinv_tiling():
    # convergent_pnp's certificate says which deepinv.distributed tiling it certifies:
    # an exact partition keeps the Euler denoiser's constant, a halo is refused with why.
    from deepinv_dynnets import convergent_pnp

    model = EulerDenoiser(width=4, hidden=4, n_blocks=2)
    physics = dinv.physics.BlurFFT(
        (1, 32, 32), filter=dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0))
    )
    with DistributedContext(device_mode="cpu") as ctx:
        exact = distribute(model, ctx, patch_size=16, overlap=0, tiling_dims=(-2, -1))
        halo = distribute(model, ctx, patch_size=16, overlap=4, tiling_dims=(-2, -1))
        _, certified = convergent_pnp(physics, exact)
        _, refused = convergent_pnp(physics, halo)
    assert certified.guaranteed
    assert not refused.guaranteed
    assert "deepinv.distributed tiling" in str(refused) and "overlap 4" in str(refused)


def test_certify_reads_the_tiled_map_as_block_diagonal():
    # certify() of the wrapper (what pnp_certificate calls) gives the wrapped denoiser's
    # constants, says why, and refuses a circulant bound for images smaller than a tile.
    model = EulerDenoiser(width=4, hidden=4, n_blocks=2)
    tiled = TiledDenoiser(model, tile_size=TILE)
    cert, base = certify(tiled), certify(model)
    assert (cert.alpha, cert.lipschitz) == (base.alpha, base.lipschitz)
    assert "non-overlapping 8x10 tiles" in cert.reason
    with pytest.raises(ValueError, match="at least the tile size"):
        certify(tiled, "circulant", input_size=(4, 4))


def test_convergent_pnp_certifies_the_tiled_denoiser():
    from deepinv_dynnets import convergent_pnp

    tiled = TiledDenoiser(EulerDenoiser(width=4, hidden=4, n_blocks=2), tile_size=16)
    physics = dinv.physics.BlurFFT(
        (1, 32, 32), filter=dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0))
    )
    _, certificate = convergent_pnp(physics, tiled)
    assert certificate.guaranteed and "denoiser (TiledDenoiser) is" in str(certificate)
