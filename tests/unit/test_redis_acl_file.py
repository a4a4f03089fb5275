"""The shipped Redis users file renders the same in the container (shell) as natively (Python),
and holds no password; its key patterns give the worker every key `worker.keys` names, and the
producer and Flower only the ones they use."""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import redis_acl
from worker import keys
from worker.models import QUEUE

RENDER_SCRIPT = redis_acl.ACL_FILE.parent / "render-acl.sh"
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


def user_key_patterns(user: str) -> list[str]:
    """The key patterns of `user` in the shipped file (``~p``, ``%R~p``, ``%RW~p``, also inside
    selectors), in the glob syntax of `fnmatch` (Redis writes a negated class ``[^...]``)."""
    rules = redis_acl.render(PASSWORDS)
    line = next(line for line in rules.splitlines() if line.split()[1] == user)
    tokens = line.replace("(", " ").replace(")", " ").split()
    return [
        token.split("~", 1)[1].replace("[^", "[!")
        for token in tokens
        if "~" in token and token.split("~", 1)[0] in ("", "%R", "%W", "%RW")
    ]


def every_service_key() -> set[str]:
    """Every key `worker.keys` names, built with ``job-1``/``7`` for its run-time parts."""
    found = set()
    for name, value in vars(keys).items():
        if name.startswith("_"):
            continue
        if isinstance(value, str) and value.startswith("halo:"):
            found.add(value + "job-1" if value.endswith(":") else value)
        elif inspect.isfunction(value) and value.__module__ == keys.__name__:
            required = [
                p
                for p in inspect.signature(value).parameters.values()
                if p.default is inspect.Parameter.empty
            ]
            built = value(*["7" if p.annotation == "int" else "job-1" for p in required])
            # A suffix builder (a lock's) is shown on a key it is given.
            found.add(built if built.startswith("halo:") else value(keys.token_key("tenant")))
    found |= {keys.lookup_key("tenant", "priority", 3), keys.lookup_key("tenant", "status", 1, 2)}
    return found


def covered(key: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


# What a producer touches: the queue, its tracking of accepted jobs, records, their wake-ups,
# and the feed (`producers.jobs`, `producers.waiting`, `producers.feed`).
PRODUCER_KEYS = {
    QUEUE,
    keys.result_key("job-1"),
    keys.notify_key("job-1"),
    keys.UNFINISHED,
    keys.UNFINISHED_JOBS,
    keys.RESULTS_STREAM,
}


def test_the_worker_user_covers_every_key_the_service_names() -> None:
    worker = user_key_patterns("worker")
    service_keys = every_service_key() | {QUEUE}
    assert {keys.WORKERS, keys.DEAD_LETTERS, keys.DEAD_LETTER_COUNTS} <= service_keys
    assert sorted(key for key in service_keys if not covered(key, worker)) == []


def test_the_producer_user_reaches_only_the_keys_a_producer_uses() -> None:
    producer = user_key_patterns("producer")
    reached = {key for key in every_service_key() | {QUEUE} if covered(key, producer)}
    assert reached == PRODUCER_KEYS


def test_the_flower_user_reaches_no_key_of_the_service_but_the_queue() -> None:
    flower = user_key_patterns("flower")
    reached = {key for key in every_service_key() | {QUEUE} if covered(key, flower)}
    assert reached == {QUEUE}
