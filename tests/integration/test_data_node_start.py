"""`ops/redis/data-node.sh`: a Redis data node starts in the role the sentinels give it.

The Compose Sentinel variant starts both data nodes through it. A node that came back after a
failover, perhaps without its data, must become the new primary's replica at once, never call
itself primary (docs/redis.md, "Bringing a failed primary back").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.harness.processes import RedisServer, free_port
from tests.harness.sentinel import ReplicationGroup, data_node_launcher


def data_node(directory: Path, sentinels: list[str], first_primary_port: int | None) -> RedisServer:
    """A data node started through the script, as Compose starts one; `first_primary_port`
    None: the node is the group's first primary."""
    node = RedisServer(directory)
    first = node.port if first_primary_port is None else first_primary_port
    node.launcher = data_node_launcher(node.port, first, sentinels)
    return node


def replication(node: RedisServer) -> dict[str, object]:
    with redis.Redis.from_url(node.url, decode_responses=True) as client:
        info: dict[str, object] = client.info("replication")
        return info


def wait_for_key(node: RedisServer, key: str, timeout_s: float = 20.0) -> str | None:
    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(node.url, decode_responses=True) as client:
        while time.monotonic() < deadline:
            value = client.get(key)
            if value is not None:
                return str(value)
            time.sleep(0.05)
    return None


@pytest.fixture
def nodes() -> Iterator[list[RedisServer]]:
    started: list[RedisServer] = []
    yield started
    for node in started:
        node.stop()


def test_with_no_sentinel_answering_each_data_node_takes_its_first_role(
    tmp_path: Path, nodes: list[RedisServer]
) -> None:
    nobody = [f"127.0.0.1:{free_port()}"]  # the group's first start: no sentinel yet
    first = data_node(tmp_path / "first", nobody, first_primary_port=None)
    nodes.append(first.start())
    second = data_node(tmp_path / "second", nobody, first_primary_port=first.port)
    nodes.append(second.start())

    assert replication(first)["role"] == "master"
    assert replication(second)["role"] == "slave"
    assert replication(second)["master_port"] == first.port


def test_a_data_node_that_was_the_first_primary_starts_as_the_replica_of_the_one_the_sentinels_name(
    tmp_path: Path, nodes: list[RedisServer]
) -> None:
    with ReplicationGroup(tmp_path / "group") as group:
        with redis.Redis.from_url(group.primary.url) as client:
            client.set("written-before", "kept")
        sentinels = [f"127.0.0.1:{s.port}" for s in group.sentinels]
        # A node that believes it is the first primary (as the Compose `redis` service does),
        # started while the sentinels name another.
        node = data_node(tmp_path / "returning", sentinels, first_primary_port=None)
        nodes.append(node.start())

        state = replication(node)
        assert state["role"] == "slave"
        assert state["master_port"] == group.primary.port
        assert wait_for_key(node, "written-before") == "kept"
        assert "starting as the replica of" in node.run_text()
