"""`halo-jobs preview`: what a job would send to Halo, worked out against the live ticket.

Renders, validates and resolves the job exactly as a worker would, diffs it against the ticket
as Halo has it now, and shows the POST body it would send. It only reads from Halo, and its
requests take the connection's shared budget like the workers' (when the result store
answers), so a preview cannot push the fleet into Halo's rate limit.
"""

from __future__ import annotations

from typing import Any

import redis

from worker.connections import load_connections
from worker.errors import JobError
from worker.governor import Governor
from worker.halo.client import HaloClients, Timeouts
from worker.models import Job, parse_job
from worker.runtime import redis_client
from worker.settings import get_settings
from worker.sharedcache import RedisCache
from worker.update import plan_update

_UNMETERED = (
    "the result store did not answer: this preview's Halo requests were not counted against "
    "the connection's shared budget"
)


def preview(raw_job: str | dict[str, Any]) -> dict[str, Any]:
    """The update a job would make, or the error it would fail with.

    Returns:
        ``{"ticket_id", "changed_fields", "warnings", "request", "halo_requests"}`` where
        `request` is the exact POST (None when nothing would change), or ``{"error": {...}}``.
    """
    job: Job | None = None
    settings = get_settings()
    try:
        job = parse_job(raw_job)
        connections = load_connections(settings.connections_file)
    except JobError as error:
        return {"error": error.to_dict()}
    store = redis_client(settings.results_redis_url, settings)
    shared = _answers(store)
    clients = HaloClients(
        connections,
        timeouts=Timeouts(
            connect_s=settings.http_connect_timeout_s, read_s=settings.http_read_timeout_s
        ),
        cache=RedisCache(store) if shared else None,
        budget=Governor(store) if shared else None,
    )
    try:
        client = clients.for_job(job.connection)
        plan = plan_update(job, client)
    except JobError as error:
        return {"error": error.to_dict()}
    finally:
        clients.close()
        store.close()
    return {
        "ticket_id": plan.ticket_id,
        "changed_fields": plan.changed_fields,
        "warnings": plan.warnings + ([] if shared else [_UNMETERED]),
        "request": (
            {"method": "POST", "path": "/api/Tickets", "body": [plan.payload]}
            if plan.changed_fields
            else None
        ),
        "halo_requests": client.requests_made,
    }


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
