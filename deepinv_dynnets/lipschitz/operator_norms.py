r"""Spectral norms of linear layers: certified upper bounds, for proofs.

Two kinds of numbers exist in this package and must not be confused:

- **estimates** (:mod:`~deepinv_dynnets.lipschitz.estimates`: power iterations): *lower*
  bounds that approach :math:`\|A\|_2` from below; cheap, differentiable, used during
  training;
- **certified upper bounds** (this module: :func:`conv2d_norm_bound`,
  :func:`linear_norm_bound`): numbers proven to be :math:`\ge \|A\|_2`, computed in
  float64 and multiplied by :math:`1 + \varepsilon` with :math:`\varepsilon =`
  :data:`ROUNDOFF_MARGIN` to cover floating-point round-off (float64 FFTs and SVDs are backward stable with relative errors
  of order :math:`10^{-13}` at these sizes, many orders below :math:`\varepsilon`).

**Convolutions.** A stride-1 convolution with kernel :math:`K \in \mathbb R^{c_o \times c_i
\times k_1 \times k_2}` acting on all of :math:`\ell^2(\mathbb Z^2)^{c_i}` is a Fourier
multiplier with the matrix-valued trigonometric polynomial (its *symbol*)

.. math::

    \hat K(\omega) = \sum_{p} K_p\, e^{-i\omega\cdot p} \in \mathbb C^{c_o\times c_i},
    \qquad \omega \in \mathbb T^2 = [0, 2\pi)^2,

so its norm is :math:`S(K) = \sup_{\omega} \|\hat K(\omega)\|_2`. Every convolution a
network actually applies is a *compression* :math:`P C E` of an operator of norm at most
:math:`S(K)`, hence has norm :math:`\le S(K)`:

- circular convolution on an :math:`N_1\times N_2` grid: a Fourier multiplier sampled at
  the grid frequencies :math:`2\pi j/N`, norm :math:`\max_j \|\hat K(2\pi j/N)\|_2 \le
  S(K)` (exact, Sedghi, Gupta and Long, ICLR 2019);
- zero-padded convolution on an :math:`H\times W` image (any zero padding, e.g. ``"same"``):
  with :math:`E` the zero extension to :math:`\mathbb Z^2` (or to the
  :math:`(H+k_1-1)\times(W+k_2-1)` circular grid, where the wrapped taps only ever read the
  zero border) and :math:`P` the restriction to the output pixels, the layer is :math:`PCE`
  with :math:`\|P\|, \|E\| \le 1`, so its norm is at most :math:`\|C\|`.

:math:`S(K)` is therefore a certificate for *every* image size and both paddings, and it is
sharp: the zero-padded norm tends to :math:`S(K)` as the image grows. It is bounded from
above by two methods, see :func:`conv2d_norm_bound`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "ROUNDOFF_MARGIN",
    "grid_correction",
    "circular_conv2d_norm",
    "conv2d_norm_bound",
    "linear_norm_bound",
]

#: Relative safety margin multiplied into every certified bound, for floating-point round-off.
ROUNDOFF_MARGIN = 1e-6


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(p) != p or p < 1 for p in pair):
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_conv_weight(weight: Tensor) -> Tensor:
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(
            f"weight must be a conv2d kernel of shape (c_out, c_in, k1, k2), got {shape}"
        )
    w = weight.detach().to(torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight contains NaN or Inf values")
    return w


def _check_margin(margin: float) -> float:
    m = float(margin)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"margin must be a finite non-negative number, got {margin!r}")
    return m


def grid_correction(kernel_size: int | Sequence[int], grid_size: int | Sequence[int]) -> float:
    r"""Factor :math:`c \ge 1` with :math:`S(K) \le c\,\max_{j}\|\hat K(2\pi j/N)\|_2`.

    For a kernel of size :math:`k_1\times k_2` the symbol's Gram matrix
    :math:`M(\omega) = \hat K(\omega)^* \hat K(\omega)` is a Hermitian trigonometric polynomial
    of degree :math:`d_i = k_i - 1` in :math:`\omega_i`. Let :math:`(\omega^\star, v^\star)`
    attain :math:`S^2 = \max_{\omega, \|v\|=1} v^* M(\omega) v`. The real trigonometric
    polynomial :math:`g(\omega) = v^{\star *} M(\omega) v^\star` satisfies
    :math:`0 \le g \le S^2` with its maximum at :math:`\omega^\star`, so
    :math:`\nabla g(\omega^\star) = 0`, and Bernstein's inequality
    (:math:`\|\partial_i\partial_j g\|_\infty \le d_i d_j \|g\|_\infty`) bounds the
    curvature. The grid point :math:`\omega_j` nearest to :math:`\omega^\star` is within
    :math:`\pi/N_i` in each coordinate, so by Taylor's theorem

    .. math::

        \max_j \|\hat K(\omega_j)\|_2^2 \ \ge\ g(\omega_j) \ \ge\ S^2\Big(1 - \tfrac12 q^2\Big),
        \qquad q = \pi\Big(\frac{d_1}{N_1} + \frac{d_2}{N_2}\Big),

    and :math:`c = (1 - q^2/2)^{-1/2}`. For a :math:`3\times3` kernel: :math:`c \approx
    1.0098` on a :math:`64\times64` grid, :math:`1.0024` on :math:`128\times128`. Square
    :math:`c` for squared norms.

    :param int | Sequence[int] kernel_size: :math:`k` or :math:`(k_1, k_2)`.
    :param int | Sequence[int] grid_size: :math:`N` or :math:`(N_1, N_2)`; must make
        :math:`q < 1`.
    :return: the factor :math:`c`.

    :Examples:

        >>> from deepinv_dynnets.lipschitz.operator_norms import grid_correction
        >>> round(grid_correction(3, 64), 4)
        1.0098
        >>> grid_correction(1, 1)
        1.0
    """
    k1, k2 = _pair(kernel_size, "kernel_size")
    n1, n2 = _pair(grid_size, "grid_size")
    q = math.pi * ((k1 - 1) / n1 + (k2 - 1) / n2)
    if q >= 1:
        raise ValueError(
            f"grid_size {(n1, n2)} is too coarse for kernel_size {(k1, k2)}: need "
            f"pi * ((k1 - 1) / N1 + (k2 - 1) / N2) < 1"
        )
    return 1.0 / math.sqrt(1.0 - q * q / 2)


def _symbol_norms(w: Tensor, n1: int, n2: int) -> Tensor:
    # A real kernel has a Hermitian symbol, K(-w) = conj K(w): the half grid of rfft2 holds
    # every singular value of the full grid.
    symbol = torch.fft.rfft2(w, s=(n1, n2)).permute(2, 3, 0, 1)
    return torch.linalg.matrix_norm(symbol, ord=2)


def circular_conv2d_norm(weight: Tensor, grid_size: int | Sequence[int]) -> float:
    r"""Exact spectral norm of the circular convolution with ``weight`` on an :math:`N_1\times N_2` grid.

    .. math::

        \|C_N\|_2 = \max_{j \in \mathbb Z_{N_1}\times\mathbb Z_{N_2}}
        \big\|\hat K(2\pi j_1/N_1, 2\pi j_2/N_2)\big\|_2

    (Sedghi, Gupta and Long, 2019), in float64, without margin. It is the norm of *that*
    circular operator only. Because a zero-padded convolution on :math:`H\times W` is a
    compression of the circular one on :math:`(H+k_1-1)\times(W+k_2-1)`, the value on that
    grid is also an upper bound for the zero-padded layer on :math:`H\times W` (this is the
    ``"circulant"`` method of :func:`conv2d_norm_bound`). For an image-size-free bound use
    :func:`conv2d_norm_bound`.

    :param torch.Tensor weight: kernel of shape ``(c_out, c_in, k1, k2)``.
    :param int | Sequence[int] grid_size: :math:`N` or :math:`(N_1, N_2)`; any size (taps
        beyond the grid wrap around, as a circular convolution does).
    :return: :math:`\|C_N\|_2`.

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.lipschitz.operator_norms import circular_conv2d_norm
        >>> w = torch.zeros(1, 1, 3, 3); w[0, 0, 1, 1] = 2.0  # 2 * identity
        >>> round(circular_conv2d_norm(w, 8), 12)
        2.0
    """
    w = _check_conv_weight(weight)
    n1, n2 = _pair(grid_size, "grid_size")
    k1, k2 = w.shape[-2:]
    if n1 < k1 or n2 < k2:  # fold the taps that wrap around onto the grid
        w = _fold(w, n1, n2)
    return float(_symbol_norms(w, n1, n2).max())


def _fold(w: Tensor, n1: int, n2: int) -> Tensor:
    out = w.new_zeros(w.shape[:2] + (n1, n2))
    for p1 in range(w.shape[-2]):
        for p2 in range(w.shape[-1]):
            out[..., p1 % n1, p2 % n2] += w[..., p1, p2]
    return out


def _fourier_bound(w: Tensor, n_freq: tuple[int, int] | None) -> float:
    k1, k2 = w.shape[-2:]
    if n_freq is None:
        # 32 points per degree keeps the correction factor below 1 % for every kernel size.
        n_freq = (max(k1, 32 * (k1 - 1)), max(k2, 32 * (k2 - 1)))
    n1, n2 = n_freq
    if n1 < k1 or n2 < k2:
        raise ValueError(f"n_freq {(n1, n2)} must be at least the kernel size {(k1, k2)}")
    c = grid_correction((k1, k2), (n1, n2))
    return c * float(_symbol_norms(w, n1, n2).max())


def _gram_bound(w: Tensor, n_iter: int) -> float:
    # Gram iteration on the kernel: G_1 has symbol M = K^* K (a c x c kernel of size 2k-1),
    # G_t has symbol M^(2^(t-1)), so S(K)^(2^t) = sup ||M^(2^(t-1))|| <= sum_r ||G_t[r]||_F.
    # The coefficients G_t[r] (|r_i| <= D_i = 2^(t-1)(k_i-1)) are computed exactly from the
    # symbol sampled on a grid of 2 D_i + 1 points (no aliasing), with rescaling against
    # overflow. Only the sum of norms is needed, so the index convention is irrelevant.
    c_out, c_in, k1, k2 = w.shape
    d1, d2 = 2 ** (n_iter - 1) * (k1 - 1), 2 ** (n_iter - 1) * (k2 - 1)
    n1, n2 = 2 * d1 + 1, 2 * d2 + 1
    symbol = torch.fft.rfft2(w, s=(n1, n2)).permute(2, 3, 0, 1)
    m = symbol.mH @ symbol if c_in <= c_out else symbol @ symbol.mH
    log_scale = 0.0
    for _ in range(n_iter - 1):
        s = float(torch.linalg.matrix_norm(m).max())
        if s == 0:
            return 0.0
        m = m / s
        log_scale = 2 * (log_scale + math.log(s))
        m = m @ m
    # M is Hermitian-symmetric in omega (real coefficients): irfft2 recovers them.
    coeffs = torch.fft.irfft2(m.permute(2, 3, 0, 1), s=(n1, n2))
    total = float(torch.linalg.matrix_norm(coeffs.permute(2, 3, 0, 1)).sum())
    if total == 0:
        return 0.0
    return math.exp((log_scale + math.log(total)) / 2**n_iter)


def conv2d_norm_bound(
    weight: Tensor,
    method: str = "fourier",
    input_size: int | Sequence[int] | None = None,
    n_freq: int | Sequence[int] | None = None,
    n_iter: int = 5,
    margin: float = ROUNDOFF_MARGIN,
) -> float:
    r"""Certified upper bound of the spectral norm of a stride-1 2-D convolution.

    For ``method="fourier"`` and ``"gram"`` the bound is :math:`\ge S(K) =
    \sup_\omega\|\hat K(\omega)\|_2` (see the module docstring), so it holds for the
    zero-padded convolution on **every** image size (any zero padding, e.g. ``"same"``) and
    for the circular convolution on every grid; ``"circulant"`` is sharper but holds for one
    image size only.

    - ``"fourier"`` (default): the exact per-frequency norms :math:`\|\hat K(\omega_j)\|_2`
      (float64 SVDs) on an :math:`N_1\times N_2` grid, maximised, times the rigorous
      curvature correction :func:`grid_correction`:

      .. math::

          S(K) \le \Big(1 - \tfrac12 q^2\Big)^{-1/2} \max_j \|\hat K(\omega_j)\|_2,
          \qquad q = \pi\Big(\frac{k_1-1}{N_1} + \frac{k_2-1}{N_2}\Big).

      The default grid :math:`N_i = 32(k_i - 1)` makes the correction at most
      :math:`1.0098`: the bound exceeds :math:`S(K)` by under 1 %.
    - ``"gram"``: Gram iteration on the kernel (Delattre, Barthélemy, Araujo and Allauzen,
      ICML 2023; Delattre, Barthélemy and Allauzen, 2024). With :math:`G_1 = K^\top\!\star K`
      (symbol :math:`M = \hat K^*\hat K`) and :math:`G_{t+1} = G_t^\top\!\star G_t` (symbol
      :math:`M^{2^t}`), computed exactly,

      .. math::

          S(K)^{2^t} = \sup_\omega \|M(\omega)^{2^{t-1}}\|_2
          \le \sup_\omega \|\hat G_t(\omega)\|_F \le \sum_r \|G_t[r]\|_F,

      the triangle inequality over the taps (never larger than its Cauchy–Schwarz form
      :math:`\sqrt{\#\text{taps}}\,\|G_t\|_F`). The slack factor is at most
      :math:`(\#\text{taps}\cdot c)^{2^{-t-1}}` and shrinks doubly exponentially with
      ``n_iter``; the coefficient grid grows as :math:`2^t k`, so ``n_iter`` of 5 or 6 is
      the practical limit.
    - ``"circulant"``: needs ``input_size=(H, W)``; the exact norm of the circular
      convolution on :math:`(H+k_1-1)\times(W+k_2-1)` (:func:`circular_conv2d_norm`), an upper
      bound for the zero-padded convolution on :math:`H\times W` only (it is a compression of
      that circular operator).

    All are computed in float64 and multiplied by ``1 + margin``.

    :param torch.Tensor weight: kernel of shape ``(c_out, c_in, k1, k2)``.
    :param str method: ``"fourier"``, ``"gram"`` or ``"circulant"``.
    :param int | Sequence[int] | None input_size: image size :math:`(H, W)`, for
        ``"circulant"`` only.
    :param int | Sequence[int] | None n_freq: frequency grid of ``"fourier"``; ``None`` for
        :math:`32(k - 1)` per axis.
    :param int n_iter: number of Gram iterations :math:`t \ge 1` of ``"gram"``.
    :param float margin: relative round-off margin (default :data:`ROUNDOFF_MARGIN`).
    :return: the certified bound, a float.

    :Examples:

        >>> import torch
        >>> import torch.nn.functional as F
        >>> from deepinv_dynnets.lipschitz import conv2d_norm_bound, power_iteration
        >>> w = torch.randn(4, 2, 3, 3, dtype=torch.float64)
        >>> bound = conv2d_norm_bound(w)
        >>> est, _ = power_iteration(lambda x: F.conv2d(x, w, padding=1),
        ...                          lambda y: F.conv_transpose2d(y, w, padding=1),
        ...                          torch.randn(1, 2, 19, 17, dtype=torch.float64), 100)
        >>> bool(est <= bound), bool(conv2d_norm_bound(w, "gram") >= bound / 1.01)
        (True, True)
    """
    w = _check_conv_weight(weight)
    margin = _check_margin(margin)
    if method == "fourier":
        value = _fourier_bound(w, None if n_freq is None else _pair(n_freq, "n_freq"))
    elif method == "gram":
        if int(n_iter) != n_iter or n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
        value = _gram_bound(w, int(n_iter))
    elif method == "circulant":
        if input_size is None:
            raise ValueError("method='circulant' needs input_size=(H, W)")
        h, wd = _pair(input_size, "input_size")
        k1, k2 = w.shape[-2:]
        value = circular_conv2d_norm(w, (h + k1 - 1, wd + k2 - 1))
    else:
        raise ValueError(f"method must be 'fourier', 'gram' or 'circulant', got {method!r}")
    return value * (1 + margin)


def linear_norm_bound(weight: Tensor, margin: float = ROUNDOFF_MARGIN) -> float:
    r"""Certified upper bound of :math:`\|W\|_2` for a dense layer ``x @ W.T``.

    The largest singular value from a float64 SVD (backward stable: the computed value is
    exact for a matrix within :math:`O(\epsilon_{64})\|W\|` of :math:`W`), times
    ``1 + margin``.

    .. math::

        \|W\|_2 \le (1 + \varepsilon)\, \sigma_{\max}^{\text{float64}}(W).

    :param torch.Tensor weight: the matrix, shape ``(out_features, in_features)``.
    :param float margin: relative round-off margin (default :data:`ROUNDOFF_MARGIN`).

    :Examples:

        >>> import torch
        >>> from deepinv_dynnets.lipschitz.operator_norms import linear_norm_bound
        >>> round(linear_norm_bound(torch.diag(torch.tensor([1.0, -3.0]))), 4)
        3.0
    """
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError("weight must be a 2-D matrix (out_features, in_features)")
    w = weight.detach().to(torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight contains NaN or Inf values")
    margin = _check_margin(margin)
    return float(torch.linalg.matrix_norm(w, ord=2)) * (1 + margin)
