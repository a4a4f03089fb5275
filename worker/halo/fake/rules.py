"""Ticket-type settings that make Halo save something else than a POST asked for.

Halo's ticket types carry settings that apply on every save, API saves included: which statuses
the type allows, a status to set after a technician updates the ticket, and whether changing
the team clears the agent. The `strict` profile plays these (`FakeConfig.ticket_type_rules`);
a worker must notice the difference between what it asked and what Halo saved.

Not thread-safe on its own: `FakeHalo` holds its lock around every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final


@dataclass(frozen=True)
class TypeRules:
    """One ticket type's settings.

    Attributes:
        statuses: the status ids tickets of this type may have (empty: any).
        status_after_update: the status Halo sets after any update by a technician, or None.
        team_change_clears_agent: whether a team change that does not also set the agent
            leaves the ticket unassigned.
    """

    statuses: frozenset[int] = field(default_factory=frozenset)
    status_after_update: int | None = None
    team_change_clears_agent: bool = False


# Service Requests never wait on a supplier; Problems are worked in Escalations-style flows:
# any update puts them In Progress, and moving one to another team unassigns it.
TYPE_RULES: Final[dict[int, TypeRules]] = {
    3: TypeRules(statuses=frozenset({1, 2, 5, 8, 9})),
    4: TypeRules(
        statuses=frozenset({1, 2, 4, 8}), status_after_update=2, team_change_clears_agent=True
    ),
}


def allowed_statuses(tickettype_id: Any) -> frozenset[int]:
    """The statuses a ticket type allows; empty when it allows every status."""
    rules = TYPE_RULES.get(tickettype_id) if isinstance(tickettype_id, int) else None
    return rules.statuses if rules else frozenset()


def forbidden_status(ticket: Mapping[str, Any], changes: Mapping[str, Any]) -> bool:
    """Whether a save sets a status the ticket's type does not allow."""
    allowed = allowed_statuses(ticket.get("tickettype_id"))
    return "status_id" in changes and bool(allowed) and ticket.get("status_id") not in allowed


def apply_type_rules(ticket: dict[str, Any], before: Mapping[str, Any] | None) -> None:
    """Change `ticket` (about to be saved over `before`) the way its type's settings do."""
    if before is None:
        return
    rules = TYPE_RULES.get(ticket.get("tickettype_id"))  # type: ignore[arg-type]
    if rules is None:
        return
    if (
        rules.team_change_clears_agent
        and ticket.get("team") != before.get("team")
        and ticket.get("agent_id") == before.get("agent_id")
    ):
        ticket["agent_id"] = 0
    if rules.status_after_update is not None:
        ticket["status_id"] = rules.status_after_update
