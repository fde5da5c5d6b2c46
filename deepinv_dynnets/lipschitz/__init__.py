"""Lipschitz tools: operator-norm estimates, certified bounds, averagedness algebra, certificates."""

from .averagedness import compose_averaged, euler_step_alpha, relax_averaged
from .certificates import Certificate, certify
from .estimates import conv2d_symbol_power_estimate, power_iteration
from .operator_norms import (
    ROUNDOFF_MARGIN,
    circular_conv2d_norm,
    conv2d_norm_bound,
    grid_correction,
    linear_norm_bound,
)

__all__ = [
    "compose_averaged",
    "relax_averaged",
    "euler_step_alpha",
    "Certificate",
    "certify",
    "ROUNDOFF_MARGIN",
    "power_iteration",
    "conv2d_symbol_power_estimate",
    "grid_correction",
    "circular_conv2d_norm",
    "conv2d_norm_bound",
    "linear_norm_bound",
]
