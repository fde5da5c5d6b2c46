"""The convergence monitor's checks, fed with residual sequences chosen by hand.

Written for the mutation testing of ``pnp/monitor.py`` (see the guarantees page): the
violation rule at its boundary, the default round-off tolerance, the O(1/sqrt(k))
envelope and the safeguard's budget are each compared with the formula written out here.
"""

import math
import re

import deepinv as dinv
import pytest
import torch

from deepinv_dynnets import EulerDenoiser, convergent_pnp
from deepinv_dynnets.pnp import ConvergenceMonitor, MonitorReport


def _state(v: torch.Tensor) -> dict:
    return {"est": (v,)}


def _feed(monitor, residuals, norm=1.0, accepted=None, proposed=None, restarts=None):
    """Record steps with the given residuals (batch of len(residuals[0])) and iterates of
    norm ``norm``; per step: accepted flags, proposed flag, restart (old, new)."""
    batch = len(residuals[0])
    v = torch.zeros(batch, 4, dtype=torch.float64)
    v[:, 0] = norm
    for k, r in enumerate(residuals):
        flags = torch.tensor(accepted[k] if accepted else [False] * batch)
        restart = restarts.get(k) if restarts else None
        monitor.record_step(
            _state(v),
            _state(v),
            torch.tensor(r, dtype=torch.float64),
            flags,
            restart=restart,
            proposed=bool(proposed and proposed[k]),
        )
    return monitor.report()


def test_plain_violation_rule_at_its_boundary():
    rtol, atol, norm = 0.25, 0.5, 2.0  # allowed: r_k * 1.25 + 0.5 * 2
    assert _feed(ConvergenceMonitor(rtol=rtol, atol=atol), [[1.0], [2.25]], norm).monotone
    report = _feed(ConvergenceMonitor(rtol=rtol, atol=atol), [[1.0], [2.25 + 1e-9]], norm)
    assert not report.monotone
    assert report.violations == [
        {"iteration": 1, "image": 0, "residual": 2.25 + 1e-9, "previous": 1.0, "step": "plain"}
    ]
    # per image, and every violating step
    report = _feed(ConvergenceMonitor(rtol=0.0, atol=0.0), [[1.0, 1.0], [1.0, 2.0], [3.0, 1.0]])
    assert [(v["iteration"], v["image"]) for v in report.violations] == [(1, 1), (2, 0)]


def test_increased_uses_the_same_rule():
    monitor = ConvergenceMonitor(rtol=0.25, atol=0.5)
    current = _state(torch.tensor([[2.0, 0.0]], dtype=torch.float64))
    previous = torch.tensor([1.0], dtype=torch.float64)
    assert not bool(monitor.increased(previous, torch.tensor([2.25], dtype=torch.float64), current))
    assert bool(
        monitor.increased(previous, torch.tensor([2.25 + 1e-9], dtype=torch.float64), current)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_default_round_off_tolerance_is_100_eps_of_the_dtype(dtype):
    monitor = ConvergenceMonitor(rtol=0.0)
    assert monitor._atol(dtype) == 100 * torch.finfo(dtype).eps
    assert monitor._atol(torch.int64) == 0.0
    assert ConvergenceMonitor(atol=0.25)._atol(dtype) == 0.25
    eps = torch.finfo(dtype).eps
    v = torch.ones(1, 1, dtype=dtype)
    residual = torch.tensor([1.0 + 99 * eps], dtype=torch.float64)
    assert not bool(monitor.increased(torch.tensor([1.0]), residual, _state(v)))
    residual = torch.tensor([1.0 + 101 * eps], dtype=torch.float64)
    assert bool(monitor.increased(torch.tensor([1.0]), residual, _state(v)))


def test_residual_is_the_float64_norm_of_the_step_per_image():
    monitor = ConvergenceMonitor()
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float32)
    b = torch.tensor([[3.0, 4.0], [1.0, 2.0]], dtype=torch.float32)
    r = monitor.residual(_state(a), _state(b))
    assert r.dtype == torch.float64 and r.tolist() == [5.0, 1.0]
    z = ConvergenceMonitor("z").residual({"est": (a, b)}, {"est": (b, a)})
    assert z.tolist() == [5.0, 1.0]
    xz = ConvergenceMonitor("x + z").residual({"est": (a, a)}, {"est": (b, a)})
    assert xz.tolist() == [5.0, 1.0]


def test_convergence_threshold_is_strict_on_the_mean_relative_residual():
    # relative residuals 1e-5 and 3e-5: mean 2e-5
    report = _feed(ConvergenceMonitor(threshold=2e-5), [[1.0, 1.0], [2e-5, 6e-5]], norm=2.0)
    assert report.final_residual == pytest.approx(2e-5, rel=1e-12)
    assert not report.converged and report.iterations == 2
    assert _feed(ConvergenceMonitor(threshold=2.0001e-5), [[1, 1], [2e-5, 6e-5]], 2.0).converged
    assert report.threshold == 2e-5
    assert MonitorReport(True, 3, 0.0, False).ok is False
    assert MonitorReport(True, 3, 0.0, True).ok and not MonitorReport(False, 3, 0.0, True).ok


def test_envelope_ratio_is_the_formula():
    alpha = 0.2
    monitor = ConvergenceMonitor(alpha=alpha, rtol=10.0)
    steps = [torch.tensor([[0.0]]), torch.tensor([[2.0]]), torch.tensor([[3.0]])]
    steps.append(torch.tensor([[3.5]]))
    for a, b in zip(steps[:-1], steps[1:], strict=True):
        monitor.record(_state(a.double()), _state(b.double()))
    report = monitor.report()
    r = [2.0, 1.0, 0.5]
    worst = max(math.sqrt(k + 1) * rk for k, rk in enumerate(r))
    bound = math.sqrt(alpha / (1 - alpha)) * 3.5
    assert report.envelope_ratio == pytest.approx(worst / bound, rel=1e-12)
    assert ConvergenceMonitor().alpha is None
    # without alpha, or for an accelerated, restarted or proposing run: no envelope
    assert _feed(ConvergenceMonitor(), [[1.0], [0.5]]).envelope_ratio is None
    for kwargs in (
        {"accepted": [[False], [True]]},
        {"proposed": [False, True]},
        {"restarts": {1: (1.0, 0.5)}},
    ):
        assert _feed(ConvergenceMonitor(alpha=0.5), [[1.0], [0.5]], **kwargs).envelope_ratio is None
    assert _feed(ConvergenceMonitor(alpha=0.5), [[1.0], [0.5]]).envelope_ratio is not None


def test_alpha_and_variable_are_checked():
    for alpha in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="alpha must be in"):
            ConvergenceMonitor(alpha=alpha)
    ConvergenceMonitor(alpha=1e-9)
    ConvergenceMonitor(alpha=1 - 1e-9)
    with pytest.raises(ValueError, match="variable must be"):
        ConvergenceMonitor("y")
    with pytest.raises(RuntimeError, match="nothing recorded"):
        ConvergenceMonitor().report()


def test_skip_first_ignores_exactly_the_first_step():
    monitor = ConvergenceMonitor(skip_first=True)
    v = [torch.full((1, 1), float(c), dtype=torch.float64) for c in (0, 10, 11, 11.5)]
    for a, b in zip(v[:-1], v[1:], strict=True):
        monitor.record(_state(a), _state(b))
    assert [float(r) for r in monitor.residuals] == [1.0, 0.5]
    assert torch.equal(monitor.start, v[1]) and torch.equal(monitor.last, v[3])


def test_anderson_steps_no_tolerance_and_the_safeguard_budget():
    # an accepted step may not increase the residual at all (rtol is for plain steps)
    report = _feed(ConvergenceMonitor(rtol=0.5), [[1.0], [1.0 + 1e-12]], accepted=[[0], [1]])
    assert not report.monotone and report.violations[0]["step"] == "anderson"
    assert report.accepted == 1 and report.rejected == 0
    assert _feed(ConvergenceMonitor(), [[1.0], [1.0]], accepted=[[0], [1]]).monotone
    # the budget D r_0 (n + 1)^-(1 + eps), n the accepted steps before: D = 2, eps = 1
    r = [[1.0], [0.5], [0.2222], [0.125]]  # budgets at steps 1, 2, 3: 1/2, 2/9, 1/8
    accepted = [[1], [1], [1], [1]]
    monitor = ConvergenceMonitor()
    monitor.safeguard = (2.0, 1.0)
    assert _feed(monitor, r, accepted=accepted).monotone
    monitor = ConvergenceMonitor()
    monitor.safeguard = (2.0, 1.0)
    over = _feed(monitor, r[:3] + [[0.125 + 1e-9]], accepted=accepted)
    assert [v["iteration"] for v in over.violations] == [3]
    # a restart starts the count and r_0 again (and its own step is not checked)
    restarted = [[1.0], [0.5], [0.45], [0.2], [0.09]]  # budgets after it: 0.225, 0.1
    for last, monotone in ((0.09, True), (0.1 + 1e-9, False)):
        monitor = ConvergenceMonitor()
        monitor.safeguard = (2.0, 1.0)
        rep = _feed(monitor, restarted[:4] + [[last]], accepted=[[1]] * 5, restarts={2: (1.0, 0.5)})
        assert rep.restarts == [{"iteration": 2, "old": 1.0, "new": 0.5}]
        assert rep.monotone is monotone
        assert monotone or [v["iteration"] for v in rep.violations] == [4]


def test_rejected_counts_proposals_that_were_not_accepted():
    report = _feed(
        ConvergenceMonitor(),
        [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]],
        accepted=[[0, 0], [1, 0], [0, 0]],
        proposed=[False, True, True],
    )
    assert report.accepted == 1 and report.rejected == 3


def test_relative_residuals_and_the_printed_report():
    monitor = ConvergenceMonitor()
    assert monitor.relative_residuals().shape == (0, 0)
    _feed(monitor, [[1.0], [0.5]], norm=4.0)
    assert monitor.relative_residuals().tolist() == [[0.25], [0.125]]
    zero = ConvergenceMonitor()
    _feed(zero, [[1.0]], norm=0.0)
    assert zero.relative_residuals().tolist() == [[1e12]]
    report = MonitorReport(False, 7, 0.01234, False, [{"iteration": 3}], 0.5, 1e-5, 2, 1)
    report.restarts = [{"iteration": 4, "old": 1.0, "new": 0.5}]
    assert str(report) == "\n".join(
        [
            "NOT converged after 7 iterations: relative residual 0.0123 (threshold 1e-05)",
            "residual as the theorem says: NO, 1 violation(s), first at iteration 3",
            "safeguarded Anderson: 2 accepted step(s), none increasing the residual; "
            "1 rejected, replaced by plain averaged steps",
            "residual increased at iteration 4: stepsize halved 1 -> 0.5 and the check "
            "restarted there",
            "o(1/sqrt(k)) envelope: max sqrt(k+1) r_k is 0.5 x the bound",
        ]
    )
    plain = MonitorReport(True, 2, 1e-6, True)
    assert str(plain) == (
        "converged after 2 iterations: relative residual 1e-06 (threshold 1e-05)\n"
        "residual non-increasing: yes"
    )


# Added in the review of the survivors of the first mutation run (issue 18): each test
# below names the behaviour whose change a surviving mutant made invisible.


def test_default_threshold_is_1e_minus_5():
    assert ConvergenceMonitor().threshold == 1e-5
    # relative residual 2e-5 with iterates of norm 1: not converged by default
    report = _feed(ConvergenceMonitor(), [[1.0], [2e-5]])
    assert report.threshold == 1e-5 and not report.converged and not report.ok
    assert _feed(ConvergenceMonitor(), [[1.0], [5e-6]]).converged


def test_attach_refuses_what_is_not_a_deepinv_solver_with_a_clear_message():
    message = r"^can only monitor deepinv\.optim solvers \(with \.fixed_point\.iterator\), got "
    with pytest.raises(ValueError, match=message + "Linear$"):
        ConvergenceMonitor().attach(torch.nn.Linear(2, 2))  # no fixed_point at all
    no_iterator = torch.nn.Identity()
    no_iterator.fixed_point = object()  # a fixed_point without an iterator
    with pytest.raises(ValueError, match=message + "Identity$"):
        ConvergenceMonitor().attach(no_iterator)


def _tv_pgd(max_iter=5):
    prior = dinv.optim.PnP(dinv.models.TVDenoiser(n_it_max=20))
    solver = dinv.optim.PGD(
        prior=prior,
        data_fidelity=dinv.optim.L2(),
        stepsize=1.0,
        sigma_denoiser=0.1,
        max_iter=max_iter,
    )
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return solver, physics, y


def test_attach_records_every_iteration_of_every_call():
    solver, physics, y = _tv_pgd()
    iterator = solver.fixed_point.iterator
    monitor = ConvergenceMonitor()
    assert monitor.attach(solver) is monitor
    for _ in range(2):  # reset at the start of every call: 5 steps, not 10
        solver(y, physics)
        assert len(monitor.residuals) == 5 and monitor.report().iterations == 5
    assert solver.fixed_point.iterator.iterator is iterator
    assert monitor.report().monotone  # TV prox + gradient step: an averaged map


def test_attaching_twice_keeps_one_driver_and_another_monitor_is_refused():
    solver, physics, y = _tv_pgd()
    iterator = solver.fixed_point.iterator
    first = ConvergenceMonitor().attach(solver)
    driver = solver.fixed_point.iterator
    assert first.attach(solver) is first and solver.fixed_point.iterator is driver
    message = (
        f"this {type(solver).__name__} already reports to another ConvergenceMonitor "
        "(solver.monitor for the solvers of convergent_pnp); a solver reports to one "
        "monitor: read that one, or build a new solver"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ConvergenceMonitor().attach(solver)
    solver(y, physics)
    assert solver.fixed_point.iterator.iterator is iterator  # not a driver of a driver
    assert len(first.residuals) == 5


def test_a_convergent_pnp_solver_keeps_its_accelerated_driver():
    # a second monitor used to replace the driver: no acceleration, no stopping rule, no
    # step-size safeguard, and solver.monitor silently empty
    torch.manual_seed(0)
    kernel = torch.rand(1, 1, 3, 3) + 0.1
    physics = dinv.physics.BlurFFT((1, 16, 16), filter=kernel / kernel.sum())
    y = physics(torch.rand(1, 1, 16, 16))
    denoiser = EulerDenoiser(width=4, hidden=4, n_blocks=2, alpha=0.5).eval()
    model, _ = convergent_pnp(physics, denoiser, max_iter=20)
    driver = model.fixed_point.iterator
    assert driver.acceleration is not None
    with pytest.raises(ValueError, match="solver.monitor"):
        ConvergenceMonitor().attach(model)
    assert model.monitor.attach(model) is model.monitor
    assert model.fixed_point.iterator is driver
    model(y, physics)
    assert model.monitor.residuals and any(model.monitor.accelerated)


def test_reset_forgets_the_run():
    monitor = ConvergenceMonitor()
    for _ in range(2):  # a new monitor, then one that recorded a run and was reset
        assert monitor.start is None and monitor.last is None and monitor.last_norm is None
        assert not (monitor.residuals or monitor.norms or monitor.accelerated)
        assert not (monitor.proposed or monitor.restarts)
        empty = monitor.relative_residuals()
        assert empty.shape == (0, 0) and empty.dtype == torch.float64
        _feed(monitor, [[1.0], [0.5]], accepted=[[0], [1]], proposed=[False, True])
        monitor.reset()


def test_float32_iterates_whose_squares_overflow_are_still_checked():
    # entries of 2^66 (float32 can hold them, not their squares): the norms must be taken
    # in float64, or they are inf and every check passes (tolerance inf, relative residual 0,
    # envelope bound inf)
    big = 2.0**64
    diverging = [torch.full((1, 4), c * big, dtype=torch.float32) for c in (4, 5, 7)]
    monitor = ConvergenceMonitor()
    for a, b in zip(diverging[:-1], diverging[1:], strict=True):
        monitor.record(_state(a), _state(b))
    report = monitor.report()
    assert [float(r) for r in monitor.residuals] == [2 * big, 4 * big]  # ||(d, d, d, d)||
    assert not report.monotone and report.violations[0]["iteration"] == 1
    assert report.final_residual == pytest.approx(4 / 14, rel=1e-12)  # 4 big / ||v_2||
    assert monitor.norms[-1].dtype == torch.float64
    previous = torch.tensor([2 * big], dtype=torch.float64)
    residual = torch.tensor([4 * big], dtype=torch.float64)
    assert bool(monitor.increased(previous, residual, _state(diverging[-1])))
    converging = [torch.full((1, 4), c * big, dtype=torch.float32) for c in (4, 6, 7)]
    monitor = ConvergenceMonitor(alpha=0.5)
    for a, b in zip(converging[:-1], converging[1:], strict=True):
        monitor.record(_state(a), _state(b))
    # r = (4 big, 2 big), ||v_0 - v_2|| = 6 big: max(4, sqrt(2) 2) / 6
    assert monitor.report().envelope_ratio == pytest.approx(4 / 6, rel=1e-12)


def test_violations_report_their_own_step():
    # an accepted Anderson step compared with the step just before (not with r_0), and the
    # violation reports that step's residual, its predecessor and its kind
    report = _feed(ConvergenceMonitor(), [[1.0], [0.5], [0.7]], accepted=[[0], [0], [1]])
    assert report.violations == [
        {"iteration": 2, "image": 0, "residual": 0.7, "previous": 0.5, "step": "anderson"}
    ]
    report = _feed(ConvergenceMonitor(rtol=0.0, atol=0.0), [[1.0, 1.0], [1.0, 2.0], [3.0, 1.0]])
    assert report.violations == [
        {"iteration": 1, "image": 1, "residual": 2.0, "previous": 1.0, "step": "plain"},
        {"iteration": 2, "image": 0, "residual": 3.0, "previous": 1.0, "step": "plain"},
    ]


def test_the_safeguard_budget_adds_to_the_non_increase_rule():
    # a generous budget (D = 100) does not excuse an accepted step that increases r
    monitor = ConvergenceMonitor()
    monitor.safeguard = (100.0, 1.0)
    report = _feed(monitor, [[1.0], [0.5], [0.6]], accepted=[[0], [1], [1]])
    assert [(v["iteration"], v["step"]) for v in report.violations] == [(2, "anderson")]


def test_the_safeguard_counts_the_accepted_steps_before_each_step():
    # v_1 and v_2 accepted, D = 2, eps = 1: budgets 2 r_0 at step 1 (none accepted before)
    # and 2 r_0 / 4 at step 2 (one accepted before), so r_2 = 0.8 exceeds its budget 0.5
    monitor = ConvergenceMonitor()
    monitor.safeguard = (2.0, 1.0)
    accepted = [[0], [1], [1], [0]]
    report = _feed(monitor, [[1.0], [0.9], [0.8], [0.7]], accepted=accepted)
    assert [v["iteration"] for v in report.violations] == [2]
    monitor = ConvergenceMonitor()
    monitor.safeguard = (2.0, 1.0)
    assert _feed(monitor, [[1.0], [0.9], [0.5], [0.4]], accepted=accepted).monotone


def test_final_residual_is_relative_also_for_small_iterates():
    # iterates of norm 1/4: the relative residual is 4 r, and a zero iterate counts as 1e-12
    report = _feed(ConvergenceMonitor(), [[1.0], [0.01]], norm=0.25)
    assert report.final_residual == pytest.approx(0.04, rel=1e-12)
    assert _feed(ConvergenceMonitor(), [[1.0], [1e-20]], norm=0.0).final_residual == (
        pytest.approx(1e-8, rel=1e-12)
    )


def test_envelope_ratio_per_image_with_the_worst_step_anywhere():
    # two images, three steps, v_0 != 0, bounds below 1: image 0 has a constant residual
    # (worst at k = 2, sqrt(3) r), image 1 a halving one (worst at k = 0)
    alpha = 0.2
    paths = [[1.0, 1.25, 1.5, 1.75], [-2.0, -2.5, -2.75, -2.875]]
    monitor = ConvergenceMonitor(alpha=alpha)
    for k in range(3):
        a = torch.tensor([[p[k]] for p in paths], dtype=torch.float64)
        b = torch.tensor([[p[k + 1]] for p in paths], dtype=torch.float64)
        monitor.record(_state(a), _state(b))
    report = monitor.report()
    assert report.iterations == 3
    ratios = []
    for p in paths:
        r = [abs(p[k + 1] - p[k]) for k in range(3)]
        bound = math.sqrt(alpha / (1 - alpha)) * abs(p[0] - p[-1])
        assert bound < 1
        ratios.append(max(math.sqrt(k + 1) * rk for k, rk in enumerate(r)) / bound)
    assert ratios[0] > ratios[1]
    assert report.envelope_ratio == pytest.approx(ratios[0], rel=1e-12)


def test_report_of_an_empty_run_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"^nothing recorded: run the monitored solver first$"):
        ConvergenceMonitor().report()


def test_printed_report_names_anderson_when_only_accepted_or_only_rejected():
    for accepted, rejected in ((1, 0), (0, 2)):
        text = str(MonitorReport(True, 4, 1e-6, True, accepted=accepted, rejected=rejected))
        assert text.splitlines()[1:] == [
            "residual as the theorem says: yes",
            f"safeguarded Anderson: {accepted} accepted step(s), none increasing the "
            f"residual; {rejected} rejected, replaced by plain averaged steps",
        ]
