"""Convergent Plug-and-Play: certificates before the run, a monitor during it, solvers."""

from .anderson import SafeguardedAnderson
from .certificate import ALGORITHMS, PnPCertificate, accepts_alpha, pnp_certificate
from .deblurring import DeblurResult, blur_physics, deblur
from .monitor import ConvergenceMonitor, MonitorReport
from .physics_norms import POWER_SAFETY_FACTOR, operator_sqnorm
from .solvers import convergent_pnp, default_parameters

__all__ = [
    "accepts_alpha",
    "ALGORITHMS",
    "PnPCertificate",
    "pnp_certificate",
    "operator_sqnorm",
    "POWER_SAFETY_FACTOR",
    "SafeguardedAnderson",
    "ConvergenceMonitor",
    "MonitorReport",
    "convergent_pnp",
    "default_parameters",
    "deblur",
    "blur_physics",
    "DeblurResult",
]
