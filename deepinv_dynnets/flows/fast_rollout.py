r"""A compiled composition loop for SympFlow rollouts on CPU.

A rollout applies :math:`\mathcal N(\Delta t)` thousands of times to a few states; in
PyTorch each composition is about a hundred tiny operations, so Python and dispatch
overhead dominate (about 0.5 ms per composition for the shipped flows). Here the whole
loop :math:`x \mapsto \mathcal N(\Delta t)^m x` runs in C, state by state, with the tanh
MLP potentials' weights packed once: the same maths as the PyTorch path
(:meth:`~deepinv_dynnets.SympFlow.network` at :math:`t = \Delta t` and its inverse),
agreeing with it to round-off (tested).

The C source below is compiled on first use with the system's C compiler (``cc``, or the
``CC`` environment variable) into a per-user cache folder; where no compiler works, the
rollout stays on the PyTorch path (one warning says so). The tanh uses its own
vectorisable exponential (a degree-13, resp. 7, Taylor polynomial after range reduction),
accurate to a few units in the last place in float64 (resp. float32).
"""

from __future__ import annotations

import ctypes
import getpass
import hashlib
import math
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["kernel_available", "compiled_powers"]

_TEMPLATE = r"""
static void tanh_SUFFIX(REAL *a, int len)
{
    /* tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)), with an exp written so that the compiler
       vectorises the loop: k = round(z / ln 2) by the magic-number trick, a Taylor
       polynomial on |r| <= ln(2)/2, and 2^k built in the exponent bits. */
    for (int i = 0; i < len; i++) {
        REAL x = a[i];
        REAL z = 2 * (x < 0 ? -x : x);
        z = z < ZMAX ? z : ZMAX;
        REAL kd = z * (REAL)1.4426950408889634 + MAGIC;
        UINT kbits;
        memcpy(&kbits, &kd, sizeof kbits);
        kd -= MAGIC;
        REAL r = z - kd * LN2HI - kd * LN2LO;
        REAL p = POLY;
        UINT sbits = (kbits + BIAS) << MANT;
        REAL scale;
        memcpy(&scale, &sbits, sizeof scale);
        REAL t = 1 - 2 / (p * scale + 1);
        a[i] = x < 0 ? -t : t;
    }
}

static void shift_SUFFIX(const REAL *P, int depth, int w, int n, const REAL *u, REAL *S,
                         REAL *d, REAL *e, REAL *out)
{
    /* grad_u P(dt, u) - grad_u P(0, u). Layout of P: W1u^T (n x w), c_dt (w), c_0 (w), then
       per hidden layer W^T (w x w), W (w x w), b (w), then the output weights (w). S holds
       the activations, both halves side by side (2w per layer). */
    const REAL *W1T = P, *ct = P + w * n, *c0 = ct + w, *layers = c0 + w;
    long lsize = 2L * w * w + w;
    for (int j = 0; j < w; j++) {
        S[j] = ct[j];
        S[w + j] = c0[j];
    }
    for (int i = 0; i < n; i++) {
        REAL ui = u[i];
        for (int j = 0; j < w; j++) {
            S[j] += W1T[i * w + j] * ui;
            S[w + j] += W1T[i * w + j] * ui;
        }
    }
    tanh_SUFFIX(S, 2 * w);
    for (int k = 1; k < depth; k++) {
        const REAL *WT = layers + (k - 1) * lsize, *b = WT + 2 * w * w;
        const REAL *Sp = S + (k - 1) * 2 * w;
        REAL *Sk = S + k * 2 * w;
        for (int j = 0; j < w; j++) {
            Sk[j] = b[j];
            Sk[w + j] = b[j];
        }
        for (int i = 0; i < w; i++) {
            REAL s0 = Sp[i], s1 = Sp[w + i];
            for (int j = 0; j < w; j++) {
                Sk[j] += WT[i * w + j] * s0;
                Sk[w + j] += WT[i * w + j] * s1;
            }
        }
        tanh_SUFFIX(Sk, 2 * w);
    }
    const REAL *o = layers + (depth - 1) * lsize;
    const REAL *SL = S + (depth - 1) * 2 * w;
    for (int j = 0; j < w; j++) {
        d[j] = o[j] * (1 - SL[j] * SL[j]);
        d[w + j] = o[j] * (1 - SL[w + j] * SL[w + j]);
    }
    for (int k = depth - 1; k >= 1; k--) {
        const REAL *W = layers + (k - 1) * lsize + w * w;
        const REAL *Sp = S + (k - 1) * 2 * w;
        for (int i = 0; i < 2 * w; i++) e[i] = 0;
        for (int j = 0; j < w; j++) {
            REAL d0 = d[j], d1 = d[w + j];
            for (int i = 0; i < w; i++) {
                e[i] += W[j * w + i] * d0;
                e[w + i] += W[j * w + i] * d1;
            }
        }
        for (int i = 0; i < 2 * w; i++) d[i] = e[i] * (1 - Sp[i] * Sp[i]);
    }
    for (int i = 0; i < n; i++) {
        REAL acc = 0;
        for (int j = 0; j < w; j++) acc += W1T[i * w + j] * (d[j] - d[w + j]);
        out[i] = acc;
    }
}

int rollout_SUFFIX(const REAL *params, int layers, int depth, int w, int n, long B, long G,
                   const long *marks, REAL *x, REAL *out)
{
    /* For each of the B states x[b] (rows of 2n: q then p), out[g][b] = N(dt)^marks[g][b] x[b]
       for g = 0..G-1 (a negative power applies the inverse). Each state runs all its steps
       in turn; x is left at the last mark. */
    long size = (long)n * w + 2L * w + (long)(depth - 1) * (2L * w * w + w) + w;
    REAL *S = malloc(sizeof(REAL) * (2 * depth * w + 4 * w + n));
    if (S == NULL) return 1;
    REAL *d = S + 2 * depth * w, *e = d + 2 * w, *sh = e + 2 * w;
    for (long b = 0; b < B; b++) {
        REAL *q = x + b * 2 * n, *p = q + n;
        long current = 0;
        for (long g = 0; g < G; g++) {
            long target = marks[g * B + b];
            for (; current < target; current++) {
                for (int l = 0; l < layers; l++) {
                    shift_SUFFIX(params + 2 * l * size, depth, w, n, p, S, d, e, sh);
                    for (int i = 0; i < n; i++) q[i] += sh[i];
                    shift_SUFFIX(params + (2 * l + 1) * size, depth, w, n, q, S, d, e, sh);
                    for (int i = 0; i < n; i++) p[i] -= sh[i];
                }
            }
            for (; current > target; current--) {
                for (int l = layers - 1; l >= 0; l--) {
                    shift_SUFFIX(params + (2 * l + 1) * size, depth, w, n, q, S, d, e, sh);
                    for (int i = 0; i < n; i++) p[i] += sh[i];
                    shift_SUFFIX(params + 2 * l * size, depth, w, n, p, S, d, e, sh);
                    for (int i = 0; i < n; i++) q[i] -= sh[i];
                }
            }
            memcpy(out + (g * B + b) * 2 * n, q, sizeof(REAL) * 2 * n);
        }
    }
    free(S);
    return 0;
}
"""


def _exp_taylor(degree: int, real: str) -> str:
    """Horner form of the Taylor polynomial of exp(r), as a C expression."""
    expr = f"({real})(1.0 / {math.factorial(degree)}.0)"
    for k in range(degree - 1, 0, -1):
        expr = f"(({real}){1.0 / math.factorial(k)!r} + r * {expr})"
    return f"(1 + r * {expr})"


def _source() -> str:
    variants = [
        {  # float64: z = 2|x| <= 40 (tanh(20) = 1 in float64), |r| <= ln(2)/2
            "SUFFIX": "f64",
            "REAL": "double",
            "UINT": "uint64_t",
            "ZMAX": "40.0",
            "MAGIC": "6755399441055744.0",
            "LN2HI": "6.93147180369123816490e-01",
            "LN2LO": "1.90821492927058770002e-10",
            "BIAS": "1023",
            "MANT": "52",
            "POLY": _exp_taylor(13, "double"),
        },
        {
            "SUFFIX": "f32",
            "REAL": "float",
            "UINT": "uint32_t",
            "ZMAX": "20.0f",
            "MAGIC": "12582912.0f",
            "LN2HI": "0.693145751953125f",
            "LN2LO": "1.428606765330187045e-06f",
            "BIAS": "127",
            "MANT": "23",
            "POLY": _exp_taylor(7, "float"),
        },
    ]
    parts = ["#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n"]
    for subs in variants:
        text = _TEMPLATE
        for key in sorted(subs, key=len, reverse=True):
            text = text.replace(key, subs[key])
        parts.append(text)
    return "".join(parts)


def _cpu_signature() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "deepinv_dynnets"


_LIBRARY: ctypes.CDLL | None = None
_FAILED = False


def _library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use (``None`` if it cannot be)."""
    global _LIBRARY, _FAILED
    if _LIBRARY is not None or _FAILED:
        return _LIBRARY
    source = _source()
    compiler = os.environ.get("CC", "cc")
    # -march=native: the library is built for (and cached per) this CPU.
    flags = ["-O3", "-march=native", "-shared", "-fPIC"]
    key = hashlib.sha256(
        "\n".join([source, compiler, *flags, _cpu_signature(), platform.machine()]).encode()
    ).hexdigest()[:16]
    try:
        folder = _cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / f"deepinv_dynnets-{getpass.getuser()}"
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sympflow_rollout_{key}.so"
    try:
        if not path.is_file():
            src = folder / f"sympflow_rollout_{key}.c"
            src.write_text(source)
            tmp = folder / f".{path.name}.{os.getpid()}"  # then an atomic rename
            subprocess.run(
                [compiler, *flags, "-o", str(tmp), str(src)],
                check=True,
                capture_output=True,
                timeout=120,
            )
            os.replace(tmp, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as err:
        _FAILED = True
        warnings.warn(
            f"SympFlow's compiled rollout is unavailable ({err}); rollouts use PyTorch "
            "(slower for small batches)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    for name in ("rollout_f64", "rollout_f32"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [
            ctypes.c_void_p,
            *[ctypes.c_int] * 4,
            ctypes.c_long,
            ctypes.c_long,
            *[ctypes.c_void_p] * 3,
        ]
    _LIBRARY = lib
    return lib


def kernel_available() -> bool:
    """Whether the compiled rollout could be built (it is compiled on the first call).

    :Examples:

        >>> from deepinv_dynnets.flows.fast_rollout import kernel_available
        >>> isinstance(kernel_available(), bool)
        True
    """
    return _library() is not None


@torch.no_grad()
def _packed(flow) -> Tensor:
    """The flow's weights in the kernel's layout, cached until a parameter changes.

    Per potential, in the order the blocks apply (K_1, V_1, K_2, ...): W1u^T (n x w),
    c_dt = b1 + dt w1t and c_0 = b1 (the first layer at t = dt and t = 0), then per hidden
    layer W^T, W and b, then the output weights.
    """
    key = tuple((p._version, p.data_ptr(), p.dtype) for p in flow.parameters())
    cached = getattr(flow, "_packed_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    parts = []
    for K, V in zip(flow.K, flow.V, strict=True):
        for P in (K, V):
            W1, b1 = P.weights[0], P.biases[0]
            parts += [W1[:, : P.n].T, b1 + flow.dt * W1[:, P.n], b1]
            for W, b in zip(P.weights[1:], P.biases[1:], strict=True):
                parts += [W.T, W, b]
            parts.append(P.out)
    packed = torch.cat([p.reshape(-1) for p in parts]).contiguous()
    flow._packed_cache = (key, packed)
    return packed


def compiled_powers(flow, x: Tensor, marks: Tensor) -> Tensor:
    r"""``out[g]`` :math:`= \mathcal N(\Delta t)^{k_g} x` for integer powers ``marks[g]``
    (negative: the inverse), by the compiled loop. ``x`` is not modified.

    :param SympFlow flow: a flow with tanh potentials, parameters on the CPU in ``x``'s dtype.
    :param torch.Tensor x: states ``(..., 2n)``, float32 or float64, on the CPU.
    :param torch.Tensor marks: integer powers, shape ``(G,)`` (the same for every state) or
        ``(G, *x.shape[:-1])`` (one sequence per state).
    :return: tensor of shape ``(G, *x.shape)``.
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("the compiled rollout is unavailable; see the warning above")
    fn = lib.rollout_f64 if x.dtype == torch.float64 else lib.rollout_f32
    state = x.detach().reshape(-1, flow.dim).clone(memory_format=torch.contiguous_format)
    G, B = marks.shape[0], state.shape[0]
    # Explicit CPU tensors: under torch.set_default_device the kernel must still get host memory.
    powers = marks.to(device="cpu", dtype=torch.long).reshape(G, -1).expand(G, B).contiguous()
    out = torch.empty(G, B, flow.dim, dtype=x.dtype, device="cpu")
    P = flow.K[0]
    status = fn(
        _packed(flow).data_ptr(), len(flow.K), P.depth, P.width, P.n, B, G,
        powers.data_ptr(), state.data_ptr(), out.data_ptr(),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("the compiled rollout could not allocate its work space")
    return out.reshape(G, *x.shape)
