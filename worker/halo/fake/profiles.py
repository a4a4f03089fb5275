"""Named tenants the fake Halo can play: the ways real Halo builds and settings differ.

A profile is a set of `FakeConfig` options; `FakeHalo(profile=...)`, `halo-fake --profile` and
`POST /_fake/profile` select one, and options given beside it override it. The worker must
do the right thing under every profile (the contract tests run under each):

`current`
    A recent hosted Halo: tickets carry `team_id` and the `Faults` schema has it; a ticket POST
    answers the saved ticket as one object; lookup lists are plain arrays; `GET /api/Agent`
    honours paging (`pageinate`, `page_size` up to 100, `page_no`) and leaves out the
    Unassigned agent and organisation-restricted agents unless asked; an agent change is
    refused unless the POST carries `_forcereassign: true`.
`legacy`
    An older build: no `team_id` on tickets nor in its `Faults` schema (Halo API v2 of
    September 2024), POSTs answered `{"tickets": [...]}`, every lookup list wrapped, paging
    ignored (the whole agent list, unwrapped of any count), expired tokens answered 400, and
    agent changes accepted without `_forcereassign`.
`strict`
    A tenant with rules and restrictions on a large install: statuses allowed per ticket type,
    a ticket type whose settings set the status after every technician update and clear the
    agent when the team changes, a priority that exists in one SLA only, a ticket with no SLA,
    hundreds of agents and teams (`GET /api/Agent` pages of at most 50), POSTs answered as an
    array, and `_forcereassign` required.
"""

from __future__ import annotations

from typing import Any, Final

DEFAULT_PROFILE: Final = "current"

_PROFILES: Final[dict[str, dict[str, Any]]] = {
    "current": {
        "schema_version": "newer",
        "tickets_have_team_id": True,
        "update_answer_shape": "object",
        "wrapped_lookups": False,
        "agent_paging": "honoured",
        "max_page_size": 100,
        "forcereassign_required": True,
    },
    "legacy": {
        "schema_version": "2024-09",
        "tickets_have_team_id": False,
        "update_answer_shape": "wrapped",
        "wrapped_lookups": True,
        "agent_paging": "ignored",
        "expired_token_status": 400,
        "forcereassign_required": False,
    },
    "strict": {
        "schema_version": "newer",
        "tickets_have_team_id": True,
        "update_answer_shape": "array",
        "agent_paging": "honoured",
        "max_page_size": 50,
        "forcereassign_required": True,
        "ticket_type_rules": True,
        "large_tenant": True,
    },
}

PROFILES: Final = tuple(_PROFILES)


def profile_options(name: str) -> dict[str, Any]:
    """The `FakeConfig` options of a profile (a fresh dict), `profile` included.

    Raises:
        ValueError: no profile of that name.
    """
    if name not in _PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return {**_PROFILES[name], "profile": name}
