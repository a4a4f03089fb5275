"""A clone with nothing beside it is complete: nothing in it reads or links outside it.

Every file git would commit is checked (tracked files, and new files not ignored), so a path
that only works on one machine or beside one checkout fails here before anyone clones it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Paths that reach outside the repository, as POSIX extended regular expressions for `git grep`.
# Each is written so that it does not match its own text: a bracketed character stands where
# the path has a plain one.
OUTSIDE_PATTERNS = {
    "a sibling folder of the clone": r"[.][.][/\\]+shared",
    "a path on the author's machine": r"(^|[^[:alnum:]_.])/work[/]",
    "the repository root's parent, in Python": r"ROOT[.]parent",
    "a pathlib path into a sibling folder": r"parents?[[:space:]]*/[[:space:]]*[\"']shared[\"']",
    "notes kept beside the clone": (
        r"(^|[^[:alnum:]_./-])shared[/](CONTRACT|STYLE|CELERY|halo/|schemas/)"
    ),
}
# A Markdown link's target: [text](target) or [text](<target>).
_MARKDOWN_LINK = re.compile(r"\]\(<?([^)<>\s]+)>?(?:\s+\"[^\"]*\")?\)")
# A Markdown file named in any text, with or without a folder: `ops/RUNBOOK.md`, README.md.
_MARKDOWN_NAME = re.compile(r"(?<![\w./-])((?:\.{1,2}/)*[\w-][\w./-]*\.md)\b")
_EXTERNAL = ("http://", "https://", "mailto:", "#")


def _git(*args: str, cwd: Path = ROOT) -> str:
    """Run git in `cwd`; skip locally (fail in CI) when the repository is not a git checkout."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        reason = f"{ROOT} is not a git checkout, or git is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this cannot be skipped)")
        pytest.skip(reason)
    result = subprocess.run(
        [git, "-C", str(cwd), *args], capture_output=True, text=True, check=False
    )
    # git grep exits 1 when nothing matched; anything above is a real error.
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


def _repository_files() -> list[Path]:
    """Every file git would commit: tracked, plus new files that are not ignored."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted({ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()})


def _text_files() -> list[Path]:
    files = []
    for path in _repository_files():
        try:
            path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        files.append(path)
    return files


def _anchors(markdown: Path) -> set[str]:
    """The anchors a Markdown renderer gives the file's headings (GitHub's slugs)."""
    anchors = set()
    in_code = False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        in_code ^= line.startswith("```")
        if not in_code and (heading := re.match(r"#{1,6}\s+(.+?)\s*#*$", line)):
            text = re.sub(r"[^\w\- ]", "", heading[1].lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def _inside(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


@pytest.mark.parametrize("what", sorted(OUTSIDE_PATTERNS))
def test_no_file_in_the_repository_names_a_path_outside_it(what: str) -> None:
    found = _git("grep", "--untracked", "-I", "-n", "-E", "-e", OUTSIDE_PATTERNS[what])
    assert not found, f"{what}, named in:\n{found}"


def test_the_outside_path_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    # Without this, a pattern that can never match would pass the test above for ever.
    samples = {
        "a sibling folder of the clone": "[the contract](" + "../" + "shared/contract)",
        "a path on the author's machine": 'open("' + "/wo" + 'rk/shared/x")',
        "the repository root's parent, in Python": "SCHEMA = REPO_" + "ROOT" + ".parent / 'x'",
        "a pathlib path into a sibling folder": "here.parent / " + '"sha' + 'red" / "x"',
        "notes kept beside the clone": "see " + "shared" + "/CONTRACT.md",
    }
    assert set(samples) == set(OUTSIDE_PATTERNS)
    for what, sample in samples.items():
        sample_file = tmp_path / "sample.txt"
        sample_file.write_text(sample + "\n", encoding="utf-8")
        found = _git("grep", "--no-index", "-E", "-e", OUTSIDE_PATTERNS[what], cwd=tmp_path)
        assert found, f"{what}: {OUTSIDE_PATTERNS[what]!r} does not match {sample!r}"


def test_every_relative_link_in_the_markdown_files_reaches_a_file_in_the_repository() -> None:
    broken = []
    for path in _text_files():
        if path.suffix != ".md":
            continue
        for target in _MARKDOWN_LINK.findall(path.read_text(encoding="utf-8")):
            if target.startswith(_EXTERNAL):
                continue
            file_part, _, anchor = target.partition("#")
            resolved = path.parent / file_part
            if not _inside(resolved) or not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "links that leave the repository or lead nowhere:\n" + "\n".join(broken)


def test_every_markdown_file_the_repository_names_is_in_it() -> None:
    files = _repository_files()
    names = {path.name for path in files}
    missing = []
    for path in _text_files():
        if path.suffix == ".json":
            continue  # third-party fixtures (tests/fixtures/README.md); they name no project file
        for name in set(_MARKDOWN_NAME.findall(path.read_text(encoding="utf-8"))):
            if "/" not in name:
                found = name in names
            else:
                candidates = (path.parent / name, ROOT / name)
                found = any(_inside(c) and c.is_file() for c in candidates)
            if not found:
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "Markdown files named but not in the repository:\n" + "\n".join(missing)
