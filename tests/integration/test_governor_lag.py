"""The governor under a loaded host: time passes between a grant and Halo's receipt of it.

Halo counts a request when it arrives; the governor counts it when it grants it. On a busy
host a thread can stall after its grant (the GIL, a full connection pool, a starved event loop
at the other end), and a released batch sends its second request only after reading and
rendering its jobs. A late request lands in a Halo window that the governor already
considers free. These tests hold a request back between grant and send at the transport seam
(no clock is read by the assertions) and check that Halo's own rolling window is never
exceeded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

import httpx

from tests.integration.budget import Fleet, Tenants, new_fake
from worker.errors import BudgetExhausted
from worker.runtime import Runtime

pytest_plugins = ["tests.integration.fixtures_budget"]

# A 6 s window: the governor pads it by 0.3 s (5 %, at least 0.2 s; `worker.governor`).
LIMIT: Final = "5/6s"
# Far beyond the pad, and far shorter than the window: the held-back request lands inside
# the Halo window in which the governor's log no longer counts it.
HOLD_BACK_S: Final = 2.0
# Enough callers that, when the first grants leave the window, more wait than it holds.
CALLERS: Final = 8
TICKET: Final = 4711


class HeldBack(Tenants):
    """Routes requests to the fake tenants, holding the `nth` ticket read back for
    `hold_s` seconds before the fake sees it: a send that a loaded host delayed."""

    def __init__(self, nth: int, hold_s: float, **fakes: object) -> None:
        super().__init__(**fakes)  # type: ignore[arg-type]
        self._nth, self._hold_s = nth, hold_s
        self._reads = 0
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.lower().startswith("/api/tickets/"):
            with self._lock:
                self._reads += 1
                hold = self._reads == self._nth
            if hold:
                time.sleep(self._hold_s)
        return super().__call__(request)


def _read_once(runtime: Runtime, errors: list[BaseException]) -> None:
    """Read the ticket once, waiting for budget as a busy worker does."""
    while True:
        try:
            runtime.clients.for_job("acme").get_ticket(TICKET)
        except BudgetExhausted as refused:
            # Ask again soon, as a busy fleet does: grants come the moment room does.
            time.sleep(min(refused.retry_after_s or 0.0, 0.01))
        except Exception as exc:  # noqa: BLE001 - collected, then asserted empty.
            errors.append(exc)
            return
        else:
            return


def _run_all(*targets: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_request_held_back_between_grant_and_send_never_pushes_halo_over_its_limit(
    fleet: Fleet,
) -> None:
    halo = new_fake(rate_limit=LIMIT)
    runtime = fleet(HeldBack(nth=2, hold_s=HOLD_BACK_S, acme=halo), rates={"acme": LIMIT})
    # A token and a first read: the token is fetched once, outside the race.
    runtime.clients.for_job("acme").get_ticket(TICKET)
    errors: list[BaseException] = []

    _run_all(*[lambda: _read_once(runtime, errors)] * CALLERS)

    statuses = [request.status for request in halo.requests()]
    assert errors == []
    assert 429 not in statuses
    assert statuses.count(200) == 2 + CALLERS


def test_a_released_batchs_second_request_held_back_never_pushes_halo_over_its_limit(
    fleet: Fleet,
) -> None:
    halo = new_fake(rate_limit=LIMIT)
    # Reads: the warm-up, the batch's first (prepaid), the batch's second (prepaid, held).
    runtime = fleet(HeldBack(nth=3, hold_s=HOLD_BACK_S, acme=halo), rates={"acme": LIMIT})
    acme = runtime.clients.connections["acme"]
    runtime.clients.for_job("acme").get_ticket(TICKET)
    # What the backlog dispatcher does, then the batch task: take two requests' room ahead,
    # then spend it when the batch runs.
    reservation = runtime.governor.try_acquire(acme, 2).reservation
    assert reservation is not None
    errors: list[BaseException] = []

    def batch() -> None:
        try:
            prepaid = runtime.governor.use_reservation(acme, reservation, 2)
            client = runtime.clients.for_job("acme", prepaid=prepaid)
            client.get_ticket(TICKET)
            client.get_ticket(TICKET)
        except Exception as exc:  # noqa: BLE001 - collected, then asserted empty.
            errors.append(exc)

    _run_all(batch, *[lambda: _read_once(runtime, errors)] * CALLERS)

    statuses = [request.status for request in halo.requests()]
    assert errors == []
    assert 429 not in statuses
    assert statuses.count(200) == 4 + CALLERS
