"""Redis users per role: render `ops/redis/users.acl` with each role's password.

The file holds the rules and a placeholder per role (``@WORKER@``, ``@PRODUCER@``, ``@FLOWER@``,
``@ADMIN@``); rendering puts ``#<SHA-256 of the password>`` in its place, Redis's form for a
password given by its hash, so neither the file nor its rendering holds a password. Redis
takes no comments in an ACL file, so rendering drops the file's comment and blank lines.
`ops/redis/render-acl.sh` does the same in the Redis container (Compose, Kubernetes); the tests
and the native runs use this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

ACL_FILE: Final = Path(__file__).resolve().parents[2] / "ops" / "redis" / "users.acl"
ROLES: Final = ("worker", "producer", "flower", "admin")


def render(passwords: Mapping[str, str], rules: str | None = None) -> str:
    """The ACL file with every role's placeholder replaced by its password's hash.

    Args:
        passwords: a password for each of `ROLES`.
        rules: the file's text (default: `ACL_FILE`).

    Raises:
        ValueError: a role has no password, or an empty one.
    """
    missing = [role for role in ROLES if not passwords.get(role)]
    if missing:
        raise ValueError(f"no Redis password for role(s) {', '.join(missing)}")
    text = ACL_FILE.read_text(encoding="utf-8") if rules is None else rules
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rendered = "\n".join(lines) + "\n"
    for role in ROLES:
        digest = hashlib.sha256(passwords[role].encode()).hexdigest()
        rendered = rendered.replace(f"@{role.upper()}@", f"#{digest}")
    return rendered


def write(path: Path, passwords: Mapping[str, str]) -> Path:
    """Render the ACL file to `path` (readable by its owner only); returns `path`."""
    path.write_text(render(passwords), encoding="utf-8")
    path.chmod(0o600)
    return path
