"""The fake Halo is a test and demo tool, not part of the worker.

It lives in `fakehalo/` at the repository root: the worker's wheel (and so the production image,
which installs only that wheel) leaves it out, nothing the worker or the producers import loads
it, and it imports nothing of theirs, so it still runs where only its own source is present.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[2]
FAKE = "fakehalo"
# Where the fake lived before it had a package of its own; neither name may ship.
FAKE_PACKAGES = (FAKE, "fakehalo")
SHIPPED = ("worker", "producers")
# Building the wheel with the dev extra's setuptools (the locked backend) takes a few seconds.
WHEEL_BUILD_TIMEOUT_S = 120


def _is_fake(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in FAKE_PACKAGES)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_package_discovery_ships_the_worker_and_producers_but_not_the_fake_halo() -> None:
    setuptools_config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"
    ]["setuptools"]
    find = setuptools_config["packages"]["find"]
    packages = setuptools.find_packages(
        where=str(ROOT), include=find.get("include", ("*",)), exclude=find.get("exclude", ())
    )
    assert set(SHIPPED) <= set(packages)
    assert not [name for name in packages if _is_fake(name)]
    assert not [name for name in setuptools_config.get("package-data", {}) if _is_fake(name)]


def test_the_dev_extra_builds_with_the_backend_the_image_locks() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (dev_pin,) = [r for r in project["optional-dependencies"]["dev"] if r.startswith("setuptools")]
    locked = (ROOT / "ops" / "requirements-build.txt").read_text(encoding="utf-8")
    assert f"\n{dev_pin} " in locked, f"{dev_pin} is not what ops/requirements-build.txt locks"


def test_no_console_script_starts_the_fake_halo() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    scripts = project.get("scripts", {})
    assert scripts, "the halo-jobs command is gone"
    assert not {name: target for name, target in scripts.items() if _is_fake(target.split(":")[0])}


def test_the_built_wheel_holds_no_fake_halo(tmp_path: Path) -> None:
    # A copy of the tree, fake included, so the build sees what a clone holds and leaves no
    # build/ or egg-info behind in the checkout.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    source.mkdir()
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy2(ROOT / name, source / name)
    for name in [*SHIPPED, FAKE]:
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    wheels = tmp_path / "wheels"
    # No build isolation: the image builds the same way, and nothing is fetched.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(wheels), str(source)],
        capture_output=True, text=True, timeout=WHEEL_BUILD_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = wheels.glob("halo_update_worker-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == set(SHIPPED)
    assert not [name for name in names if _is_fake(name.removesuffix(".py").replace("/", "."))]
    assert not [name for name in names if name.endswith(".json") and "fake" in name]


@pytest.mark.parametrize("package", SHIPPED)
def test_no_module_the_service_ships_imports_the_fake_halo(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in _imported_modules(path) if _is_fake(m))
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert not {path: modules for path, modules in offenders.items() if modules}


def test_the_fake_halo_imports_nothing_of_the_worker_or_the_producers() -> None:
    assert (ROOT / FAKE / "server.py").is_file()
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0] in SHIPPED
        )
        for path in sorted((ROOT / FAKE).rglob("*.py"))
    }
    assert not {path: modules for path, modules in offenders.items() if modules}


def test_the_fake_halo_needs_no_package_beyond_the_workers_own_dependencies() -> None:
    # The image's demo stage adds only the fake's source on top of the production image.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    installed = {
        requirement.split("==")[0].split("[")[0].lower().replace("-", "_")
        for requirement in project["dependencies"]
    }
    imported = {
        module.split(".")[0]
        for path in (ROOT / FAKE).rglob("*.py")
        for module in _imported_modules(path)
    }
    third_party = imported - set(sys.stdlib_module_names) - {FAKE, "__future__"}
    assert third_party, "the fake serves Halo's answers with httpx"
    assert third_party <= installed, sorted(third_party - installed)


def test_starting_the_worker_and_the_producer_cli_loads_no_fake_halo() -> None:
    # The fake is importable here (the root is on the path): it must still not be loaded.
    probe = (
        "import json, sys\n"
        "import worker.app, worker.tasks, producers, operators.cli\n"
        f"fakes = {list(FAKE_PACKAGES)!r}\n"
        "loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') "
        "for f in fakes))\n"
        "print(json.dumps({'modules': len(sys.modules), 'fake': loaded}))\n"
        f"import {FAKE}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[0])
    assert report["modules"] > 100, "the worker's app was not imported"
    assert report["fake"] == []
