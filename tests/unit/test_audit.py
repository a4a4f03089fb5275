"""`make audit` (ops/audit.py): a vulnerability fails the check; an audit that could not run
says so in words, never as a pass."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from ops.audit import judge, main

VULNERABLE: dict[str, Any] = {
    "dependencies": [
        {"name": "celery", "version": "5.7.0", "vulns": []},
        {
            "name": "urllib3",
            "version": "1.26.0",
            "vulns": [{"id": "PYSEC-2021-108", "fix_versions": ["1.26.5"], "aliases": []}],
        },
    ],
    "fixes": [],
}
CLEAN: dict[str, Any] = {
    "dependencies": [
        {"name": "celery", "version": "5.7.0", "vulns": []},
        {"name": "redis", "version": "8.1.0", "vulns": []},
    ]
}
NOT_FOUND = "Dependency not found on PyPI and could not be audited: redis (8.1.0)"
PARTLY: dict[str, Any] = {
    "dependencies": [
        {"name": "celery", "version": "5.7.0", "vulns": []},
        {"name": "redis", "skip_reason": NOT_FOUND},
    ]
}
NONE_AUDITED: dict[str, Any] = {"dependencies": [{"name": "redis", "skip_reason": NOT_FOUND}]}
OFFLINE = (
    "Traceback (most recent call last):\n  ...\nrequests.exceptions.ConnectionError: "
    "HTTPSConnectionPool(host='index', port=443): Max retries exceeded with url: /pypi/x/1/json"
)


def test_a_known_vulnerability_fails_the_audit_naming_package_advisory_and_fix() -> None:
    verdict = judge(json.dumps(VULNERABLE), "", 1)

    assert verdict.status == 1
    assert verdict.lines[0].startswith("dependency audit FAILED: 1 known vulnerabilities")
    assert "urllib3 1.26.0: PYSEC-2021-108 (fixed in 1.26.5)" in verdict.lines[1]


def test_every_package_audited_and_none_vulnerable_passes() -> None:
    verdict = judge(json.dumps(CLEAN), "", 0)

    assert verdict.status == 0
    assert verdict.lines == ["dependency audit: 2 packages, no known vulnerabilities"]


@pytest.mark.parametrize(
    ("report", "word"), [(PARTLY, "INCOMPLETE"), (NONE_AUDITED, "SKIPPED")], ids=["some", "none"]
)
def test_packages_the_service_could_not_audit_are_reported_never_passed_in_silence(
    report: dict[str, Any], word: str
) -> None:
    verdict = judge(json.dumps(report), "", 0)

    assert verdict.status == 0
    (line,) = verdict.lines
    assert line.startswith(f"dependency audit {word}:")
    assert NOT_FOUND in line
    assert "no known vulnerabilities" not in line or word == "INCOMPLETE"


def test_an_unreachable_service_skips_the_audit_quoting_the_error() -> None:
    verdict = judge("", OFFLINE, 1)

    assert verdict.status == 0
    (line,) = verdict.lines
    assert line.startswith("dependency audit SKIPPED: the vulnerability service cannot be reached")
    assert "Max retries exceeded" in line


def test_any_other_pip_audit_failure_is_an_error() -> None:
    verdict = judge("", "ERROR: requirement file has no hashes", 1)

    assert verdict.status == 2
    assert verdict.lines == [
        "dependency audit ERROR: pip-audit exited 1: ERROR: requirement file has no hashes"
    ]


def fake_pip_audit(tmp_path: Path, stdout: str, returncode: int) -> Path:
    """An executable standing in for pip-audit: prints `stdout`, records its arguments."""
    (tmp_path / "answer.json").write_text(stdout, encoding="utf-8")
    script = tmp_path / "pip-audit"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{tmp_path}/argv"\n'
        f'cat "{tmp_path}/answer.json"\n'
        f"exit {returncode}\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_make_audit_fails_on_a_vulnerability_and_audits_both_locks_without_resolving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = fake_pip_audit(tmp_path, json.dumps(VULNERABLE), 1)

    status = main(["--pip-audit", str(tool), "ops/requirements.txt", "ops/requirements-build.txt"])

    assert status == 1
    assert "PYSEC-2021-108" in capsys.readouterr().err
    argv = (tmp_path / "argv").read_text(encoding="utf-8").split()
    assert {"--disable-pip", "--require-hashes"} <= set(argv)
    assert argv.count("--requirement") == 2
