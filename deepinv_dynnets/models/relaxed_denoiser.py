r"""RelaxedDenoiser: the relaxation :math:`(1 - \lambda) I + \lambda D` of a denoiser."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from deepinv.models import Denoiser
from torch import Tensor, nn

__all__ = ["RelaxedDenoiser"]


class RelaxedDenoiser(Denoiser):
    r"""Relaxed denoiser :math:`D_\lambda(x, \sigma) = (1 - \lambda)\,x + \lambda\, D(x, \sigma)`.

    A strength control that keeps a certificate: if :math:`D` is :math:`\alpha`-averaged,
    :math:`D_\lambda` is :math:`\lambda\alpha`-averaged for :math:`0 < \lambda < 1/\alpha`
    (Bauschke and Combettes, Prop. 4.40), hence non-expansive; otherwise its Lipschitz
    constant is at most :math:`|1 - \lambda| + \lambda\,\mathrm{Lip}(D)`.
    :func:`~deepinv_dynnets.certify` certifies it from the certificate of :math:`D`.
    :math:`\lambda < 1` denoises less (the fixed points of a Plug-and-Play scheme move
    towards the data), :math:`\lambda > 1` more.

    :param torch.nn.Module denoiser: a denoiser ``denoiser(x, sigma)``.
    :param float relaxation: :math:`\lambda > 0`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets import EulerDenoiser, certify
        >>> from deepinv_dynnets.models import RelaxedDenoiser
        >>> base = EulerDenoiser(width=4, hidden=4, n_blocks=2).eval()
        >>> relaxed = RelaxedDenoiser(base, relaxation=0.5)
        >>> x = torch.rand(1, 1, 8, 8)
        >>> torch.allclose(relaxed(x, 0.1), 0.5 * x + 0.5 * base(x, 0.1))
        True
        >>> certify(relaxed).alpha <= 0.5 * certify(base).alpha + 1e-12
        True
    """

    def __init__(self, denoiser: nn.Module, relaxation: float = 1.0):
        super().__init__()
        if not isinstance(denoiser, nn.Module):
            raise ValueError(f"denoiser must be a torch.nn.Module, got {type(denoiser).__name__}")
        if isinstance(relaxation, (bool, np.bool_)) or not isinstance(relaxation, numbers.Real):
            raise ValueError(f"relaxation must be a real number > 0, got {relaxation!r}")
        relaxation = float(relaxation)
        if not math.isfinite(relaxation) or relaxation <= 0:
            raise ValueError(f"relaxation must be a finite number > 0, got {relaxation!r}")
        self.denoiser = denoiser
        self.relaxation = relaxation

    def averaged_relaxation(self) -> tuple[nn.Module, float]:
        """The relaxed denoiser and :math:`\\lambda` (the protocol :func:`certify` reads)."""
        return self.denoiser, self.relaxation

    def forward(self, x: Tensor, sigma: float | Tensor | None = None, **kwargs) -> Tensor:
        lam = self.relaxation
        out = self.denoiser(x, sigma, **kwargs)
        return out if lam == 1 else torch.lerp(x, out, lam)
