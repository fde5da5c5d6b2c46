"""Shared fixtures: devices, fixed seeds and float64 helpers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow (a benchmark covers the same ground)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(params=_devices())
def device(request) -> torch.device:
    """CPU always; CUDA too when available."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 (seeds the global state third-party code may use)
    torch.manual_seed(0)


def jacobian64(f, x: torch.Tensor) -> torch.Tensor:
    """Dense Jacobian of ``f`` at one (unbatched) input ``x``, flattened, in float64.

    Returns a matrix of shape ``(f(x).numel(), x.numel())``.
    """
    x = x.detach().to(torch.float64)
    J = torch.autograd.functional.jacobian(
        lambda z: f(z.reshape(x.shape)).reshape(-1), x.reshape(-1)
    )
    return J


@pytest.fixture
def jacobian():
    """The :func:`jacobian64` helper."""
    return jacobian64


def randomize_denoiser(model, theta: float = 3.0):
    """Give an EulerDenoiser weights of std 1 (far larger than its initialisation) and step
    parameters ``theta`` near the averagedness limit, so that step control matters."""
    with torch.no_grad():
        for block in model.blocks:
            block.weight.normal_()
            block.bias.normal_()
            block.sigma_weight.normal_()
            block.theta.fill_(theta)
    return model


@pytest.fixture
def large_weights():
    """The :func:`randomize_denoiser` helper."""
    return randomize_denoiser
