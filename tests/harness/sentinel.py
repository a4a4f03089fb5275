"""Redis with failover, natively: a primary, a replica and three sentinels on loopback.

The failover test (and anyone trying Sentinel without containers) runs the same commands as
the Compose Sentinel variant: `redis-server` for the data nodes and `redis-server --sentinel`
for the sentinels, each on a free loopback port, with configuration files written here.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Self

import redis

from tests.harness.processes import RedisServer, _Process, free_port

MASTER_NAME = "mymaster"
# How the Compose Sentinel variant starts a data node: in the role the sentinels give it.
DATA_NODE_SCRIPT = Path(__file__).resolve().parents[2] / "ops" / "redis" / "data-node.sh"
# Two of three sentinels must agree the primary is down: one sentinel alone, partitioned from
# the others, cannot start a failover.
QUORUM = 2


class SentinelServer(_Process):
    """`redis-server <config> --sentinel` watching the primary on `primary_port`."""

    def __init__(
        self,
        directory: Path,
        *,
        primary_port: int,
        down_after_ms: int,
        failover_timeout_ms: int,
        port: int | None = None,
    ) -> None:
        super().__init__("redis-sentinel", directory / "sentinel.log")
        self.directory = directory
        self.port = port or free_port()
        self.primary_port = primary_port
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def address(self) -> str:
        return f"sentinel://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A client for this sentinel's own commands (``SENTINEL ...``)."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=2
        )

    def start(self, timeout_s: float = 10.0) -> Self:
        """Write the configuration (Sentinel rewrites it as it learns) and start."""
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self._spawn(["redis-server", str(config), "--sentinel"])
        self._wait_for("Sentinel ID is", timeout_s)
        return self


class ReplicationGroup(contextlib.ExitStack):
    """A primary with one replica, watched by three sentinels. Leaving the block stops all.

    `down_after_ms` is how long the primary must be silent before a sentinel calls it down;
    `failover_timeout_ms` bounds a failover (and spaces retries of a failed one).
    """

    def __init__(
        self, root: Path, *, down_after_ms: int = 5000, failover_timeout_ms: int = 20_000
    ) -> None:
        super().__init__()
        self.primary = RedisServer(root / "primary")
        self.first_primary_port = self.primary.port
        self.replica = RedisServer(
            root / "replica", extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)]
        )
        self.sentinels = [
            SentinelServer(
                root / f"sentinel{n}",
                primary_port=self.primary.port,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
            for n in range(3)
        ]

    @property
    def url(self) -> str:
        """The service's URL for this group: kombu's Sentinel form, every sentinel."""
        return ";".join(f"{s.address}/0" for s in self.sentinels)

    def __enter__(self) -> Self:
        super().__enter__()
        try:
            for data_node in (self.primary, self.replica):
                data_node.start()
                self.callback(data_node.stop)
            for sentinel in self.sentinels:
                sentinel.start()
                self.callback(sentinel.stop)
            self.wait_until_watched(timeout_s=30)
        except BaseException:
            self.close()
            raise
        return self

    def restart_data_node(self, node: RedisServer) -> None:
        """Start `node` again (after it died, its data lost) as the Compose Sentinel variant
        starts a data node: through `ops/redis/data-node.sh`, which asks the sentinels where
        the primary is and makes the node its replica, and only on the group's first start
        (no sentinel answering) takes the role it was first given."""
        sentinels = [f"127.0.0.1:{s.port}" for s in self.sentinels]
        node.launcher = data_node_launcher(node.port, self.first_primary_port, sentinels)
        node.extra_args = _without_replicaof(node.extra_args)
        node.start()

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers reports it."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            with contextlib.suppress(redis.RedisError), sentinel.client() as client:
                address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                if address:
                    return int(address[1])
        return None

    def wait_until_watched(self, timeout_s: float) -> None:
        """Wait until a failover could happen: the data node that is not the primary is its
        replica, in sync, and every sentinel knows it and the two other sentinels.

        Raises:
            TimeoutError: the group did not get there in time.
        """
        deadline = time.monotonic() + timeout_s
        while not self._watched():
            if time.monotonic() > deadline:
                raise TimeoutError("the sentinels never saw the replica and each other")
            time.sleep(0.1)

    def _watched(self) -> bool:
        primary_port = self.primary_port()
        replicas = [s for s in (self.primary, self.replica) if s.port != primary_port]
        try:
            for server in replicas:
                with redis.Redis.from_url(server.url, decode_responses=True) as replica:
                    if replica.info("replication").get("master_link_status") != "up":
                        return False
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    state = client.sentinel_master(MASTER_NAME)
                    if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                        return False
        except redis.RedisError:
            return False
        return True

    def wait_for_promotion(self, old_port: int, timeout_s: float) -> int:
        """Wait until the sentinels name a primary other than `old_port` and it accepts
        writes; returns its port.

        Raises:
            TimeoutError: no failover within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = self._settled_primary()
            if port is not None and port != old_port and _is_writable_primary(port):
                return port
            time.sleep(0.05)
        raise TimeoutError(f"Sentinel did not promote a replica within {timeout_s:g} s")

    def _settled_primary(self) -> int | None:
        """The primary every running sentinel names, once none of them is still failing over;
        None before that. A failover can still be aborted while one is in progress (its
        timeout passing on a loaded host), and the old primary then stays the primary: the
        old host must not come back, empty, before the failover has settled."""
        ports = set()
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                with sentinel.client() as client:
                    state = client.sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return None
            if "failover_in_progress" in str(state.get("flags", "")):
                return None
            ports.add(int(state["port"]))
        return ports.pop() if len(ports) == 1 else None


def data_node_launcher(port: int, first_primary_port: int, sentinels: list[str]) -> list[str]:
    """The command that starts the data node on `port` through `ops/redis/data-node.sh`,
    asking `sentinels` ("host:port") where the primary is."""
    return [
        "env",
        f"REDIS_SENTINELS={' '.join(sentinels)}",
        f"REDIS_SENTINEL_MASTER={MASTER_NAME}",
        "sh",
        str(DATA_NODE_SCRIPT),
        "127.0.0.1",
        str(port),
        "127.0.0.1",
        str(first_primary_port),
    ]


def _without_replicaof(args: list[str]) -> list[str]:
    """`args` less any `--replicaof <host> <port>`."""
    if "--replicaof" not in args:
        return list(args)
    at = args.index("--replicaof")
    return args[:at] + args[at + 3 :]


def _is_writable_primary(port: int) -> bool:
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
            role: object = client.info("replication").get("role")
            return role == "master"
    except redis.RedisError:
        return False
