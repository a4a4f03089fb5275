"""kombu's Redis transport, made to survive queue items that are not kombu envelopes.

kombu 5.7.0's Redis channel takes an item off a queue with BRPOP, in the worker's event loop,
and parses it with nothing to catch an error (`kombu/transport/redis.py`, `Channel._brpop_read`
and `Channel._get`): ``self.connection._deliver(loads(bytes_to_str(item)), dest)``. An item
pushed onto the queue by something other than a kombu producer then either kills the worker
(bytes that are not UTF-8, text that is not JSON: "Unrecoverable error"), or vanishes (JSON that
is not an envelope raises `KeyError`, which the transport counts as a connection error: the
consumer reconnects and the item, already popped, is gone without a trace).

`Channel` here reads each item the same way, but checks it before delivering: an item kombu or
Celery would crash on is moved to the dead-letter list (`worker.deadletters`) with its reason,
and the worker goes on with the next one.

The channel also survives losing its broker with messages delivered and not yet acknowledged
(every running job, with late acks). Celery then closes the transport before the channel; the
channel's close drops its connection pool and asks for a new one to put those messages back,
and kombu builds it from the transport's connection details, which are gone by then: an
`AttributeError`, which Celery does not expect while closing, and the worker process stops
("Error on stopping Hub"). Seen in the Sentinel failover test, one worker in four runs. Here
the missing details are a connection error, which Celery and kombu do expect: the close goes on,
the worker reconnects, and the messages wait in the unacked set, from which the visibility
timeout brings them back.

`install` makes `Transport` the one kombu uses for ``redis://`` and ``rediss://`` URLs, and
`SentinelTransport` (the same checks on kombu's Sentinel channel) for ``sentinel://`` ones;
`worker.app` calls it, so ``celery -A worker.app worker`` (and Flower) use it with the URL as
configured. Celery's `broker_transport` setting would do the same for the worker, but kombu
then writes the class path as the URL's scheme (``worker.transport:Transport://host``) in the
worker's banner and its "Cannot connect" lines, and Flower, which reads the broker's type from
that URL, can no longer show the queues. Every transport option and the TLS settings work as
they do for kombu's own transport, which this one is a subclass of.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from queue import Empty
from typing import TYPE_CHECKING, Any, Final, cast

import kombu.transport
import redis as redis_py
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from worker import deadletters
from worker.deadletters import DeadLetter, Reason
from worker.models import json_kind

log = logging.getLogger("halo.transport")

# kombu's own body encodings (`virtual.Channel.codecs`); any other raises on delivery.
_BODY_ENCODINGS: Final = frozenset({"base64", "utf-8"})


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, moving items it cannot deliver to the dead-letter list."""

    if TYPE_CHECKING:
        # The Redis channel's internals called here, which kombu's type stubs leave out.
        connection_errors: tuple[type[BaseException], ...]
        _queue_cycle: Any
        _in_poll: Any

        def _flush_brpop_reauth(self) -> None: ...
        def _disconnect_pools(self) -> None: ...
        def _q_for_pri(self, queue: str, pri: int) -> str: ...
        def _maybe_update_queues_expire(self, client: Any, queue: str) -> None: ...

    #: Seconds the dead-letter list is kept after its newest entry (transport option).
    dead_letter_ttl_s: int = deadletters.DEFAULT_TTL_S
    #: Items longer than this are dead-lettered undecoded (transport option; see `celeryconfig`).
    max_message_bytes: int = deadletters.DEFAULT_MAX_MESSAGE_BYTES
    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "dead_letter_ttl_s",
        "max_message_bytes",
    )

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu's client for one ack, restore or queue call, made once per connection pool.

        kombu makes a new `redis.Redis` for each of those calls (`conn_or_acquire`), and
        building one (its table of response callbacks) cost a tenth of a worker's CPU per job
        in the benchmark's profile. A client holds no connection of its own (it takes one from
        the pool per command), so one serves every call until the pool is replaced.
        """
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool
        spare = self.__dict__.get("_spare_client")
        if spare is None or spare.connection_pool is not pool:
            spare = super()._create_client(asynchronous=False)  # type: ignore[misc]
            self.__dict__["_spare_client"] = spare
        return spare

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """kombu's connection details for a new pool, or a connection error if the transport
        was closed first (see the module docstring)."""
        if self.connection.client is None:
            raise redis_py.ConnectionError("the broker connection is closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        return params

    def _brpop_read(self, **options: Any) -> bool:
        # kombu 5.7.0's `_brpop_read`, line for line, but for the check before delivery.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # As kombu: disconnect so the next iteration reconnects.
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            envelope = self._envelope_or_dead_letter(item, dest)
            if envelope is None:
                # Nothing delivered: the event loop goes on to the next BRPOP.
                raise Empty()
            self.connection._deliver(envelope, dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        # kombu 5.7.0's `_get` (used by basic_get), skipping items that are not envelopes.
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                while item := client.rpop(self._q_for_pri(queue, pri)):
                    envelope = self._envelope_or_dead_letter(item, queue)
                    if envelope is not None:
                        self._maybe_update_queues_expire(client, queue)
                        return envelope
            self._maybe_update_queues_expire(client, queue)
            raise Empty()

    def _envelope_or_dead_letter(self, item: bytes | str, queue: str) -> dict[str, Any] | None:
        """The item as a kombu envelope, or None once it is in the dead-letter list.

        Raises:
            redis.RedisError: the dead-letter list could not be written; the item is lost, as
                kombu loses an item popped just before a connection fails.
        """
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        found = read_item(data, max_bytes=int(self.max_message_bytes))
        if isinstance(found, dict):
            return found
        reason, detail = found
        self.dead_letter(DeadLetter.of(data, reason, detail, queue))
        return None

    def dead_letter(self, letter: DeadLetter) -> None:
        """Add an entry to the dead-letter list and log it (ids, reason and size only).

        Raises:
            redis.RedisError: nothing was written (logged too).
        """
        fields = {
            "dead_letter_id": letter.id,
            "reason": letter.reason,
            "queue": letter.queue,
            "size_bytes": letter.size_bytes,
        }
        try:
            with self.conn_or_acquire() as client:
                deadletters.record(client, letter, ttl_s=int(self.dead_letter_ttl_s))
        except redis_py.RedisError as exc:
            log.error(  # noqa: TRY400 - a known outage: its name is enough, not a traceback
                "queue item lost: the worker cannot take it and cannot reach the dead-letter list",
                extra={**fields, "error": type(exc).__name__},
            )
            raise
        log.error("queue item moved to the dead-letter list", extra=fields)


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (the primary found through the sentinels, `worker.redisconn`)
    with the same dead-lettering reads: `Channel`'s `_brpop_read` and `_get` come first in the
    method order, kombu's Sentinel connection pool after them."""

    from_transport_options = (
        *kombu_redis.SentinelChannel.from_transport_options,
        "dead_letter_ttl_s",
        "max_message_bytes",
    )


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the dead-lettering `Channel`."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with the dead-lettering `SentinelChannel`."""

    Channel = SentinelChannel


# Each URL scheme kombu serves from Redis, and this module's transport for it.
_TRANSPORTS: Final = {
    "redis": "Transport",
    "rediss": "Transport",
    "sentinel": "SentinelTransport",
}


def install() -> None:
    """Make kombu use this module's transports for ``redis://``, ``rediss://`` and
    ``sentinel://`` URLs in this process.

    Idempotent. Call it before the first broker connection (kombu caches the class it
    resolves for a scheme; the cache entry is dropped here in case one was made).
    """
    resolved: dict[str, Any] = vars(kombu.transport).get("_transport_cache", {})
    for scheme, transport in _TRANSPORTS.items():
        kombu.transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:{transport}"
        resolved.pop(scheme, None)


def read_item(
    data: bytes, *, max_bytes: int = deadletters.DEFAULT_MAX_MESSAGE_BYTES
) -> dict[str, Any] | tuple[Reason, str]:
    """The item as kombu reads it, if it is an envelope; else why it is not one.

    An item longer than `max_bytes` is refused before any decoding: decoding it would cost
    memory and time in the consumer's loop for a message no producer of the service sends.
    """
    if len(data) > max_bytes:
        return Reason.TOO_LARGE, f"{len(data):,} bytes, more than the limit of {max_bytes:,}"
    payload = _decoded(data)
    if isinstance(payload, _Refused):
        return payload.reason, payload.detail
    problem = _envelope_problem(payload)
    if problem is not None:
        return problem
    return cast(dict[str, Any], payload)


@dataclass(frozen=True)
class _Refused:
    reason: Reason
    detail: str


def _decoded(data: bytes) -> Any:
    """The item's JSON as kombu decodes it, or why it cannot be."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _Refused(Reason.NOT_UTF8, "the bytes are not UTF-8 text")
    try:
        return loads(text)
    except RecursionError:
        return _Refused(Reason.NOT_JSON, "JSON nested too deeply to read")
    except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
        # ValueError from json itself; the others from kombu's hook that revives tagged values
        # ({"__type__": "decimal", "__value__": ...}).
        if isinstance(exc, json.JSONDecodeError):
            # json's own words and position, never the text itself.
            return _Refused(Reason.NOT_JSON, f"not JSON: {exc.msg} (character {exc.pos})")
        return _Refused(Reason.NOT_JSON, f"JSON that kombu cannot read ({type(exc).__name__})")


def _envelope_problem(payload: Any) -> tuple[Reason, str] | None:
    """What keeps kombu and Celery from taking `payload` as a message, or None.

    Each check names a field that kombu's virtual `Message`, its Redis `QoS.append` or Celery's
    `Consumer.on_task_received` (5.7.0) reads without guarding against its type.
    """
    if not isinstance(payload, Mapping):
        return Reason.NOT_AN_ENVELOPE, f"JSON {json_kind(payload)}, not a kombu envelope"
    properties = payload.get("properties")
    if not isinstance(properties, Mapping):
        return Reason.NOT_AN_ENVELOPE, "a JSON object without kombu's `properties` object"
    problems: list[str] = []
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        problems.append("properties.delivery_tag is not a string")
    info = properties.get("delivery_info")
    if not isinstance(info, Mapping) or not all(
        isinstance(info.get(key), str) for key in ("exchange", "routing_key")
    ):
        problems.append("properties.delivery_info lacks a string exchange and routing_key")
    encoding = properties.get("body_encoding")
    if encoding is not None and (not isinstance(encoding, str) or encoding not in _BODY_ENCODINGS):
        problems.append("properties.body_encoding is not base64 or utf-8")
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        problems.append(f"body is {json_kind(body)}, not a string")
    elif body and encoding == "base64" and not _is_base64(body):
        problems.append("body is not base64")
    headers = payload.get("headers")
    if headers is not None and not isinstance(headers, Mapping):
        problems.append(f"headers is {json_kind(headers)}, not an object")
    elif (
        isinstance(headers, Mapping) and "task" in headers and not isinstance(headers["task"], str)
    ):
        problems.append("headers.task is not a string")
    problems += [
        f"{key} is not a string"
        for key in ("content-type", "content-encoding")
        if payload.get(key) is not None and not isinstance(payload.get(key), str)
    ]
    if problems:
        return Reason.BAD_ENVELOPE, "; ".join(problems)
    return None


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text)
    except (binascii.Error, ValueError):
        return False
    return True
