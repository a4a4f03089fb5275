"""Halo's lookup lists as a job reads them: statuses, priorities per SLA, agents and teams.

`LookupEndpoints` reads a whole list (agents page by page) through the job's session
(`worker.halo.session`) and keeps it in the shared cache, signed under the connection's secret,
and for a few seconds in the process; it is part of `HaloClient`. Resolving a rule's names
against the lists is `worker.halo.lookups`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Final

from worker.halo.errors import answer_json
from worker.halo.lookups import LookupKind, unwrap_records
from worker.halo.session import MAX_PAGE_SIZE, JobSession
from worker.keys import lookup_key

# How long a lookup list stays in this process's own copy (`HaloClients.local`).
_LOCAL_LOOKUP_S: Final = 10.0
_LOOKUP_PATHS: Final[dict[str, str]] = {
    "status": "/Status",
    "priority": "/Priority",
    "agent": "/Agent",
    "team": "/Team",
}
# A default `GET /api/Agent` leaves out the Unassigned agent and agents restricted to other
# organisations or departments; a rule may name either (FACTS, Lookups; docs/halo.md).
_AGENT_PARAMS: Final = {
    "includeenabled": "true",
    "includeunassigned": "true",
    "showall": "true",
}
# 5,000 agents: far beyond any MSP's staff, and a bound on requests should a tenant keep
# answering new pages forever.
_MAX_PAGES: Final = 50


class LookupEndpoints(JobSession):
    """The lookup list reads of one job's session."""

    def lookup(
        self,
        kind: LookupKind,
        *,
        sla_id: int | None = None,
        tickettype_id: int | None = None,
        fresh: bool = False,
    ) -> tuple[list[dict[str, Any]], bool]:
        """A lookup list (statuses, priorities of an SLA, agents, teams), cached per connection.

        Args:
            kind: which list.
            sla_id: the SLA whose priorities to list; None or 0 (a ticket with no SLA) lists
                every SLA's priorities.
            tickettype_id: for statuses, list only those this ticket type allows.
            fresh: skip the cache (after a name missed, before failing it).

        Returns:
            The records, and whether they came from the cache.
        """
        sla_id = sla_id or None  # 0: the ticket has no SLA, so every SLA's priorities
        key = lookup_key(self.connection.name, kind, sla_id, tickettype_id)
        params: dict[str, str] = {}
        if kind == "priority":
            # A ticket without an SLA lists every SLA's priorities; never send "slaid=None"
            # nor "slaid=0", which lists none.
            params = {"slaid": str(sla_id)} if sla_id else {}
        elif kind == "status" and tickettype_id is not None:
            params = {"tickettype_id": str(tickettype_id)}
        elif kind == "agent":
            params = dict(_AGENT_PARAMS)
        local = self._clients.local
        if not fresh and (cached := local.get(key) or self._clients.shared(self.connection, key)):
            local.set(key, cached, _LOCAL_LOOKUP_S)
            records: list[dict[str, Any]] = json.loads(cached)
            return records, True
        records = self._read_list(kind, params)
        self._clients.routes.answered(self.connection)
        encoded = json.dumps(records)
        ttl_s = self._clients.timeouts.lookup_ttl_s
        signer = self._clients.signer(self.connection)
        signed = signer.sign(key, encoded, expires_at_s=time.time() + ttl_s)
        self._clients.cache.set(key, signed, ttl_s)
        self._clients.local.set(key, encoded, _LOCAL_LOOKUP_S)
        return records, False

    def cached_lookup(self, kind: LookupKind) -> list[dict[str, Any]] | None:
        """The whole list of a kind (every status, every SLA's priorities) if a cache holds it,
        without any request; None otherwise."""
        key = lookup_key(self.connection.name, kind)  # priorities: every SLA's (sla_id None)
        cached = self._clients.local.get(key) or self._clients.shared(self.connection, key)
        if cached is None:
            return None
        records: list[dict[str, Any]] = json.loads(cached)
        return records

    def _read_list(self, kind: LookupKind, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Read a whole lookup list; agents page by page (the only lookup Halo's document
        gives paging parameters), stopping safely when the tenant does not page."""
        path = _LOOKUP_PATHS[kind]
        what = f"GET /api{path}"
        if kind != "agent":
            return unwrap_records(answer_json(self._call("GET", path, params=params), what), kind)
        records: dict[Any, dict[str, Any]] = {}
        previous: list[Any] | None = None
        for page_no in range(1, _MAX_PAGES + 1):
            paging = {"pageinate": "true", "page_size": str(MAX_PAGE_SIZE), "page_no": str(page_no)}
            answer = answer_json(self._call("GET", path, params={**params, **paging}), what)
            page = unwrap_records(answer, kind)
            ids = [record.get("id") for record in page]
            if ids == previous:
                break  # the same page again: the tenant ignores page_no
            previous = ids
            for record in page:
                records.setdefault(record.get("id"), record)
            count = answer.get("record_count") if isinstance(answer, dict) else None
            if isinstance(count, int) and not isinstance(count, bool):
                if not page or len(records) >= count:
                    break
            elif len(page) != MAX_PAGE_SIZE:
                break  # a short page is the last; a longer one is the whole list, unpaged
        return list(records.values())
