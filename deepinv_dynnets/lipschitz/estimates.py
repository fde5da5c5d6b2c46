r"""Operator-norm *estimates*: power iterations, lower bounds, for training only.

A power iteration gives :math:`\|Av\| \le \|A\|_2` for a unit vector :math:`v`: it
approaches the norm from below, cheaply and differentiably, which is what a training loop
needs to keep a step size near its bound. It is never a certificate: those are the upper
bounds of :mod:`~deepinv_dynnets.lipschitz.operator_norms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["power_iteration", "conv2d_symbol_power_estimate"]


def power_iteration(
    op: Callable[[Tensor], Tensor],
    adjoint: Callable[[Tensor], Tensor],
    x0: Tensor,
    n_iter: int = 1,
    rtol: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Power iteration on :math:`A^\top A`: a lower estimate of :math:`\|A\|_2`.

    Starting from :math:`v_0 = x_0/\|x_0\|`, it iterates
    :math:`v_{t+1} = A^\top A v_t / \|A^\top A v_t\|` and returns

    .. math::

        \hat s = \|A v_T\| \le \|A\|_2 \qquad (\|v_T\| = 1),

    which increases to :math:`\|A\|_2` when :math:`x_0` is not orthogonal to the top singular
    vector. The iterations run under ``torch.no_grad``; the final :math:`\|Av_T\|` is computed
    with gradients enabled, so it is differentiable in the parameters of ``op`` with
    :math:`v_T` held fixed (as in spectral normalisation). Store the returned vector and pass
    it back as ``x0`` next time (*persistent* vector): while training changes :math:`A`
    slowly, one or two iterations per step keep :math:`\hat s` close to :math:`\|A\|_2`.

    This is an *estimate*, not a certificate: use :func:`conv2d_norm_bound` or
    :func:`linear_norm_bound` for a proven upper bound.

    :param Callable op: :math:`x \mapsto Ax`.
    :param Callable adjoint: :math:`y \mapsto A^\top y`.
    :param torch.Tensor x0: starting vector (any shape ``op`` accepts), finite and non-zero.
    :param int n_iter: number of iterations :math:`T \ge 0` (at most, with ``rtol``).
    :param float | None rtol: stop early once two successive Rayleigh quotients
        :math:`v_t^\top A^\top A v_t` agree to this relative tolerance.
    :return: ``(estimate, vector)``: the 0-d tensor :math:`\hat s` and the unit vector
        :math:`v_T` (detached), to be reused as the next ``x0``.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.lipschitz.estimates import power_iteration
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
        >>> s, v = power_iteration(lambda x: A @ x, lambda y: A.T @ y, torch.ones(3), n_iter=50)
        >>> round(float(s), 4)
        3.0
    """
    if not isinstance(x0, Tensor) or not torch.is_floating_point(x0):
        raise ValueError("x0 must be a floating-point torch.Tensor")
    if int(n_iter) != n_iter or n_iter < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    with torch.no_grad():
        # Norms of vectors divided by their largest entry first: the squares inside a norm
        # would overflow for entries beyond about 1e19 in float32 (the direction is the same).
        if not bool(torch.isfinite(x0).all()) or not bool((x0 != 0).any()):
            raise ValueError("x0 must be finite and non-zero")
        v = _unit(x0.detach())
        previous = None
        for _ in range(int(n_iter)):
            w = adjoint(op(v))
            big = w.abs().max()
            if float(big) == 0:  # v lies in the kernel of A: keep it, the estimate is 0
                break
            # ||A v||^2 with ||v|| = 1
            rayleigh = float(torch.vdot(v.flatten(), (w / big).flatten())) * float(big)
            v = _unit(w)
            if rtol is not None:
                if previous is not None and abs(rayleigh - previous) <= rtol * abs(rayleigh):
                    break
                previous = rayleigh
    return torch.linalg.vector_norm(op(v)), v


def _unit(x: Tensor) -> Tensor:
    x = x / x.abs().max()
    return x / torch.linalg.vector_norm(x)


def conv2d_symbol_power_estimate(weight: Tensor, vectors: Tensor, n_iter: int) -> Tensor:
    r"""Power estimate of :math:`\max_j \|\hat A(\omega_j)\|_2^2` on a :math:`P\times P` grid.

    For a stride-1 convolution kernel :math:`A` (``weight``, shape ``(c_out, c_in, k, k)``)
    the symbol :math:`\hat A(\omega) = \sum_t e^{-i\omega\cdot t} A_t` is sampled at the
    frequencies :math:`\omega_j = 2\pi j/P` of the half grid ``j = (j1, j2)``,
    ``0 <= j1 < P``, ``0 <= j2 <= P // 2`` (a real kernel's symbol is Hermitian), and one
    power iteration on :math:`\hat A(\omega_j)^*\hat A(\omega_j)` runs at every frequency
    at once, ``n_iter`` times, from the persistent complex vectors ``vectors`` (updated in
    place). The returned value :math:`\|\hat A(\omega_{j^\star}) v_{j^\star}\|^2` at the
    maximising frequency is :math:`\le \max_j \|\hat A(\omega_j)\|_2^2`, and
    :func:`~deepinv_dynnets.lipschitz.grid_correction` turns the grid maximum into a bound of
    :math:`\|A\|_2^2` once the iteration has converged.

    The iterations run under ``no_grad``; the value is differentiable in ``weight`` with the
    vectors fixed, as in spectral normalisation. The symbol is never formed:
    :math:`\hat A(\omega)v = \sum_t e^{-i\omega\cdot t}A_t v` is one real matrix product
    with the stacked taps :math:`A_t` for all frequencies (batched complex products and
    autograd through an FFT are slow on CPU); only the maximising frequency carries a
    gradient.

    :param torch.Tensor weight: the kernel, square and odd-sized.
    :param torch.Tensor vectors: shape ``(P, P // 2 + 1, c_in, 2)``, real and imaginary
        parts of the vectors; overwritten with the iterated unit vectors.
    :param int n_iter: number of iterations.
    :return: the estimate, a 0-d tensor in ``weight``'s dtype.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.lipschitz import conv2d_norm_bound
        >>> from deepinv_dynnets.lipschitz.estimates import conv2d_symbol_power_estimate
        >>> w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
        >>> vectors = torch.randn(64, 33, 3, 2, dtype=torch.float64)
        >>> est = conv2d_symbol_power_estimate(w, vectors, 50)
        >>> bool(est <= conv2d_norm_bound(w) ** 2), bool(est >= 0.98 * conv2d_norm_bound(w) ** 2)
        (True, True)
    """
    p, k = vectors.shape[0], weight.shape[-1]
    out_ch, in_ch = weight.shape[:2]
    taps = torch.arange(k, dtype=weight.dtype, device=weight.device)
    rows = torch.arange(p, dtype=taps.dtype, device=taps.device)
    cols = torch.arange(p // 2 + 1, dtype=taps.dtype, device=taps.device)
    # angle[j, t] = 2 pi (j1 a + j2 b) / P for frequency j = (j1, j2) and tap t = (a, b)
    angle = (2 * math.pi / p) * (
        rows.view(-1, 1, 1, 1) * taps.view(1, 1, k, 1)
        + cols.view(1, -1, 1, 1) * taps.view(1, 1, 1, k)
    ).reshape(-1, k * k, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    with torch.no_grad():
        # Iterate with the kernel scaled to entries of at most 1: the iterates' squared norms
        # would overflow in float32 for entries beyond about 1e9; the vectors are the same.
        fixed = weight.detach()
        fixed = fixed / fixed.abs().max().clamp_min(torch.finfo(fixed.dtype).tiny)
        forward_taps = fixed.permute(2, 3, 0, 1).reshape(k * k * out_ch, in_ch).T
        adjoint_taps = fixed.permute(0, 2, 3, 1).reshape(out_ch, k * k * in_ch)
        n_freq = angle.shape[0]

        def apply(vr, vi, taps_matrix, sign):
            # sum_t exp(sign * i angle_t) A_t v, A_t taken from taps_matrix
            av = (torch.cat((vr, vi)) @ taps_matrix).view(2, n_freq, k * k, -1)
            return (
                (cos * av[0] - sign * sin * av[1]).sum(1),
                (cos * av[1] + sign * sin * av[0]).sum(1),
            )

        vr, vi = vectors.to(fixed.dtype).reshape(n_freq, in_ch, 2).unbind(-1)
        for _ in range(n_iter):
            wr, wi = apply(*apply(vr, vi, forward_taps, -1), adjoint_taps, 1)
            n = (wr.square() + wi.square()).sum(dim=1, keepdim=True).sqrt()
            keep = n > 0
            n = n.clamp_min(torch.finfo(n.dtype).tiny)
            vr, vi = torch.where(keep, wr / n, vr), torch.where(keep, wi / n, vi)
        n = (vr.square() + vi.square()).sum(dim=1, keepdim=True).sqrt()
        n = n.clamp_min(torch.finfo(n.dtype).tiny)
        vr, vi = vr / n, vi / n
        vectors.copy_(torch.stack((vr, vi), -1).view_as(vectors))
        ur, ui = apply(vr, vi, forward_taps, -1)
        j = int((ur.square() + ui.square()).sum(dim=1).argmax())
    # The same value at frequency j, as a differentiable function of the weight.
    w = weight.reshape(out_ch, in_ch, k * k)
    re, im = w @ cos[j, :, 0], -(w @ sin[j, :, 0])
    return (re @ vr[j] - im @ vi[j]).square().sum() + (re @ vi[j] + im @ vr[j]).square().sum()
