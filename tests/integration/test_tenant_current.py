"""Agents on a recent hosted tenant (the fake's `current` profile), through a real worker.

This tenant refuses an agent change that does not say the reassignment is meant, and its
default agent list leaves out the Unassigned agent (0) and Morgan Blake (8), an agent restricted
to the Globex organisation. Ticket 4711 belongs to Acme and 4713 to Globex.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fakehalo import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FakeHalo
from fakehalo.profiles import DEFAULT_PROFILE
from producers.jobs import Producer
from tests.integration.harness import new_job, run_job

pytestmark = pytest.mark.usefixtures("current_tenant", "worker")


@pytest.fixture(scope="module")
def current_tenant(fake: FakeHalo) -> Iterator[None]:
    """The fake plays the `current` tenant for this module's tests."""
    fake.use_profile("current")
    yield
    fake.use_profile(DEFAULT_PROFILE)


def test_an_agent_change_says_the_reassignment_is_meant_and_is_saved(
    producer: Producer, fake: FakeHalo, halo_url: str
) -> None:
    record = run_job(producer, new_job(agent="Priya Patel"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["changed_fields"] == ["agent_id"]
    assert record["warnings"] == []
    assert [post.json for post in fake.posts()] == [
        [{"id": 4711, "agent_id": 7, "_forcereassign": True}]
    ]
    # The same change without the flag is what this tenant refuses.
    with httpx.Client(base_url=halo_url) as http:
        form = {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET, "scope": "all"}  # fmt: skip
        token = http.post("/auth/token", data=form).json()["access_token"]
        refused = http.post(
            "/api/Tickets",
            json=[{"id": 4711, "agent_id": 2}],
            headers={"Authorization": f"Bearer {token}"},
        )
    assert refused.status_code == 400
    assert "_forcereassign" in refused.text


def test_the_unassigned_agent_can_be_named_to_unassign_a_ticket(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(agent="Unassigned"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["changed_fields"] == ["agent_id"]
    assert (record["result"][0]["agent_id"], record["result"][0]["agent_name"]) == (
        0,
        "Unassigned",
    )
    assert [post.json for post in fake.posts()] == [
        [{"id": 4711, "agent_id": 0, "_forcereassign": True}]
    ]


def test_an_agent_restricted_to_an_organisation_is_found_for_its_tickets(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(ticket_id="4713", agent="morgan.blake@msp.example"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["result"][0]["agent_name"] == "Morgan Blake"
    assert [post.json for post in fake.posts()] == [
        [{"id": 4713, "agent_id": 8, "_forcereassign": True}]
    ]
    for read in fake.requests_to("GET", "/api/Agent"):
        assert {"includeunassigned": "true", "showall": "true", "pageinate": "true"}.items() <= (
            read.query.items()
        )
