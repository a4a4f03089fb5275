"""The fake Halo's data: lookup lists and tickets, and the rules a ticket save obeys.

A stored ticket holds ids and Halo's own stored fields (`team` is a stored string, as in Halo).
The read-only labels (`status_name`, `priority_name`, ...) are joined from the current lookup
lists when a ticket is read, the way Halo's single-ticket read does; so renaming a status through
`set_lookup` shows on the next read. `team_id` is stored always but shown only when the fake
plays a Halo build whose tickets carry it.

Not thread-safe on its own: `FakeHalo` holds its lock around every call.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.halo.fake import seeds
from worker.halo.fake.rules import allowed_statuses, apply_type_rules, forbidden_status

LOOKUP_KINDS = (
    "status",
    "sla",
    "priority",
    "agent",
    "team",
    "tickettype",
    "client",
    "site",
    "user",
)

# Labels Halo computes; a value sent for one of them is ignored, never stored.
READ_ONLY_LABELS = frozenset(
    {
        "status_name",
        "priority_name",
        "agent_name",
        "client_name",
        "site_name",
        "user_name",
        "sla_name",
        "tickettype_name",
    }
)

# Fields Halo sets itself: a posted value is ignored.
_SERVER_FIELDS = frozenset({"id", "datecreated", "last_update", "lastactiondate"})

# What a ticket created without the field gets: Halo fills defaults from the ticket type.
_CREATE_DEFAULTS: dict[str, Any] = {
    "summary": "",
    "details": "",
    "client_id": 0,
    "site_id": 0,
    "user_id": 0,
    "sla_id": 1,
    "status_id": 1,
    "priority_id": 3,
    "agent_id": 0,
    "team": "",
    "team_id": 0,
    "tickettype_id": 1,
}

# Halo shows a ticket nobody owns as agent 0, "Unassigned".
_UNASSIGNED = "Unassigned"


class TicketRejected(Exception):
    """A ticket save broke a business rule; Halo answers 400 with `message` as plain text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PendingSave:
    """One validated element of a ticket POST, not yet stored.

    Attributes:
        ticket_id: the existing ticket it updates, or None if it creates one.
        requested_id: the `id` the element carried (None, 0, or an id that did not exist).
        ticket: the whole ticket as it will be stored (`id` is assigned on commit for creations).
    """

    ticket_id: int | None
    requested_id: Any
    ticket: dict[str, Any]


class HaloState:
    """Lookup lists and tickets of one fake tenant."""

    def __init__(
        self,
        seed: str,
        *,
        tickets_have_team_id: bool,
        now: Callable[[], datetime],
        type_rules: bool = False,
        large_tenant: bool = False,
    ) -> None:
        """Load a seed (see `seeds`); `type_rules` adds the `strict` profile's data and rules.

        Raises:
            ValueError: unknown seed.
        """
        self.tickets_have_team_id = tickets_have_team_id
        self.type_rules = type_rules
        self.forcereassign_required = False
        self._now = now
        self.lookups = seeds.lookups()
        if type_rules or large_tenant:
            for kind, records in seeds.strict_extras(large_tenant=large_tenant).items():
                self.lookups[kind].extend(records)
        self.tickets: dict[int, dict[str, Any]] = {}
        extra = seeds.strict_tickets() if type_rules and seed != "empty" else []
        for ticket in [*seeds.tickets(seed), *extra]:
            ticket["team_id"] = self._team_id(ticket["team"])
            self.tickets[ticket["id"]] = ticket
        self.next_id = max(self.tickets, default=1000) + 1

    # -- lookups ---------------------------------------------------------------------------

    def set_lookup(self, kind: str, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace one lookup list wholesale.

        Raises:
            ValueError: unknown kind, or a record without an `id` and a `name`.
        """
        if kind not in LOOKUP_KINDS:
            raise ValueError(f"unknown lookup {kind!r}; expected one of {', '.join(LOOKUP_KINDS)}")
        new = [dict(record) for record in records]
        for record in new:
            if "id" not in record or "name" not in record:
                raise ValueError(f"every {kind} record needs an id and a name: {record!r}")
        self.lookups[kind] = new

    def priorities(self, sla_id: int | None) -> list[dict[str, Any]]:
        """The priority records of one SLA, or of every SLA when `sla_id` is None or 0 (a
        ticket with no SLA)."""
        return [p for p in self.lookups["priority"] if not sla_id or p["slaid"] == sla_id]

    def statuses(self, tickettype_id: int | None) -> list[dict[str, Any]]:
        """The statuses, only those a ticket type allows when `tickettype_id` is given and the
        type rules apply."""
        allowed = allowed_statuses(tickettype_id) if self.type_rules else frozenset()
        return [s for s in self.lookups["status"] if not allowed or s["id"] in allowed]

    def _record(self, kind: str, record_id: Any) -> dict[str, Any] | None:
        return next((r for r in self.lookups[kind] if r["id"] == record_id), None)

    def _name(self, kind: str, record_id: Any) -> str:
        record = self._record(kind, record_id)
        return str(record["name"]) if record else ""

    def _team_id(self, name: str) -> int:
        return next((int(t["id"]) for t in self.lookups["team"] if t["name"] == name), 0)

    # -- reads -----------------------------------------------------------------------------

    def single(self, ticket_id: int) -> dict[str, Any] | None:
        """A ticket as `GET /api/Tickets/{id}` answers it (labels joined), or None if unknown."""
        stored = self.tickets.get(ticket_id)
        if stored is None:
            return None
        ticket = self._visible(stored)
        priority = next(
            (
                p
                for p in self.priorities(stored.get("sla_id") or None)
                if p["priorityid"] == stored.get("priority_id")
            ),
            None,
        )
        agent_id = stored.get("agent_id")
        ticket.update(
            status_name=self._name("status", stored.get("status_id")),
            priority_name=str(priority["name"]) if priority else "",
            agent_name=_UNASSIGNED if not agent_id else self._name("agent", agent_id),
            client_name=self._name("client", stored.get("client_id")),
            site_name=self._name("site", stored.get("site_id")),
            user_name=self._name("user", stored.get("user_id")),
            sla_name=self._name("sla", stored.get("sla_id")),
            tickettype_name=self._name("tickettype", stored.get("tickettype_id")),
        )
        return ticket

    def stored(self, ticket_id: int) -> dict[str, Any]:
        """A copy of a stored ticket (ids and stored fields, no labels).

        Raises:
            KeyError: no such ticket.
        """
        return copy.deepcopy(self.tickets[ticket_id])

    def listed(self, ticket_ids: Iterable[int] | None, *, include_details: bool) -> list[Any]:
        """Tickets as a list read answers them: fewer columns, no labels; unknown ids skipped."""
        ids = sorted(self.tickets) if ticket_ids is None else ticket_ids
        answer = []
        for ticket_id in ids:
            if ticket_id in self.tickets:
                ticket = self._visible(self.tickets[ticket_id])
                if not include_details:
                    ticket.pop("details", None)
                answer.append(ticket)
        return answer

    def _visible(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        ticket = copy.deepcopy(dict(stored))
        if not self.tickets_have_team_id:
            ticket.pop("team_id", None)
        return ticket

    # -- writes ----------------------------------------------------------------------------

    def add_ticket(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Store a ticket directly (test setup: not a Halo request, never logged as a creation).

        Missing fields get creation defaults; `id` defaults to the next free id.

        Returns:
            A copy of the stored ticket.
        """
        ticket = {**_CREATE_DEFAULTS, **copy.deepcopy(dict(fields))}
        stamp = self._stamp()
        for key in ("dateoccurred", "datecreated", "last_update", "lastactiondate"):
            ticket.setdefault(key, stamp)
        if "team" in fields and "team_id" not in fields:
            ticket["team_id"] = self._team_id(ticket["team"])
        elif "team_id" in fields and "team" not in fields:
            ticket["team"] = self._name("team", ticket["team_id"])
        ticket_id = int(ticket.get("id") or self.next_id)
        ticket["id"] = ticket_id
        self.tickets[ticket_id] = ticket
        self.next_id = max(self.next_id, ticket_id + 1)
        return copy.deepcopy(ticket)

    def prepare(self, element: Mapping[str, Any]) -> PendingSave:
        """Check one POSTed ticket against the business rules, without storing anything.

        `null` values are ignored (Halo only writes fields that carry a value). An element
        whose `id` is missing, null, 0 or unknown is a creation: Halo's API creates whenever it
        finds no ticket to update, and this fake gives an unknown id a new id rather than
        honouring it.

        Raises:
            TicketRejected: a rule is broken (unknown status, agent, team or SLA; a priority
                outside the ticket's SLA; `team_id` contradicting `team`).
        """
        requested_id = element.get("id")
        target = self.tickets.get(requested_id) if isinstance(requested_id, int) else None
        # `_forcereassign`, `_agent01_ok` and the like are instructions for this save, not fields.
        changes = {
            key: copy.deepcopy(value)
            for key, value in element.items()
            if value is not None
            and key not in READ_ONLY_LABELS
            and key not in _SERVER_FIELDS
            and not key.startswith("_")
        }
        ticket = {**copy.deepcopy(target or _CREATE_DEFAULTS), **changes}
        self._check_refs(ticket, changes)
        self._check_team(ticket, changes)
        self._check_agent(ticket, target, element)
        if self.type_rules:
            if forbidden_status(ticket, changes):
                raise TicketRejected(
                    f"Status '{self._name('status', ticket['status_id'])}' cannot be used for "
                    f"tickets of type '{self._name('tickettype', ticket.get('tickettype_id'))}'."
                )
            apply_type_rules(ticket, target)
        return PendingSave(
            ticket_id=None if target is None else requested_id,
            requested_id=requested_id,
            ticket=ticket,
        )

    def commit(self, pending: PendingSave) -> int:
        """Store a prepared save; for a creation assign the next id. Returns the ticket's id."""
        ticket = copy.deepcopy(pending.ticket)
        stamp = self._stamp()
        if pending.ticket_id is None:
            ticket_id = self.next_id
            self.next_id += 1
            ticket.update(id=ticket_id, dateoccurred=stamp, datecreated=stamp, lastactiondate=stamp)
        else:
            ticket_id = pending.ticket_id
            # Two saves within one millisecond must still give a newer last_update.
            previous = str(ticket.get("last_update") or "")
            if stamp <= previous:
                stamp = _format(_parse(previous) + timedelta(milliseconds=1))
        ticket["last_update"] = stamp
        self.tickets[ticket_id] = ticket
        return ticket_id

    def _check_refs(self, ticket: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        if "status_id" in changes and self._record("status", changes["status_id"]) is None:
            raise TicketRejected(f"status_id {changes['status_id']} is not a valid status.")
        if "sla_id" in changes and self._record("sla", changes["sla_id"]) is None:
            raise TicketRejected(f"sla_id {changes['sla_id']} is not a valid SLA.")
        agent_id = changes.get("agent_id", 0)
        if agent_id != 0 and self._record("agent", agent_id) is None:
            raise TicketRejected(f"agent_id {changes['agent_id']} is not a valid agent.")
        if "priority_id" in changes or "sla_id" in changes:
            sla_id = ticket.get("sla_id")
            allowed = {p["priorityid"] for p in self.priorities(sla_id)}
            if ticket.get("priority_id") not in allowed:
                raise TicketRejected(
                    f"priority_id {ticket.get('priority_id')} is not valid for the ticket's SLA "
                    f"(sla_id {sla_id} '{self._name('sla', sla_id)}'): "
                    f"allowed priorityid values are {sorted(allowed)}."
                )

    def _check_agent(
        self,
        ticket: Mapping[str, Any],
        target: Mapping[str, Any] | None,
        element: Mapping[str, Any],
    ) -> None:
        agent_id = ticket.get("agent_id")
        if target is None or agent_id == target.get("agent_id") or not agent_id:
            return
        agent = self._record("agent", agent_id) or {}
        if agent.get(seeds.VISIBILITY_KEY) == "restricted" and ticket.get("client_id") != 15:
            # Morgan Blake works for Globex only (seeds): Halo refuses, whatever the flags say.
            raise TicketRejected(
                f"Agent '{agent['name']}' cannot be assigned to this ticket: the agent does not "
                f"have access to client '{self._name('client', ticket.get('client_id'))}'."
            )
        if self.forcereassign_required and element.get("_forcereassign") is not True:
            raise TicketRejected(
                f"The ticket cannot be reassigned to '{agent.get('name', agent_id)}' without "
                "confirmation: the agent is unavailable at this time. Set _forcereassign to "
                "reassign anyway."
            )

    def _check_team(self, ticket: dict[str, Any], changes: Mapping[str, Any]) -> None:
        # Team names match exactly: Halo stores the string as sent, so a near miss would leave
        # the ticket in a team that does not exist.
        if "team" in changes and changes["team"] != "" and self._team_id(changes["team"]) == 0:
            raise TicketRejected(f"team '{changes['team']}' is not a valid team.")
        if "team_id" in changes:
            team_id = changes["team_id"]
            name = "" if team_id == 0 else self._name("team", team_id)
            if team_id != 0 and not name:
                raise TicketRejected(f"team_id {team_id} is not a valid team.")
            if "team" in changes and changes["team"] != name:
                raise TicketRejected(
                    f"team_id {team_id} ('{name}') does not match team '{changes['team']}'."
                )
            ticket["team"] = name
        elif "team" in changes:
            ticket["team_id"] = self._team_id(changes["team"])

    def _stamp(self) -> str:
        return _format(self._now())


def _format(moment: datetime) -> str:
    # Halo writes UTC times without an offset, to the millisecond.
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)
