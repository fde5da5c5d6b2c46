"""Plant the bugs of issue 18 in the certificate code, one at a time, and check that the
tests catch each (then restore the file). Run from the repository root::

    OMP_NUM_THREADS=1 python scripts/plant_certificate_bugs.py

Each bug must make at least one test fail; the script exits 1 if one survives.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = [
    "tests/test_certificates_tight.py",
    "tests/test_certificates.py",
    "tests/test_euler_denoiser.py",
]
BUGS = {
    "certify uses a power-iteration estimate of ||A_i||^2 instead of conv2d_norm_bound": (
        "deepinv_dynnets/lipschitz/certificates.py",
        "_BOUND_CACHE[key] = conv2d_norm_bound(weight, method, **kwargs) ** 2",
        "_BOUND_CACHE[key] = _power_estimate(weight)",
        "\n\ndef _power_estimate(weight):\n"
        "    import torch\n"
        "    import torch.nn.functional as F\n\n"
        "    from .estimates import power_iteration\n\n"
        "    w = weight.detach().to(torch.float64)\n"
        "    p = w.shape[-1] // 2\n"
        "    x0 = torch.randn(1, w.shape[1], 64, 64, dtype=torch.float64)\n"
        "    s, _ = power_iteration(lambda x: F.conv2d(x, w, padding=p),\n"
        "                           lambda y: F.conv_transpose2d(y, w, padding=p), x0, 100)\n"
        "    return float(s) ** 2\n",
    ),
    "the safety factor kappa dropped from the step bound": (
        "deepinv_dynnets/dynamics/averaged_step.py",
        "self.nu_factor = self.safety * grid_correction(",
        "self.nu_factor = grid_correction(",
        "",
    ),
}


def main() -> int:
    survived = []
    for name, (path, old, new, appendix) in BUGS.items():
        file = Path(path)
        original = file.read_text()
        if original.count(old) != 1:
            print(f"cannot plant {name!r}: the line changed")
            return 2
        try:
            file.write_text(original.replace(old, new) + appendix)
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
                capture_output=True,
                text=True,
            )
        finally:
            file.write_text(original)
        caught = run.returncode != 0
        failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
        print(f"{'caught' if caught else 'SURVIVED'}: {name}: {failed[:1]}")
        if not caught:
            survived.append(name)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
