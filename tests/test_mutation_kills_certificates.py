"""certify()'s numbers, checked against values computed by hand on small known operators.

Written for the mutation testing of ``lipschitz/certificates.py`` (see the guarantees
page): each test pins a part of the certificate that the earlier tests checked only
loosely (a bound with slack, a verdict without its constants) or not at all (the cache of
norm bounds, the boundaries of the conditions, the printed table). The layers are dense
matrices, whose certified :math:`\\|A\\|^2` is the float64 singular value squared times
the round-off margin.
"""

import math

import pytest
import torch
from torch import nn

from deepinv_dynnets.lipschitz import certificates
from deepinv_dynnets.lipschitz.certificates import Certificate, certify
from deepinv_dynnets.lipschitz.operator_norms import (
    ROUNDOFF_MARGIN,
    conv2d_norm_bound,
    linear_norm_bound,
)


class Blocks(nn.Module):
    """A network described by its averaged layers only (what certify() reads)."""

    def __init__(self, layers, alpha=None):
        super().__init__()
        self.layers = layers
        if alpha is not None:
            self.alpha = alpha

    def averaged_blocks(self):
        return [dict(layer) for layer in self.layers]


class Relaxed(nn.Module):
    def __init__(self, inner, lam):
        super().__init__()
        self.inner, self.lam = inner, lam

    def averaged_relaxation(self):
        return self.inner, self.lam


class Tiled(nn.Module):
    def __init__(self, inner, tile):
        super().__init__()
        self.inner, self.tile = inner, tile

    def block_diagonal_of(self):
        return self.inner, self.tile


def _diag(*values: float) -> torch.Tensor:
    return torch.diag(torch.tensor(values, dtype=torch.float64))


def _sqnorm(weight: torch.Tensor) -> float:
    return linear_norm_bound(weight) ** 2


def _step_for(weight: torch.Tensor, product: float) -> float:
    """A step h with h * (certified ||A||^2) == product exactly in float64."""
    beta = _sqnorm(weight)
    h = product / beta
    while h * beta != product:
        h = math.nextafter(h, math.inf if h * beta < product else -math.inf)
    return h


def test_layer_rows_are_the_formulas_of_the_module():
    a, b = _diag(3.0, 1.0), _diag(0.5, 2.0)  # ||A||^2 = 9 and 4
    model = Blocks([{"weight": a, "h": 0.1, "alpha": 0.5}, {"weight": b, "h": 0.2, "alpha": 0.42}])
    model.alpha = 0.75
    cert = certify(model)
    hb = (0.1 * _sqnorm(a), 0.2 * _sqnorm(b))
    assert _sqnorm(a) == pytest.approx(9 * (1 + ROUNDOFF_MARGIN) ** 2, rel=1e-12)
    for row, w, h, target, prod in zip(
        cert.blocks, (a, b), (0.1, 0.2), (0.5, 0.42), hb, strict=True
    ):
        assert row == {
            "sqnorm": _sqnorm(w),
            "h": h,
            "alpha": prod / 2,
            "alpha_target": target,
            "margin": 2 * target - prod,
            "lipschitz": 1.0,
        }
    ca, cb = hb[0] / 2, hb[1] / 2
    assert cert.alpha == pytest.approx((ca + cb - 2 * ca * cb) / (1 - ca * cb), rel=1e-12)
    assert cert.lipschitz == 1.0 and cert.reason is None and cert.method == "fourier"
    assert cert.margin == pytest.approx(min(1 - hb[0], 0.84 - hb[1]), rel=1e-12)
    assert cert.margin == pytest.approx(0.84 - 0.8 * (1 + ROUNDOFF_MARGIN) ** 2, rel=1e-12)
    assert cert.alpha_target == 0.75 and isinstance(cert.alpha_target, float)
    assert certify(Blocks(model.layers)).alpha_target is None


def test_steps_beyond_two_give_the_product_of_the_layer_lipschitz_bounds():
    a, b = _diag(1.0, 0.5), _diag(2.0)
    h_a, h_b = _step_for(a, 2.75), _step_for(b, 3.0)  # Lip 1.75 and 2
    cert = certify(
        Blocks([{"weight": a, "h": h_a, "alpha": 0.5}, {"weight": b, "h": h_b, "alpha": 0.5}])
    )
    assert [r["lipschitz"] for r in cert.blocks] == [1.75, 2.0]
    assert cert.lipschitz == 3.5 and cert.alpha is None
    assert cert.reason == "some layer has h * ||A||^2 > 2: Lipschitz bound only"
    assert cert.margin == 1 - 3.0 and cert.certified


def test_a_step_of_exactly_two_is_non_expansive_and_averaged_with_constant_one():
    a = _diag(2.0, 1.0)
    cert = certify(Blocks([{"weight": a, "h": _step_for(a, 2.0), "alpha": 1.0}]))
    assert cert.blocks[0]["alpha"] == 1.0 and cert.blocks[0]["margin"] == 0.0
    assert cert.alpha == 1.0 and cert.lipschitz == 1.0 and cert.reason is None


def test_no_layers_is_the_identity_with_no_constant():
    cert = certify(Blocks([]))
    assert cert.lipschitz == 1.0 and cert.alpha is None and cert.margin is None
    assert cert.blocks == [] and cert.reason is None


def test_relaxation_constants_and_their_boundaries():
    a = _diag(2.0, 1.0)
    half = Blocks([{"weight": a, "h": _step_for(a, 1.0), "alpha": 0.5}], alpha=0.5)
    assert certify(half).alpha == 0.5
    # lam * alpha = 1 exactly: still averaged (constant 1), hence 1-Lipschitz
    at_one = certify(Relaxed(half, 2.0))
    assert at_one.alpha == 1.0 and at_one.lipschitz == 1.0 and at_one.alpha_target == 1.0
    assert at_one.reason == "relaxation (1 - 2) I + 2 D of: certified"
    inside = certify(Relaxed(half, 1.5))
    assert inside.alpha == 0.75 and inside.lipschitz == 1.0 and inside.alpha_target == 0.75
    assert inside.blocks == certify(half).blocks
    # the method and its options reach the relaxed map's norm bounds
    kernel = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    conv = Blocks([{"weight": kernel, "h": 0.01, "alpha": 0.5}])
    gram = certify(Relaxed(conv, 1.5), "gram", n_iter=2)
    assert gram.method == "gram"
    assert gram.blocks[0]["sqnorm"] == conv2d_norm_bound(kernel, "gram", n_iter=2) ** 2
    # beyond: no constant, Lip <= |1 - lam| + lam Lip(D)
    beyond = certify(Relaxed(half, 2.5))
    assert beyond.alpha is None and beyond.alpha_target is None
    assert beyond.lipschitz == 1.5 + 2.5 * 1.0
    # a relaxation of a map with Lipschitz bound 2 and no constant
    b = _diag(2.0)
    loose = Blocks([{"weight": b, "h": _step_for(b, 3.0), "alpha": 0.5}])
    assert certify(Relaxed(loose, 0.5)).lipschitz == 0.5 + 0.5 * 2.0
    assert certify(Relaxed(loose, 0.5)).alpha is None
    assert "h * ||A||^2 > 2" in certify(Relaxed(loose, 0.5)).reason


def test_tiles_keep_the_constants_and_circulant_needs_a_full_tile():
    kernel = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    h = 1.0 / conv2d_norm_bound(kernel) ** 2
    inner = Blocks([{"weight": kernel, "h": h, "alpha": 0.5}], alpha=0.5)
    tiled = certify(Tiled(inner, (8, 6)))
    assert tiled.alpha == certify(inner).alpha and tiled.blocks == certify(inner).blocks
    assert tiled.reason == "non-overlapping 8x6 tiles (block-diagonal) of: Blocks, certified"
    for size in ((8, 6), (9, 7), 8):
        if size == 8:
            with pytest.raises(ValueError, match=r"input_size \(8, 8\) .* tile size \(8, 9\)"):
                certify(Tiled(inner, (8, 9)), "circulant", input_size=size)
            continue
        cert = certify(Tiled(inner, (8, 6)), "circulant", input_size=size)
        expected = conv2d_norm_bound(kernel, "circulant", input_size=size) ** 2
        assert cert.blocks[0]["sqnorm"] == expected
    for size in ((7, 6), (8, 5), (7, 9), (9, 5)):
        with pytest.raises(ValueError, match="must be at least the tile size"):
            certify(Tiled(inner, (8, 6)), "circulant", input_size=size)
    # without an input_size circulant is refused by the norm bound itself, not here
    with pytest.raises(ValueError, match="method='circulant' needs input_size"):
        certify(Tiled(inner, (8, 6)), "circulant")
    with pytest.raises(ValueError, match="input_size must be >= 1, got 0"):
        certify(Tiled(inner, (8, 6)), "circulant", input_size=0)
    one = certify(Tiled(inner, (1, 1)), "circulant", input_size=1)
    assert one.blocks[0]["sqnorm"] == conv2d_norm_bound(kernel, "circulant", input_size=1) ** 2
    loose = Blocks([{"weight": _diag(2.0), "h": 1.0, "alpha": 0.5}])
    assert certify(Tiled(loose, (4, 4))).reason.endswith(
        "of: some layer has h * ||A||^2 > 2: Lipschitz bound only"
    )


def test_cached_bounds_are_keyed_by_everything_the_bound_depends_on():
    certificates._BOUND_CACHE.clear()
    kernel = torch.randn(2, 3, 3, 3, dtype=torch.float64)

    def beta(weight, method="fourier", **kwargs):
        model = Blocks([{"weight": weight, "h": 0.01, "alpha": 0.5}])
        return certify(model, method, **kwargs).blocks[0]["sqnorm"]

    for method, kwargs in (
        ("fourier", {}),
        ("gram", {}),
        ("gram", {"n_iter": 2}),
        ("fourier", {"n_freq": 40}),
        ("circulant", {"input_size": 5}),
        ("circulant", {"input_size": 9}),
    ):
        assert beta(kernel, method, **kwargs) == conv2d_norm_bound(kernel, method, **kwargs) ** 2
    single = kernel.to(torch.float32)
    assert beta(single) == conv2d_norm_bound(single) ** 2
    # the same bytes read as another shape, or as another dtype of the same size, are
    # other operators
    other = kernel.reshape(3, 2, 3, 3)
    assert beta(other) == conv2d_norm_bound(other) ** 2 != beta(kernel)
    integer = single.view(torch.int32)
    assert beta(integer) == conv2d_norm_bound(integer) ** 2 != beta(single)
    # a changed weight is a new key, a repeated one is served from the cache
    assert beta(2 * kernel) == pytest.approx(4 * beta(kernel), rel=1e-9)
    size = len(certificates._BOUND_CACHE)
    assert beta(kernel.clone()) == beta(kernel) and len(certificates._BOUND_CACHE) == size


def test_the_cache_is_bounded_and_forgets_the_oldest_bound(monkeypatch):
    monkeypatch.setattr(certificates, "_BOUND_CACHE", {})
    kernels = [torch.full((1, 1, 1, 1), float(i + 1)) for i in range(300)]
    for k in kernels:
        certify(Blocks([{"weight": k, "h": 1e-6, "alpha": 0.5}]))
    cache = certificates._BOUND_CACHE
    assert len(cache) == certificates._BOUND_CACHE_SIZE == 256
    assert sorted(cache.values()) == [conv2d_norm_bound(k) ** 2 for k in kernels[-256:]]


def test_refusals_and_reasons_name_the_type():
    with pytest.raises(ValueError, match="must be a torch.nn.Module, got function"):
        certify(lambda x: x)
    assert certify(nn.ReLU()).reason == (
        "not certified: ReLU exposes no averaged_blocks() and is not a single linear layer"
    )


def test_a_weight_of_another_dimension_is_refused():
    with pytest.raises(ValueError, match=r"weight of unsupported shape \(2, 2, 2\)"):
        certify(Blocks([{"weight": torch.ones(2, 2, 2), "h": 0.1, "alpha": 0.5}]))


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_single_convolutions_certified_exactly_where_the_bound_holds(padding_mode):
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode=padding_mode)
    cert = certify(conv)
    assert cert.lipschitz == conv2d_norm_bound(conv.weight) and cert.method == "fourier"
    assert (
        cert.reason == "a single linear layer: Lipschitz bound only (the bias does not change it)"
    )
    assert cert.alpha is None
    assert certify(conv, "gram", n_iter=3).lipschitz == conv2d_norm_bound(
        conv.weight, "gram", n_iter=3
    )
    lin = certify(nn.Linear(4, 3))
    assert lin.method == "svd" and lin.alpha is None and lin.reason == cert.reason
    refused = (
        nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(2, 3, 3, padding=1, padding_mode="replicate"),
        nn.Conv2d(2, 3, 3, stride=(1, 2)),
        nn.Conv2d(2, 3, 3, dilation=(2, 1)),
        nn.Conv2d(2, 4, 3, groups=2),
    )
    for layer in refused:
        assert not certify(layer).certified


def test_printed_certificate_is_the_table_of_its_fields():
    rows = [
        {
            "sqnorm": 9.0,
            "h": 0.1,
            "alpha": 0.45,
            "alpha_target": 0.5,
            "margin": 0.1,
            "lipschitz": 1.0,
        },
        {
            "sqnorm": 4.5,
            "h": 0.2,
            "alpha": 0.45,
            "alpha_target": 0.475,
            "margin": 0.05,
            "lipschitz": 1.0,
        },
    ]
    cert = Certificate(
        lipschitz=1.0,
        alpha=0.62,
        blocks=rows,
        method="gram",
        margin=0.05,
        alpha_target=0.7,
        reason="a reason",
    )
    assert str(cert) == "\n".join(
        [
            "Certificate (norm bounds: gram, round-off margin 1e-06)",
            "  a reason",
            "  Lipschitz <= 1    alpha <= 0.62 (target 0.7)",
            "  smallest margin 2*alpha_i - h_i*||A_i||^2 = 0.05",
            "         block  ||A||^2 <=           h     alpha_i    target_i      margin         Lip",
            "             0           9         0.1        0.45         0.5         0.1           1",
            "             1         4.5         0.2        0.45       0.475        0.05           1",
        ]
    )
    bare = Certificate(lipschitz=math.inf, alpha=None, roundoff=0.0)
    assert str(bare) == (
        "Certificate (norm bounds: none, round-off margin 0)\n  Lipschitz <= inf    alpha not certified"
    )
