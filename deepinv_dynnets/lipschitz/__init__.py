"""Lipschitz tools: operator-norm estimates, certified bounds, averagedness algebra, certificates."""

from .averagedness import compose_averaged, euler_step_alpha, relax_averaged
from .certificates import Certificate, certify
from .operator_norms import (
    ROUNDOFF_MARGIN,
    circular_conv2d_norm,
    conv2d_norm_bound,
    grid_correction,
    linear_norm_bound,
    power_iteration,
)

__all__ = [
    "compose_averaged",
    "relax_averaged",
    "euler_step_alpha",
    "Certificate",
    "certify",
    "ROUNDOFF_MARGIN",
    "power_iteration",
    "grid_correction",
    "circular_conv2d_norm",
    "conv2d_norm_bound",
    "linear_norm_bound",
]
