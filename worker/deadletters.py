"""The dead-letter list: queue items the worker could not take as a task, kept for a person.

An item on a broker queue that is not a kombu envelope (bytes that are not UTF-8, text that is
not JSON, JSON that is not an envelope) cannot be consumed: kombu would crash the worker on it
(`worker.transport`). A task message Celery would delete (an unknown task name, a content type
other than JSON, a body it cannot decode, no task id) has no job record to show for it
(`worker.consumer`, `worker.strategy`). Either is kept here instead, whole or cut to
`MAX_RAW_BYTES`, with the reason, the queue it came from and the time. `halo-jobs dead` lists
the list and replays the items that hold a valid job.

Keys, on the broker's Redis (where the item was):

    halo:dead          a list of JSON entries, newest first, at most MAX_DEAD_LETTERS long;
                       the whole list expires `ttl_s` after the newest entry was added
    halo:dead:counts   a hash: reason -> items dead-lettered for it, ever (the metric)

An entry (JSON object):

    id            32 hex digits, unique to the entry
    reason        one of `Reason`
    detail        what was wrong, in words; never quotes the item
    queue         the queue the item was taken from
    dead_at       when it was moved here, ``2026-11-27T10:00:00.412Z``
    size_bytes    the item's size as it was on the queue
    raw           the item, at most MAX_RAW_BYTES of it: as text when it is UTF-8 text that JSON
                  stores no larger than base64 would, else in base64
    raw_encoding  "text" or "base64"
    truncated     true when `raw` holds only the first MAX_RAW_BYTES bytes

The item can hold email content (a job's variables): the list is readable by whoever can read
the broker's Redis, as the queue itself is.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final, cast

import redis

from worker.keys import DEAD_LETTER_COUNTS, DEAD_LETTERS
from worker.models import utc_now_iso

# A flood of garbage must not fill the broker's memory: 1,000 entries of at most 64 KiB each
# (stored as text, or as base64 when that is shorter) is at most about 85 MiB. 64 KiB holds
# a job of typical size whole, so it can be replayed; a larger one (jobs may be up to
# 256 KiB) is kept cut, to be read only.
MAX_DEAD_LETTERS: Final = 1000
MAX_RAW_BYTES: Final = 64 * 1024

# Kept as long as result records are by default (HALO_RESULT_TTL_S): a week to notice.
DEFAULT_TTL_S: Final = 7 * 24 * 3600


class Reason(StrEnum):
    """Why an item was dead-lettered; also the metric's `reason` label."""

    NOT_UTF8 = "not_utf8"
    """The item's bytes are not UTF-8 text."""
    NOT_JSON = "not_json"
    """The item is text but not JSON (a truncated body, a plain string)."""
    NOT_AN_ENVELOPE = "not_an_envelope"
    """The item is JSON but not a kombu envelope (a bare job, any other object or value)."""
    BAD_ENVELOPE = "bad_envelope"
    """The item looks like a kombu envelope but a field kombu or Celery needs is wrong."""
    UNKNOWN_TASK = "unknown_task"
    """A task message naming a task no worker knows (Celery would delete it)."""
    UNKNOWN_FORMAT = "unknown_format"
    """A message naming no task at all (Celery would delete it)."""
    REFUSED_CONTENT = "refused_content"
    """A task message of a content type outside JSON (Celery would delete it)."""
    INVALID_TASK = "invalid_task"
    """A task message Celery refuses for another reason (it would delete it)."""
    UNREADABLE_BODY = "unreadable_body"
    """A task message whose body cannot be decoded as its content type says."""
    NO_TASK_ID = "no_task_id"
    """A task message without a task id: no record can be written for it."""


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter list (see the module docstring for each field)."""

    id: str
    reason: str
    detail: str
    queue: str
    dead_at: str
    size_bytes: int
    raw: str
    raw_encoding: str
    truncated: bool

    @classmethod
    def of(cls, item: bytes, reason: Reason, detail: str, queue: str) -> DeadLetter:
        """An entry for `item`, its raw bytes cut to `MAX_RAW_BYTES`."""
        kept = item[:MAX_RAW_BYTES]
        try:
            text: str | None = kept.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A cut can split a character: keep the whole ones before it.
            cut = len(kept) < len(item) and exc.reason == "unexpected end of data"
            text = kept[: exc.start].decode("utf-8") if cut else None
        # Text full of control characters grows up to sixfold as JSON; base64 only by a third,
        # which keeps the list's size bound.
        stored = json.dumps(text, ensure_ascii=False).encode() if text is not None else b""
        if text is not None and len(stored) <= _base64_chars(kept):
            raw, encoding = text, "text"
        else:
            raw, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        return cls(
            id=uuid.uuid4().hex,
            reason=reason.value,
            detail=detail,
            queue=queue,
            dead_at=utc_now_iso(),
            size_bytes=len(item),
            raw=raw,
            raw_encoding=encoding,
            truncated=len(kept) < len(item),
        )

    def to_json(self) -> str:
        """The entry as stored."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> DeadLetter | None:
        """An entry as stored, or None when the text is not one (written by someone else)."""
        try:
            fields = json.loads(text)
            return cls(**{name: fields[name] for name in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError):
            return None

    def raw_bytes(self) -> bytes:
        """The item's bytes as kept (the first MAX_RAW_BYTES when `truncated`)."""
        if self.raw_encoding == "base64":
            try:
                return base64.b64decode(self.raw, validate=True)
            except (binascii.Error, ValueError):
                return b""
        return self.raw.encode("utf-8")


def record(client: redis.Redis, letter: DeadLetter, *, ttl_s: int = DEFAULT_TTL_S) -> None:
    """Add an entry at the head of the list, trim the list, and count it, in one transaction.

    Raises:
        redis.RedisError: nothing was written.
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(DEAD_LETTERS, letter.to_json())
        pipe.ltrim(DEAD_LETTERS, 0, MAX_DEAD_LETTERS - 1)
        pipe.expire(DEAD_LETTERS, ttl_s)
        pipe.hincrby(DEAD_LETTER_COUNTS, letter.reason, 1)
        pipe.execute()


@dataclass(frozen=True)
class Stored:
    """An entry as read back, with its exact stored text (what `remove` matches)."""

    letter: DeadLetter
    text: str


def read(client: redis.Redis, limit: int = MAX_DEAD_LETTERS) -> list[Stored]:
    """The newest `limit` entries, newest first; text that is not an entry is skipped."""
    texts = cast(list[Any], client.lrange(DEAD_LETTERS, 0, limit - 1))
    found = []
    for raw in texts:
        text = _text(raw)
        letter = DeadLetter.from_json(text)
        if letter is not None:
            found.append(Stored(letter, text))
    return found


def remove(client: redis.Redis, stored: Stored) -> bool:
    """Remove one entry (once replayed); False when it was no longer there."""
    return bool(client.lrem(DEAD_LETTERS, 1, stored.text))


def counts(client: redis.Redis) -> dict[str, int]:
    """Items dead-lettered ever, by reason."""
    found = cast(dict[Any, Any], client.hgetall(DEAD_LETTER_COUNTS))
    return {_text(reason): int(count) for reason, count in found.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _base64_chars(data: bytes) -> int:
    """The length of `data` in base64, with the two quotes JSON adds."""
    return 4 * ((len(data) + 2) // 3) + 2
