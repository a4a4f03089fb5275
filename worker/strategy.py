"""How the worker takes a task message off the broker: Celery's own strategy, guarded.

Celery 5.7.0 trusts a task message's shape. In the consumer's event loop, before any task
code runs, it unpacks the body as ``[args, kwargs, embed]`` and reads the ``id`` header
(`celery/worker/strategy.py` `default`, `celery/worker/request.py` `Request.__init__`). A body
of another shape (a number, ``[1]``, an object) raises there, and nothing in the consumer
catches it: the worker process dies ("Unrecoverable error"). A message without an ``id``
header is worse: the ``KeyError`` counts as a broker connection error on Redis (kombu lists
`KeyError` among the transport's connection errors), so the consumer reconnects, the message
is restored, and the worker loops on it for ever, consuming nothing else.

Any Celery client can send such a message (a hand-written producer in another language, a
bug), so every task of the app takes its messages through `guarded`: a message of the wrong
shape is logged (ids only, never the body) and dropped, and when it was an Update Halo Ticket
task with a task id, that id gets an `invalid_job` record, as a well-formed message with the
wrong arguments does (`worker.tasks.update_ticket`). A message with no task id, which no record
can name, is kept in the dead-letter list (`worker.deadletters`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import redis
from celery import Task
from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default

from worker.consumer import dead_letter_message
from worker.deadletters import Reason
from worker.models import TASK_NAME
from worker.runtime import runtime

log = logging.getLogger("halo.strategy")

Handler = Callable[..., Any]


class GuardedTask(Task):  # type: ignore[type-arg]  # celery-types: Task[P, R]; any task here
    """The app's task base class: every task's messages go through `guarded`."""

    Strategy = "worker.strategy:guarded"


def guarded(task: Task, app: Any, consumer: Any, **options: Any) -> Handler:  # type: ignore[type-arg]
    """Celery's default strategy for `task`, refusing messages it would crash on."""
    handle = default(task, app, consumer, **options)

    def on_message(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> Any:
        # `message.payload` decodes the body (cached); DecodeError and ContentDisallowed go on
        # to the consumer, which logs them and drops the message.
        if body is None:
            problem = shape_problem(message.headers, message.payload, protocol=2)
        else:
            problem = shape_problem(message.headers, body, protocol=1)
        if problem is None:
            try:
                return handle(message, body, ack, reject, callbacks, **kw)
            except InvalidTaskError as exc:
                # Celery's own check of a header (eta, expires); its text quotes the header.
                problem = f"an invalid header ({exc})"
            except (TypeError, ValueError, AttributeError) as exc:
                # Some other field of the wrong type (a timelimit that is not a pair, ...).
                problem = f"a field of the wrong type ({type(exc).__name__})"
        _drop(task, message, problem, consumer.connection_errors)
        return None

    return on_message


def shape_problem(headers: Any, payload: Any, *, protocol: int) -> str | None:
    """What is wrong with a task message's shape, or None when Celery can take it.

    Args:
        headers: the message headers (protocol 2 carries the task id there).
        payload: the decoded body: ``[args, kwargs, embed]`` (protocol 2), or an object with
            ``args`` and ``kwargs`` (protocol 1, and protocol 2's hybrid form).
        protocol: 1 when Celery found the task name in the body, else 2.
    """
    if isinstance(payload, Mapping) and (protocol == 1 or "args" in payload):
        task_id = payload.get("id", headers.get("id") if isinstance(headers, Mapping) else None)
        args, kwargs, embed = payload.get("args", []), payload.get("kwargs", {}), None
    elif isinstance(payload, list | tuple) and len(payload) == 3:
        task_id = headers.get("id") if isinstance(headers, Mapping) else None
        args, kwargs, embed = payload
    else:
        return f"the body is not [args, kwargs, options] but {_json_type(payload)}"
    if not isinstance(task_id, str) or not task_id:
        return "the message has no task id"
    if not isinstance(args, list | tuple):
        return f"the task's arguments are {_json_type(args)}, not an array"
    if not isinstance(kwargs, Mapping):
        return f"the task's keyword arguments are {_json_type(kwargs)}, not an object"
    if embed is not None and not isinstance(embed, Mapping):
        return f"the task's options are {_json_type(embed)}, not an object"
    return None


def _drop(task: Task, message: Any, problem: str, connection_errors: Any) -> None:  # type: ignore[type-arg]
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    task_id = headers.get("id")
    task_id = task_id if isinstance(task_id, str) and task_id else None
    log.error(
        "malformed task message dropped",
        extra={"task": task.name, "task_id": task_id, "problem": problem},
    )
    if task_id is None:
        # No record can be written without a task id: keep the message for a person instead.
        dead_letter_message(message, Reason.NO_TASK_ID, f"{task.name}: {problem}")
    elif task.name == TASK_NAME:
        try:
            runtime().runner.reject_malformed(task_id, problem)
        except redis.RedisError as exc:
            log.warning(
                "result store unreachable; no record for a malformed task message",
                extra={"task_id": task_id, "error": type(exc).__name__},
            )
    message.reject_log_error(log, connection_errors)


def _json_type(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return f"an array of {len(value)}"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a boolean" if isinstance(value, bool) else "a number"
