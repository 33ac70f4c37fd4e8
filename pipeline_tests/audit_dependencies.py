"""Audit the installed dependencies for known vulnerabilities (pip-audit), for `make audit`.

Exit 0: every installed distribution was checked and none has a known vulnerability.
Exit 1: pip-audit found known vulnerabilities (listed).
Exit 2: the audit could not run: the vulnerability service (PyPI's per-release JSON API, or OSV)
is unreachable or does not answer for some distributions. This is a failure, never a pass: an
audit that checked nothing must not look like a clean one. `AUDIT=skip make test` skips the step
explicitly, with a warning in the output.
"""

from __future__ import annotations

import os
import subprocess
import sys

UNREACHABLE = (
    "could not be audited",
    "ConnectionError",
    "Max retries exceeded",
    "NameResolutionError",
    "Temporary failure in name resolution",
)
BANNER = "=" * 78


def main() -> int:
    if os.environ.get("AUDIT", "").lower() == "skip":
        print(
            f"{BANNER}\nWARNING: dependency audit SKIPPED (AUDIT=skip). Known vulnerabilities "
            f"were NOT checked.\n{BANNER}"
        )
        return 0
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--strict",
        "--skip-editable",
        "--progress-spinner",
        "off",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    output = (done.stdout + done.stderr).strip()
    if done.returncode == 0:
        print(output)
        print("dependency audit: every installed distribution checked, no known vulnerabilities")
        return 0
    if any(marker in output for marker in UNREACHABLE) and "known vulnerabilit" not in output:
        unaudited = [line for line in output.splitlines() if "could not be audited" in line]
        print(output[-2000:], file=sys.stderr)
        print(
            f"{BANNER}\nDEPENDENCY AUDIT DID NOT RUN: pip-audit could not reach a vulnerability "
            "service (PyPI's per-release JSON API or api.osv.dev)"
            + (f"; first unaudited: {unaudited[0].split(': ', 1)[-1]}" if unaudited else "")
            + ". Nothing was checked, so this step fails instead of passing. Run "
            "it where the service is reachable, or skip it explicitly with AUDIT=skip.\n"
            f"{BANNER}",
            file=sys.stderr,
        )
        return 2
    print(output)
    print(f"{BANNER}\ndependency audit FAILED: known vulnerabilities above\n{BANNER}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
