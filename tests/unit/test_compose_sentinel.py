"""The Compose Sentinel variant (ops/compose/sentinel.yml), read from the file: valid against
the Compose Specification, a primary, a replica and three sentinels, every process on the
sentinels with its own Redis user, and no secret written down."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.harness import redis_acl
from tests.harness.sentinel import QUORUM

ROOT = Path(__file__).resolve().parents[2]
SENTINEL_FILE = ROOT / "ops" / "compose" / "sentinel.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "fixtures" / "compose" / "compose-spec.json"
SENTINELS = ["redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3"]
_SENTINEL_URL = re.compile(
    r"sentinel://(?P<user>[a-z]+):\$\{(?P<variable>[A-Z_]+):\?[^}]*\}@redis-sentinel-1:26379/0"
    r";sentinel://redis-sentinel-2:26379/0;sentinel://redis-sentinel-3:26379/0"
)


@pytest.fixture(scope="module")
def variant() -> dict[str, Any]:
    document = yaml.safe_load(SENTINEL_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_the_sentinel_variant_is_valid_against_the_compose_specification(
    variant: dict[str, Any],
) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(variant), key=lambda e: str(list(e.path))
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_a_primary_a_replica_and_three_sentinels_with_a_majority_quorum(
    variant: dict[str, Any],
) -> None:
    services = variant["services"]
    assert {"redis", "redis-replica", *SENTINELS} <= set(services)
    # On the group's first start `redis` is the primary and `redis-replica` its replica.
    assert "data-node.sh redis-replica 6379 redis 6379" in " ".join(
        services["redis-replica"]["command"]
    )
    for name in SENTINELS:
        script = " ".join(services[name]["command"])
        assert f"sentinel monitor mymaster redis 6379 {QUORUM}" in script
        assert "--sentinel" in script
    assert len(SENTINELS) // 2 < QUORUM


@pytest.mark.parametrize(
    ("service", "user"), [("worker", "worker"), ("flower", "flower"), ("demo-jobs", "producer")]
)
def test_every_process_reaches_redis_through_the_sentinels_as_its_own_user(
    variant: dict[str, Any], service: str, user: str
) -> None:
    environment = variant["services"][service]["environment"]
    match = _SENTINEL_URL.fullmatch(environment["HALO_BROKER_URL"])
    assert match, environment["HALO_BROKER_URL"]
    assert match["user"] == user
    assert match["variable"] == f"REDIS_{user.upper()}_PASSWORD"
    assert user in redis_acl.ROLES
    assert environment["HALO_REDIS_SENTINEL_MASTER"] == "mymaster"


def test_the_data_nodes_load_the_shipped_users_file_and_writes_wait_for_the_replica(
    variant: dict[str, Any],
) -> None:
    services = variant["services"]
    for name in ("redis", "redis-replica"):
        script = " ".join(services[name]["command"])
        assert "render-acl.sh /etc/halo/redis/users.acl /tmp/users.acl" in script
        assert "--aclfile /tmp/users.acl" in script
        assert "--appendfsync everysec" in script
        assert "noeviction" in script
        # Started in the role the sentinels give, never as a primary they have replaced.
        assert f"data-node.sh {name} 6379 redis 6379" in script
        assert "--replicaof" not in script
        sentinels = services[name]["environment"]["REDIS_SENTINELS"].split()
        assert sorted(sentinels) == sorted(
            f"{sentinel}:26379" for sentinel in services if sentinel.startswith("redis-sentinel")
        )
        mounts = [v for v in services[name]["volumes"] if isinstance(v, dict)]
        assert {"source": "./ops/redis", "target": "/etc/halo/redis"}.items() <= mounts[0].items()
    assert (ROOT / "ops" / "redis" / "render-acl.sh").is_file()
    assert (ROOT / "ops" / "redis" / "data-node.sh").is_file()
    for name in ("worker", "demo-jobs"):
        assert services[name]["environment"]["HALO_REDIS_MIN_REPLICAS_ACKED"] == "1"


def test_no_password_is_written_in_the_sentinel_variant() -> None:
    text = SENTINEL_FILE.read_text(encoding="utf-8")
    # Passwords come from ${VARIABLES} (Compose) or $$VARIABLES (the container's shell) only.
    assert not re.search(r"://[a-z]*:[^$@\s]+@", text)
    assert not re.search(r"(masterauth|auth-pass mymaster)\s+(?![\"']?\$\$)", text)
    documented = (ROOT / "ops" / "env.example").read_text(encoding="utf-8")
    interpolated = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert sorted(v for v in interpolated if v not in documented) == []
