"""Halo's ticket endpoints as a job uses them: read one ticket, read many, post updates.

`TicketEndpoints` shapes the requests (`GET /api/Tickets/{id}`, list reads of `ticketids`
page by page, `POST /api/Tickets`) and checks that each answer is about the tickets asked for;
it sends through the job's session (`worker.halo.session`) and is part of `HaloClient`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from worker.errors import HaloUnexpectedResponse, TicketNotFound
from worker.halo.errors import answer_json, summarize_body
from worker.halo.lookups import as_int, unwrap_records
from worker.halo.session import MAX_PAGE_SIZE, JobSession

Ticket = dict[str, Any]
# A list read asks for no more ids than one page holds, so a tenant that honours `ticketids`
# answers it in one request.
IDS_PER_READ: Final = MAX_PAGE_SIZE


@dataclass(frozen=True)
class ListRead:
    """A checked list read: the tickets found (by id, only those asked for), whether Halo
    answered only tickets asked for (`honoured`: it filtered on `ticketids`), and the page
    size it cut pages to when one was cut short (None: none was)."""

    tickets: dict[int, Ticket]
    honoured: bool
    page_cap: int | None


@dataclass(frozen=True)
class Posted:
    """A POST of several updates: the saved tickets Halo's answer holds, of those sent, and
    whether it answered `every` ticket sent and no other."""

    saved: dict[int, Ticket]
    every: bool


class TicketEndpoints(JobSession):
    """The ticket reads and writes of one job's session."""

    def get_ticket(self, ticket_id: int) -> Ticket:
        """Read one ticket, with its `*_name` labels and details.

        Raises:
            TicketNotFound: Halo answered 404, and its API is known to answer at the url.
            NoHaloApi: Halo's API does not answer at the connection's url (404s).
            HaloUnexpectedResponse: the answer is not that ticket.
        """
        what = f"GET /api/Tickets/{ticket_id}"
        self._require_api()
        response = self._call(
            "GET",
            f"/Tickets/{ticket_id}",
            params={"includedetails": "true", "nocache": "true"},
            not_found=lambda: self._on_404(
                lambda: TicketNotFound(
                    f"Halo has no ticket {ticket_id} on connection {self.connection.name!r}",
                    field="ticket_id",
                    http_status=404,
                )
            ),
        )
        ticket = answer_json(response, what)
        if not isinstance(ticket, dict) or _ticket_id(ticket) != ticket_id:
            raise HaloUnexpectedResponse(
                f"{what} answered another ticket or no ticket: {summarize_body(response.text)}",
                http_status=response.status_code,
            )
        self._clients.routes.answered(self.connection)
        return ticket

    def get_tickets(self, ticket_ids: Sequence[int]) -> ListRead:
        """Read several tickets with list reads of at most `IDS_PER_READ` ids, page by page,
        and check that Halo filtered on `ticketids`.

        A ticket absent from the answer is not proof that Halo has none: the caller confirms
        with `get_ticket`. List reads carry fewer columns than `get_ticket`: no `*_name`
        labels, and no `details` (Halo's document gives `GET /api/Tickets` no parameter to
        include them). A read whose answer holds a ticket not asked for (the tenant ignores
        `ticketids`) stops at that page: paging on would read the whole tenant.

        Raises:
            HaloUnavailable, HaloRateLimited, ...: as any request; a retryable error loses
                nothing, since nothing was written.
        """
        found: dict[int, Ticket] = {}
        honoured = True
        page_cap: int | None = None
        ids = list(dict.fromkeys(ticket_ids))
        for start in range(0, len(ids), IDS_PER_READ):
            chunk = ids[start : start + IDS_PER_READ]
            read = self._read_pages(chunk)
            found.update(read.tickets)
            honoured = honoured and read.honoured
            page_cap = read.page_cap if page_cap is None else page_cap
            if not read.honoured:
                break  # single reads are cheaper than list reads of a tenant that ignores ids
        return ListRead(found, honoured, page_cap)

    def _read_pages(self, chunk: Sequence[int]) -> ListRead:
        wanted = set(chunk)
        found: dict[int, Ticket] = {}
        page_cap: int | None = None
        what = "GET /api/Tickets?ticketids=..."
        self._require_api()
        # Each page holds at least one ticket, so `len(chunk)` pages cover every id asked for.
        for page_no in range(1, len(chunk) + 1):
            params = {
                "ticketids": ",".join(str(i) for i in chunk),
                "pageinate": "true",
                "page_size": str(MAX_PAGE_SIZE),
                "page_no": str(page_no),
            }
            response = self._call(
                "GET",
                "/Tickets",
                params=params,
                not_found=lambda: self._on_404(
                    lambda: HaloUnexpectedResponse(
                        f"Halo answered 404 to {what}, which this API never should",
                        http_status=404,
                    )
                ),
            )
            answered = answer_json(response, what)
            self._clients.routes.answered(self.connection)
            tickets = unwrap_records(answered, "tickets")
            count = as_int(answered.get("record_count")) if isinstance(answered, dict) else None
            answered_ids = {_ticket_id(ticket) for ticket in tickets}
            if not answered_ids <= wanted or (count is not None and count > len(chunk)):
                # Unrelated tickets: this tenant does not filter on `ticketids`.
                kept = {tid: t for t in tickets if (tid := _ticket_id(t)) in wanted and tid}
                return ListRead({**found, **kept}, honoured=False, page_cap=None)
            before = len(found)
            found.update({tid: t for t in tickets if (tid := _ticket_id(t)) is not None})
            total = count if count is not None else len(chunk)
            # A page that adds nothing ends it too: a tenant that ignores `page_no` answers
            # its first page again.
            if len(found) == before or len(found) >= total or found.keys() >= wanted:
                break
            if len(tickets) < MAX_PAGE_SIZE:
                # More are due but the page was cut short: the tenant's own page size.
                page_cap = len(tickets) if page_cap is None else min(page_cap, len(tickets))
        return ListRead(found, honoured=True, page_cap=page_cap)

    def update_tickets(self, updates: Sequence[Mapping[str, Any]]) -> dict[int, Ticket]:
        """POST updates of existing tickets; returns the saved tickets by id.

        Every element must carry the positive `id` of a ticket known to exist: Halo creates a
        ticket for an element without one (FACTS, Update).

        Raises:
            ValueError: an element has no positive integer id (a bug, never sent).
            HaloUnexpectedResponse: the answer is for other ticket ids than those sent.
        """
        ids, posted = self._post(updates)
        if posted is None:
            # Some Halo builds answer 201 with no body: read back what was saved.
            return {tid: self.get_ticket(tid) for tid in ids}
        by_id, status = posted
        if set(by_id) != set(ids):
            raise HaloUnexpectedResponse(
                f"POST /api/Tickets for ticket(s) {sorted(ids)} was answered for "
                f"ticket(s) {sorted(str(i) for i in by_id)}: the update may have gone elsewhere",
                http_status=status,
            )
        return {tid: ticket for tid, ticket in by_id.items() if tid is not None}

    def post_updates(self, updates: Sequence[Mapping[str, Any]]) -> Posted:
        """POST updates of existing tickets and say which of them Halo's answer confirms.

        Unlike `update_tickets` an answer that lists fewer tickets than were sent (the first
        alone, none, or others) is not an error: the caller reads the unconfirmed tickets back
        and decides from what Halo holds. Never sends anything twice.

        Raises:
            ValueError: an element has no positive integer id (a bug, never sent).
            HaloRejected, HaloUnavailable, ...: as any request.
        """
        ids, posted = self._post(updates)
        if posted is None:
            return Posted({}, every=False)
        by_id, _ = posted
        saved = {tid: ticket for tid, ticket in by_id.items() if tid in ids and tid is not None}
        return Posted(saved, every=set(by_id) == set(ids))

    def _post(
        self, updates: Sequence[Mapping[str, Any]]
    ) -> tuple[list[int], tuple[dict[int | None, Ticket], int] | None]:
        """Send the POST; the ids sent, and the answered tickets by id with the status (None
        when the answer had no body)."""
        ids = [_ticket_id(update) for update in updates]
        if not ids or any(tid is None or tid <= 0 for tid in ids):
            raise ValueError("every update must carry the positive id of an existing ticket")
        response = self._call("POST", "/Tickets", body=list(updates))
        sent = [tid for tid in ids if tid is not None]
        if not response.content.strip():
            return sent, None
        answered = answer_json(response, "POST /api/Tickets")
        saved = [answered] if isinstance(answered, dict) and "id" in answered else None
        by_id = {_ticket_id(t): t for t in (saved or unwrap_records(answered, "tickets"))}
        return sent, (by_id, response.status_code)


def _ticket_id(ticket: Mapping[str, Any]) -> int | None:
    return as_int(ticket.get("id"))
