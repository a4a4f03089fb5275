"""What a contract test expects of a POST under the tenant profile the fake plays.

The same job sends a slightly different body to different Halo builds: `team_id` only to a
tenant whose tickets carry it, and `_forcereassign` with every agent change (docs/halo.md).
"""

from __future__ import annotations

from typing import Any

from worker.halo.fake import FakeHalo


def expected_post(fake: FakeHalo, ticket_id: int, fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The POST body a job setting `fields` (as the newest build takes them) sends to `fake`."""
    body: dict[str, Any] = {"id": ticket_id, **fields}
    if not fake.config.tickets_have_team_id:
        body.pop("team_id", None)
    if "agent_id" in body:
        body["_forcereassign"] = True
    return [body]


def expected_changed(fake: FakeHalo, changed: list[str]) -> list[str]:
    """The record's `changed_fields` for a job that changes `changed` on the newest build."""
    if fake.config.tickets_have_team_id:
        return list(changed)
    return [name for name in changed if name != "team_id"]
