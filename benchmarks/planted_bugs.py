"""Plant plausible bugs in a copy of the package, one at a time, and check that a test fails.

Each bug below is a regular-expression substitution in one module of a temporary copy of
the package (``git archive HEAD``, or the working tree with ``--worktree``): the real tree
is never modified. For each bug the script runs the test files that mention the guarantee
(chosen by keywords, so that new test files are picked up) and the planted module's
doctests, with ``-x``; the bug is *caught* when a test fails, and the failing test is then
run on the unmodified copy to confirm that it passes there (a test that fails there too is
someone's work in progress: it is left out and the tests run again). A bug whose pattern is no
longer in the code is reported as ``pattern not found`` (update its pattern), never as
caught. ::

    python benchmarks/planted_bugs.py --list
    python benchmarks/planted_bugs.py              # all bugs, writes results/planted_bugs.json
    python benchmarks/planted_bugs.py --only 1 4   # some of them (results not written)
    python benchmarks/planted_bugs.py --only 1 4 --update   # rerun them, update the results
    python benchmarks/planted_bugs.py --show 4     # the patch of bug 4
    python benchmarks/planted_bugs.py --dry-run    # every patch, no tests run

Runs at ``nice -n 10`` with one thread, one pytest at a time.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "deepinv_dynnets"
RESULT = ROOT / "benchmarks" / "results" / "planted_bugs.json"

# A power-iteration estimate of ||A||, appended to the module that bug 1 plants it in:
# self-contained so that it does not depend on the package's own helpers.
_POWER_ESTIMATE = '''

def _planted_power_norm(weight, *args, **kwargs):
    """PLANTED BUG: a power-iteration estimate of ||A|| (a lower bound), not a bound."""
    import torch
    import torch.nn.functional as F

    w = weight.detach().to(torch.float64)
    pad = (w.shape[-2] // 2, w.shape[-1] // 2)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(1, w.shape[1], 32, 32, dtype=torch.float64, generator=gen)
    for _ in range(20):
        v = F.conv_transpose2d(F.conv2d(v, w, padding=pad), w, padding=pad)
        v = v / v.norm()
    return float(F.conv2d(v, w, padding=pad).norm())
'''


@dataclass
class Bug:
    """One planted bug.

    :param name: short identifier.
    :param description: what the bug does, and which guarantee it breaks.
    :param owner: the area (and module) whose tests should catch it.
    :param files: candidate modules (globs relative to the package), tried in order; the
        first one where every pattern of an alternative matches is patched.
    :param alternatives: lists of ``(pattern, replacement)`` (``re.M``); every match of
        each pattern in the file is replaced. Several alternatives follow refactorings.
    :param keywords: test files that contain one of these words are run.
    :param append: code appended to the patched module.
    """

    name: str
    description: str
    owner: str
    files: list[str]
    alternatives: list[list[tuple[str, str]]]
    keywords: list[str]
    append: str = ""
    number: int = 0
    extra_tests: list[str] = field(default_factory=list)


_RESUME_LINE = r"""(^[ \t]*){obj}\.{call}\(state\[["']{key}["']\]\)[ \t]*$"""

BUGS = [
    Bug(
        "certify-power-iteration",
        "certify bounds each ||A_i||^2 by a power-iteration estimate (a lower bound) "
        "instead of conv2d_norm_bound",
        "H-models (lipschitz/certificates.py)",
        ["lipschitz/certificates.py"],
        [[(r"\bconv2d_norm_bound\(", "_planted_power_norm(")]],
        ["certify", "Certificate", "averaged_blocks"],
        append=_POWER_ESTIMATE,
    ),
    Bug(
        "monitor-rtol-0.1",
        "the monitor's relative tolerance of the monotonicity check loosened from 1e-3 to 0.1",
        "H-pnp (pnp/monitor.py)",
        ["pnp/monitor.py", "pnp/*.py"],
        [[(r"(\brtol\b[^=\n]*=\s*)1e-0?3\b", r"\g<1>0.1")]],
        ["ConvergenceMonitor", "monitor", "MonitorReport"],
    ),
    Bug(
        "resume-without-weights",
        "a resumed training run (flows and denoisers) does not restore the weights",
        "H-cli (training/loop.py) / H-flows (flow training)",
        ["training/*.py", "*.py", "**/*.py"],
        [[(_RESUME_LINE.format(obj="model", call="load_state_dict", key="model"), r"\1pass")]],
        ["resume"],
    ),
    Bug(
        "pgd-bound-2-over-sqrt-L",
        "the PGD stepsize bound written as 2/sqrt(L) instead of 2/L",
        "H-pnp (pnp/certificate.py)",
        ["pnp/certificate.py", "pnp/*.py"],
        [[(r"\b2\s*/\s*lip\b", '2 / __import__("math").sqrt(lip)')]],
        ["pnp_certificate", "convergent_pnp", "PnPCertificate"],
    ),
    Bug(
        "euler-no-safety-factor",
        "the safety factor kappa dropped from the Euler step bound nu = kappa c_P^2 ||A||^2",
        "H-models (dynamics/averaged_step.py)",
        ["dynamics/averaged_step.py", "models/euler_denoiser.py", "dynamics/*.py", "**/*.py"],
        [
            [(r"(nu_factor\s*=\s*)self\.safety\s*\*\s*", r"\1")],
            [(r"\bself\.safety\s*\*\s*(?=grid_correction)", "")],
        ],
        ["EulerDenoiser", "safety"],
    ),
    Bug(
        "grid-correction-1",
        "grid_correction returns 1: the Fourier bound and the Euler step bound lose the "
        "curvature correction of a sampled symbol",
        "H-models (lipschitz/operator_norms.py)",
        ["lipschitz/operator_norms.py", "lipschitz/*.py"],
        [
            [
                (
                    r"return\s+1(?:\.0)?\s*/\s*math\.sqrt\(\s*1(?:\.0)?\s*-\s*q\s*\*\s*q\s*/\s*2\s*\)",
                    "return 1.0",
                )
            ]
        ],
        ["grid_correction", "conv2d_norm_bound", "certify"],
    ),
    Bug(
        "fourier-bound-no-correction",
        "conv2d_norm_bound's Fourier bound takes the maximum over the frequency grid without "
        "the correction factor (a lower bound of sup_w ||K(w)||)",
        "H-models (lipschitz/operator_norms.py)",
        ["lipschitz/operator_norms.py", "lipschitz/*.py"],
        [[(r"(^[ \t]*c\s*=\s*)grid_correction\([^\n]*\)[ \t]*$", r"\g<1>1.0")]],
        ["conv2d_norm_bound", "certify"],
    ),
    Bug(
        "compose-averaged-formula",
        "compose_averaged divides by 1 + a1 a2 instead of 1 - a1 a2 (an optimistic constant)",
        "H-models (lipschitz/averagedness.py)",
        ["lipschitz/averagedness.py", "lipschitz/*.py"],
        [[(r"/\s*\(\s*1\s*-\s*(\w+)\s*\*\s*(\w+)\s*\)", r"/ (1 + \1 * \2)")]],
        ["compose_averaged", "certify"],
    ),
    Bug(
        "sympflow-p-sign",
        "SympFlow's forward p-update adds the shift instead of subtracting it (still "
        "symplectic, but the inverse, the Hamiltonian and the vector field no longer match)",
        "H-flows (flows/sympflow.py)",
        ["flows/sympflow.py", "flows/*.py"],
        [[(r"(^[ \t]*p\s*=\s*p\s*)-(\s*shift\b)", r"\1+\2")]],
        ["SympFlow"],
    ),
    Bug(
        "sympflow-not-symplectic",
        "SympFlow's p-update reads p instead of q: p <- p - grad V(p) is not a shear, the "
        "map is not symplectic",
        "H-flows (flows/sympflow.py)",
        ["flows/sympflow.py", "flows/*.py"],
        [[(r"self\._shift\(\s*V\s*,\s*q\s*,\s*TT\s*,\s*dq\s*,", "self._shift(V, p, TT, dp,")]],
        ["SympFlow"],
    ),
    Bug(
        "volume-preserving-not-shear",
        "the shear field's update of x1 reads x1 instead of x2: not a shear, det != 1",
        "H-models (dynamics/fields.py)",
        ["dynamics/fields.py", "dynamics/*.py"],
        [[(r"torch\.cat\(\[\s*self\.g\(x2\)", "torch.cat([self.g(x1)")]],
        ["VolumePreservingNet", "ShearField", "SplittingStep"],
    ),
    Bug(
        "drs-accepts-alpha-above-half",
        "DRS and ADMM accept any alpha < 1 (they need alpha <= 1/2)",
        "H-pnp (pnp/certificate.py)",
        ["pnp/certificate.py", "pnp/*.py"],
        [
            [
                (
                    r"alpha\s*<=\s*(?:0\.5|1\s*/\s*2)\s+if\s+algorithm\s+in\s*\(\s*[\"']DRS[\"']\s*,"
                    r"\s*[\"']ADMM[\"']\s*\)\s+else\s+alpha\s*<\s*1\b",
                    "alpha < 1",
                )
            ],
        ],
        ["pnp_certificate", "convergent_pnp", "DRS"],
    ),
    Bug(
        "euler-forward-step-10pc",
        "the Euler layer's forward uses a step 10% larger than the certified one "
        "(h = 2.2 alpha sigmoid(theta) / nu)",
        "H-models (dynamics/averaged_step.py)",
        ["dynamics/averaged_step.py", "models/euler_denoiser.py", "dynamics/*.py", "**/*.py"],
        [
            [
                (
                    r"(\bh\s*=\s*)2(\s*\*\s*self\.alpha\s*\*\s*torch\.sigmoid\(self\.theta\))",
                    r"\g<1>2.2\2",
                )
            ]
        ],
        ["EulerDenoiser"],
    ),
    Bug(
        "young-bound-l2",
        "operator_sqnorm bounds a padded Blur by the l2 norm of the filter (a lower bound) "
        "instead of its l1 norm",
        "H-pnp (pnp/physics_norms.py)",
        ["pnp/physics_norms.py", "pnp/certificate.py", "pnp/*.py"],
        [[(r"\.abs\(\)\.flatten\(2\)\.sum\(-1\)", ".square().flatten(2).sum(-1).sqrt()")]],
        ["operator_sqnorm", "pnp_certificate", "convergent_pnp"],
    ),
    Bug(
        "circulant-grid-too-small",
        "the 'circulant' bound uses the H x W circular convolution instead of the "
        "(H + k - 1) x (W + k - 1) one (not an upper bound of the zero-padded layer)",
        "H-models (lipschitz/operator_norms.py)",
        ["lipschitz/operator_norms.py", "lipschitz/*.py"],
        [[(r"\(\s*h\s*\+\s*k1\s*-\s*1\s*,\s*wd\s*\+\s*k2\s*-\s*1\s*\)", "(h, wd)")]],
        ["circulant", "circular_conv2d_norm"],
    ),
    Bug(
        "gram-bound-max",
        "the Gram-iteration bound takes the largest tap norm instead of the sum over taps",
        "H-models (lipschitz/operator_norms.py)",
        ["lipschitz/operator_norms.py", "lipschitz/*.py"],
        [[(r"(matrix_norm\(coeffs[^\n]*?\))\.sum\(\)", r"\1.max()")]],
        ["gram"],
    ),
    Bug(
        "relaxation-lipschitz",
        "certify's Lipschitz bound of a relaxation (1 - lam) I + lam D drops |1 - lam|",
        "H-models (lipschitz/certificates.py)",
        ["lipschitz/certificates.py", "lipschitz/*.py"],
        [[(r"abs\(\s*1\s*-\s*lam\s*\)\s*\+\s*", "")]],
        ["RelaxedDenoiser", "averaged_relaxation"],
    ),
    Bug(
        "sphere-step-no-sinc",
        "the norm-preserving step drops the sinc factor: cos(h w) x + h X(x) is not on the sphere",
        "H-models (dynamics/steps.py)",
        ["dynamics/steps.py", "dynamics/*.py"],
        [[(r"torch\.sinc\(\s*angle\s*/\s*torch\.pi\s*\)\s*\*\s*", "")]],
        ["SphereStep", "NormPreservingNet", "norm_preserving"],
    ),
    Bug(
        "monitor-atol-loose",
        "the monitor's absolute tolerance 100 eps loosened to 1e-2 (relative to ||v||)",
        "H-pnp (pnp/monitor.py)",
        ["pnp/monitor.py", "pnp/*.py"],
        [[(r"\b100\s*\*\s*eps\b", "1e-2")]],
        ["ConvergenceMonitor", "monitor", "MonitorReport"],
    ),
    Bug(
        "sympflow-hamiltonian-term-sign",
        "the Hamiltonian composition identity adds -d_t K instead of +d_t K",
        "H-flows (flows/sympflow.py)",
        ["flows/sympflow.py", "flows/*.py"],
        [[(r"(total\s*=\s*total\s*)\+(\s*dtK\b)", r"\1-\2")]],
        ["SympFlow", "hamiltonian"],
    ),
    Bug(
        "sympflow-inverse-order",
        "SympFlow's inverse undoes the two shears of a block in the wrong order",
        "H-flows (flows/sympflow.py)",
        ["flows/sympflow.py", "flows/*.py"],
        [
            [
                (
                    r"(^[ \t]*)(p\s*=\s*p\s*\+\s*self\._shift\(\s*V\s*,\s*q[^\n]*)\n"
                    r"[ \t]*(q\s*=\s*q\s*-\s*self\._shift\(\s*K\s*,\s*p[^\n]*)$",
                    r"\1\3\n\1\2",
                )
            ]
        ],
        ["SympFlow", "network_inverse", "inverse"],
    ),
    Bug(
        "resume-without-optimizer",
        "a resumed training run does not restore Adam's state",
        "H-cli (training/loop.py)",
        ["training/*.py", "*.py", "**/*.py"],
        [
            [
                (
                    _RESUME_LINE.format(obj="optimizer", call="load_state_dict", key="optimizer"),
                    r"\1pass",
                )
            ]
        ],
        ["resume"],
    ),
    Bug(
        "resume-without-generator",
        "a resumed training run does not restore the state of its random generator",
        "H-cli (training/loop.py)",
        ["training/*.py", "*.py", "**/*.py"],
        [[(_RESUME_LINE.format(obj="generator", call="set_state", key="generator"), r"\1pass")]],
        ["resume"],
    ),
]
BUGS += [
    Bug(
        "tiles-overlap",
        "the tiles of TiledDenoiser overlap by one pixel: no partition, the map is not the "
        "block-diagonal one whose constants are certified",
        "tiling (models/tiled_denoiser.py)",
        ["models/tiled_denoiser.py", "models/*.py", "**/*.py"],
        [[(r"\bslice\(a, b\)(?= for a, b in zip)", "slice(max(a - 1, 0), b)")]],
        ["TiledDenoiser", "tile_partition"],
    ),
    Bug(
        "certify-tiling-misses-shared-pixels",
        "certify_tiling does not check whether two windows write the same pixel",
        "tiling (models/distributed_tiling.py)",
        ["models/distributed_tiling.py", "models/*.py", "**/*.py"],
        [[(r"\bif bool\(\(owner\[pixels\] >= 0\)\.any\(\)\):", "if False:")]],
        ["certify_tiling", "certify_distributed"],
    ),
]
for _number, _bug in enumerate(BUGS, start=1):
    _bug.number = _number


def _candidates(pkg: Path, patterns: list[str]) -> list[Path]:
    seen: list[Path] = []
    for pattern in patterns:
        for path in sorted(pkg.glob(pattern)):
            if path.suffix == ".py" and path not in seen:
                seen.append(path)
    return seen


def plant(bug: Bug, pkg: Path) -> dict | None:
    """Patch ``bug`` into the package copy ``pkg``; ``None`` when its pattern is not found."""
    for path in _candidates(pkg, bug.files):
        before = path.read_text()
        for alternative in bug.alternatives:
            after, ok = before, True
            for pattern, replacement in alternative:
                after, n = re.subn(pattern, replacement, after, flags=re.M)
                ok = ok and n > 0
            if ok:
                path.write_text(after + bug.append)
                rel = path.relative_to(pkg.parent).as_posix()
                diff = difflib.unified_diff(
                    before.splitlines(),
                    after.splitlines(),
                    f"a/{rel}",
                    f"b/{rel}",
                    n=0,
                    lineterm="",
                )
                return {"file": rel, "diff": "\n".join(diff)}
    return None


def select_tests(bug: Bug, tests_dir: Path) -> list[str]:
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, bug.keywords)) + r")\b")
    chosen = [
        f"tests/{p.name}"
        for p in sorted(tests_dir.glob("test_*.py"))
        if pattern.search(p.read_text())
    ]
    return sorted(set(chosen + bug.extra_tests))


def _pytest(work: Path, args: list[str], timeout: float) -> tuple[int | None, str, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(work))
    cmd = [
        "nice",
        "-n",
        "10",
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfE",
    ]
    tic = time.time()
    proc = subprocess.Popen(
        cmd + args,
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out, time.time() - tic
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out, time.time() - tic


def _failed_ids(output: str) -> list[str]:
    return re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M)


def make_copy(dest: Path, worktree: bool) -> str:
    """Copy the package, the tests and ``pyproject.toml`` (of HEAD, or of the working tree)
    to ``dest``, check that Python imports the copy there, and return HEAD's commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest.mkdir(parents=True)
    if worktree:
        for name in (PACKAGE, "tests"):
            shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    else:
        archive = subprocess.run(
            ["git", "archive", commit, PACKAGE, "tests", "pyproject.toml"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # the copy, not the editable install, must be imported
    probe = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
        cwd=dest,
        env=dict(os.environ, PYTHONPATH=str(dest)),
        capture_output=True,
        text=True,
    )
    if not probe.stdout.strip().startswith(str(dest)):
        raise SystemExit(
            f"the copy in {dest} is not the package imported: {probe.stdout}{probe.stderr}"
        )
    return commit


# Tests failing without any bug that a check leaves out before giving up.
_MAX_BROKEN = 3


def check(bug: Bug, clean: Path, scratch: Path, timeout: float) -> dict:
    work = scratch / f"bug{bug.number}"
    shutil.copytree(clean, work)
    try:
        planted = plant(bug, work / PACKAGE)
        entry = {
            "number": bug.number,
            "name": bug.name,
            "description": bug.description,
            "owner": bug.owner,
        }
        if planted is None:
            return entry | {"status": "pattern not found"}
        tests = select_tests(bug, work / "tests")
        entry |= planted | {"tests": tests}
        # A test that fails without the bug too (someone's work in progress) is left out and
        # the tests are run again: it says nothing about the bug.
        broken: list[str] = []
        for _ in range(_MAX_BROKEN + 1):
            deselect = [f"--deselect={test}" for test in broken]
            code, out, wall = _pytest(work, ["-x", *deselect, *tests, planted["file"]], timeout)
            failed = _failed_ids(out)
            entry |= {"wall_s": round(wall, 1), "failed": failed, "broken_tests": broken}
            if code is None:
                return entry | {"status": "timeout"}
            if code == 0:
                return entry | {"status": "NOT caught", "summary": out.strip().splitlines()[-1]}
            if code != 1 or not failed:
                return entry | {"status": "error", "output": out[-3000:]}
            clean_code, _, _ = _pytest(clean, failed[:1], timeout)
            if clean_code == 0:
                kind = "doctest" if failed[0].startswith(PACKAGE) else "test"
                return entry | {"status": "caught", "caught_by": kind}
            broken.append(failed[0])
        return entry | {"status": "tests fail without the bug"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the bugs")
    parser.add_argument("--show", type=int, metavar="N", help="print the patch of bug N")
    parser.add_argument("--dry-run", action="store_true", help="print the patches, run nothing")
    parser.add_argument("--only", type=int, nargs="+", metavar="N", help="plant these bugs only")
    parser.add_argument("--worktree", action="store_true", help="copy the working tree, not HEAD")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per bug")
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --only: replace these bugs' entries in the result file, keep the others",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"result file (default {RESULT.relative_to(ROOT)}, written only when every bug runs)",
    )
    args = parser.parse_args(argv)
    if args.list:
        for bug in BUGS:
            print(f"{bug.number:3d}  {bug.name:32s} {bug.owner}\n     {bug.description}")
        return 0
    chosen = [b for b in BUGS if not args.only or b.number in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        raise SystemExit(f"--only: bugs are numbered 1 to {len(BUGS)}")
    with tempfile.TemporaryDirectory(prefix="dynnets-planted-") as tmp:
        scratch = Path(tmp)
        clean = scratch / "clean"
        commit = make_copy(clean, args.worktree)
        if args.show or args.dry_run:
            # print the patches only; each bug is planted in a fresh copy
            missing = 0
            for bug in [BUGS[args.show - 1]] if args.show else chosen:
                work = scratch / f"patch{bug.number}"
                shutil.copytree(clean, work)
                planted = plant(bug, work / PACKAGE)
                missing += planted is None
                print(f"--- bug {bug.number} ({bug.name}):")
                print(planted["diff"] if planted else "pattern not found")
            return 1 if missing else 0
        results = []
        for bug in chosen:
            result = check(bug, clean, scratch, args.timeout)
            results.append(result)
            where = (result.get("failed") or [result.get("file", "")])[0]
            print(f"{bug.number:3d}  {bug.name:32s} {result['status']:26s} {where}", flush=True)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    source = "working tree" if args.worktree else "HEAD"
    for result in results:
        result["commit"] = commit
    if args.update and args.only:
        out = args.out or RESULT
        summary = json.loads(out.read_text())
        rerun = {r["number"]: r for r in results}
        summary["bugs"] = [rerun.pop(b["number"], b) for b in summary["bugs"]] + list(
            rerun.values()
        )
        summary["bugs"].sort(key=lambda b: b["number"])
        summary.setdefault("updates", []).append(
            {"date": now, "commit": commit, "source": source, "bugs": args.only}
        )
    else:
        out = args.out or (None if args.only else RESULT)
        summary = {
            "date": now,
            "commit": commit,
            "source": source,
            "command": "python benchmarks/planted_bugs.py"
            + (" --worktree" if args.worktree else ""),
            "bugs": results,
        }
    summary["caught"] = sum(r["status"] == "caught" for r in summary["bugs"])
    summary["total"] = len(summary["bugs"])
    print(f"\ncaught {summary['caught']} of {summary['total']}")
    if out is not None:
        out.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {out}")
    return 0 if summary["caught"] == summary["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
