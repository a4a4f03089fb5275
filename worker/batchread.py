"""The read step of a released batch: its jobs' tickets in one checked list read, or each on
its own.

    GET /api/Tickets?ticketids=… (paged, checked) → each job's ticket
                                                    └→ one the list left out: read on its own

The list read is checked (`worker.learned` keeps what each tenant has shown): a ticket Halo did
not list is read on its own, and only a 404 there fails its job as `ticket_not_found`; an
answer holding tickets not asked for shows that the tenant ignores `ticketids`, and its backlog
is released one job at a time from then on. A connection with ``batching = "off"``, or a
tenant that ignores `ticketids`, reads each job's ticket on its own even inside a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from worker.errors import TicketNotFound
from worker.halo.client import HaloClient, Ticket
from worker.learned import Learned, TenantFacts

log = logging.getLogger("halo.batch")


@dataclass(frozen=True)
class BatchRead:
    """What the batch read found: tickets by id, None for one a single read found missing;
    ids absent are read by their own job."""

    tickets: dict[int, Ticket | None]
    listed: bool  # whether it was a list read (whose tickets lack the `*_name` labels)

    def from_list(self, ticket_id: int) -> bool:
        """Whether the ticket came from the list read."""
        return self.listed and self.tickets.get(ticket_id) is not None

    def ticket(self, ticket_id: int, client: HaloClient) -> Ticket:
        """The ticket from the batch read, else read on its own: a ticket a list read left
        out is not proof that Halo has none, a 404 on its own read is.

        Raises:
            TicketNotFound: Halo answered 404 for this ticket.
        """
        if ticket_id in self.tickets:
            ticket = self.tickets[ticket_id]
            if ticket is None:
                raise TicketNotFound(
                    f"Halo has no ticket {ticket_id} on connection {client.connection.name!r}",
                    field="ticket_id",
                    http_status=404,
                )
            return ticket
        return client.get_ticket(ticket_id)


def read_batch(
    client: HaloClient, ids: list[int], learned: Learned, facts: TenantFacts
) -> BatchRead:
    """Read the tickets `ids` (sorted, distinct) of a batch of `client`'s connection, whose
    tenant has shown `facts`; what a list read shows is kept in `learned`."""
    name = client.connection.name
    forced_off = client.connection.batching == "off"
    # A tenant that has not shown whether it honours `ticketids` is asked with a checked
    # list read even for one ticket: the probe, at the price of the single read.
    probe = not forced_off and facts.ticketids is None
    listed = not forced_off and facts.ticketids != "ignored"
    listed = listed and (len(ids) > 1 or probe)
    if not listed:
        if len(ids) > 1:
            return BatchRead({}, listed=False)  # each job reads its own ticket
        # One ticket: the single read carries the `*_name` labels a list read lacks.
        try:
            return BatchRead({ids[0]: client.get_ticket(ids[0])}, listed=False)
        except TicketNotFound:
            return BatchRead({ids[0]: None}, listed=False)
    read = client.get_tickets(ids)
    learned.saw_list_read(name, honoured=read.honoured, page_cap=read.page_cap)
    if not read.honoured:
        log.warning(
            "Halo ignores ticketids on this connection: its backlog is released one job at a time",
            extra={"connection": name, "tickets": len(ids)},
        )
    return BatchRead(dict(read.tickets), listed=True)
