"""The PnP convergence certificate's numbers, checked against values computed by hand.

Written for the mutation testing of ``pnp/certificate.py`` (see the guarantees page): the
earlier tests checked the verdicts, but not every constant of the certificate nor the
boundaries of its conditions. The operator is a ``BlurFFT`` with the filter
``gain * delta``, whose :math:`\\|A\\|^2 = \\text{gain}^2` is known exactly.
"""

import math

import deepinv as dinv
import pytest
import torch

from deepinv_dynnets.pnp import accepts_alpha, pnp_certificate
from deepinv_dynnets.pnp.certificate import check_conditions, fidelity_scale

SIZE = (1, 8, 8)


def _physics(gain: float = 2.0) -> dinv.physics.BlurFFT:
    kernel = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    kernel[0, 0, 1, 1] = gain
    return dinv.physics.BlurFFT(SIZE, filter=kernel)


def _compose(a: float, b: float) -> float:
    # Combettes and Yamada (2015), written out here rather than imported
    return (a + b - 2 * a * b) / (1 - a * b)


def test_pgd_constants_are_the_hand_computed_ones():
    # ||A||^2 = 4, s = 1/2: L = 16, 2/L = 1/8; the gradient step is gamma L/2 = 0.8-averaged
    fidelity = dinv.optim.L2(sigma=0.5)
    cert = pnp_certificate(_physics(), 0.4, "PGD", stepsize=0.1, data_fidelity=fidelity)
    assert cert.guaranteed and not cert.estimated and cert.verdict == "GUARANTEED"
    assert (cert.sqnorm, cert.sqnorm_method) == (pytest.approx(4.0, rel=1e-12), "exact")
    assert cert.lipschitz_constant == pytest.approx(16.0, rel=1e-12)
    assert cert.stepsize_bound == pytest.approx(0.125, rel=1e-12)
    assert cert.composite_alpha == pytest.approx(_compose(0.4, 0.8), rel=1e-12)
    assert cert.denoiser_alpha == 0.4 and cert.governing == "x" and cert.beta == 1.0
    assert not cert.g_first and cert.failures == [] and cert.notes == []
    relaxed = pnp_certificate(
        _physics(), 0.4, "PGD", stepsize=0.1, data_fidelity=fidelity, beta=1.1
    )
    assert relaxed.composite_alpha == pytest.approx(1.1 * _compose(0.4, 0.8), rel=1e-12)


def test_pgd_stepsize_condition_is_strict_at_two_over_l():
    physics = _physics()  # L = 4 with L2(): 2/L = 1/2
    assert not pnp_certificate(physics, 0.5, "PGD", stepsize=0.5).guaranteed
    below = pnp_certificate(physics, 0.5, "PGD", stepsize=0.5 * (1 - 1e-9))
    assert below.guaranteed
    assert below.composite_alpha == pytest.approx(_compose(0.5, 1 - 1e-9), rel=1e-9)


@pytest.mark.parametrize("algorithm", ["PGD", "HQS"])
def test_proximal_orders_compose_with_one_half_for_any_stepsize(algorithm):
    g_first = algorithm == "PGD"
    cert = pnp_certificate(_physics(), 0.25, algorithm, stepsize=100.0, g_first=g_first)
    assert cert.guaranteed and cert.g_first is g_first and cert.governing == "x"
    assert cert.stepsize_bound == math.inf
    assert cert.composite_alpha == pytest.approx(_compose(0.25, 0.5), rel=1e-12)
    # g_first means nothing outside PGD
    assert not pnp_certificate(_physics(), 0.25, "HQS", g_first=True).g_first


def test_relaxation_must_stay_strictly_below_one_over_alpha_t():
    # alpha_T = c(1/2, 1/2) = 2/3 and c(1/4, 1/2) = 4/7: beta = 3/2 and 7/4 give exactly 1
    for alpha, beta in ((0.5, 1.5), (0.25, 1.75)):
        at = pnp_certificate(_physics(), alpha, "HQS", beta=beta)
        assert not at.guaranteed and at.composite_alpha is None
        assert at.failures[0].startswith("FAILS: relaxation")
        under = pnp_certificate(_physics(), alpha, "HQS", beta=beta * (1 - 1e-9))
        assert under.guaranteed
        assert under.composite_alpha == pytest.approx(1 - 1e-9, rel=1e-9)


def test_drs_and_admm_constants_and_boundaries():
    drs = pnp_certificate(_physics(), 0.5, "DRS", beta=1.5)
    assert drs.guaranteed and drs.composite_alpha == 0.75 and drs.governing == "z"
    assert drs.stepsize_bound == math.inf
    assert not pnp_certificate(_physics(), 0.5, "DRS", beta=2.0).guaranteed
    assert pnp_certificate(_physics(), 0.5, "DRS", beta=1.999).composite_alpha == 0.9995
    admm = pnp_certificate(_physics(), 0.5, "ADMM")
    assert admm.guaranteed and admm.composite_alpha == 0.5 and admm.governing == "x + z"
    for beta in (0.999, 1.001):
        assert not pnp_certificate(_physics(), 0.5, "ADMM", beta=beta).guaranteed
    for algorithm in ("DRS", "ADMM"):
        refused = pnp_certificate(_physics(), 0.5 + 1e-12, algorithm)
        assert not refused.guaranteed and refused.composite_alpha is None
        assert refused.failures[0].startswith(f"FAILS: {algorithm} needs")
        assert "use PGD or HQS" in refused.failures[0]
        assert "use a certified averaged" in pnp_certificate(_physics(), 1.0, algorithm).reasons[0]


def test_accepts_alpha_boundaries():
    assert accepts_alpha("PGD", 1 - 1e-12) and not accepts_alpha("PGD", 1.0)
    assert accepts_alpha("HQS", 1 - 1e-12) and not accepts_alpha("HQS", 1.0)
    for algorithm in ("DRS", "ADMM"):
        assert accepts_alpha(algorithm, 0.5) and not accepts_alpha(algorithm, 0.5 + 1e-12)
    cert = pnp_certificate(_physics(), 1.0, "PGD", stepsize=0.1)
    assert not cert.guaranteed and cert.composite_alpha is None
    assert cert.reasons[0].startswith("FAILS: PGD needs an averaged denoiser with alpha < 1")


def test_an_estimated_norm_gives_an_estimate_verdict_only_where_it_matters():
    # check_conditions takes ||A||^2 as computed: here as if from a power iteration
    args = (_physics(), 0.5)
    pgd = check_conditions(*args, "PGD", 0.1, None, 1.0, False, (4.0, "estimate"))
    assert not pgd.guaranteed and pgd.estimated and pgd.verdict == "ESTIMATE"
    assert pgd.composite_alpha == pytest.approx(_compose(0.5, 0.2), rel=1e-12)
    assert len(pgd.notes) == 1 and "power-iteration estimate" in pgd.notes[0]
    assert "ESTIMATE" in str(pgd)
    too_far = check_conditions(*args, "PGD", 0.6, None, 1.0, False, (4.0, "estimate"))
    assert not too_far.estimated and too_far.verdict == "NOT guaranteed"
    hqs = check_conditions(*args, "HQS", 0.1, None, 1.0, False, (4.0, "estimate"))
    assert hqs.guaranteed and not hqs.estimated and hqs.notes == []
    bound = check_conditions(*args, "PGD", 0.1, None, 1.0, False, (4.0, "bound"))
    assert bound.guaranteed and not bound.estimated and bound.notes == []


def test_inexact_prox_note_only_for_a_conjugate_gradient_prox():
    kernel = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    kernel[0, 0, 1, 1] = 2.0
    blur = dinv.physics.Blur(kernel, padding="circular")
    cert = pnp_certificate(blur, 0.5, "HQS", img_size=SIZE)
    assert cert.guaranteed and (cert.sqnorm, cert.sqnorm_method) == (4.0, "young")
    assert len(cert.notes) == 1 and "conjugate gradient" in cert.notes[0]
    assert pnp_certificate(_physics(), 0.5, "HQS").notes == []
    # a data fidelity without a known constant: no note about its prox either
    l1 = pnp_certificate(blur, 0.5, "HQS", data_fidelity=dinv.optim.L1(), img_size=SIZE)
    assert l1.notes == [] and l1.lipschitz_constant is None


def test_fidelity_scale_is_one_over_the_worst_sigma_squared():
    assert fidelity_scale(None) == 1.0
    assert fidelity_scale(dinv.optim.L2(sigma=0.5)) == 4.0
    assert fidelity_scale(dinv.optim.L2(sigma=torch.tensor([0.5, 1.0]))) == 4.0
    assert fidelity_scale(dinv.optim.L1()) is None

    class Inherits(dinv.optim.L2):
        pass

    class Regrads(dinv.optim.L2):
        def grad(self, *args, **kwargs):
            return super().grad(*args, **kwargs)

    assert fidelity_scale(Inherits(sigma=0.5)) == 4.0
    assert fidelity_scale(Regrads(sigma=0.5)) is None
    per_image = dinv.optim.L2(sigma=torch.tensor([1.0, 0.5]))
    cert = pnp_certificate(_physics(), 0.5, "PGD", stepsize=0.1, data_fidelity=per_image)
    assert cert.lipschitz_constant == pytest.approx(16.0, rel=1e-12)


def test_printed_certificate():
    cert = pnp_certificate(_physics(), 0.5, "DRS", stepsize=0.3, beta=1.5)
    assert str(cert) == (
        "PnP-DRS convergence: GUARANTEED\n"
        "  ok: denoiser (given) is 0.5-averaged (certified)\n"
        "  ok: stepsize 0.3 > 0 (any positive stepsize for a proximal step)\n"
        "  ok: relaxation beta = 1.5\n"
        "  iteration map on z is 0.75-averaged: residual non-increasing, o(1/sqrt(k))"
    )
    failed = pnp_certificate(_physics(), 0.5, "PGD", stepsize=0.1, g_first=True, beta=1.5)
    assert str(failed).splitlines()[0] == "PnP-PGD (g_first) convergence: NOT guaranteed"
    assert failed.failures == [failed.reasons[0]] and len(failed.reasons) == 3
    assert "iteration map" not in str(failed)
