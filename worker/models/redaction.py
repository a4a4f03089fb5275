"""What events, logs and Flower may show of a job: its ids, never the email content it carries.

A value shown is a number or a string cut short; any other value, and any value a message must
not quote, is named by its JSON type only (`json_kind`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final


def redacted_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """What events, logs and Flower may show of a job: its ids and the ticket id template.

    Never `variables`, `details`, `summary` or `meta`: they carry email content. Each value
    shown is a number or a string cut to `_SHOWN_CHARS`; any other value (in a job that does
    not validate) shows only as its JSON type.
    """
    return {key: _shown(job.get(key)) for key in ("job_id", "connection", "ticket_id")}


def redacted_view(job: Mapping[str, Any]) -> str:
    """`redacted_fields` as the JSON text of Celery's `argsrepr`: ``[{...}]``."""
    return json.dumps([redacted_fields(job)])


# Enough of a shown value to recognise a ticket id template; bounds what one job puts in an event.
_SHOWN_CHARS: Final = 200
_SHOWN_MAX_INT: Final = 2**63


def _shown(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        # A huge integer cannot even be printed (Python caps int-to-text at 4300 digits), and
        # NaN is not JSON.
        return value if abs(value) < _SHOWN_MAX_INT else "<a number>"
    if isinstance(value, str):
        return value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…"
    return f"<{json_kind(value)}>"


def json_kind(value: Any) -> str:
    """A JSON value's type as messages name it ("an object", "an array", "a string",
    "a number", "a boolean", "null"): what to say of a value that must not be quoted."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a boolean" if isinstance(value, bool) else "a number"
