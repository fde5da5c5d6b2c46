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

from deepinv_dynnets import EulerDenoiser, certify
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
    assert cert.estimated is False
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
    assert drs.beta == 1.5
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


def test_reasons_name_the_denoiser_and_the_fix():
    physics = _physics()
    model = EulerDenoiser(width=4, hidden=4, n_blocks=2)
    alpha = certify(model).alpha
    for denoiser in (model, dinv.optim.PnP(model)):  # a PnP prior is unwrapped
        cert = pnp_certificate(physics, denoiser, "HQS")
        assert cert.guaranteed and cert.denoiser_alpha == alpha
        assert (
            cert.reasons[0] == f"ok: denoiser (EulerDenoiser) is {alpha:.4g}-averaged (certified)"
        )
    none = pnp_certificate(physics, None, "HQS")
    assert none.failures == [
        "FAILS: the denoiser (uncertified) has no certified averagedness constant: use a "
        "certified one (deepinv_dynnets.EulerDenoiser) or pass the constant you vouch for"
    ]
    drs = pnp_certificate(physics, 0.75, "DRS")
    assert drs.failures == [
        "FAILS: DRS needs an averaged denoiser with alpha <= 1/2, so that 2D - I is "
        "non-expansive; the denoiser (given) is 0.75-averaged: use PGD or HQS, or a denoiser "
        "trained with alpha <= 0.5 (the shipped EulerDenoiser(alpha=0.5, pretrained='default'))"
    ]
    assert pnp_certificate(physics, 1.0, "ADMM").failures == [
        "FAILS: ADMM needs an averaged denoiser with alpha <= 1/2, so that 2D - I is "
        "non-expansive; the denoiser (given) is 1-averaged: use a certified averaged denoiser"
    ]
    assert pnp_certificate(physics, 0.5, "DRS", beta=2.0).failures == [
        "FAILS: DRS needs beta in (0, 2), got beta = 2: use beta = 1"
    ]
    assert pnp_certificate(physics, 0.5, "ADMM", beta=0.5).failures == [
        "FAILS: the ADMM guarantee (equivalence with DRS) holds for beta = 1, got 0.5: use "
        "beta = 1, or DRS"
    ]


def test_stepsize_and_relaxation_reasons_carry_their_numbers():
    physics = _physics()  # ||A||^2 = 4 (exact): 2/L = 1/2 with L2()
    bound = pnp_certificate(physics, 0.5, "PGD", stepsize=0.1).stepsize_bound
    at = pnp_certificate(physics, 0.5, "PGD", stepsize=bound)  # strict: 2/L itself fails
    assert not at.guaranteed and at.failures == [
        f"FAILS: stepsize {bound:.4g} exceeds 2/L = {bound:.4g} (L = ||A||^2/s^2 = 4, "
        f"||A||^2 exact): use a stepsize below {bound:.4g}"
    ]
    ok = pnp_certificate(physics, 0.5, "PGD", stepsize=0.25)
    assert ok.reasons[1] == "ok: stepsize 0.25 < 2/L = 0.5 (L = ||A||^2/s^2 = 4, ||A||^2 exact)"
    assert ok.estimated is False and ok.beta == 1.0 and ok.stepsize == 0.25
    # alpha_T = c(1/2, 1/2) = 2/3 for HQS: the relaxation is checked against 1/alpha_T = 1.5
    hqs = pnp_certificate(physics, 0.5, "HQS", beta=1.2)
    assert hqs.reasons[-1] == "ok: relaxation beta = 1.2 < 1/alpha_T = 1.5" and hqs.beta == 1.2
    assert pnp_certificate(physics, 0.5, "HQS", beta=1.6).failures == [
        "FAILS: relaxation beta = 1.6 is not below 1/alpha_T = 1.5: use beta = 1"
    ]
    l1 = pnp_certificate(physics, 0.5, "PGD", data_fidelity=dinv.optim.L1())
    assert l1.failures == [
        "FAILS: PGD takes gradient steps on L1, whose gradient Lipschitz constant is not "
        "known: use L2 or g_first=True"
    ]
    kernel = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    kernel[0, 0, 1, 1] = 2.0
    cg = pnp_certificate(dinv.physics.Blur(kernel, padding="circular"), 0.5, "HQS", img_size=SIZE)
    assert cg.notes == [
        "the prox of the data fidelity is computed by conjugate gradient (inexact): the "
        "guarantee is for the exact prox"
    ]
    assert pnp_certificate(physics, 0.5, "HQS").estimated is False
    assert pnp_certificate(physics, 0.5).stepsize == 1.0
    assert pnp_certificate(physics, 0.5).algorithm == "PGD"


def test_a_broken_denoiser_constant_fails_with_why(monkeypatch):
    from deepinv_dynnets.lipschitz.certificates import Certificate
    from deepinv_dynnets.pnp import certificate as module

    for value in (math.nan, 0.0, -0.5):
        broken = Certificate(lipschitz=1.0, alpha=value)
        monkeypatch.setattr(module, "certify", lambda inner, broken=broken: broken)
        cert = pnp_certificate(_physics(), torch.nn.Identity(), "HQS")
        assert not cert.guaranteed and cert.denoiser_alpha is None
        assert cert.failures[0].startswith("FAILS: the denoiser's (Identity) averagedness")
        assert "not a finite number in (0, 1)" in cert.failures[0]


def test_bad_arguments_are_named():
    physics = _physics()
    with pytest.raises(ValueError, match="algorithm must be one of PGD, HQS, DRS, ADMM, got 'FOO'"):
        pnp_certificate(physics, 0.5, "foo")
    with pytest.raises(ValueError, match="stepsize must be a finite number > 0"):
        pnp_certificate(physics, 0.5, stepsize=-1.0)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        pnp_certificate(physics, 0.5, beta=0.0)
    with pytest.raises(TypeError, match="or None, got str"):
        pnp_certificate(physics, "0.5")
    with pytest.raises(TypeError, match="DataFidelity or None, got float"):
        fidelity_scale(0.5)
    assert fidelity_scale(dinv.optim.L2(sigma=2.0)) == 0.25
    for sigma in (math.inf, -math.inf):
        with pytest.raises(ValueError, match="1/sigma\\^2 must be finite and > 0, got 0.0"):
            fidelity_scale(dinv.optim.L2(sigma=sigma))


def test_a_deepinv_distributed_denoiser_is_certified_for_the_image_size_given():
    from deepinv.distributed import DistributedContext, distribute

    model = EulerDenoiser(width=4, hidden=4, n_blocks=2)
    blur = _physics()  # BlurFFT carries its image size (1, 8, 8)
    kernel = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    kernel[0, 0, 1, 1] = 2.0
    sizeless = dinv.physics.Blur(kernel, padding="circular")
    with DistributedContext(device_mode="cpu") as ctx:
        tiled = distribute(model, ctx, patch_size=4, overlap=0, tiling_dims=(-2, -1))
        carried = pnp_certificate(blur, tiled, "HQS")
        given = pnp_certificate(sizeless, tiled, "HQS", img_size=SIZE)
        unknown = pnp_certificate(sizeless, tiled, "HQS", img_size=None)
        # 4 x 4 tiles partition 8 x 8 images but not 6 x 6 ones: img_size wins
        other = pnp_certificate(blur, tiled, "HQS", img_size=(1, 6, 6))
    for cert in (carried, given):
        assert cert.guaranteed and cert.denoiser_alpha == certify(model).alpha
        assert "deepinv.distributed tiling" in cert.reasons[0]
    assert not unknown.guaranteed and unknown.failures[0].startswith(
        "FAILS: the denoiser (a deepinv.distributed denoiser, for an unknown image size: pass "
        "img_size)"
    )
    assert not other.guaranteed
