"""Convergent Plug-and-Play: certificates before the run, a monitor during it, solvers."""

from .certificate import ALGORITHMS, PnPCertificate, operator_sqnorm, pnp_certificate
from .deblurring import DeblurResult, deblur
from .monitor import ConvergenceMonitor, MonitorReport
from .solvers import convergent_pnp, default_parameters

__all__ = [
    "ALGORITHMS",
    "PnPCertificate",
    "pnp_certificate",
    "operator_sqnorm",
    "ConvergenceMonitor",
    "MonitorReport",
    "convergent_pnp",
    "default_parameters",
    "deblur",
    "DeblurResult",
]
