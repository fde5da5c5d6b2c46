"""Certificates: the certified constants bound what the network actually does."""

import math

import deepinv as dinv
import pytest
import torch
from torch import nn

from deepinv_dynnets.lipschitz.averagedness import compose_averaged
from deepinv_dynnets.lipschitz.certificates import Certificate, certify
from deepinv_dynnets.lipschitz.operator_norms import linear_norm_bound
from deepinv_dynnets.models import EulerDenoiser


def _model(large_weights, theta=3.0, **kwargs):
    config = {"in_channels": 1, "width": 4, "hidden": 6, "n_blocks": 3}
    config.update(kwargs)
    return large_weights(EulerDenoiser(**config), theta).double().eval()


def test_certificate_of_an_euler_denoiser(large_weights):
    model = _model(large_weights)
    cert = certify(model)
    assert cert.certified and cert.lipschitz == 1.0
    assert cert.alpha_target == 0.5 and 0 < cert.alpha <= 0.5
    assert len(cert.blocks) == 3 and cert.method == "fourier"
    for row, block in zip(cert.blocks, model.blocks, strict=True):
        assert set(row) == {"sqnorm", "h", "alpha", "alpha_target", "margin", "lipschitz"}
        assert row["alpha"] == pytest.approx(row["h"] * row["sqnorm"] / 2)
        assert row["margin"] == pytest.approx(2 * row["alpha_target"] - row["h"] * row["sqnorm"])
        assert row["margin"] > 0 and row["alpha_target"] == block.alpha
    assert cert.alpha == pytest.approx(compose_averaged(*(r["alpha"] for r in cert.blocks)))
    assert cert.margin == min(r["margin"] for r in cert.blocks)
    gram = certify(model, "gram", n_iter=4)
    assert gram.alpha == pytest.approx(cert.alpha, rel=0.1)
    text = str(cert)
    assert "Lipschitz <= 1" in text and "target 0.5" in text and len(text.splitlines()) == 7


@pytest.mark.parametrize("sigma", [0.0, 0.2])
def test_certified_lipschitz_dominates_the_jacobian_norm(sigma, jacobian, large_weights):
    model = _model(large_weights)
    cert = certify(model)
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64)
    J = jacobian(lambda z: model(z, sigma), x)
    assert float(torch.linalg.matrix_norm(J, ord=2)) <= cert.lipschitz * (1 + 1e-10)
    # the averaged form: J = (1 - alpha) I + alpha R with ||R|| <= 1
    R = (J - (1 - cert.alpha) * torch.eye(J.shape[0], dtype=J.dtype)) / cert.alpha
    assert float(torch.linalg.matrix_norm(R, ord=2)) <= 1 + 1e-10
    # deepinv's own estimate (power iteration on the Jacobian) agrees
    xb = torch.rand(3, 1, 9, 7, dtype=torch.float64, requires_grad=True)
    jsn = dinv.loss.JacobianSpectralNorm(max_iter=30, tol=1e-6)
    assert float(jsn(model(xb, sigma), xb).detach()) <= cert.lipschitz * (1 + 1e-6)


def test_steps_beyond_the_limit_give_a_lipschitz_bound_only(jacobian, large_weights):
    model = _model(large_weights, theta=10.0, n_blocks=2)
    model.step_sizes()  # estimate nu for the current weights
    with torch.no_grad():
        model.blocks[0].nu.mul_(0.1)  # block 0 now steps ~10x too far
    cert = certify(model)
    assert cert.alpha is None and cert.lipschitz > 1 and "h * ||A||^2 > 2" in cert.reason
    row = cert.blocks[0]
    assert row["lipschitz"] == pytest.approx(row["h"] * row["sqnorm"] - 1)
    assert cert.lipschitz == pytest.approx(math.prod(r["lipschitz"] for r in cert.blocks))
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64)
    J = jacobian(lambda z: model(z, 0.1), x)
    assert float(torch.linalg.matrix_norm(J, ord=2)) <= cert.lipschitz * (1 + 1e-10)
    assert "not certified" in str(cert)


def test_unknown_modules_are_not_certified():
    cert = certify(dinv.models.DnCNN(1, 1, depth=3, pretrained=None))
    assert not cert.certified and cert.lipschitz == math.inf and cert.alpha is None
    assert cert.reason.startswith("not certified")
    assert "not certified" in str(cert)
    assert not certify(nn.Sequential(nn.Linear(3, 3), nn.ReLU())).certified
    assert not certify(nn.Conv2d(2, 2, 3, stride=2)).certified


def test_single_layers_get_a_norm_bound():
    lin = nn.Linear(5, 3)
    assert certify(lin).lipschitz == linear_norm_bound(lin.weight)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(64, 2, 9, 7, dtype=torch.float64)
    y = torch.randn(64, 2, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        ratio = (conv(x) - conv(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    cert = certify(conv)
    assert cert.alpha is None and float(ratio.max()) <= cert.lipschitz


def test_certificate_dataclass_and_bad_input():
    empty = Certificate(lipschitz=1.0, alpha=0.5)
    assert empty.certified and "alpha <= 0.5" in str(empty)
    with pytest.raises(ValueError, match="nn.Module"):
        certify(lambda x: x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_weights_are_certified_as_stored(dtype, large_weights):
    # The certificate is about the weights the network holds: a low-precision copy is
    # certified exactly as a float64 network with those (rounded) weights.
    model = _model(large_weights).to(dtype)
    cert = certify(model)
    exact = certify(model.double())
    assert cert.alpha is not None and cert.alpha == pytest.approx(exact.alpha, rel=1e-12)
    assert [r["sqnorm"] for r in cert.blocks] == pytest.approx(
        [r["sqnorm"] for r in exact.blocks], rel=1e-12
    )
