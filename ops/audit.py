"""Known vulnerabilities in the image's locked packages: `make audit`, part of `make check`.

Runs pip-audit over the hashed lock files (no resolution: every package is pinned, so nothing is
installed or fetched but the advisories) and judges its answer:

    a known vulnerability                    FAILED, exit 1, each one named with its fix
    every package audited, none vulnerable   passed, exit 0
    some or all packages not audited         INCOMPLETE / SKIPPED, exit 0, with the reason
    the vulnerability service unreachable    SKIPPED, exit 0, with the error
    pip-audit broke some other way           ERROR, exit 2

The advisory service needs the network. A check that cannot reach it says so on every run, in
one line that starts with the verdict, rather than failing `make check` offline or passing in
silence: "SKIPPED" never means "no vulnerabilities".

    python -m ops.audit --pip-audit PATH LOCKFILE...
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

# pip-audit asks the service once per package; 15 s per answer, and the whole run within 3 min.
REQUEST_TIMEOUT_S: Final = 15
RUN_TIMEOUT_S: Final = 180
# What requests and urllib3 say when the service cannot be reached at all.
_UNREACHABLE: Final = re.compile(
    r"ConnectionError|ProxyError|Max retries exceeded|NameResolution|name resolution|"
    r"ConnectTimeout|ReadTimeout|timed out|Network is unreachable|Connection refused"
)


@dataclass(frozen=True)
class Verdict:
    """What the audit found: the exit status and the lines to print."""

    status: int
    lines: list[str]


def judge(stdout: str, stderr: str, returncode: int) -> Verdict:
    """Read one pip-audit run (`--format json`)."""
    try:
        report = json.loads(stdout)
        dependencies: list[dict[str, Any]] = report["dependencies"]
    except (ValueError, KeyError, TypeError):
        return _without_report(stderr, returncode)
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = len(dependencies) - len(skipped)
    if vulnerable:
        found = [
            f"  {d['name']} {d.get('version', '?')}: {v.get('id', '?')}"
            f" (fixed in {', '.join(v.get('fix_versions') or []) or 'no release yet'})"
            for d in vulnerable
            for v in d["vulns"]
        ]
        head = f"dependency audit FAILED: {len(found)} known vulnerabilities in the image's lock"
        return Verdict(1, [head, *found, "  bump the pins (make lock), rebuild, redeploy"])
    if skipped and not audited:
        return Verdict(
            0,
            [
                f"dependency audit SKIPPED: none of the {len(dependencies)} locked packages "
                f"could be audited ({skipped[0]['skip_reason']})"
            ],
        )
    if skipped:
        names = ", ".join(str(d["name"]) for d in skipped)
        return Verdict(
            0,
            [
                f"dependency audit INCOMPLETE: {audited} packages audited, no known "
                f"vulnerabilities; not audited: {names} ({skipped[0]['skip_reason']})"
            ],
        )
    return Verdict(0, [f"dependency audit: {audited} packages, no known vulnerabilities"])


def _without_report(stderr: str, returncode: int) -> Verdict:
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    if _UNREACHABLE.search(stderr):
        return Verdict(
            0, [f"dependency audit SKIPPED: the vulnerability service cannot be reached ({last})"]
        )
    return Verdict(2, [f"dependency audit ERROR: pip-audit exited {returncode}: {last}"])


def run(pip_audit: str, lock_files: Sequence[str]) -> Verdict:
    """Audit the lock files with the pip-audit executable at `pip_audit`."""
    command = [pip_audit, "--disable-pip", "--require-hashes", "--progress-spinner", "off"]
    command += ["--timeout", str(REQUEST_TIMEOUT_S), "--format", "json"]
    for path in lock_files:
        command += ["--requirement", path]
    try:
        done = subprocess.run(  # noqa: S603 - our own argument list, no shell
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return Verdict(
            0,
            [
                f"dependency audit SKIPPED: pip-audit did not finish within {RUN_TIMEOUT_S} s "
                "(the vulnerability service is slow or unreachable)"
            ],
        )
    except OSError as exc:
        return Verdict(2, [f"dependency audit ERROR: cannot run {pip_audit}: {exc}"])
    return judge(done.stdout, done.stderr, done.returncode)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pip-audit", required=True, help="the pip-audit executable")
    parser.add_argument("lock_files", nargs="+", help="hashed requirement files")
    arguments = parser.parse_args(argv)
    verdict = run(arguments.pip_audit, arguments.lock_files)
    for line in verdict.lines:
        print(line, file=sys.stderr if verdict.status else sys.stdout)
    return verdict.status


if __name__ == "__main__":
    sys.exit(main())
