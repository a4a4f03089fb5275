"""The broker dies while a worker holds messages it has not acknowledged yet.

Celery's consumer, on losing its broker, collects the connection (which drops the transport's
connection details) and then closes it; the channel's close puts the unacknowledged messages
back, through a new connection pool built from those details. kombu's own channel fails there
with an `AttributeError` that Celery does not catch, and the worker process stops. The
service's channel (`worker.transport`) turns it into a connection error: the close goes on and
the messages stay in the unacked set, where the visibility timeout finds them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection

from tests.harness.processes import RedisServer
from worker import transport

QUEUE = "broker-loss"
# kombu's default names for its unacked set (a bare Connection, without the service's options).
UNACKED = "unacked"


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, with an AOF, so it can die and come back with its data."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_worker_losing_its_broker_with_unacked_messages_closes_cleanly_and_keeps_them(
    durable_redis: RedisServer,
) -> None:
    transport.install()
    connection = Connection(durable_redis.url)
    queue = connection.SimpleQueue(QUEUE)
    queue.put({"job": 1})
    held = queue.get(timeout=5)  # delivered, not acknowledged: a job still running
    durable_redis.stop()  # its AOF keeps the unacked set for the restart below

    # Celery's consumer on a lost connection (`on_connection_error_after_connected`) collects
    # the connection, then closes it. When the channel's close inside `collect` is cut short
    # (a socket timeout while it reaches for the broker, as when the sentinels are asked for
    # a primary that is gone), `collect` still drops the transport's connection details and
    # leaves the channel open: this is the state it leaves.
    connection._do_close_transport()
    # Celery's `ignore_errors` lets connection errors through, and nothing else.
    with contextlib.suppress(*connection.connection_errors):
        connection.close()

    durable_redis.start()
    with redis.Redis.from_url(durable_redis.url) as client:
        assert client.hlen(UNACKED) == 1, "the held message was lost"
    assert held.payload == {"job": 1}


def test_the_channel_makes_one_client_per_connection_pool_for_its_acks_and_restores(
    durable_redis: RedisServer,
) -> None:
    transport.install()
    with Connection(durable_redis.url) as connection:
        channel = connection.default_channel
        assert isinstance(channel, transport.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.ping()
        channel._disconnect_pools()  # as after a fork or a reconnect
        with channel.conn_or_acquire() as after:
            assert after is not first
            assert after.connection_pool is channel.pool
            assert after.ping()
