"""Celery's consumer, keeping the task messages it throws away in the dead-letter list.

Celery 5.7.0 rejects and deletes a message it cannot run (`celery/worker/consumer/consumer.py`):
a task name no worker knows (`on_unknown_task`), a message with no task name at all
(`on_unknown_message`), a content type outside `accept_content` (`on_invalid_task`), a body it
cannot decode (`on_decode_error`). Redis has no dead-letter queue, so such a message, possibly
a job from a producer with a typo in the task name, would be gone with one log line, and that
line quoted the body (email content). `Consumer` first keeps a copy of the message in the
dead-letter list (`worker.deadletters`), then drops it as Celery does, logging no body.
`worker.strategy` does the same for a message with no task id.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any, Final

import redis
from celery import signals
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import ContentDisallowed
from vine import promise

from worker.deadletters import DeadLetter, Reason
from worker.transport import Channel

log = logging.getLogger("halo.consumer")

# What Celery's own log lines show in place of a dropped message's body: it can hold email
# content, and the dead-letter list keeps it for whoever may read it.
NOT_LOGGED: Final = "(body not logged: see halo-jobs dead)"


class Consumer(CeleryConsumer):
    """Celery's consumer; a message it would delete is dead-lettered first."""

    def create_task_handler(self, promise: Any = promise) -> Any:
        handle = super().create_task_handler(promise)

        def on_task_received(message: Any) -> Any:
            name = _task_name(message)
            if name is None or isinstance(name, str):
                return handle(message)
            # Celery looks the name up in a dict, and a list or an object in a protocol 1 body
            # crashes the worker there (TypeError), again after every restart.
            dead_letter_message(message, Reason.INVALID_TASK, "a task name that is not a string")
            log.error("task message with a task name that is not a string dropped")
            message.reject_log_error(log, getattr(self, "connection_errors", ()))
            return None

        return on_task_received

    # `connection_errors` and `event_dispatcher` are read with getattr: celery-types leaves
    # them out (Celery sets them when the consumer starts).

    def on_unknown_message(self, body: Any, message: Any) -> None:
        dead_letter_message(message, Reason.UNKNOWN_FORMAT, "a message with no task name")
        super().on_unknown_message(NOT_LOGGED, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        # Not Celery's own: it logs the body and the headers (a foreign producer's default
        # `argsrepr` is the job itself), and it crashes the worker on a message without a task
        # id (TypeError on a protocol 2 list, KeyError on an object), which, restored at
        # shutdown, then kills every worker that takes it. The result backend Celery would mark
        # the task failed in is off here (`task_ignore_result`).
        name = _task_name(message)
        shown = json.dumps(name[:100]) if isinstance(name, str) else "?"
        task_id = _task_id(message)
        dead_letter_message(message, Reason.UNKNOWN_TASK, f"no worker knows the task {shown}")
        log.error(
            "unregistered task %s: message dropped, kept in the dead-letter list",
            shown,
            extra={"task": shown, "task_id": task_id},
        )
        message.reject_log_error(log, getattr(self, "connection_errors", ()))
        events = getattr(self, "event_dispatcher", None)
        if task_id is not None and events:
            events.send("task-failed", uuid=task_id, exception=f"NotRegistered({shown})")
        signals.task_unknown.send(sender=self, message=message, exc=exc, name=name, id=task_id)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if isinstance(exc, ContentDisallowed):
            shown = json.dumps(str(message.content_type)[:100])
            reason, detail = Reason.REFUSED_CONTENT, f"content type {shown} is not accepted"
        else:
            reason, detail = Reason.INVALID_TASK, f"an invalid task message ({type(exc).__name__})"
        dead_letter_message(message, reason, detail)
        super().on_invalid_task(NOT_LOGGED, message, exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        # Not Celery's own, which logs the first KiB of the body.
        detail = f"a body that is not {str(message.content_type)[:100]} ({type(exc).__name__})"
        dead_letter_message(message, Reason.UNREADABLE_BODY, detail)
        log.error(
            "task message body cannot be decoded: dropped, kept in the dead-letter list",
            extra={
                "content_type": str(message.content_type)[:100],
                "content_encoding": str(message.content_encoding)[:100],
                "error": type(exc).__name__,
            },
        )
        message.ack()


def dead_letter_message(message: Any, reason: Reason, detail: str) -> None:
    """Keep a copy of a task message the worker is about to drop, as it came off the queue.

    Does nothing for a message of another transport (which keeps no Redis list), and only
    logs when Redis cannot be written: the message is dropped either way, as before.
    """
    channel = getattr(message, "channel", None)
    envelope = getattr(message, "_raw", None)  # kombu's virtual Message: the envelope as read
    if not isinstance(channel, Channel) or not isinstance(envelope, Mapping):
        return
    info = message.delivery_info if isinstance(message.delivery_info, Mapping) else {}
    queue = str(info.get("routing_key") or info.get("exchange") or "?")
    item = json.dumps(envelope, ensure_ascii=False, default=str).encode("utf-8")
    # Logged by the channel when Redis fails; Celery drops the message as it always has.
    with contextlib.suppress(redis.RedisError):
        channel.dead_letter(DeadLetter.of(item, reason, detail, queue))


def _task_name(message: Any) -> Any:
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    if "task" in headers:
        return headers["task"]
    payload = _decoded(message)
    return payload.get("task") if isinstance(payload, Mapping) else None


def _task_id(message: Any) -> str | None:
    """The task id where Celery looks for it: the headers, else a protocol 1 body."""
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    task_id = headers.get("id") if "task" in headers else None
    if task_id is None and "task" not in headers:
        payload = _decoded(message)
        task_id = payload.get("id") if isinstance(payload, Mapping) else None
    return task_id if isinstance(task_id, str) and task_id else None


def _decoded(message: Any) -> Any:
    try:
        return message.payload  # decoded once and cached by kombu
    except Exception:  # noqa: BLE001 - any decoding failure means: no readable body
        return None
