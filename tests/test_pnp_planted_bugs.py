"""Planted bugs in the PnP guarantee modules, each of which some PnP test must catch.

Run the check (a few minutes; it copies the package and the tests to a temporary folder
and plants the bugs there, one at a time, so the working tree is never modified)::

    OMP_NUM_THREADS=1 python tests/test_pnp_planted_bugs.py

It prints, for every planted bug, whether the PnP tests failed (caught) and exits 1 if a
bug survived. (Dropping the finiteness test of a certified constant in ``_check_conditions`` is an
equivalent mutant: ``accepts_alpha`` refuses NaN as well, so it is not in the list.)
The pytest function below only checks that every planted edit still applies
to the current source, so that the list cannot silently go stale.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PNP = ROOT / "deepinv_dynnets" / "pnp"
TESTS = [
    "tests/test_pnp.py",
    "tests/test_pnp_guarantees.py",
    "tests/test_pnp_anderson.py",
    "tests/test_pnp_properties.py",
]

#: (name, file, original text, planted text)
PLANTED = [
    (
        "PGD stepsize bound written 2/sqrt(L)",
        PNP / "certificate.py",
        "bound = 2 / lip",
        "bound = 2 / math.sqrt(lip)",
    ),
    (
        "certificate ignores the data fidelity's 1/sigma^2",
        PNP / "certificate.py",
        "lip = None if scale is None else sqnorm * scale",
        "lip = None if scale is None else sqnorm",
    ),
    (
        "a NaN averagedness constant passed by the user is accepted",
        PNP / "certificate.py",
        "        if not math.isfinite(alpha) or alpha <= 0:\n            raise",
        "        if alpha <= 0:\n            raise",
    ),
    (
        "monitor relative tolerance loosened from 1e-3 to 0.1",
        PNP / "monitor.py",
        "rtol: float = 1e-3",
        "rtol: float = 0.1",
    ),
    (
        "Young's l1 bound used for reflect/replicate padding",
        PNP / "physics_norms.py",
        'young = ("valid", "circular", "constant")',
        'young = ("valid", "circular", "constant", "reflect", "replicate")',
    ),
    (
        "a power estimate (from below, no safety factor) labelled as a bound",
        PNP / "physics_norms.py",
        'return _collatz_wielandt(physics, size), "bound"',
        'return _power_estimate(physics, size), "bound"',
    ),
    (
        "power estimate without its safety factor",
        PNP / "physics_norms.py",
        "return _power_estimate(physics, size) * POWER_SAFETY_FACTOR",
        "return _power_estimate(physics, size)",
    ),
    (
        "default PGD stepsize ignores the data fidelity",
        PNP / "solvers.py",
        "stepsize = _PGD_STEP_FRACTION * 2 / (sqnorm * scale)",
        "stepsize = _PGD_STEP_FRACTION * 2 / sqnorm",
    ),
    (
        "params_algo accepted silently",
        PNP / "solvers.py",
        "refused = sorted(set(kwargs) - _HARMLESS_KEYWORDS)",
        "refused = sorted(set(kwargs) - _HARMLESS_KEYWORDS - {'params_algo'})",
    ),
    (
        "run-time stepsize safeguard switched off",
        PNP / "anderson.py",
        "self.step_safeguard\n            and self._previous_residual is not None",
        "False\n            and self._previous_residual is not None",
    ),
    (
        "Anderson safeguard without the decrease condition",
        PNP / "anderson.py",
        "accepted = (residual <= self._previous_residual) & (residual <= budget)",
        "accepted = residual <= budget",
    ),
    (
        "Anderson candidates never checked (always accepted)",
        PNP / "anderson.py",
        "accepted = (residual <= self._previous_residual) & (residual <= budget)",
        "accepted = torch.ones_like(residual, dtype=torch.bool)",
    ),
    (
        "monitor does not check accepted Anderson steps",
        PNP / "monitor.py",
        "bad_anderson = accelerated[1:] & (r[1:] > r[:-1])",
        "bad_anderson = accelerated[1:] & False",
    ),
]


def test_every_planted_bug_still_applies():
    for name, path, original, _ in PLANTED:
        assert path.read_text().count(original) == 1, name


def main() -> int:
    survivors = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for folder in ("deepinv_dynnets", "tests"):
            shutil.copytree(ROOT / folder, copy / folder)
        shutil.copy(ROOT / "pyproject.toml", copy)
        env = {**os.environ, "PYTHONPATH": str(copy)}
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS]
        baseline = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
        if baseline.returncode != 0:  # a failure without a planted bug would count as caught
            print(baseline.stdout[-3000:])
            raise SystemExit("the PnP tests fail without a planted bug: fix that first")
        for name, path, original, planted in PLANTED:
            target = copy / path.relative_to(ROOT)
            source = target.read_text()
            if source.count(original) != 1:
                raise SystemExit(f"planted bug {name!r} does not apply to {target.name}")
            target.write_text(source.replace(original, planted, 1))
            run = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
            target.write_text(source)
            survivors += _verdict(name, run)
    return 1 if survivors else 0


def _verdict(name, run) -> list[str]:
    caught = run.returncode != 0
    lines = run.stdout.strip().splitlines()
    print(f"{'caught  ' if caught else 'SURVIVED'} {name}: {lines[-1] if lines else ''}")
    return [] if caught else [name]


if __name__ == "__main__":
    sys.exit(main())
