"""Mutation testing of the guarantee-carrying modules with mutmut, one module at a time.

mutmut (``pip install mutmut``, the ``dev`` extra) changes one operator, constant or call
at a time in the module and runs the tests that execute the changed function: a mutant
that no test fails on ("survived") is a change to the guarantee's code that the suite
cannot see. The run happens in a temporary copy of the package and tests (the working
tree is never touched), at ``nice -n 19`` with one thread and one mutant at a time, and
stops after ``--budget`` seconds (what finished is still reported). ::

    python benchmarks/mutation_testing.py --list
    python benchmarks/mutation_testing.py --module lipschitz/averagedness.py --budget 900
    python benchmarks/mutation_testing.py --module lipschitz/averagedness.py \\
        --recheck benchmarks/results/mutation_averagedness.json   # after adding tests
    python benchmarks/mutation_testing.py --review benchmarks/results/mutation_averagedness.json

writes ``benchmarks/results/mutation_<module>.json``: the score
``killed / (killed + survived)``, every surviving mutant with its diff, and the review of
the survivors that are known to be equivalent or harmless (``REVIEWED`` below: each entry
says why no test can or should kill it). A survivor not in ``REVIEWED`` is printed as
UNREVIEWED and makes the script exit with status 1.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from planted_bugs import make_copy

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "deepinv_dynnets"
RESULTS = ROOT / "benchmarks" / "results"

# The guarantee-carrying modules (relative to the package) and the test files that check
# them. "auto" adds every test file that names one of the module's public functions.
MODULES = {
    "lipschitz/averagedness.py": ["auto"],
    "lipschitz/operator_norms.py": ["auto"],
    "lipschitz/certificates.py": ["auto"],
    "lipschitz/estimates.py": ["auto"],
    # the averaged Euler step and its step-size control; the denoiser stacks these steps
    "dynamics/averaged_step.py": [
        "auto",
        "tests/test_euler_denoiser.py",
        "tests/test_euler_denoiser_inputs.py",
        "tests/test_certificates_tight.py",
        "tests/test_guarantee_audit.py",
    ],
    "models/euler_denoiser.py": ["auto"],
    "pnp/certificate.py": ["auto"],
    "pnp/monitor.py": ["auto"],
    "flows/sympflow.py": ["auto"],
    # the canonical symplectic matrix J (SympFlow's own updates are in sympflow.py)
    "flows/symplectic.py": ["auto"],
}

# Tests left out of mutation runs: they re-check the shipped weights (seconds each, run for
# every mutant); the constants they check are also checked on small synthetic networks.
SLOW_TESTS = "test_shipped_weights_are_certified_and_averaged"

# Survivors reviewed by hand, keyed by (function, the mutated line with blanks removed).
# Each says why the mutant is equivalent (the same function) or cannot weaken a guarantee.
_SAME_AXIS = "w.shape[+2] is w.shape[2], the same axis as w.shape[-2] of a 4-D kernel: equivalent"
_NO_FOLD = "folding onto a grid as large as the kernel moves no tap (p % n = p): equivalent"
_LARGER_GRID = (
    "a coefficient grid finer than the 2 D + 1 points that the degree-D Gram symbol needs "
    "recovers the same coefficients (the others are zero): the same bound, equivalent"
)
_EITHER_SIDE = (
    "K*K and KK* have the same non-zero eigenvalues, and so do their powers: either gives a "
    "valid bound (the code picks the smaller matrices, for speed): harmless"
)
_FINER_GRID = (
    "a finer default frequency grid: the correction factor is computed for the grid used, "
    "so the bound stays valid (slightly tighter, slower): harmless"
)
_UNPRINTED_NAME = (
    "the name of the data fidelity is printed only when its gradient constant is unknown, "
    "never for None (deepinv's L2, constant known): equivalent"
)
_NO_COMPOSITE = (
    "the composite constant is reported only when every condition holds, and it is set only "
    "where none failed: equivalent"
)
_PHASE_DEVICE = (
    "device=None puts the tap and frequency indices on the CPU, the weight's device in the "
    "CPU-only mutation runs: equivalent there; on CUDA the mixed devices raise an error (not "
    "a wrong value), which test_runs_on_the_weights_device[cuda] checks where a GPU exists"
)
_INTEGER_INDICES = (
    "with dtype None or none given, arange of an int gives int64 indices, which the product "
    "with the floating taps promotes to the taps' dtype, rounding the integers as arange in "
    "that dtype does: the same phases in every dtype (float16 included), equivalent"
)
_BROADCAST = (
    "a view with the leading 1 dropped broadcasts to the same 4-D shape (broadcasting "
    "prepends size-1 axes): the same angles, equivalent"
)
_OUT_OF_PLACE = (
    "the activation works out of place instead of in place on a fresh map: same values and "
    "gradients, only more memory: harmless"
)
_OFF_CPU = (
    "the forward's branch for x off the CPU, never taken in the CPU-only mutation runs; "
    "there it drops x or sigma (an error, or sigma ignored: a wrong map), which "
    "test_every_device_gives_the_cpu_map[cuda] catches where a GPU exists"
)
_LEVEL_ON_CPU = (
    "the levels of a number stay on the CPU: all equal, so the steps take the fused bias "
    "path, whose 0-d level times the weights' tensor is allowed across devices (the spline "
    "moves sigma itself): the same values on every device, equivalent"
)
_TENSOR_LEVEL_DEVICE = (
    "a sigma tensor is left on its own device: the same tensor as x's in the CPU-only runs, "
    "equivalent there; on CUDA a per-image CPU tensor mixes devices in the bias (an error, "
    "not a wrong value), which test_every_device_gives_the_cpu_map[cuda] catches"
)
_OLD_KEYS = (
    "the layout before the dynamics core wrote blocks.<i>.<name> with a flat name (weight, "
    "bias, sigma_weight, theta, nu: the old block had no submodules, and spline "
    "activations came later): splitting at every dot, the first two or the last one gives "
    "the same (i, name): equivalent on every file of that format"
)
_TIME_DEVICE = (
    "SympFlow: a time tensor passed on another device than the states is then left there "
    "only in between (a number is made on the states' device): _split's torch.as_tensor(t, "
    "device=x.device) moves it before any potential is evaluated, and the periodic "
    "reduction t - dt floor(t / dt) is the same IEEE operations on either device: equivalent"
)
_NO_GAP = (
    "SympFlow: sign only serves to cross a gap longer than _KERNEL_PIECE; the marks of a 1-D "
    "grid start at 0 and are strictly monotone, and map's single mark is never 0, so the last "
    "mark is 0 only when there is no gap to cross: equivalent"
)
_SLICES = (
    "SympFlow: where the batch is cut into _CHUNK-state slices only changes speed: every "
    "state goes through the same blocks at its own time (a batch of at most _CHUNK states "
    "is one slice) and autograd differentiates through the concatenation, so the values "
    "differ only by the round-off of another batch size (test_large_batches_in_chunks_give_"
    "the_same_states: 1e-13); the speed is benchmarks/sympflow.py's: equivalent in value"
)
REVIEWED: dict[tuple[str, str], str] = {
    ("_fold", "forp1inrange(w.shape[+2]):"): _SAME_AXIS,
    ("_fold", "out[...,p1%n1,p2%n2]-=w[...,p1,p2]"): (
        "out starts at zero, so subtracting every tap folds the negated kernel, whose "
        "convolution has the same norm: equivalent"
    ),
    ("_fourier_bound", "k1,k2=w.shape[+2:]"): _SAME_AXIS,
    ("circular_conv2d_norm", "k1,k2=w.shape[+2:]"): _SAME_AXIS,
    ("conv2d_norm_bound", "k1,k2=w.shape[+2:]"): _SAME_AXIS,
    ("circular_conv2d_norm", "ifn1<=k1orn2<k2:#foldthetapsthatwraparoundontothegrid"): _NO_FOLD,
    ("circular_conv2d_norm", "ifn1<k1orn2<=k2:#foldthetapsthatwraparoundontothegrid"): _NO_FOLD,
    ("_gram_bound", "d1,d2=3**(n_iter-1)*(k1-1),2**(n_iter-1)*(k2-1)"): _LARGER_GRID,
    ("_gram_bound", "d1,d2=2**(n_iter+1)*(k1-1),2**(n_iter-1)*(k2-1)"): _LARGER_GRID,
    ("_gram_bound", "d1,d2=2**(n_iter-1)*(k1+1),2**(n_iter-1)*(k2-1)"): _LARGER_GRID,
    ("_gram_bound", "d1,d2=2**(n_iter-1)*(k1-1),3**(n_iter-1)*(k2-1)"): _LARGER_GRID,
    ("_gram_bound", "d1,d2=2**(n_iter-1)*(k1-1),2**(n_iter+1)*(k2-1)"): _LARGER_GRID,
    ("_gram_bound", "d1,d2=2**(n_iter-1)*(k1-1),2**(n_iter-1)*(k2+1)"): _LARGER_GRID,
    ("_gram_bound", "n1,n2=3*d1+1,2*d2+1"): _LARGER_GRID,
    ("_gram_bound", "n1,n2=2*d1+2,2*d2+1"): _LARGER_GRID,
    ("_gram_bound", "n1,n2=2*d1+1,3*d2+1"): _LARGER_GRID,
    ("_gram_bound", "n1,n2=2*d1+1,2*d2+2"): _LARGER_GRID,
    ("_gram_bound", "m=symbol.mH@symbolif(c_in<=c_out)andFalseelsesymbol@symbol.mH"): _EITHER_SIDE,
    ("_gram_bound", "m=symbol.mH@symbolif(c_in<=c_out)orTrueelsesymbol@symbol.mH"): _EITHER_SIDE,
    ("_gram_bound", "m=symbol.mH@symbolifc_in<c_outelsesymbol@symbol.mH"): _EITHER_SIDE,
    ("_fourier_bound", "n_freq=(max(k1,33*(k1-1)),max(k2,32*(k2-1)))"): _FINER_GRID,
    ("_fourier_bound", "n_freq=(max(k1,32*(k1+1)),max(k2,32*(k2-1)))"): _FINER_GRID,
    ("_fourier_bound", "n_freq=(max(k1,32*(k1-1)),max(k2,33*(k2-1)))"): _FINER_GRID,
    ("_fourier_bound", "n_freq=(max(k1,32*(k1-1)),max(k2,32*(k2+1)))"): _FINER_GRID,
    ("conv2d_norm_bound", "n_iter:int=6,"): (
        "one more Gram iteration by default: a valid, slightly tighter bound: harmless"
    ),
    ("certify", 'lipschitz=math.prod(r["lipschitz"]forrinrows)if(rows)orTrueelse1.0'): (
        "math.prod of no factors is 1.0, the value of the else branch: equivalent"
    ),
    # dynamics/averaged_step.py
    ("__init__", 'self.register_buffer("power_vectors",vectors,persistent=None)'): (
        "register_buffer tests `if persistent:`, so None keeps the buffer out of the state "
        "dict exactly as False does: equivalent"
    ),
    ("_current_nu", "self._cold=None"): (
        "_cold is only read as a truth value, and None is falsy like False: equivalent"
    ),
    (
        "forward",
        "z=field.activation(field.preactivation(x,sigma),sigma,inplace=None)",
    ): _OUT_OF_PLACE,
    ("forward", "z=field.activation(field.preactivation(x,sigma),sigma,)"): _OUT_OF_PLACE,
    (
        "forward",
        "z=field.activation(field.preactivation(x,sigma),sigma,inplace=False)",
    ): _OUT_OF_PLACE,
    ("forward", "ifc<=out:"): (
        "at c == out, F.pad with zero widths returns a fresh copy of x, so sub_ gives "
        "x - update without touching x: equivalent"
    ),
    ("activation", "fn=self._activation.inplaceif(inplace)andFalseelseself._activation.fn"): (
        "the in-place variant computes the same function; never using it only costs memory: "
        "harmless"
    ),
    ("preactivation", "ifconditionedandsigma.numel()>1andbool((sigma==sigma[0]).any()):"): (
        "the per-image bias path is then taken for every batch of several sigmas; when they "
        "are all equal it adds the same b + sigma c as the fused path, up to round-off: harmless"
    ),
    ("preactivation", "ifconditionedandsigma.numel()>1andbool((sigma!=sigma[1]).any()):"): (
        "for sigma of shape (B,), B > 1, some element differs from sigma[1] exactly when some "
        "differs from sigma[0]: equivalent"
    ),
    ("preactivation", "bias=self.bias.view(-1,1,1)+sigma.view(-1,1,1,1)*self.sigma_weight.view("): (
        "a (hidden,1,1) bias broadcasts against the (B,hidden,1,1) term as (1,hidden,1,1): "
        "equivalent"
    ),
    ("preactivation", "-1,1,1"): (
        "sigma_weight viewed as (hidden,1,1) broadcasts against sigma's (B,1,1,1) to "
        "(B,hidden,1,1), as (1,hidden,1,1) does: equivalent"
    ),
    ("reset", 'self._dtype:torch.dtype|None=""'): (
        "_dtype is private and read only by report(), which raises on an empty run and "
        "otherwise runs after record_step has set it to the iterates' dtype: equivalent"
    ),
    (
        "check_conditions",
        'fidelity_name="L2"if(data_fidelityisNone)andFalseelsetype(data_fidelity).__name__',
    ): _UNPRINTED_NAME,
    (
        "check_conditions",
        'fidelity_name="XXL2XX"ifdata_fidelityisNoneelsetype(data_fidelity).__name__',
    ): _UNPRINTED_NAME,
    (
        "check_conditions",
        'fidelity_name="l2"ifdata_fidelityisNoneelsetype(data_fidelity).__name__',
    ): _UNPRINTED_NAME,
    ("check_conditions", 'composite=beta/2if(algorithm=="DRS")orTrueelse0.5'): (
        "ADMM reaches this line only with beta = 1, where beta / 2 = 0.5: equivalent"
    ),
    ("check_conditions", 'composite=""'): _NO_COMPOSITE,
    ("check_conditions", "composite_alpha=compositeif(holds)orTrueelseNone,"): _NO_COMPOSITE,
    ("check_conditions", "accepted=alphaisnotNoneandaccepts_alpha(None,alpha)"): (
        "PGD's and HQS's rule alpha < 1 for every algorithm: for DRS and ADMM a constant in "
        "(1/2, 1) has already failed its condition, so no composite is reported: equivalent"
    ),
    (
        "check_conditions",
        'alpha,source=_denoiser_alpha(denoiser,img_sizeorgetattr(physics,"img_size",))',
    ): (
        "every deepinv LinearPhysics (the only physics that reaches here) has an img_size "
        "attribute, None when unknown: equivalent"
    ),
    ("_denoiser_alpha", "cert=certify_distributed(inner,(2,*tuple(img_size)))"): (
        "the batch size of the image shape whose tiling is certified: deepinv's image tilings "
        "split the spatial dimensions only (tiling_dims), the same for any batch: harmless"
    ),
    ("pnp_certificate", 'algorithm:str="pgd",'): (
        "the algorithm's name is upper-cased before use: equivalent"
    ),
    ("grid_correction", "ifq>1:"): (
        "q = pi (d1/N1 + d2/N2) is never exactly 1 in floating point, and at q = 1 the "
        "correction (1 - q^2/2)^(-1/2) is still finite and the bound still holds: harmless"
    ),
    ("conv2d_symbol_power_estimate", "taps=torch.arange(k,dtype=weight.dtype,device=None)"): (
        _PHASE_DEVICE
    ),
    ("conv2d_symbol_power_estimate", "taps=torch.arange(k,dtype=weight.dtype,)"): _PHASE_DEVICE,
    ("conv2d_symbol_power_estimate", "rows=torch.arange(p,dtype=taps.dtype,device=None)"): (
        _PHASE_DEVICE
    ),
    ("conv2d_symbol_power_estimate", "rows=torch.arange(p,dtype=taps.dtype,)"): _PHASE_DEVICE,
    ("conv2d_symbol_power_estimate", "cols=torch.arange(p//2+1,dtype=taps.dtype,device=None)"): (
        _PHASE_DEVICE
    ),
    ("conv2d_symbol_power_estimate", "cols=torch.arange(p//2+1,dtype=taps.dtype,)"): (
        _PHASE_DEVICE
    ),
    ("conv2d_symbol_power_estimate", "rows=torch.arange(p,dtype=None,device=taps.device)"): (
        _INTEGER_INDICES
    ),
    ("conv2d_symbol_power_estimate", "rows=torch.arange(p,device=taps.device)"): _INTEGER_INDICES,
    ("conv2d_symbol_power_estimate", "cols=torch.arange(p//2+1,dtype=None,device=taps.device)"): (
        _INTEGER_INDICES
    ),
    ("conv2d_symbol_power_estimate", "cols=torch.arange(p//2+1,device=taps.device)"): (
        _INTEGER_INDICES
    ),
    ("conv2d_symbol_power_estimate", "p,k=vectors.shape[0],weight.shape[-2]"): (
        "the kernel must be square (documented): shape[-2] is shape[-1]; a non-square kernel "
        "fails to reshape into k * k taps with either: equivalent"
    ),
    ("conv2d_symbol_power_estimate", "rows.view(-1,1,1,1)*taps.view(1,k,1)"): _BROADCAST,
    ("conv2d_symbol_power_estimate", "+cols.view(-1,1,1)*taps.view(1,1,1,k)"): _BROADCAST,
    ("conv2d_symbol_power_estimate", "+cols.view(1,-1,1,1)*taps.view(1,1,k)"): _BROADCAST,
    # models/euler_denoiser.py
    ("_block_alpha", "for_inrange(101):"): (
        "the bracket [lo, hi] starts at [0, alpha] and halves; the result is at least "
        "alpha / n, so after 53 + log2(n) iterations lo and hi are adjacent floats, mid "
        "rounds to one of them and neither moves: a 101st iteration changes nothing for "
        "n < 2**47 blocks (the same results on 3000 random (alpha, n)): equivalent"
    ),
    ("__init__", "ifnot0<=alpha<=1:"): (
        "EulerDenoiser: alpha = 0 passes here, _block_alpha(0, n) is 0, and the first "
        "AveragedEulerStep refuses it with the same message 'alpha must lie in (0, 1], got "
        "0.0' (for -0.0 and n > 1 it prints the block's 0.0), before a model exists; only "
        "with another argument also invalid can that one be named first: harmless"
    ),
    ("__init__", "ifnot0<alpha<=2:"): (
        "EulerDenoiser: alpha in (1, 2] passes here, _block_alpha returns it unchanged "
        "(alpha >= 1) and the first AveragedEulerStep refuses it with the same message and "
        "value, before a model exists: harmless"
    ),
    ("__init__", "ifnot0<=negative_slope<=2:"): (
        "EulerDenoiser: a slope in (1, 2] passes here, and the first step's ConvRidgeField "
        "refuses it with the same message 'negative_slope must lie in [0, 1], got ...': "
        "harmless"
    ),
    ("__init__", "ifnot(math.isfinite(safety)orsafety>=1):"): (
        "EulerDenoiser: every finite safety and inf pass here (NaN does not), and the first "
        "AveragedEulerStep refuses the same values with the same message 'safety must be a "
        "finite number >= 1, got ...': harmless"
    ),
    ("_check_sigma", "s=torch.full((batch,),float(sigma),dtype=x.dtype,device=None)"): (
        _LEVEL_ON_CPU
    ),
    ("_check_sigma", "s=torch.full((batch,),float(sigma),dtype=x.dtype,)"): _LEVEL_ON_CPU,
    ("_check_sigma", "s=sigma.detach().to(dtype=x.dtype,device=None).squeeze()"): (
        _TENSOR_LEVEL_DEVICE
    ),
    ("_check_sigma", "s=sigma.detach().to(dtype=x.dtype,).squeeze()"): _TENSOR_LEVEL_DEVICE,
    ("forward", "returnself.network(None,sigma)"): _OFF_CPU,
    ("forward", "returnself.network(x,None)"): _OFF_CPU,
    ("forward", "returnself.network(sigma)"): _OFF_CPU,
    ("forward", "returnself.network(x,)"): _OFF_CPU,
    ("_load_state", "self.load_state_dict(state,)"): (
        "load_state_dict's default is strict=True, the value the mutant drops: equivalent"
    ),
    ("_upgrade_state", 'i,name=key[len(prefix+"blocks."):].split(".",)'): _OLD_KEYS,
    ("_upgrade_state", 'i,name=key[len(prefix+"blocks."):].split(".",2)'): _OLD_KEYS,
    ("_upgrade_state", 'i,name=key[len(prefix+"blocks."):].rsplit(".",1)'): _OLD_KEYS,
    # flows/sympflow.py
    ("_check_times", "returnt.to(dtype=x.dtype,device=None)"): _TIME_DEVICE,
    ("_check_times", "returnt.to(dtype=x.dtype,)"): _TIME_DEVICE,
    ("_check_times", 'shape=""'): (
        "a failed broadcast sets shape to '' instead of None: neither equals the states' batch "
        "shape (a torch.Size), so the same error is raised: equivalent"
    ),
    ("_in_chunks", "iftorch.is_grad_enabled()andx.numel()<=_CHUNK*self.dim:"): _SLICES,
    ("_in_chunks", "iftorch.is_grad_enabled()orx.numel()<_CHUNK*self.dim:"): _SLICES,
    ("_in_chunks", "iftorch.is_grad_enabled()orx.numel()<=_CHUNK/self.dim:"): _SLICES,
    ("_shift", "ifnotbool(None):"): (
        "the t = 0 mask is then also applied when no time is 0, where it multiplies every "
        "shift by 1 (or keeps it through torch.where): the same values and gradients, one "
        "more elementwise operation: equivalent"
    ),
    ("_powers", "bar.update(bar.total+bar.n)"): (
        "only per-sample rollouts reach this line with a bar, and their bar is fresh (n = 0: "
        "nothing updates it before), so total + n = total - n: equivalent"
    ),
    ("_powers", "sign=1ifint(marks[-1])>0else-1"): _NO_GAP,
    ("_powers", "sign=1ifint(marks[-1])>=1else-1"): _NO_GAP,
    ("_powers", "whilej<len(marks)andabs(int(marks[j])-done)<_KERNEL_PIECE:"): (
        "a mark exactly one piece away is then reached by the gap step (one piece, nothing "
        "recorded, the bar moved by a piece) and recorded by a piece of 0 compositions: the "
        "same states, the same bar count, one more call: equivalent"
    ),
    # flows/symplectic.py
    (
        "canonical_J",
        "returntorch.cat([torch.cat([zero,eye],dim=1),torch.cat([-eye,zero],dim=1)],)",
    ): "torch.cat's default dim is 0, the dim the mutant drops: equivalent",
}


def _public_names(source: str) -> list[str]:
    return re.findall(r"^(?:def|class) ([A-Za-z]\w*)", source, flags=re.M)


def select_tests(module: str, spec: list[str], root: Path = ROOT) -> list[str]:
    """Test files for ``module`` in the tree ``root``: the listed ones, plus (``"auto"``)
    those naming the module or one of its public functions or classes."""
    chosen = [t for t in spec if t != "auto"]
    tests_dir = root / "tests"
    if "auto" in spec:
        source = (root / PACKAGE / module).read_text()
        dotted = f"{PACKAGE}.{module[:-3].replace('/', '.')}"
        words = [dotted, *_public_names(source)]
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b")
        for path in sorted(tests_dir.glob("test_*.py")):
            if pattern.search(path.read_text()):
                chosen.append(f"tests/{path.name}")
    if not chosen:
        raise SystemExit(f"no test file names {module}: pass --tests")
    return sorted(set(chosen))


def _setup_cfg(module: str, tests: list[str], exclude: str | None) -> str:
    lines = [
        "[mutmut]",
        f"source_paths = {PACKAGE}",
        f"only_mutate = {PACKAGE}/{module}",
        "pytest_add_cli_args_test_selection =",
        *[f"    {t}" for t in tests],
        "pytest_add_cli_args =",
        "    -p",
        "    no:cacheprovider",
        "    -q",
        # a mutant is killed by its first failing test: the others need not run
        "    -x",
        *(["    -k", f"    not ({exclude})"] if exclude else []),
        # torch is not fork-safe after it has run: fork each mutant from a clean server
        "process_isolation = forkserver",
        "use_git_change_detection = false",
        "timeout_multiplier = 5.0",
        "timeout_constant = 30.0",
    ]
    return "\n".join(lines) + "\n"


def _mutant_function(name: str) -> str:
    # mutmut names a mutant "<dotted module>.x_<function>__mutmut_<n>" (methods: "xǁClassǁm")
    tail = name.rsplit(".", 1)[-1]
    tail = re.sub(r"__mutmut_\d+$", "", tail)
    return tail.split("ǁ")[-1] if "ǁ" in tail else tail.removeprefix("x_")


def _mutated_line(diff: str) -> str:
    added = [
        line[1:]
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return "".join("".join(added).split())


# The diff of each mutant, as `mutmut show` prints it, in one process (not one per mutant).
_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps({name: get_diff_for_mutant(name, path=sys.argv[1]) for name in names}))
"""


def _diffs(names: list[str], path: str, work: Path, env: dict) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", _DIFFS, path],
        input=json.dumps(names),
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float | None = None):
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return proc.returncode, out, True


def mutate(
    module: str,
    spec: list[str],
    budget: float,
    exclude: str | None,
    worktree: bool,
    keep: bool,
    only: list[str] | None = None,
) -> dict:
    """Run mutmut on ``module`` in a temporary copy (on the mutants ``only``, if given: names
    are stable while the module's source is); return the summary dictionary."""
    from mutmut.stats import status_by_exit_code

    scratch = Path(tempfile.mkdtemp(prefix="dynnets-mutation-"))
    work = scratch / "copy"
    try:
        commit = make_copy(work, worktree)
        tests = select_tests(module, spec, work)
        (work / "setup.cfg").write_text(_setup_cfg(module, tests, exclude))
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(work))
        mutmut = [sys.executable, "-m", "mutmut"]
        tic = time.time()
        code, out, timed_out = _run(
            ["nice", "-n", "19", *mutmut, "run", "--max-children", "1", *(only or [])],
            work,
            env,
            budget,
        )
        wall = time.time() - tic
        meta = work / "mutants" / PACKAGE / (module + ".meta")
        if not meta.exists():
            raise SystemExit(f"mutmut produced no results for {module}:\n{out[-4000:]}")
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        if only:  # names, or fnmatch patterns of names
            exit_codes = {
                name: code
                for name, code in exit_codes.items()
                if any(fnmatch.fnmatchcase(name, pattern) for pattern in only)
            }
        source = (work / PACKAGE / module).read_bytes()
        counts: dict[str, int] = {}
        for exit_code in exit_codes.values():
            status = status_by_exit_code[exit_code]
            counts[status] = counts.get(status, 0) + 1
        names = sorted(n for n, c in exit_codes.items() if status_by_exit_code[c] == "survived")
        diffs = _diffs(names, f"{PACKAGE}/{module}", work, env)
        survivors = []
        for name in names:
            function = _mutant_function(name)
            review = REVIEWED.get((function, _mutated_line(diffs[name])))
            survivors.append(
                {"mutant": name, "function": function, "diff": diffs[name], "review": review}
            )
        return {
            "module": f"{PACKAGE}/{module}",
            "module_sha256": hashlib.sha256(source).hexdigest(),
            "tests": tests,
            "excluded": exclude,
            "counts": counts,
            "mutants": len(exit_codes),
            "score": _score(counts),
            "complete": not timed_out and counts.get("not checked", 0) == 0,
            "budget_s": budget,
            "wall_s": round(wall, 1),
            # wall times depend on the load of the machine: one thread, at nice 19
            "threads": 1,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "mutmut_exit_code": code,
            "survivors": survivors,
            "unreviewed": sum(s["review"] is None for s in survivors),
            **({"selected": sorted(exit_codes)} if only else {}),
            # what the budget left: --recheck runs these too
            "not_checked": sorted(
                n for n, c in exit_codes.items() if status_by_exit_code[c] == "not checked"
            ),
            "source": "working tree" if worktree else "HEAD",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit,
            "command": "python benchmarks/mutation_testing.py --module "
            + module
            + f" --budget {budget:g}"
            + (" --worktree" if worktree else ""),
        }
    finally:
        if keep:
            print(f"kept the mutation copy in {work}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _score(counts: dict[str, int]) -> float | None:
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    tested = killed + counts.get("survived", 0)
    return None if tested == 0 else killed / tested


def recheck(args: argparse.Namespace, module: str, spec: list[str]) -> int:
    """Rerun the survivors of a recorded run with today's tests, and the mutants its budget
    left unchecked (``not_checked``, or ``--also`` patterns for records without that list),
    and update the record."""
    previous = json.loads(args.recheck.read_text())
    if previous["module"] != f"{PACKAGE}/{module}":
        raise SystemExit(f"{args.recheck} records {previous['module']}, not {module}")
    survivors = {s["mutant"]: s for s in previous["survivors"]}
    unchecked = [*previous.get("not_checked", []), *(args.also or [])]
    now = mutate(
        module,
        spec,
        args.budget,
        args.exclude or None,
        args.worktree,
        args.keep,
        [*survivors, *unchecked],
    )
    recorded = (
        previous.get("module_sha256")
        or hashlib.sha256(
            subprocess.run(
                ["git", "show", f"{previous['commit']}:{previous['module']}"],
                cwd=ROOT,
                capture_output=True,
                check=True,
            ).stdout
        ).hexdigest()
    )
    if now["module_sha256"] != recorded:
        raise SystemExit(f"{module} changed since {args.recheck}: run it in full")
    # a survivor the budget did not reach stays a survivor, with its recorded review
    left = [n for n in now["not_checked"] if n in survivors]
    still = now["survivors"] + [survivors[n] for n in left]
    newly = [n for n in now.pop("selected") if n not in survivors]  # unchecked until now
    counts = dict(previous["counts"])
    counts["not checked"] = counts.get("not checked", 0) - len(newly)
    if counts["not checked"] < 0:
        raise SystemExit(
            f"{len(newly)} unchecked mutants selected, but {args.recheck} records "
            f"{previous['counts'].get('not checked', 0)}: --also matched checked ones"
        )
    counts["not checked"] += len(now["not_checked"]) - len(left)
    counts["survived"] = len(still)
    counts["killed"] = counts.get("killed", 0) + now["counts"].get("killed", 0)
    counts["timeout"] = counts.get("timeout", 0) + now["counts"].get("timeout", 0)
    counts = {k: v for k, v in counts.items() if v}
    earlier = previous.get("rechecked") or []
    earlier = [earlier] if isinstance(earlier, dict) else earlier
    command = " ".join(
        [
            f"--recheck {args.recheck.name}",
            *([f"--also '{p}'" for p in args.also] if args.also else []),
            *([f"--tests {' '.join(args.tests)}"] if args.tests else []),
            f"--budget {args.budget:g}",
            *(["--worktree"] if args.worktree else []),
        ]
    )
    record = previous | {
        "counts": counts,
        "score": _score(counts),
        "complete": "not checked" not in counts,
        "survivors": still,
        "unreviewed": sum(s["review"] is None for s in still),
        "not_checked": [n for n in now["not_checked"] if n not in survivors],
        "tests": sorted(set(previous["tests"]) | set(now["tests"])),
        "rechecked": [
            *earlier,
            {k: now[k] for k in ("date", "commit", "wall_s", "load_average", "tests", "excluded")}
            | {"survivors": len(survivors), "unchecked": len(newly), "command": command},
        ],
        "command": previous["command"] + f"; then {command}",
    }
    args.recheck.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return _report(record, args.recheck)


def _report(summary: dict, out: Path) -> int:
    score = "n/a" if summary["score"] is None else f"{summary['score']:.1%}"
    print(
        f"{summary['module']}: {summary['counts']} score {score} "
        f"({'complete' if summary['complete'] else 'INCOMPLETE: budget reached'}), wrote {out}"
    )
    for s in summary["survivors"]:
        print(
            f"\n{'reviewed' if s['review'] else 'UNREVIEWED'} survivor {s['mutant']}\n{s['diff']}"
        )
        if s["review"]:
            print(f"  -> {s['review']}")
    return 1 if summary["unreviewed"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    parser.add_argument("--module", help="module to mutate, relative to the package")
    parser.add_argument(
        "--tests", nargs="+", help="test files, 'auto' for those naming the module (default)"
    )
    parser.add_argument(
        "--exclude",
        default=SLOW_TESTS,
        help="pytest -k expression of tests to leave out ('' for none; default: the checks "
        "of the shipped weights, 37 s of the 42 s that the lipschitz tests take)",
    )
    parser.add_argument("--worktree", action="store_true", help="copy the working tree, not HEAD")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds before stopping")
    parser.add_argument(
        "--out", type=Path, help="result file (default results/mutation_<module>.json)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument(
        "--review",
        type=Path,
        metavar="JSON",
        help="apply today's REVIEWED to the survivors recorded in JSON (runs nothing)",
    )
    parser.add_argument(
        "--also",
        nargs="+",
        metavar="PATTERN",
        help="with --recheck: also run the mutants matching these fnmatch patterns (mutants "
        "a budget left unchecked, in a record without its not_checked list)",
    )
    parser.add_argument(
        "--recheck",
        type=Path,
        metavar="JSON",
        help="rerun only the survivors recorded in JSON (after adding tests), if the module "
        "is unchanged, and update JSON",
    )
    args = parser.parse_args(argv)
    if args.review:
        record = json.loads(args.review.read_text())
        for survivor in record["survivors"]:
            key = (survivor["function"], _mutated_line(survivor["diff"]))
            survivor["review"] = REVIEWED.get(key)
        record["unreviewed"] = sum(s["review"] is None for s in record["survivors"])
        args.review.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return _report(record, args.review)
    if args.list or not args.module:
        for module, spec in MODULES.items():
            print(f"{module:32s} {' '.join(select_tests(module, spec))}")
        return 0
    module = args.module.removeprefix(f"{PACKAGE}/")
    if not (ROOT / PACKAGE / module).is_file():
        raise SystemExit(f"no module {PACKAGE}/{module}")
    spec = args.tests or MODULES.get(module, ["auto"])
    if args.recheck:
        return recheck(args, module, spec)
    summary = mutate(module, spec, args.budget, args.exclude or None, args.worktree, args.keep)
    out = args.out or RESULTS / f"mutation_{Path(module).stem}.json"
    # the options that change what ran or where it went, as typed
    if args.tests:
        summary["command"] += f" --tests {' '.join(args.tests)}"
    if args.out:
        summary["command"] += f" --out {args.out}"
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return _report(summary, out)


if __name__ == "__main__":
    sys.exit(main())
