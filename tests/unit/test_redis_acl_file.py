"""The shipped Redis users file renders the same in the container (shell) as natively (Python),
and holds no password."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ops import redis_acl

RENDER_SCRIPT = Path(redis_acl.__file__).resolve().parent / "redis" / "render-acl.sh"
PASSWORDS = {"worker": "w-pass", "producer": "p pass $&|/", "flower": "f-pass", "admin": "a-pass"}
ENV = {
    "REDIS_WORKER_PASSWORD": PASSWORDS["worker"],
    "REDIS_PRODUCER_PASSWORD": PASSWORDS["producer"],
    "REDIS_FLOWER_PASSWORD": PASSWORDS["flower"],
    "REDIS_PASSWORD": PASSWORDS["admin"],
}


def test_the_container_script_renders_exactly_what_the_python_renderer_does(
    tmp_path: Path,
) -> None:
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum is not installed")
    output = tmp_path / "users.acl"
    subprocess.run(
        ["sh", str(RENDER_SCRIPT), str(redis_acl.ACL_FILE), str(output)],
        env={"PATH": os.environ["PATH"], **ENV},
        check=True,
        timeout=30,
    )
    assert output.read_text() == redis_acl.render(PASSWORDS)


def test_the_rendered_file_has_one_user_per_line_and_only_password_hashes() -> None:
    rendered = redis_acl.render(PASSWORDS)
    lines = rendered.splitlines()
    assert sorted(line.split()[1] for line in lines) == sorted(["default", *redis_acl.ROLES])
    assert all(line.startswith("user ") for line in lines)
    for role, password in PASSWORDS.items():
        assert password not in rendered
        assert f"#{hashlib.sha256(password.encode()).hexdigest()}" in rendered, role
    assert "@" + "WORKER@" not in rendered


def test_the_container_script_refuses_to_render_without_every_password(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], **ENV, "REDIS_FLOWER_PASSWORD": ""}
    done = subprocess.run(
        ["sh", str(RENDER_SCRIPT), str(redis_acl.ACL_FILE), str(tmp_path / "users.acl")],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "REDIS_FLOWER_PASSWORD is not set" in done.stderr
