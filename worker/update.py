"""What one Update Halo Ticket action does, start to finish, with no queue in sight.

    render → check the ticket id → read the ticket → resolve names → diff → POST the changes
    (or nothing) → shape the result

Each step can fail with a `JobError`; nothing is written to Halo until every earlier step has
passed, and a ticket that could not be read is never POSTed (Halo would create one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from worker.applied import compare, is_flag, name_refused_field, shows_saved_values
from worker.errors import HaloRejected, InvalidTicketId
from worker.halo.client import HaloClient, Ticket
from worker.halo.lookups import (
    LookupKind,
    Records,
    Resolved,
    as_int,
    name_of,
    resolve_refreshing,
)
from worker.journal import WriteJournal, noted_before_post
from worker.models import MAX_RENDERED_CHARS, RESULT_TICKET_KEYS, Job
from worker.templating import render

# Halo's ticket ids are 32-bit signed integers.
MAX_TICKET_ID: Final = 2**31 - 1
_DIGITS = re.compile(r"^[0-9]+$")
_TEXT_FIELDS: Final = ("summary", "details")
_LOOKUP_FIELDS: Final[tuple[LookupKind, ...]] = ("status", "priority", "agent", "team")
# Result label keys, by lookup kind: (Halo id field, result name field).
_LABELS: Final[dict[LookupKind, tuple[str, str]]] = {
    "status": ("status_id", "status_name"),
    "priority": ("priority_id", "priority_name"),
    "agent": ("agent_id", "agent_name"),
    "team": ("team_id", "team_name"),
}


@dataclass(frozen=True)
class Rendered:
    """A job's texts after expressions: the ticket id and the fields the rule sets."""

    ticket_id: int
    values: dict[str, str]
    warnings: list[str]


@dataclass(frozen=True)
class Plan:
    """The exact update a job would send; `payload` holds only `id` when nothing changes."""

    ticket_id: int
    ticket: Ticket
    payload: dict[str, Any]
    changed_fields: list[str]
    warnings: list[str]
    resolved: dict[LookupKind, Resolved] = field(default_factory=dict)


@dataclass(frozen=True)
class Updated:
    """A successful update: the record's `result`, `changed_fields` and `warnings`."""

    ticket: dict[str, Any]
    changed_fields: list[str]
    warnings: list[str]


def render_job(job: Job) -> Rendered:
    """Render every expression of a job; no I/O.

    Raises:
        TemplateError: an expression is malformed or undefined, or a field renders to more
            than its `MAX_RENDERED_CHARS`.
        InvalidTicketId: the ticket id is not a positive integer after rendering.
    """
    raw_id = render(
        job.ticket_id, job.variables, field="ticket_id", max_chars=MAX_RENDERED_CHARS["ticket_id"]
    )
    values: dict[str, str] = {}
    warnings: list[str] = []
    for name in (*_TEXT_FIELDS, *_LOOKUP_FIELDS):
        template = getattr(job, name)
        if not template:
            continue
        # A field added later without a cap of its own gets the summary's, never none.
        cap = MAX_RENDERED_CHARS.get(name, MAX_RENDERED_CHARS["summary"])
        text = render(template, job.variables, field=name, max_chars=cap)
        if text.strip():
            values[name] = text if name in _TEXT_FIELDS else text.strip()
        else:
            warnings.append(f"{name}: rendered empty, so it was left unchanged")
    return Rendered(parse_ticket_id(raw_id), values, warnings)


def parse_ticket_id(text: str) -> int:
    """A rendered ticket id as a positive integer.

    Raises:
        InvalidTicketId: anything but digits (surrounding whitespace allowed), zero, or too large.
    """
    stripped = text.strip()
    shown = stripped if len(stripped) <= 40 else stripped[:39] + "…"
    if not _DIGITS.match(stripped) or int(stripped) == 0:
        raise InvalidTicketId(
            f"ticket_id rendered to {shown!r}, which is not a positive whole number",
            field="ticket_id",
        )
    if len(stripped) > 10 or int(stripped) > MAX_TICKET_ID:
        raise InvalidTicketId(
            f"ticket_id {shown} is larger than any Halo ticket id ({MAX_TICKET_ID})",
            field="ticket_id",
        )
    return int(stripped)


def plan_update(
    job: Job, client: HaloClient, *, rendered: Rendered | None = None, ticket: Ticket | None = None
) -> Plan:
    """Render, read the ticket (unless given), resolve names and diff. Writes nothing.

    Raises:
        TemplateError, InvalidTicketId: before any request.
        TicketNotFound, LookupNotFound, LookupAmbiguous, and Halo's transport/HTTP errors.
    """
    rendered = rendered or render_job(job)
    current = ticket if ticket is not None else client.get_ticket(rendered.ticket_id)
    payload: dict[str, Any] = {"id": rendered.ticket_id}
    resolved: dict[LookupKind, Resolved] = {}
    for name in _TEXT_FIELDS:
        if name in rendered.values and rendered.values[name] != current.get(name):
            payload[name] = rendered.values[name]
    for kind in _LOOKUP_FIELDS:
        if kind not in rendered.values:
            continue
        match = _resolve_for_ticket(kind, rendered.values[kind], current, client)
        resolved[kind] = match
        if kind == "team":
            # The ticket's team is the string `team`; `team_id` exists on newer builds only.
            if current.get("team") != match.name:
                payload["team"] = match.name
            if "team_id" in current and as_int(current["team_id"]) != match.id:
                payload["team_id"] = match.id
                payload.setdefault("team", match.name)
        else:
            id_field = _LABELS[kind][0]
            if as_int(current.get(id_field)) != match.id:
                payload[id_field] = match.id
    if "agent_id" in payload:
        # Halo refuses a reassignment (busy calendar, out of hours) unless the request says it
        # is meant; the HaloAPI module and Halo's API docs send this flag with agent changes.
        payload["_forcereassign"] = True
    changed = [key for key in payload if key != "id" and not is_flag(key)]
    return Plan(rendered.ticket_id, current, payload, changed, list(rendered.warnings), resolved)


def apply_plan(
    plan: Plan,
    client: HaloClient,
    *,
    journal: WriteJournal | None = None,
    saved: Ticket | None = None,
) -> Updated:
    """POST the plan's changes (nothing when there are none) and shape the result.

    What Halo saved is compared with what was asked (`worker.applied`): overrides and side
    effects become warnings, and `changed_fields` says what really changed. A 400 that names a
    field the POST changed is a `HaloRejected` with that job field.

    Args:
        saved: Halo's answer for this ticket when the POST was already sent in a batch.
        journal: notes the POST before it is sent, and recalls one an earlier run sent.

    Idempotent: the POST sets values, so sending it again sets the same values.
    """
    changed = plan.changed_fields
    warnings = list(plan.warnings)
    after = plan.ticket
    if changed and saved is None:
        try:
            with noted_before_post(journal, client, changed):
                after = client.update_tickets([plan.payload])[plan.ticket_id]
        except HaloRejected as error:
            raise name_refused_field(error, plan.payload) from None
        if not shows_saved_values(after, changed):
            # An answer without the fields sent cannot show what Halo saved: read it back.
            after = client.get_ticket(plan.ticket_id)
    elif saved is not None:
        after = saved
    elif journal is not None:
        # Nothing left to change: if an earlier run of this job POSTed before it crashed, the
        # values it wrote are what we see now, and the record reports that run's changes.
        changed = journal.recall() or []
    if plan.changed_fields and (saved is not None or after is not plan.ticket):
        labels = {_LABELS[kind][0]: r.name for kind, r in plan.resolved.items() if kind != "team"}
        changed, overrides = compare(plan.payload, plan.ticket, after, labels)
        warnings += overrides
    return Updated(shape_ticket(plan, after, client), changed, warnings)


def settle_unconfirmed(
    plan: Plan, job: Job, rendered: Rendered, client: HaloClient, journal: WriteJournal
) -> Updated:
    """Finish a job whose fields went out in a POST of several tickets that Halo's answer did
    not confirm (it listed other tickets, or none), deciding from what Halo now holds.

    The ticket is read back and planned again: nothing left to change means that POST applied
    every field, and the result reports `plan`'s fields (also in `journal`, noted before that
    POST). Fields still different were not applied: only they are POSTed, once, alone.

    Raises:
        As `plan_update` and `apply_plan`; a retryable error leaves the journal to the rerun.
    """
    now = client.get_ticket(plan.ticket_id)
    rest = plan_update(job, client, rendered=rendered, ticket=now)
    if not rest.changed_fields:
        return Updated(shape_ticket(rest, now, client), plan.changed_fields, list(plan.warnings))
    changed = [*plan.changed_fields]
    changed += [name for name in rest.changed_fields if name not in changed]
    with noted_before_post(journal, client, changed):
        after = client.update_tickets([rest.payload])[plan.ticket_id]
    return Updated(shape_ticket(rest, after, client), changed, list(plan.warnings))


def run_update(job: Job, client: HaloClient, *, journal: WriteJournal | None = None) -> Updated:
    """The whole action for one job: plan, then apply."""
    return apply_plan(plan_update(job, client), client, journal=journal)


def shape_ticket(plan: Plan, after: Mapping[str, Any], client: HaloClient) -> dict[str, Any]:
    """The ticket as the contract's `result` entry: exactly `RESULT_TICKET_KEYS`.

    Values come from Halo's answer; keys the answer lacks fall back to the values the update
    wrote, then to the ticket as read before the update, and labels to the lookup lists.
    """
    view: dict[str, Any] = {**plan.ticket, **plan.payload, **after}
    view["team_name"] = view.get("team")
    view["datelastupdated"] = view.get("last_update")
    for kind, (id_field, name_field) in _LABELS.items():
        touched = kind in plan.resolved and (
            id_field in plan.payload or (kind == "team" and "team" in plan.payload)
        )
        if kind == "team":
            if view.get("team_id") is None and view.get("team"):
                view["team_id"] = _team_id(plan, view["team"], client)
            continue
        if name_field not in after and touched:
            view[name_field] = plan.resolved[kind].name
        elif view.get(name_field) is None and view.get(id_field) is not None:
            sla_id = as_int(view.get("sla_id")) if kind == "priority" else None
            records, _ = client.lookup(kind, sla_id=sla_id)
            view[name_field] = name_of(records, kind, view[id_field])
    return {key: view.get(key) for key in RESULT_TICKET_KEYS}


def _resolve_for_ticket(
    kind: LookupKind, value: str, ticket: Ticket, client: HaloClient
) -> Resolved:
    """Resolve a name among the records valid for this ticket: statuses its ticket type allows,
    priorities of its SLA (every SLA's when it has none).

    Raises:
        LookupNotFound: no match; the message lists the names valid for this ticket, and says
            when the name exists in Halo (as far as the cached lists show).
        LookupAmbiguous: the name matches several records.
    """
    sla_id = (as_int(ticket.get("sla_id")) or None) if kind == "priority" else None
    type_id = as_int(ticket.get("tickettype_id")) if kind == "status" else None
    # Ids, not the read's labels: a batch's list read has no labels, and a job's message must
    # not depend on whether it ran alone or in a batch.
    scope = None
    if sla_id is not None:
        scope = f"the ticket's SLA, sla_id {sla_id}"
    elif type_id is not None:
        scope = f"tickets of type tickettype_id {type_id}"

    def load(fresh: bool) -> tuple[Records, bool]:
        return client.lookup(kind, sla_id=sla_id, tickettype_id=type_id, fresh=fresh)

    def known() -> Records | None:
        # Only if at hand: a job that fails anyway spends no request on a better message.
        return client.cached_lookup(kind)

    return resolve_refreshing(kind, value, load, sla_id=sla_id, scope=scope, known=known)


def _team_id(plan: Plan, team: str, client: HaloClient) -> int | None:
    # Older Halo builds carry no team_id on tickets (FACTS, Fields): take it from the Team list.
    if "team" in plan.resolved and plan.resolved["team"].name == team:
        return plan.resolved["team"].id
    records, _ = client.lookup("team")
    folded = team.strip().casefold()
    for record in records:
        if str(record.get("name", "")).strip().casefold() == folded:
            return as_int(record.get("id"))
    return None
