"""Client-credentials tokens (FACTS, Authentication): cached, sealed, refreshed early and late."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from pydantic import SecretStr

from worker.connections import Connection
from worker.errors import (
    ErrorCode,
    HaloAuthFailed,
    HaloRateLimited,
    HaloUnavailable,
    HaloUnexpectedResponse,
)
from worker.halo.auth import AccessToken, TokenSource, token_from_answer
from worker.halo.cache import MemoryCache
from worker.halo.client import HaloClient, HaloClients, Timeouts
from worker.halo.fake import DEMO_CLIENT_SECRET, FakeHalo

TOKEN_KEY = "halo:token:acme"


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now_s: float = 1_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


class Issuer:
    """A `fetch` for TokenSource that hands out numbered tokens with a fixed lifetime."""

    def __init__(self, clock: Clock, lifetime_s: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.issued: list[str] = []

    def __call__(self) -> AccessToken:
        value = f"token-{len(self.issued) + 1}"
        self.issued.append(value)
        return AccessToken(value, self.clock() + self.lifetime_s)


class Recorder:
    """A transport handler in front of the fake that keeps every request and answer."""

    def __init__(self, fake: FakeHalo) -> None:
        self.fake = fake
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self.fake(request)
        response.read()
        self.exchanges.append((request, response))
        return response

    def access_tokens(self) -> list[str]:
        return [
            json.loads(response.content)["access_token"]
            for request, response in self.exchanges
            if request.url.path == "/auth/token" and response.status_code == 200
        ]

    def bearers(self) -> list[str]:
        return [
            request.headers["authorization"].removeprefix("Bearer ")
            for request, _ in self.exchanges
            if "authorization" in request.headers
        ]


def source(
    connection: Connection, clock: Clock, margin_s: float = 120.0
) -> tuple[TokenSource, MemoryCache]:
    cache = MemoryCache(clock=clock)
    return TokenSource(connection, cache, refresh_margin_s=margin_s, clock=clock), cache


def token_requests(fake: FakeHalo) -> int:
    return len(fake.requests_to("POST", "/auth/token"))


@pytest.fixture
def recorder(fake: FakeHalo) -> Recorder:
    return Recorder(fake)


@pytest.fixture
def recorded_clients(
    recorder: Recorder, cache: MemoryCache, connection: Connection
) -> Iterator[HaloClients]:
    made = HaloClients({"acme": connection}, transport=httpx.MockTransport(recorder), cache=cache)
    yield made
    made.close()


def clients_for(
    fake: FakeHalo, connection: Connection, *, cache: MemoryCache | None = None
) -> HaloClients:
    return HaloClients(
        {"acme": connection}, transport=httpx.MockTransport(fake), cache=cache or MemoryCache()
    )


# -- TokenSource, on a clock the test moves ----------------------------------------------------


def test_a_token_is_fetched_once_and_reused_until_near_expiry(connection: Connection) -> None:
    clock = Clock()
    tokens, _ = source(connection, clock)
    fetch = Issuer(clock)
    assert [tokens.get(fetch) for _ in range(5)] == ["token-1"] * 5
    clock.now_s += 3600 - 121
    assert tokens.get(fetch) == "token-1"
    assert fetch.issued == ["token-1"]


def test_a_token_inside_the_margin_is_replaced_ahead_of_expiry(
    connection: Connection,
) -> None:
    clock = Clock()
    tokens, _ = source(connection, clock, margin_s=120)
    fetch = Issuer(clock)
    tokens.get(fetch)
    clock.now_s += 3600 - 60  # one minute left: still valid, but inside the margin
    assert tokens.get(fetch) == "token-2"
    assert tokens.get(fetch) == "token-2"
    assert fetch.issued == ["token-1", "token-2"]


def test_while_another_worker_refreshes_ahead_the_old_token_is_used(connection: Connection) -> None:
    clock = Clock()
    tokens, cache = source(connection, clock)
    fetch = Issuer(clock)
    tokens.get(fetch)
    clock.now_s += 3600 - 60
    with cache.lock(TOKEN_KEY, ttl_s=65, wait_s=0) as held:
        assert held
        assert tokens.get(fetch) == "token-1"
    assert fetch.issued == ["token-1"]


def test_a_failed_refresh_ahead_falls_back_to_the_still_valid_token(connection: Connection) -> None:
    clock = Clock()
    tokens, _ = source(connection, clock)
    tokens.get(Issuer(clock))
    clock.now_s += 3600 - 60

    def unavailable() -> AccessToken:
        raise HaloUnavailable("token endpoint down")

    assert tokens.get(unavailable) == "token-1"


def test_an_expired_token_is_replaced(connection: Connection) -> None:
    clock = Clock()
    tokens, _ = source(connection, clock)
    fetch = Issuer(clock)
    tokens.get(fetch)
    clock.now_s += 3601
    assert tokens.get(fetch) == "token-2"


def test_refresh_replaces_the_stale_token(connection: Connection) -> None:
    clock = Clock()
    tokens, _ = source(connection, clock)
    fetch = Issuer(clock)
    stale = tokens.get(fetch)
    assert tokens.refresh(fetch, stale=stale) == "token-2"
    assert tokens.get(fetch) == "token-2"


def test_refresh_takes_a_token_another_worker_just_fetched(connection: Connection) -> None:
    clock = Clock()
    tokens, cache = source(connection, clock)
    fetch = Issuer(clock)
    tokens.get(fetch)
    # Another worker of the fleet, sharing the cache, already replaced token-1.
    other = TokenSource(connection, cache, refresh_margin_s=120, clock=clock)
    assert other.refresh(fetch, stale="token-1") == "token-2"
    assert tokens.refresh(fetch, stale="token-1") == "token-2"
    assert fetch.issued == ["token-1", "token-2"]


def test_concurrent_first_requests_fetch_a_single_token(connection: Connection) -> None:
    clock = Clock()
    tokens, _ = source(connection, clock)
    calls: list[str] = []
    start = threading.Barrier(8)

    def slow_fetch() -> AccessToken:
        calls.append("fetch")
        time.sleep(0.05)
        return AccessToken("only", clock() + 3600)

    got: list[str] = []

    def job() -> None:
        start.wait()
        got.append(tokens.get(slow_fetch))

    threads = [threading.Thread(target=job) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert got == ["only"] * 8
    assert calls == ["fetch"]


def test_the_cached_token_is_sealed_not_stored_in_clear(connection: Connection) -> None:
    clock = Clock()
    tokens, cache = source(connection, clock)
    tokens.get(Issuer(clock))
    sealed = cache.get(TOKEN_KEY)
    assert sealed is not None
    assert "token-1" not in sealed
    assert DEMO_CLIENT_SECRET not in sealed
    assert "expires_at_s" not in sealed


def test_a_token_sealed_under_another_secret_is_ignored(connection: Connection) -> None:
    clock = Clock()
    tokens, cache = source(connection, clock)
    tokens.get(Issuer(clock))
    rotated = replace(connection, client_secret=SecretStr("rotated-secret"))
    other = TokenSource(rotated, cache, refresh_margin_s=120, clock=clock)
    assert other.get(lambda: AccessToken("fresh", clock() + 3600)) == "fresh"


def test_a_damaged_cache_entry_is_as_good_as_absent(connection: Connection) -> None:
    clock = Clock()
    tokens, cache = source(connection, clock)
    cache.set(TOKEN_KEY, "not a sealed token", 3600)
    assert tokens.get(Issuer(clock)) == "token-1"


def test_a_token_that_is_already_expired_is_not_cached(connection: Connection) -> None:
    clock = Clock()
    tokens, cache = source(connection, clock)
    assert tokens.get(lambda: AccessToken("dead", clock() - 1)) == "dead"
    assert cache.get(TOKEN_KEY) is None


# -- reading Halo's token answer ---------------------------------------------------------------


def answer(status: int, body: object) -> httpx.Response:
    text = body if isinstance(body, str) else json.dumps(body)
    return httpx.Response(status, text=text)


def test_a_token_answer_gives_the_token_and_its_expiry(connection: Connection) -> None:
    before = time.time()
    token = token_from_answer(
        answer(200, {"access_token": "abc", "token_type": "Bearer", "expires_in": 600}), connection
    )
    assert token.value == "abc"
    assert before + 600 <= token.expires_at_s <= time.time() + 600


@pytest.mark.parametrize("status", [400, 401, 403])
def test_refused_credentials_say_to_check_the_client_id_and_secret(
    connection: Connection, status: int
) -> None:
    body = {"error": "invalid_client", "error_description": "The client credentials are invalid."}
    with pytest.raises(HaloAuthFailed) as caught:
        token_from_answer(answer(status, body), connection)
    message = caught.value.message
    assert "connection 'acme'" in message
    assert "The client credentials are invalid." in message
    assert "check the connection's client_id and secret" in message
    assert "new client id when the API application is saved" in message
    assert caught.value.http_status == status
    assert DEMO_CLIENT_SECRET not in message


def test_a_refused_scope_names_the_scope(connection: Connection) -> None:
    with pytest.raises(HaloAuthFailed, match="does not grant scope 'all'"):
        token_from_answer(answer(400, {"error": "invalid_scope"}), connection)


def test_a_token_endpoint_that_is_not_there_fails_auth(connection: Connection) -> None:
    with pytest.raises(HaloAuthFailed, match="auth_url"):
        token_from_answer(httpx.Response(404, text="<html>Not Found</html>"), connection)


@pytest.mark.parametrize(
    "body", [{"token_type": "Bearer"}, {"access_token": ""}, {"access_token": 5}, "<html>", "[]"]
)
def test_a_success_without_a_usable_token_is_unexpected(
    connection: Connection, body: object
) -> None:
    with pytest.raises(HaloUnexpectedResponse):
        token_from_answer(answer(200, body), connection)


# A token that a broken answer still carries: it must appear in no error message.
LEAKED = "leaked-access-token-5f2c9e1d7b"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"access_token": LEAKED, "expires_in": None}, "expires_in is null"),
        ({"access_token": LEAKED, "expires_in": "soon"}, "expires_in is a string"),
        ({"access_token": LEAKED, "expires_in": -60}, "expires_in is a number"),
        ({"access_token": LEAKED, "expires_in": True}, "expires_in is a boolean"),
        ({"access_token": LEAKED, "expires_in": [3600]}, "expires_in is an array"),
        ({"token": LEAKED, "expires_in": 3600}, "access_token is missing"),
        ({"access_token": [LEAKED]}, "access_token is an array"),
        ({"access_token": f"{LEAKED}\r\nX-Injected: 1"}, "characters no bearer token has"),
        (f'{{"access_token": "{LEAKED}", "expires_in": 36', "not JSON"),
        (f"access_token={LEAKED}&expires_in=3600", "not JSON"),
        ([LEAKED], "the body is an array"),
        (f'"{LEAKED}"', "the body is a string"),
    ],
)
def test_an_unusable_success_answer_is_described_by_its_shape_and_never_quoted(
    connection: Connection, body: object, says: str
) -> None:
    with pytest.raises(HaloUnexpectedResponse) as caught:
        token_from_answer(answer(200, body), connection)

    message = caught.value.message
    assert LEAKED not in message
    assert says in message
    assert "connection 'acme'" in message
    assert LEAKED not in json.dumps(caught.value.to_dict())


@pytest.mark.parametrize("status", [400, 401, 500])
def test_an_error_answer_that_carries_a_token_is_not_quoted(
    connection: Connection, status: int
) -> None:
    body = f"invalid_client, but here is an access_token anyway: {LEAKED}"
    with pytest.raises(HaloAuthFailed) as caught:
        token_from_answer(answer(status, body), connection)

    assert LEAKED not in caught.value.message
    assert "not quoted" in caught.value.message


def test_a_lifetime_beyond_a_day_is_cut_to_a_day(connection: Connection) -> None:
    before = time.time()
    token = token_from_answer(answer(200, {"access_token": "abc", "expires_in": 1e300}), connection)
    assert before + 86_400 <= token.expires_at_s <= time.time() + 86_400


def test_an_access_token_object_does_not_show_its_value() -> None:
    token = AccessToken(LEAKED, 1_000_000.0)

    assert LEAKED not in repr(token)
    assert LEAKED not in str(token)
    assert LEAKED not in f"{token!r} {[token]} {{'t': {token}}}"


# -- through the client, against the fake ------------------------------------------------------


def test_one_token_request_serves_many_jobs(fake: FakeHalo, clients: HaloClients) -> None:
    made = []
    for _ in range(5):
        job = clients.for_job("acme")
        job.get_ticket(4711)
        made.append(job.requests_made)
    assert token_requests(fake) == 1
    assert made == [2, 1, 1, 1, 1]


def test_workers_sharing_a_cache_share_the_token(
    fake: FakeHalo, cache: MemoryCache, connection: Connection
) -> None:
    first = clients_for(fake, connection, cache=cache)
    second = clients_for(fake, connection, cache=cache)
    try:
        first.for_job("acme").get_ticket(4711)
        job = second.for_job("acme")
        job.get_ticket(4711)
    finally:
        first.close()
        second.close()
    assert token_requests(fake) == 1
    assert job.requests_made == 1


def test_the_token_request_is_client_credentials_with_tenant_and_scope(
    fake: FakeHalo, connection: Connection
) -> None:
    with_tenant = clients_for(fake, replace(connection, tenant="acme-tenant", scope="edit:tickets"))
    try:
        with_tenant.for_job("acme").get_ticket(4711)
    finally:
        with_tenant.close()
    (request,) = fake.requests_to("POST", "/auth/token")
    assert request.query == {"tenant": "acme-tenant"}
    assert request.form == {
        "grant_type": "client_credentials",
        "client_id": "demo-client",
        "client_secret": "[REDACTED]",
        "scope": "edit:tickets",
    }


def test_a_token_near_expiry_is_refreshed_ahead_without_an_error(
    fake: FakeHalo, connection: Connection
) -> None:
    # A 60 s token with a 120 s margin is always "near expiry": the second job renews it.
    fake.configure(token_ttl_s=60)
    ahead = HaloClients(
        {"acme": connection},
        transport=httpx.MockTransport(fake),
        cache=MemoryCache(),
        timeouts=Timeouts(token_refresh_margin_s=120),
    )
    try:
        ahead.for_job("acme").get_ticket(4711)
        ahead.for_job("acme").get_ticket(4711)
    finally:
        ahead.close()
    assert token_requests(fake) == 2
    assert all(r.status in (200, 201) for r in fake.requests())


@pytest.mark.parametrize("expired_status", [400, 401])
def test_an_expired_token_mid_run_is_refreshed_once_and_the_request_retried_once(
    fake: FakeHalo, recorder: Recorder, recorded_clients: HaloClients, expired_status: int
) -> None:
    fake.configure(expired_token_status=expired_status)
    recorded_clients.for_job("acme").get_ticket(4711)
    assert fake.expire_tokens() == 1

    job = recorded_clients.for_job("acme")
    assert job.get_ticket(4711)["id"] == 4711

    tail = [(r.method, r.path_lower, r.status) for r in fake.requests()[-3:]]
    assert tail == [
        ("GET", "/api/tickets/4711", expired_status),
        ("POST", "/auth/token", 200),
        ("GET", "/api/tickets/4711", 200),
    ]
    assert job.requests_made == 3
    first, second = recorder.access_tokens()
    assert recorder.bearers()[-2:] == [first, second]

    # The new token is cached for the next job.
    next_job = recorded_clients.for_job("acme")
    next_job.get_ticket(4711)
    assert next_job.requests_made == 1


def test_an_expired_token_on_an_update_is_refreshed_and_the_update_sent_once(
    fake: FakeHalo, clients: HaloClients
) -> None:
    fake.configure(expired_token_status=400)
    clients.for_job("acme").get_ticket(4711)
    fake.expire_tokens()
    saved = clients.for_job("acme").update_tickets([{"id": 4711, "summary": "renewed"}])
    assert saved[4711]["summary"] == "renewed"
    assert [p.status for p in fake.posts()] == [400, 201]
    assert fake.created_tickets() == []


def test_invalid_client_fails_auth_and_says_to_check_the_credentials(
    fake: FakeHalo, connection: Connection
) -> None:
    wrong = clients_for(fake, replace(connection, client_secret=SecretStr("not-the-secret")))
    try:
        job = wrong.for_job("acme")
        with pytest.raises(HaloAuthFailed) as caught:
            job.get_ticket(4711)
    finally:
        wrong.close()
    error = caught.value
    assert error.code is ErrorCode.HALO_AUTH_FAILED
    assert error.retryable is False
    assert error.http_status == 401
    assert "check the connection's client_id and secret" in error.message
    assert "not-the-secret" not in error.message
    assert [r.path_lower for r in fake.requests()] == ["/auth/token"]
    assert job.requests_made == 1


def test_a_401_that_persists_after_a_refresh_fails_auth(
    fake: FakeHalo, clients: HaloClients
) -> None:
    clients.for_job("acme").get_ticket(4711)
    fake.fail_next(2, status=401, body="", path="/api/tickets")
    job = clients.for_job("acme")
    with pytest.raises(HaloAuthFailed) as caught:
        job.get_ticket(4711)
    assert caught.value.http_status == 401
    assert "freshly issued token" in caught.value.message
    assert [(r.path_lower, r.status) for r in fake.requests()[-3:]] == [
        ("/api/tickets/4711", 401),
        ("/auth/token", 200),
        ("/api/tickets/4711", 401),
    ]
    assert job.requests_made == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, HaloUnavailable), (502, HaloUnavailable), (408, HaloUnavailable),
     (429, HaloRateLimited)],
)  # fmt: skip
def test_a_token_request_that_may_succeed_later_is_retryable(
    fake: FakeHalo, clients: HaloClients, status: int, error: type[Exception]
) -> None:
    fake.fail_next(status=status, path="/auth/token")
    with pytest.raises(error) as caught:
        clients.for_job("acme").get_ticket(4711)
    assert getattr(caught.value, "retryable", None) is True


def test_a_token_request_timeout_is_retryable(fake: FakeHalo, clients: HaloClients) -> None:
    fake.hang_next(path="/auth/token")
    with pytest.raises(HaloUnavailable):
        clients.for_job("acme").get_ticket(4711)


def test_the_cached_token_is_not_stored_in_clear(
    recorder: Recorder, recorded_clients: HaloClients, cache: MemoryCache
) -> None:
    recorded_clients.for_job("acme").get_ticket(4711)
    (access_token,) = recorder.access_tokens()
    sealed = cache.get(TOKEN_KEY)
    assert sealed is not None
    assert access_token not in sealed
    assert DEMO_CLIENT_SECRET not in sealed
    # Nothing else in the cache holds it either.
    for key in (TOKEN_KEY, "halo:lookup:acme:status"):
        assert access_token not in (cache.get(key) or "")


def test_requests_made_counts_token_requests(fake: FakeHalo, clients: HaloClients) -> None:
    job: HaloClient = clients.for_job("acme")
    job.get_ticket(4711)
    assert job.requests_made == 2 == len(fake.requests())
