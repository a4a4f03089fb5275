"""Seed data for the fake Halo: a small, deterministic MSP tenant.

Lookup records are stored exactly as Halo's list endpoints answer them, so a test can replace a
list (`FakeHalo.set_lookup`) with records of the same shape. Ids are not contiguous on purpose:
code that assumes `id == position + 1` must fail here.

`demo`:
    statuses   1 New, 2 In Progress, 4 Waiting on Supplier, 5 Waiting on Customer,
               8 Resolved, 9 Closed
    SLAs       1 Standard, 2 Premium
    priorities per SLA (`priorityid`): Standard 1 Critical, 2 High, 3 Medium, 4 Low;
               Premium 5 Critical, 6 High, 7 Medium, 8 Low (same names, other ids)
    agents     1 Jane Doe <jane@msp.example>, 2 John Smith, 3 Sam Lee, 4 Sam Lee (duplicate
               name), 5 Chris Park, 6 chris park (differs only by case), 7 Priya Patel
    teams      1 Service Desk, 2 Escalations, 3 Projects
    tickets    4711 "Printer on 3rd floor offline" (New, SLA 1, Service Desk, Jane Doe),
               4712 (In Progress, SLA 1, for escalation), 4713 (SLA 2), 4714 (Closed),
               4715 (Waiting on Customer, SLA 2, Escalations), 4716 (unassigned, no team).
               999999 does not exist.
`empty`:
    the same lookups, no tickets.

Every seed also has two agents a default `GET /api/Agent` leaves out: 0 "Unassigned" (listed
with `includeunassigned=true`) and 8 Morgan Blake <morgan.blake@msp.example>, restricted to
another organisation (listed with `showall=true`). The `strict` profile adds (`strict_extras`)
ticket type rules' tickets 4720 (type Problem) and 4721 (no SLA), priority 9 "Urgent" in the
Premium SLA only, and with `large_tenant` 250 more agents and 180 more teams.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

SEEDS = ("demo", "empty")

# A fixed namespace makes the priority GUIDs identical on every run and every machine.
_PRIORITY_NAMESPACE = uuid.UUID("6f1d3c52-9a0e-4c1b-8f61-3d2b7c4a9e10")

_STATUSES: list[dict[str, Any]] = [
    {"id": 1, "name": "New", "shortname": "NEW", "type": 1, "sequence": 1, "colour": "#2bd3c6"},
    {"id": 2, "name": "In Progress", "shortname": "PROG", "type": 1, "sequence": 2,
     "colour": "#f5a623"},
    {"id": 4, "name": "Waiting on Supplier", "shortname": "SUPP", "type": 2, "sequence": 3,
     "colour": "#9b9b9b"},
    {"id": 5, "name": "Waiting on Customer", "shortname": "CUST", "type": 2, "sequence": 4,
     "colour": "#9013fe"},
    {"id": 8, "name": "Resolved", "shortname": "RES", "type": 3, "sequence": 5,
     "colour": "#7ed321"},
    {"id": 9, "name": "Closed", "shortname": "CLOSED", "type": 3, "sequence": 6,
     "colour": "#4a4a4a"},
]  # fmt: skip

_SLAS: list[dict[str, Any]] = [
    {"id": 1, "name": "Standard", "workday_id": 1},
    {"id": 2, "name": "Premium", "workday_id": 2},
]

# (priorityid, name, fix hours): Premium fixes faster, which is why its ids differ.
_PRIORITY_ROWS = {
    1: [(1, "Critical", 4.0), (2, "High", 8.0), (3, "Medium", 24.0), (4, "Low", 72.0)],
    2: [(5, "Critical", 2.0), (6, "High", 4.0), (7, "Medium", 8.0), (8, "Low", 24.0)],
}

_AGENTS: list[tuple[int, str, str, str]] = [
    (1, "Jane Doe", "jane@msp.example", "Service Desk"),
    (2, "John Smith", "john.smith@msp.example", "Service Desk"),
    (3, "Sam Lee", "sam.lee@msp.example", "Escalations"),
    (4, "Sam Lee", "samuel.lee@msp.example", "Projects"),
    (5, "Chris Park", "chris.park@msp.example", "Projects"),
    (6, "chris park", "c.park@msp.example", "Service Desk"),
    (7, "Priya Patel", "Priya.Patel@MSP.example", "Escalations"),
]

_TEAMS: list[dict[str, Any]] = [
    {"id": 1, "name": "Service Desk", "department_id": 1, "department_name": "Support",
     "forrequests": True, "inactive": False, "sequence": 1},
    {"id": 2, "name": "Escalations", "department_id": 1, "department_name": "Support",
     "forrequests": True, "inactive": False, "sequence": 2},
    {"id": 3, "name": "Projects", "department_id": 2, "department_name": "Delivery",
     "forrequests": False, "inactive": False, "sequence": 3},
]  # fmt: skip

_TICKET_TYPES: list[dict[str, Any]] = [
    {"id": 1, "name": "Incident"},
    {"id": 3, "name": "Service Request"},
    {"id": 4, "name": "Problem"},
]

_CLIENTS: list[dict[str, Any]] = [
    {"id": 12, "name": "Acme Ltd"},
    {"id": 15, "name": "Globex Corporation"},
    {"id": 18, "name": "Initech"},
]

_SITES: list[dict[str, Any]] = [
    {"id": 31, "name": "Head Office", "client_id": 12},
    {"id": 32, "name": "Warehouse", "client_id": 12},
    {"id": 41, "name": "Main Campus", "client_id": 15},
    {"id": 51, "name": "Austin", "client_id": 18},
]

_USERS: list[dict[str, Any]] = [
    {"id": 101, "name": "Alice Walker", "site_id": 31, "client_id": 12,
     "emailaddress": "alice@acme.example"},
    {"id": 102, "name": "Bob Marsh", "site_id": 32, "client_id": 12,
     "emailaddress": "bob@acme.example"},
    {"id": 201, "name": "Hank Scorpio", "site_id": 41, "client_id": 15,
     "emailaddress": "hank@globex.example"},
    {"id": 301, "name": "Peter Gibbons", "site_id": 51, "client_id": 18,
     "emailaddress": "peter@initech.example"},
]  # fmt: skip

# id, summary, client, site, user, sla, status, priority, agent, team, type, created, updated
_TICKET_ROWS: list[tuple[int, str, int, int, int, int, int, int, int, str, int, str, str]] = [
    (4711, "Printer on 3rd floor offline", 12, 31, 101, 1, 1, 3, 1, "Service Desk", 1,
     "2026-11-20T09:15:00.000", "2026-11-20T09:40:12.000"),
    (4712, "VPN drops every 10 minutes", 12, 32, 102, 1, 2, 2, 2, "Service Desk", 1,
     "2026-11-21T08:02:00.000", "2026-11-23T16:20:45.000"),
    (4713, "Mailbox migration for new office", 15, 41, 201, 2, 1, 7, 5, "Projects", 3,
     "2026-11-22T11:30:00.000", "2026-11-22T11:30:00.000"),
    (4714, "Password reset for Bob", 12, 32, 102, 1, 9, 4, 1, "Service Desk", 3,
     "2026-11-18T10:00:00.000", "2026-11-18T10:05:00.000"),
    (4715, "Server room temperature alarm", 15, 41, 201, 2, 5, 6, 3, "Escalations", 1,
     "2026-11-24T07:45:00.000", "2026-11-25T13:10:00.000"),
    (4716, "New starter laptop", 18, 51, 301, 1, 1, 3, 0, "", 3,
     "2026-11-26T14:00:00.000", "2026-11-26T14:00:00.000"),
]  # fmt: skip


def priorities() -> list[dict[str, Any]]:
    """Every SLA's priority records, shaped like `GET /api/Priority` answers them."""
    records = []
    for slaid, rows in _PRIORITY_ROWS.items():
        for priorityid, name, fix_h in rows:
            guid = uuid.uuid5(_PRIORITY_NAMESPACE, f"sla-{slaid}/priority-{priorityid}")
            records.append(
                {
                    "id": str(guid),
                    "slaid": slaid,
                    "priorityid": priorityid,
                    "name": name,
                    "fixtime": fix_h,
                    "fixunits": "h",
                    "responsetime": fix_h / 4,
                    "responseunits": "h",
                    "ishidden": False,
                }
            )
    return records


def agents() -> list[dict[str, Any]]:
    """The agent records, shaped like `GET /api/Agent` answers them."""
    records = []
    for agent_id, name, email, team in _AGENTS:
        first, _, last = name.partition(" ")
        records.append(
            {
                "id": agent_id,
                "name": name,
                "email": email,
                "firstname": first,
                "surname": last,
                "initials": (first[:1] + last[:1]).upper(),
                "team": team,
                "isdisabled": False,
                "is_agent": True,
                "use": "agent",
            }
        )
    return records


# Private marks on agent records (never answered): why a default agent list leaves one out.
VISIBILITY_KEY = "_visibility"
_HIDDEN_AGENTS: list[dict[str, Any]] = [
    {"id": 0, "name": "Unassigned", "email": "", "firstname": "Unassigned", "surname": "",
     "initials": "", "team": "", "isdisabled": False, "is_agent": True, "use": "agent",
     VISIBILITY_KEY: "unassigned"},
    {"id": 8, "name": "Morgan Blake", "email": "morgan.blake@msp.example", "firstname": "Morgan",
     "surname": "Blake", "initials": "MB", "team": "Escalations", "isdisabled": False,
     "is_agent": True, "use": "agent", VISIBILITY_KEY: "restricted"},
]  # fmt: skip
# How many agents and teams a large tenant adds; more than two pages of either.
LARGE_TENANT_AGENTS = 250
LARGE_TENANT_TEAMS = 180


def strict_extras(*, large_tenant: bool) -> dict[str, list[dict[str, Any]]]:
    """What the `strict` profile adds to the lookups: an SLA-only priority and, for a large
    tenant, generated agents (ids from 1000) and teams (ids from 100)."""
    guid = uuid.uuid5(_PRIORITY_NAMESPACE, "sla-2/priority-9")
    extras: dict[str, list[dict[str, Any]]] = {
        "priority": [
            {"id": str(guid), "slaid": 2, "priorityid": 9, "name": "Urgent", "fixtime": 1.0,
             "fixunits": "h", "responsetime": 0.25, "responseunits": "h", "ishidden": False}
        ],
        "agent": [],
        "team": [],
    }  # fmt: skip
    if large_tenant:
        for n in range(LARGE_TENANT_AGENTS):
            agent_id = 1000 + n
            extras["agent"].append(
                {"id": agent_id, "name": f"Agent {agent_id}", "email": f"a{agent_id}@msp.example",
                 "firstname": "Agent", "surname": str(agent_id), "initials": "A",
                 "team": "Service Desk", "isdisabled": False, "is_agent": True, "use": "agent"}
            )  # fmt: skip
        for n in range(LARGE_TENANT_TEAMS):
            team_id = 100 + n
            extras["team"].append(
                {"id": team_id, "name": f"Team {team_id}", "department_id": 1,
                 "department_name": "Support", "forrequests": True, "inactive": False,
                 "sequence": team_id}
            )  # fmt: skip
    return extras


def strict_tickets() -> list[dict[str, Any]]:
    """The `strict` profile's extra tickets: 4720 of type Problem (whose settings set the status
    after an update and clear the agent on a team change), 4721 with no SLA (`sla_id` 0)."""
    base = {"details": "<p>Raised by monitoring.</p>", "client_id": 15, "site_id": 41,
            "user_id": 201, "dateoccurred": "2026-11-27T08:00:00.000",
            "datecreated": "2026-11-27T08:00:00.000", "last_update": "2026-11-27T08:00:00.000",
            "lastactiondate": "2026-11-27T08:00:00.000"}  # fmt: skip
    return [
        {**base, "id": 4720, "summary": "Recurring disk alerts on FS01", "sla_id": 1,
         "status_id": 1, "priority_id": 3, "agent_id": 2, "team": "Escalations",
         "tickettype_id": 4},
        {**base, "id": 4721, "summary": "Loan laptop request", "sla_id": 0, "status_id": 1,
         "priority_id": 3, "agent_id": 0, "team": "", "tickettype_id": 1},
    ]  # fmt: skip


def lookups() -> dict[str, list[dict[str, Any]]]:
    """Fresh copies of every lookup list, keyed by lookup kind."""
    return copy.deepcopy(
        {
            "status": _STATUSES,
            "sla": _SLAS,
            "priority": priorities(),
            "agent": agents() + _HIDDEN_AGENTS,
            "team": _TEAMS,
            "tickettype": _TICKET_TYPES,
            "client": _CLIENTS,
            "site": _SITES,
            "user": _USERS,
        }
    )


def tickets(seed: str) -> list[dict[str, Any]]:
    """The stored tickets of a seed (without `team_id` or any `*_name` label).

    Raises:
        ValueError: `seed` is not one of `SEEDS`.
    """
    if seed not in SEEDS:
        raise ValueError(f"unknown seed {seed!r}; expected one of {', '.join(SEEDS)}")
    if seed == "empty":
        return []
    records = []
    for row in _TICKET_ROWS:
        (ticket_id, summary, client, site, user, sla, status, priority, agent, team, ttype,
         created, updated) = row  # fmt: skip
        records.append(
            {
                "id": ticket_id,
                "summary": summary,
                "details": f"<p>{summary}. Reported by phone.</p>",
                "client_id": client,
                "site_id": site,
                "user_id": user,
                "sla_id": sla,
                "status_id": status,
                "priority_id": priority,
                "agent_id": agent,
                "team": team,
                "tickettype_id": ttype,
                "dateoccurred": created,
                "datecreated": created,
                "last_update": updated,
                "lastactiondate": updated,
            }
        )
    return records


def plain_ticket(ticket_id: int) -> dict[str, Any]:
    """A valid In Progress ticket of the demo lookups whose summary names it: for tests and
    benchmarks that need many tickets (add it with `FakeHalo.add_ticket(**plain_ticket(n))`
    or `POST /_fake/tickets`)."""
    return {
        "id": ticket_id,
        "summary": f"ticket {ticket_id}",
        "status_id": 2,
        "sla_id": 1,
        "priority_id": 3,
        "agent_id": 1,
        "team": "Service Desk",
        "client_id": 12,
        "site_id": 31,
        "user_id": 101,
    }
