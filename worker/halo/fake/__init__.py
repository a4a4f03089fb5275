"""A faithful fake Halo PSA, for tests: the traps of `docs/halo.md`, made real.

Three ways to use it, all on the same `FakeHalo`:

    fake = FakeHalo(rate_limit="300/300s")
    client = httpx.Client(transport=httpx.MockTransport(fake))      # unit tests

    with serve_in_thread(fake) as server:                            # real sockets
        httpx.get(f"{server.url}/api/authinfo")

    $ halo-fake --port 8080 --seed demo --profile legacy             # another process

`profile` (`FakeHalo(profile=...)`, `--profile`) picks the tenant it plays: `current`, `legacy`
or `strict` (see `profiles`).

Modules: `app` (FakeHalo), `config` (options), `profiles` (tenants), `state` and `seeds` (data
and ticket rules), `rules` (ticket-type settings), `routes` (Halo's endpoints), `auth`,
`ratelimit`, `faults`, `requestlog`, `answers` (body shapes), `control` (`/_fake/...` endpoints
for other processes), `server` (HTTP and the CLI), `schema` / `schema_extract` (Halo's `Faults`
schema and query parameters, validated against on every request).

Demo credentials: client id "demo-client", secret "demo-secret".
"""

from worker.halo.fake.app import FakeHalo, Outcome
from worker.halo.fake.auth import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from worker.halo.fake.config import FakeConfig
from worker.halo.fake.ratelimit import RateLimit
from worker.halo.fake.requestlog import CreatedTicket, RecordedRequest
from worker.halo.fake.server import FakeServer, serve_in_thread

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "CreatedTicket",
    "FakeConfig",
    "FakeHalo",
    "FakeServer",
    "Outcome",
    "RateLimit",
    "RecordedRequest",
    "serve_in_thread",
]
