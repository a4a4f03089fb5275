"""Exception texts and quoted task messages reach neither the log lines nor Sentry.

A marker stands for email content from a job's variables; it must appear nowhere in what the
JSON formatter writes or the Sentry hooks let through, while the exception's type, its frames
and what the line is about stay readable.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from celery.worker.consumer import consumer as celery_consumer
from sentry_sdk.utils import event_from_exception

from worker.logs import JsonFormatter
from worker.sentry import Scrubber, SentryReporter

# Celery's own report templates (the stubs do not declare them).
UNKNOWN_TASK_ERROR: str = celery_consumer.UNKNOWN_TASK_ERROR  # type: ignore[attr-defined]
MESSAGE_DECODE_ERROR: str = celery_consumer.MESSAGE_DECODE_ERROR  # type: ignore[attr-defined]
CONNECTION_ERROR: str = celery_consumer.CONNECTION_ERROR  # type: ignore[attr-defined]
CONNECTION_RETRY_STEP: str = celery_consumer.CONNECTION_RETRY_STEP  # type: ignore[attr-defined]
MARKER = "MAIL-BODY-7f3a9c: Dear team, the printer on floor 3"
VARIABLES = {"email": {"body": MARKER}}


def render_body(variables: dict[str, Any]) -> str:
    """A stand-in for a bug deep in a job's run: its error quotes the data it choked on."""
    try:
        return str(variables["custom"])
    except KeyError as missing:
        raise ValueError(f"cannot render {variables['email']['body']!r}") from missing


def raised() -> BaseException:
    try:
        render_body(VARIABLES)
    except ValueError as exc:
        return exc
    raise AssertionError("render_body did not fail")


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the worker's JSON formatter writes for the loggers used here."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    names = ["halo.runner", "celery.app.trace", "celery.worker.consumer.consumer"]
    for name in names:
        logging.getLogger(name).addHandler(handler)
    yield stream
    for name in names:
        logging.getLogger(name).removeHandler(handler)


def only_line(stream: io.StringIO) -> dict[str, Any]:
    [line] = stream.getvalue().splitlines()
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_logged_exception_shows_its_type_and_frames_but_no_message(
    lines: io.StringIO,
) -> None:
    exc = raised()
    logging.getLogger("halo.runner").error(
        "job failed on an internal error", extra={"job_id": "j-1"}, exc_info=exc
    )

    assert "MAIL-BODY" not in lines.getvalue()
    line = only_line(lines)
    assert line["message"] == "job failed on an internal error"
    assert line["exception"] == "ValueError"
    traceback = line["traceback"]
    assert "in render_body" in traceback
    assert "KeyError: message withheld" in traceback
    assert "direct cause of the following exception" in traceback
    assert traceback.endswith("ValueError: message withheld")


def test_a_message_that_quotes_an_exception_withholds_its_text(lines: io.StringIO) -> None:
    exc = raised()
    # How Celery reports a task that raised: the exception's repr inside the message.
    logging.getLogger("celery.app.trace").error(
        "Task %s[%s] raised unexpected: %s", "halo.update_ticket", "j-1", repr(exc), exc_info=exc
    )

    assert "MAIL-BODY" not in lines.getvalue()
    message = only_line(lines)["message"]
    assert (
        message == "Task halo.update_ticket[j-1] raised unexpected: <ValueError: message withheld>"
    )


def test_celerys_report_of_an_unregistered_task_keeps_only_what_happened(
    lines: io.StringIO,
) -> None:
    body = repr([[{"connection": "acme", "variables": VARIABLES}], {}, {}])
    headers = {"task": "halo.old_name", "argsrepr": repr(VARIABLES)}
    # Celery looks the name up in its registry, which raises this.
    exc = KeyError("halo.old_name")
    logging.getLogger("celery.worker.consumer.consumer").error(
        UNKNOWN_TASK_ERROR, exc, body, headers, {}, exc_info=exc
    )

    assert "MAIL-BODY" not in lines.getvalue()
    message = only_line(lines)["message"]
    assert message.startswith("Received unregistered task of type 'halo.old_name'.")
    assert "withheld" in message


def test_celerys_report_of_an_undecodable_message_stops_before_its_headers(
    lines: io.StringIO,
) -> None:
    headers = {"task": "halo.update_ticket", "argsrepr": repr(VARIABLES)}
    try:
        json.loads(b"\x80\x04K\x01.")
    except ValueError as exc:
        logging.getLogger("celery.worker.consumer.consumer").critical(
            MESSAGE_DECODE_ERROR,
            exc,
            "application/x-python-serialize",
            "binary",
            repr(headers),
            repr(VARIABLES),
            exc_info=True,
        )

    assert "MAIL-BODY" not in lines.getvalue()
    message = only_line(lines)["message"]
    assert "Can't decode message body" in message
    assert "application/x-python-serialize" in message


def log_record(exc: BaseException, message: str, *args: Any) -> logging.LogRecord:
    return logging.LogRecord(
        "celery.app.trace", logging.ERROR, __file__, 1, message, args, (type(exc), exc, None)
    )


def test_a_sentry_event_of_a_logged_exception_carries_no_exception_text() -> None:
    exc = raised()
    record = log_record(exc, "Task %s raised unexpected: %s", "halo.update_ticket", repr(exc))
    # The event as the SDK's logging integration builds it.
    event, hint = event_from_exception((type(exc), exc, exc.__traceback__))
    hint["log_record"] = record
    formatted = record.getMessage()
    event["logentry"] = {"message": record.msg, "formatted": formatted, "params": record.args}

    sent = SentryReporter(Scrubber()).before_send(event, hint)

    assert sent is not None
    assert "MAIL-BODY" not in json.dumps(sent, default=str)
    assert [v["type"] for v in sent["exception"]["values"]] == ["KeyError", "ValueError"]
    frames = sent["exception"]["values"][-1]["stacktrace"]["frames"]
    assert any(frame["function"] == "render_body" for frame in frames)
    logentry: Any = sent["logentry"]
    assert "raised unexpected" in logentry["message"]


def test_a_sentry_breadcrumb_of_a_logged_exception_carries_no_exception_text() -> None:
    exc = raised()
    record = log_record(exc, "retrying after %s", repr(exc))
    crumb = {"type": "log", "category": record.name, "message": record.getMessage()}

    kept = SentryReporter(Scrubber()).before_breadcrumb(crumb, {"log_record": record})

    assert kept is not None
    assert "MAIL-BODY" not in json.dumps(kept)
    assert kept["message"] == "retrying after <ValueError: message withheld>"


def test_a_traceback_names_an_exception_raised_while_handling_another() -> None:
    try:
        try:
            VARIABLES["missing"]
        except KeyError:
            raise RuntimeError(MARKER)  # noqa: B904 - the implicit chain is what is tested
    except RuntimeError as exc:
        record = log_record(exc, "failed")
        record.exc_info = sys.exc_info()

    line = json.loads(JsonFormatter().format(record))

    assert "MAIL-BODY" not in json.dumps(line)
    assert "During handling of the above exception" in line["traceback"]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot print")


def test_an_exception_that_cannot_be_printed_still_gives_a_log_line(lines: io.StringIO) -> None:
    logging.getLogger("halo.runner").error("job failed", exc_info=Unprintable())

    line = only_line(lines)
    assert line["message"] == "job failed"
    assert line["exception"] == "Unprintable"
    assert line["traceback"].endswith("Unprintable: message withheld")


def test_celerys_broker_connection_error_keeps_the_line_that_says_it_retries(
    lines: io.StringIO,
) -> None:
    # The consumer's report when it cannot reach the broker: no task message in it, and its
    # second line is how an operator knows the worker keeps trying.
    retry = CONNECTION_RETRY_STEP.format(when="in 2.00 seconds", retries=1, max_retries=100)
    logging.getLogger("celery.worker.consumer.consumer").error(
        CONNECTION_ERROR,
        "redis://:**@127.0.0.1:6379/0",
        "Error 111 connecting to 127.0.0.1:6379. Connection refused.",
        retry,
    )

    message = only_line(lines)["message"]
    assert message.startswith("consumer: Cannot connect to redis://:**@127.0.0.1:6379/0")
    assert "Trying again in 2.00 seconds... (1/100)" in message
    assert "withheld" not in message
