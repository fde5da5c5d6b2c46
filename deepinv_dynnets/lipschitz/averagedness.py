r"""The algebra of averaged operators.

An operator :math:`T` is :math:`\alpha`-averaged, :math:`\alpha \in (0, 1)`, when
:math:`T = (1 - \alpha)I + \alpha R` with :math:`R` non-expansive (1-Lipschitz);
:math:`\alpha = 1/2` is *firmly* non-expansive. Averagedness is what makes fixed-point
iterations converge (Krasnosel'skii–Mann), and it survives composition and relaxation
with the constants computed here.
"""

from __future__ import annotations

import math

__all__ = ["compose_averaged", "relax_averaged", "euler_step_alpha"]


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    a = float(alpha)
    if not math.isfinite(a) or not 0 <= a <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {alpha!r}")
    return a


def compose_averaged(*alphas: float) -> float:
    r"""Averagedness constant of a composition of averaged operators.

    For :math:`T_1` :math:`\alpha_1`-averaged and :math:`T_2` :math:`\alpha_2`-averaged,
    :math:`T_2 \circ T_1` is averaged with :footcite:p:`combettes2015compositions`

    .. math::

        \alpha = \frac{\alpha_1 + \alpha_2 - 2\alpha_1\alpha_2}{1 - \alpha_1\alpha_2},

    applied pairwise for more operators (the formula is symmetric and associative). A
    constant of ``1`` means only non-expansive; ``0`` is the identity.

    :param float alphas: the constants :math:`\alpha_i \in [0, 1]`.
    :return: the constant of the composition, in :math:`[0, 1]`.

    :Examples:

        >>> from deepinv_dynnets.lipschitz import compose_averaged
        >>> compose_averaged(0.5, 0.5)
        0.6666666666666666
    """
    if not alphas:
        raise ValueError("alphas must hold at least one constant")
    out = _check_alpha(alphas[0])
    for a in alphas[1:]:
        a = _check_alpha(a)
        out = 1.0 if out * a == 1 else (out + a - 2 * out * a) / (1 - out * a)
    return out


def relax_averaged(alpha: float, lam: float) -> float:
    r"""Constant of the relaxation :math:`D_\lambda = (1 - \lambda)I + \lambda D`.

    If :math:`D = (1-\alpha)I + \alpha R` then :math:`D_\lambda = (1-\lambda\alpha)I +
    \lambda\alpha R`: it is :math:`\lambda\alpha`-averaged, for :math:`0 < \lambda\alpha \le 1`.

    :param float alpha: averagedness constant of :math:`D`.
    :param float lam: relaxation :math:`\lambda > 0` with :math:`\lambda\alpha \le 1`.

    :Examples:

        >>> from deepinv_dynnets.lipschitz import relax_averaged
        >>> relax_averaged(0.8, 0.5)
        0.4
    """
    alpha = _check_alpha(alpha)
    lam = float(lam)
    if not math.isfinite(lam) or lam <= 0 or lam * alpha > 1:
        raise ValueError(f"lam must satisfy 0 < lam * alpha <= 1, got lam={lam}, alpha={alpha}")
    return lam * alpha


def euler_step_alpha(h: float, sqnorm: float) -> float:
    r"""Constant of the Euler layer :math:`x - hA^\top\sigma(Ax + b)`.

    For :math:`\sigma` monotone with slope in :math:`[0, 1]`, the Jacobian
    :math:`I - hA^\top DA` is symmetric with spectrum in :math:`[1 - h\|A\|^2, 1]`, so the
    layer is :math:`\alpha`-averaged with :math:`\alpha = h\|A\|^2/2` when that is at most 1.

    :param float h: step size, positive.
    :param float sqnorm: :math:`\|A\|_2^2`, an upper bound of it for a certificate.
    :return: :math:`\alpha = h\|A\|^2/2`.

    :Examples:

        >>> from deepinv_dynnets.lipschitz import euler_step_alpha
        >>> euler_step_alpha(0.5, 2.0)
        0.5
    """
    h, sqnorm = float(h), float(sqnorm)
    if not math.isfinite(h) or h <= 0:
        raise ValueError(f"h must be a finite positive number, got {h}")
    if not math.isfinite(sqnorm) or sqnorm < 0:
        raise ValueError(f"sqnorm must be a finite non-negative number, got {sqnorm}")
    alpha = h * sqnorm / 2
    if alpha > 1:
        raise ValueError(
            f"h * sqnorm / 2 = {alpha:.4g} > 1: the layer is not non-expansive; "
            f"take h <= {2 / sqnorm:.4g}"
        )
    return alpha
