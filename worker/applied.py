"""What Halo really saved, against what a job asked: overrides, side effects and refusals.

Halo applies its own rules and ticket-type settings on every save, API saves included: a status
set after any technician update, a team change that clears the agent, a type that forbids a
status (docs/halo.md, "Writes Halo changes or refuses"). A POST that Halo answers 201 may
therefore hold other values than those sent. The worker compares Halo's answer with the request
and with the ticket as read before:

- a requested field Halo saved differently is *overridden*: a warning names the requested and
  the applied value;
- a field the job did not ask for that changed is a *side effect*: a warning says so;
- `changed_fields` lists the fields whose value really changed.

Policy: the job still **succeeds**. Halo has saved the update and cannot be asked to undo it;
a failed record would tell the rule runner that nothing was written and invite a retry or a
replay that writes again, and Halo's rules would override the retry just the same. The record
says exactly what happened, in `warnings` and `changed_fields`, for the rule author to act on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from worker.errors import HaloRejected
from worker.halo.lookups import as_int

# Fields Halo's rules are known to change, watched for side effects of any update.
WATCHED_FIELDS: Final = ("status_id", "priority_id", "agent_id", "team", "team_id", "summary")
# Halo rewrites HTML it is sent (tags, entities, whitespace): comparing it would report every
# `details` change as overridden, so `details` is trusted as sent.
_NOT_COMPARED: Final = frozenset({"details"})
_ID_FIELDS: Final = frozenset({"status_id", "priority_id", "agent_id", "team_id"})
# The job field, and the words of Halo's refusal that point at it, for each ticket field.
_REFUSAL_WORDS: Final = (
    ("agent_id", "agent", re.compile(r"agent|assign", re.IGNORECASE)),
    ("status_id", "status", re.compile(r"status", re.IGNORECASE)),
    ("priority_id", "priority", re.compile(r"priorit", re.IGNORECASE)),
    ("team", "team", re.compile(r"team", re.IGNORECASE)),
)


def is_flag(key: str) -> bool:
    """Whether a POST key is an instruction to Halo (`_forcereassign`), not a ticket field."""
    return key.startswith("_")


def compare(
    requested: Mapping[str, Any],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """The fields that really changed, and a warning for each override and side effect.

    Args:
        requested: the POSTed element (`id`, fields, flags).
        before: the ticket as read before the POST.
        after: the ticket as Halo saved it (its answer, or a read-back).
        labels: names for requested ids, by field (e.g. `{"status_id": "Resolved"}`).

    Returns:
        `(changed_fields, warnings)`; `changed_fields` keeps the request's order, then side
        effects in `WATCHED_FIELDS` order.
    """
    labels = labels or {}
    changed: list[str] = []
    warnings: list[str] = []
    fields = [key for key in requested if key != "id" and not is_flag(key)]
    for field in fields:
        if field in _NOT_COMPARED or field not in after:
            changed.append(field)
            continue
        applied = after[field]
        if not _same(field, requested[field], applied):
            wanted = _shown(requested[field], labels.get(field))
            got = _shown(applied, _label_of(after, field))
            warnings.append(
                f"{field} overridden by Halo: requested {wanted}, applied {got} "
                "(a Halo rule or ticket-type setting)"
            )
        if not _same(field, before.get(field), applied):
            changed.append(field)
    for field in WATCHED_FIELDS:
        if field in requested or field not in after or field not in before:
            continue
        if not _same(field, before[field], after[field]):
            changed.append(field)
            old = _shown(before[field], _label_of(before, field))
            new = _shown(after[field], _label_of(after, field))
            warnings.append(
                f"{field} changed by Halo from {old} to {new} although not requested "
                "(a Halo rule or ticket-type setting)"
            )
    return changed, warnings


def shows_saved_values(after: Mapping[str, Any], changed: list[str]) -> bool:
    """Whether Halo's answer holds every compared field a POST sent (else: read it back)."""
    return all(key in after for key in changed if key not in _NOT_COMPARED)


def name_refused_field(error: HaloRejected, requested: Mapping[str, Any]) -> HaloRejected:
    """Halo's refusal of a POST, with the job field it names (`agent`, `status`, ...) set.

    Halo's 400 is free text (e.g. an agent change refused without `_forcereassign`, or an agent
    with no access to the client): the first requested field whose words it mentions is named.
    """
    for ticket_field, job_field, words in _REFUSAL_WORDS:
        if ticket_field in requested and words.search(error.message):
            return HaloRejected(
                f"Halo refused to set {job_field} on the ticket ({ticket_field} "
                f"{requested[ticket_field]!r}): {error.message}",
                field=job_field,
                http_status=error.http_status,
            )
    return error


def _same(field: str, a: Any, b: Any) -> bool:
    if field in _ID_FIELDS:
        # A ticket with nobody (or no team) may say 0 or null.
        return (as_int(a) or 0) == (as_int(b) or 0)
    return (a or "") == (b or "")


def _label_of(ticket: Mapping[str, Any], field: str) -> str | None:
    if field.endswith("_id"):
        label = ticket.get(field[:-3] + "_name")
        return label if isinstance(label, str) and label else None
    return None


def _shown(value: Any, label: str | None) -> str:
    return f"{value!r} ({label})" if label else repr(value)
