"""Safeguarded Anderson acceleration of certified PnP (issue 15, item 1): it converges for
every algorithm, a bad setting is caught by the safeguard, and the monitor checks and
reports what the theorem promises."""

import math

import deepinv as dinv
import pytest
import torch

from deepinv_dynnets import EulerDenoiser, convergent_pnp
from deepinv_dynnets.pnp import ConvergenceMonitor, SafeguardedAnderson

SIZE = (1, 12, 12)
KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).view(1, 1, 3, 3) / 16


def _problem(large_weights, batch=2):
    physics = dinv.physics.BlurFFT(
        SIZE,
        filter=KERNEL,
        noise_model=dinv.physics.GaussianNoise(0.03, rng=torch.Generator().manual_seed(0)),
    )
    x = torch.rand(batch, *SIZE, generator=torch.Generator().manual_seed(1))
    model = EulerDenoiser(in_channels=1, width=4, hidden=6, n_blocks=3, alpha=0.5)
    return physics, physics(x), large_weights(model, theta=2.0).eval()


def _run(physics, y, denoiser, algorithm, acceleration, threshold=1e-6):
    model, cert = convergent_pnp(
        physics, denoiser, algorithm, acceleration=acceleration, max_iter=400, thres_conv=threshold
    )
    with torch.no_grad():
        x_hat = model(y, physics)
    return x_hat, model.monitor, cert


def _independent_check(monitor):
    # what the theorem promises, recomputed from the raw records: every accepted Anderson
    # step and every plain step leaves the residual non-increasing (plain ones up to round-off)
    r = torch.stack(monitor.residuals)
    accelerated = torch.stack(monitor.accelerated)
    norms = torch.stack(monitor.norms)
    assert bool((r[1:][accelerated[1:]] <= r[:-1][accelerated[1:]]).all())
    plain = ~accelerated[1:]
    slack = r[:-1] * 1e-3 + 100 * torch.finfo(torch.float32).eps * norms[1:]
    assert bool((r[1:][plain] <= (r[:-1] + slack)[plain]).all())


@pytest.mark.parametrize("algorithm", ["PGD", "HQS", "DRS", "ADMM"])
def test_accelerated_certified_runs_converge_faster_to_the_same_point(algorithm, large_weights):
    physics, y, denoiser = _problem(large_weights)
    x_plain, plain, cert = _run(physics, y, denoiser, algorithm, False)
    x_fast, fast, _ = _run(physics, y, denoiser, algorithm, None)  # the default when certified
    assert cert.guaranteed
    plain_report, report = plain.report(), fast.report()
    assert plain_report.ok and report.ok, str(report)
    assert report.accepted > 0 and plain_report.accepted == 0
    assert report.iterations < 0.7 * plain_report.iterations
    assert report.envelope_ratio is None  # the O(1/sqrt(k)) envelope is for plain runs
    _independent_check(fast)
    # both runs stop within 1e-6 relative residual of a fixed point of the same map
    gap = (x_fast - x_plain).flatten(1).norm(dim=1) / x_plain.flatten(1).norm(dim=1)
    assert float(gap.max()) < 1e-3


def test_a_bad_acceleration_setting_is_caught_by_the_safeguard(large_weights):
    physics, y, denoiser = _problem(large_weights)
    _, monitor, _ = _run(physics, y, denoiser, "PGD", SafeguardedAnderson(mixing=25.0))
    report = monitor.report()
    assert report.rejected > 0 and report.ok, str(report)
    assert f"{report.rejected} rejected, replaced by plain averaged steps" in str(report)
    _independent_check(monitor)


def test_acceleration_is_off_for_an_uncertified_run(large_weights):
    physics, y, _ = _problem(large_weights, batch=1)
    dncnn = dinv.models.DnCNN(1, 1, depth=3, pretrained=None)
    model, cert = convergent_pnp(physics, dncnn, max_iter=5)
    with torch.no_grad():
        model(y, physics)
    report = model.monitor.report()
    assert not cert.guaranteed and report.accepted == 0 and report.rejected == 0


def test_stopping_rule_is_the_relative_fixed_point_residual(large_weights):
    physics, y, denoiser = _problem(large_weights)
    for acceleration in (False, True):
        _, monitor, _ = _run(physics, y, denoiser, "DRS", acceleration, threshold=1e-4)
        relative = monitor.relative_residuals()
        assert float(relative[-1].max()) < 1e-4 <= float(relative[-2].max())


def test_monitor_flags_an_accepted_step_that_increases_the_residual():
    monitor = ConvergenceMonitor()
    monitor.safeguard = (1e6, 1e-6)
    v = torch.ones(1, 50, dtype=torch.float64)
    steps = [(v, v + 0.1, False), (v + 0.1, v + 0.15, False), (v + 0.15, v + 0.25, True)]
    for previous, current, accepted in steps:
        residual = monitor.residual({"est": (previous,)}, {"est": (current,)})
        monitor.record_step(
            {"est": (previous,)}, {"est": (current,)}, residual, torch.tensor([accepted])
        )
    report = monitor.report()
    assert not report.monotone and report.violations[0]["step"] == "anderson"
    # within the safeguard's budget D r_0 (n + 1)^-(1 + eps) but above it: flagged too
    monitor.safeguard = (0.3, 1e-6)
    monitor.residuals[-1] = monitor.residuals[-2] * 0.9
    assert not monitor.report().monotone


@pytest.mark.parametrize(
    "options, error",
    [
        ({"memory": 0}, ValueError),
        ({"memory": 2.5}, TypeError),
        ({"mixing": math.nan}, ValueError),
        ({"safeguard": 0.0}, ValueError),
        ({"regularization": -1.0}, ValueError),
        ({"epsilon": True}, TypeError),
    ],
)
def test_bad_settings_are_refused(options, error):
    with pytest.raises(error, match=next(iter(options))):
        SafeguardedAnderson(**options)


def test_bad_acceleration_argument(large_weights):
    physics, _, denoiser = _problem(large_weights)
    with pytest.raises(TypeError, match="acceleration"):
        convergent_pnp(physics, denoiser, acceleration="yes")


def test_a_warm_start_at_the_solution_stops_at_once(large_weights):
    physics, y, denoiser = _problem(large_weights)
    x_hat, monitor, _ = _run(physics, y, denoiser, "PGD", None, threshold=1e-5)
    first = monitor.report().iterations
    model, _ = convergent_pnp(physics, denoiser, max_iter=400, thres_conv=1e-5)
    with torch.no_grad():
        model(y, physics, init=x_hat)
    # deepinv checks convergence from its third iteration on
    assert model.monitor.report().iterations <= 3 < first
