"""Names to Halo ids: statuses, priorities (per SLA), agents and teams.

A rule author writes "Closed", "High", "jane@msp.example" or "Escalations"; Halo wants ids.
Names match case-insensitively, ignoring surrounding whitespace; a numeric value is an id and
must exist. Priorities are matched within the ticket's SLA and written as the record's integer
`priorityid` (its `id` is a GUID). A team is written by its exact name (FACTS, Lookups).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from worker.errors import HaloUnexpectedResponse, LookupAmbiguous, LookupNotFound

LookupKind = Literal["status", "priority", "agent", "team"]
Records = list[dict[str, Any]]

# The key whose value is written to the ticket.
_ID_KEY: Final[dict[str, str]] = {
    "status": "id",
    "priority": "priorityid",
    "agent": "id",
    "team": "id",
}
# Keys Halo has been seen to wrap list answers in.
_WRAPPERS: Final = (
    "records",
    "tickets",
    "statuses",
    "status",
    "priorities",
    "priority",
    "agents",
    "agent",
    "teams",
    "team",
)
_MAX_LISTED_NAMES: Final = 10


@dataclass(frozen=True)
class Resolved:
    """A name or id resolved to one Halo record."""

    kind: LookupKind
    id: int
    name: str


def unwrap_records(answer: Any, kind: str) -> Records:
    """The records of a list answer: a plain array, or an object wrapping one.

    Raises:
        HaloUnexpectedResponse: the answer holds no list.
    """
    if isinstance(answer, dict):
        lists = [answer[key] for key in _WRAPPERS if isinstance(answer.get(key), list)]
        if not lists:
            lists = [value for value in answer.values() if isinstance(value, list)]
        answer = lists[0] if lists else None
    if not isinstance(answer, list):
        raise HaloUnexpectedResponse(f"Halo's {kind} list answer holds no list of records")
    return [record for record in answer if isinstance(record, dict)]


def resolve(
    kind: LookupKind, value: str, records: Records, *, sla_id: int | None = None
) -> Resolved:
    """Find the one record a name, email (agents) or numeric id means.

    Raises:
        LookupNotFound: nothing matches; the message lists the closest valid names.
        LookupAmbiguous: a name matches more than one record; the message lists their ids.
    """
    text = value.strip()
    id_key = _ID_KEY[kind]
    scope = f" of SLA {sla_id}" if kind == "priority" and sla_id is not None else ""
    # ASCII digits only: "²" is isdigit() but int() refuses it.
    if text.isascii() and text.isdigit():
        wanted = int(text)
        for record in records:
            if as_int(record.get(id_key)) == wanted:
                return _resolved(kind, record, id_key)
        raise LookupNotFound(
            f"{kind} id {wanted} is not a Halo {kind}{scope}; valid: {_listing(records, id_key)}",
            field=kind,
        )
    folded = text.casefold()
    matches: dict[int, dict[str, Any]] = {}
    for record in records:
        names = [record.get("name")]
        if kind == "agent":
            names.append(record.get("email"))
        if any(isinstance(n, str) and n.strip().casefold() == folded for n in names):
            record_id = as_int(record.get(id_key))
            if record_id is None:
                # The name matched, so "no such name, closest: <the same name>" would mislead.
                raise HaloUnexpectedResponse(
                    f"Halo's {kind} record {text!r} has no integer {id_key!r}"
                )
            matches[record_id] = record
    if len(matches) > 1:
        ids = ", ".join(str(i) for i in sorted(matches))
        raise LookupAmbiguous(
            f"{kind} {text!r} matches {len(matches)} Halo {kind} records{scope} (ids {ids}); "
            "use the id instead",
            field=kind,
        )
    if matches:
        return _resolved(kind, next(iter(matches.values())), id_key)
    raise LookupNotFound(
        f"{kind} {text!r} matches no Halo {kind}{scope}; {_closest(text, records, kind)}",
        field=kind,
    )


def resolve_refreshing(
    kind: LookupKind,
    value: str,
    load: Callable[[bool], tuple[Records, bool]],
    *,
    sla_id: int | None = None,
    scope: str | None = None,
    known: Callable[[], Records | None] | None = None,
) -> Resolved:
    """`resolve` against a cached list, reloading it once on a miss before failing.

    Args:
        load: ``load(fresh)`` returns ``(records, came_from_cache)``: the records valid for
            the ticket at hand.
        scope: what narrows `load`'s records to this ticket (e.g. "tickets of type Incident"),
            or None when nothing does. A name that misses then fails listing every name valid
            for this ticket.
        known: every record of the kind, if already at hand without a request (None if not):
            a name found there is said to exist in Halo but not for this ticket.

    Raises:
        LookupNotFound, LookupAmbiguous: as `resolve`.
    """
    records, cached = load(False)
    try:
        return resolve(kind, value, records, sla_id=sla_id)
    except LookupNotFound:
        if cached:
            records, _ = load(True)
    try:
        return resolve(kind, value, records, sla_id=sla_id)
    except LookupNotFound:
        if scope is None or value.strip().isdigit():
            # An id's message already lists the valid ids of this ticket's records.
            raise
    elsewhere = ""
    others = known() if known is not None else None
    if others:
        try:
            found = resolve(kind, value, others)
        except (LookupNotFound, LookupAmbiguous):
            pass
        else:
            elsewhere = f"{found.name!r} exists in Halo, but not for this ticket; "
    close = _closest(value.strip(), records, kind)
    close = f"{close}; " if close.startswith("closest:") else ""
    raise LookupNotFound(
        f"{kind} {value.strip()!r} matches no {kind} valid for this ticket ({scope}); "
        f"{close}{elsewhere}valid for this ticket: {_names(records)}",
        field=kind,
    )


def name_of(records: Records, kind: LookupKind, record_id: Any) -> str | None:
    """The name of the record with that id, for result labels Halo's answer lacks."""
    wanted = as_int(record_id)
    for record in records:
        if wanted is not None and as_int(record.get(_ID_KEY[kind])) == wanted:
            name = record.get("name")
            return name if isinstance(name, str) else None
    return None


def _resolved(kind: LookupKind, record: dict[str, Any], id_key: str) -> Resolved:
    record_id = as_int(record.get(id_key))
    if record_id is None:
        raise HaloUnexpectedResponse(f"a Halo {kind} record has no integer {id_key!r}")
    return Resolved(kind, record_id, str(record.get("name", "")).strip())


def _closest(text: str, records: Records, kind: LookupKind) -> str:
    names = sorted({str(r["name"]).strip() for r in records if isinstance(r.get("name"), str)})
    if kind == "agent":
        names += sorted({str(r["email"]) for r in records if isinstance(r.get("email"), str)})
    by_fold = {name.casefold(): name for name in names}
    close = difflib.get_close_matches(text.casefold(), list(by_fold), n=3, cutoff=0.5)
    if close:
        return "closest: " + ", ".join(repr(by_fold[c]) for c in close)
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED_NAMES])
    more = f" and {len(names) - _MAX_LISTED_NAMES} more" if len(names) > _MAX_LISTED_NAMES else ""
    return f"valid names: {shown}{more}" if names else "Halo returned no records"


def _names(records: Records) -> str:
    names = [str(r["name"]).strip() for r in records if isinstance(r.get("name"), str)]
    shown = ", ".join(repr(n) for n in names[: _MAX_LISTED_NAMES * 3])
    more = len(names) - _MAX_LISTED_NAMES * 3
    return (shown + (f" and {more} more" if more > 0 else "")) or "none"


def _listing(records: Records, id_key: str) -> str:
    pairs = [
        f"{record.get(id_key)} ({record.get('name')})"
        for record in records[:_MAX_LISTED_NAMES]
        if record.get(id_key) is not None
    ]
    return ", ".join(pairs) or "none"


def as_int(value: Any) -> int | None:
    """A Halo id or number as an int: an int, or a string of ASCII digits; else None.

    ASCII only: "²" is `str.isdigit()` but `int()` refuses it.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return None
