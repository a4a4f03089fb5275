"""A faithful fake Halo PSA, for tests and the demo: the traps of `docs/halo.md`, made real.

A test and demo tool, not part of the worker: it lives outside `worker/`, the worker's wheel and
production image leave it out, and nothing in `worker/` or `producers/` may import it
(tests/unit/test_packaging.py). It imports nothing of the worker either, so it plays Halo as Halo
is, not as the worker expects it to be. It is run from the repository root, where pytest,
`make demo` and the compose demo image (the Dockerfile's `demo` stage) find it.

Three ways to use it, all on the same `FakeHalo`:

    fake = FakeHalo(rate_limit="300/300s")
    client = httpx.Client(transport=httpx.MockTransport(fake))      # unit tests

    with serve_in_thread(fake) as server:                            # real sockets
        httpx.get(f"{server.url}/api/authinfo")

    $ python -m fakehalo --port 8080 --seed demo --profile legacy    # another process

`profile` (`FakeHalo(profile=...)`, `--profile`) picks the tenant it plays: `current`, `legacy`
or `strict` (see `profiles`).

Modules: `app` (FakeHalo), `config` (options), `profiles` (tenants), `state` and `seeds` (data
and ticket rules), `rules` (ticket-type settings), `routes` (Halo's endpoints), `auth`,
`ratelimit`, `faults`, `requestlog`, `answers` (body shapes), `control` (`/_fake/...` endpoints
for other processes), `server` (HTTP and the CLI, which `__main__` runs), `schema` /
`schema_extract` (Halo's `Faults` schema and query parameters, validated against on every
request).

Demo credentials: client id "demo-client", secret "demo-secret".
"""

from fakehalo.app import FakeHalo, Outcome
from fakehalo.auth import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from fakehalo.config import FakeConfig
from fakehalo.ratelimit import RateLimit
from fakehalo.requestlog import CreatedTicket, RecordedRequest
from fakehalo.server import FakeServer, serve_in_thread

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
