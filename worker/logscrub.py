"""What of a log record may leave the process: no exception text, no quoted task message.

The JSON log lines (`worker.logs`) and the Sentry hooks (`worker.sentry`) both send a record
through here, so the two never disagree.

- An exception's message is withheld, in the record's message and in its traceback: it is
  free text (a bug's ``ValueError(f"... {value}")``, Halo's answer quoted by a job error) and
  can hold a job's variables. The exception's type and where it was raised are kept.
- Celery's and kombu's reports of a task message they cannot take (unregistered task,
  undecodable body, invalid task, unknown message) quote the whole message, job variables
  included, on the lines after the first, and its headers (whose ``argsrepr`` may be the
  job) at the end of the first. Only the first line is kept, up to the headers. The
  consumer's exception there describes the envelope (the unknown task name, a bad header,
  a refused content type), not the job, so it is kept on that line.
"""

from __future__ import annotations

import logging
import traceback
from typing import Final

WITHHELD: Final = "message withheld"
# Loggers whose multi-line messages quote task messages.
_LIBRARY_LOGGERS: Final = ("celery", "kombu")
# The logger of Celery's consumer, whose exceptions describe a message's envelope.
_ENVELOPE_LOGGER: Final = "celery.worker.consumer"
# Multi-line reports of those loggers that quote no message: the consumer's broker connection
# errors ("Cannot connect to <url>: <error>.\nTrying again in 2.00 seconds... (1/100)"), whose
# second line is what an operator reads to know the worker is retrying.
_QUOTES_NO_MESSAGE: Final = ("consumer: Cannot connect to ",)
# Where Celery's decode-error report starts quoting the headers on its first line.
_HEADERS_MARK: Final = " headers:"
# Exception texts shorter than this are not searched for in a message: replacing "1" or "'x'"
# everywhere would mangle the message for no protection worth having.
_MIN_SEARCHED_CHARS: Final = 4
_CAUSED: Final = "\nThe above exception was the direct cause of the following exception:\n\n"
_DURING: Final = "\nDuring handling of the above exception, another exception occurred:\n\n"
# Chained exceptions followed at most this deep; a longer chain is a bug of its own.
_MAX_CHAIN: Final = 20


def safe_message(record: logging.LogRecord) -> str:
    """A record's message without exception texts or a quoted task message (see above)."""
    text = record.getMessage()
    quotes_none = text.startswith(_QUOTES_NO_MESSAGE)
    if record.name.startswith(_LIBRARY_LOGGERS) and "\n" in text and not quotes_none:
        first = text.split("\n", 1)[0].split(_HEADERS_MARK, 1)[0].rstrip()
        text = f"{first} [the rest is withheld: it quotes the task message]"
        if record.name.startswith(_ENVELOPE_LOGGER):
            return text
    exc = record.exc_info[1] if record.exc_info else None
    return withhold_exception_text(text, exc)


def withhold_exception_text(text: str, exc: BaseException | None) -> str:
    """`text` with the message of `exc`, and of every exception chained to it, replaced by
    ``<TypeName: message withheld>`` wherever it appears (as ``str`` or ``repr``)."""
    for one in _chain(exc):
        shown = f"<{type(one).__name__}: {WITHHELD}>"
        for form in _texts_of(one):
            if len(form) >= _MIN_SEARCHED_CHARS and form in text:
                text = text.replace(form, shown)
    return text


def _texts_of(exc: BaseException) -> tuple[str, ...]:
    """How an exception shows in a message: its ``repr`` and ``str`` (none when either
    fails, as a broken ``__str__`` may: a log line must still be written)."""
    try:
        return repr(exc), str(exc)
    except Exception:  # noqa: BLE001 - any failure of a third-party __repr__/__str__
        return ()


def safe_traceback(exc: BaseException) -> str:
    """A traceback as Python prints it (frames, source lines, chained exceptions), each
    exception's last line naming its type but not its message."""
    parts: list[str] = []
    earlier: BaseException | None = None
    for one in reversed(_chain(exc)):  # oldest first, as Python prints them
        if earlier is not None:
            parts.append(_CAUSED if one.__cause__ is earlier else _DURING)
        earlier = one
        name = f"{type(one).__module__}.{type(one).__qualname__}".removeprefix("builtins.")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(one.__traceback__))
        parts.append(f"{name}: {WITHHELD}\n")
    return "".join(parts).rstrip("\n")


def _chain(exc: BaseException | None) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or during, newest first."""
    found: list[BaseException] = []
    while exc is not None and len(found) < _MAX_CHAIN and all(exc is not f for f in found):
        found.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return found
