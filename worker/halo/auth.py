"""Client-credentials tokens for one Halo connection, cached and refreshed ahead of expiry.

Halo issues no useful refresh token (FACTS, Authentication): a new token is a new
client-credentials request. Tokens are cached in a `Cache` that the whole fleet may share, so
one token request serves every worker for the token's lifetime. A cached token is sealed with
a key derived from the connection's client secret: whoever can read the cache but not the
secret learns nothing, and no access token is ever stored in the clear.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.connections import Connection
from worker.errors import HaloAuthFailed, HaloUnexpectedResponse, RetryableError
from worker.halo.cache import Cache
from worker.halo.errors import summarize_body
from worker.keys import token_key

# Long enough for one token request under Halo's 60 s gateway timeout; after it, a waiting
# worker stops waiting for the holder and requests a token itself.
_REFRESH_LOCK_S = 65.0


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and the Unix time it stops working.

    Its repr hides the value: a token object in a log line, a traceback or a debugger's view
    must not hand out the bearer credential.
    """

    value: str = field(repr=False)
    expires_at_s: float


def token_from_answer(response: httpx.Response, connection: Connection) -> AccessToken:
    """Read Halo's token answer.

    A 2xx answer is never quoted in an error: it may hold the access token (a body that
    merely fails to parse still carries it), and the message goes into the job's record and
    the completion feed. The error describes the answer's shape instead. An error answer is
    quoted (shortened) unless it, too, mentions an access token.

    Raises:
        HaloAuthFailed: Halo refused the credentials, or the token endpoint answered another
            error; the message says what to check.
        HaloUnexpectedResponse: a 2xx answer without a usable token; the message says which
            key is missing or of the wrong type.
    """
    if response.status_code in (400, 401) or response.status_code == 403:
        detail = _error_detail(response.text)
        hint = (
            "check the connection's client_id and secret: Halo issues a new client id when "
            "the API application is saved, and the secret must belong to that client id"
        )
        if "invalid_scope" in response.text:
            hint = f"the API application does not grant scope {connection.scope!r}"
        raise HaloAuthFailed(
            f"connection {connection.name!r}: Halo refused the token request "
            f"({response.status_code}): {detail}; {hint}",
            http_status=response.status_code,
        )
    if not response.is_success:
        raise HaloAuthFailed(
            f"connection {connection.name!r}: the token request to {connection.token_url} "
            f"failed ({response.status_code}): {_error_detail(response.text)}; check the "
            "connection's url and auth_url",
            http_status=response.status_code,
        )
    value, lifetime_s, problem = _read_token_answer(response.content)
    if problem:
        raise HaloUnexpectedResponse(
            f"connection {connection.name!r}: Halo's token answer ({response.status_code}) "
            f"is unusable: {problem} (the answer is not quoted: it may hold the token)",
            http_status=response.status_code,
        )
    return AccessToken(value, time.time() + lifetime_s)


# Halo's usual token lifetime, assumed when an answer does not say.
_DEFAULT_LIFETIME_S: Final = 3600.0
# A token lives in an HTTP header: visible ASCII only (RFC 6750 allows fewer still).
_BEARER_TOKEN: Final = re.compile(r"[\x21-\x7e]{1,8192}")
# A token said to live longer is still replaced daily; it also keeps the cache TTL sane.
_MAX_LIFETIME_S: Final = 24 * 3600.0
# Where the token can be read from the body of an error answer; it is then not quoted.
_TOKEN_IN_TEXT: Final = re.compile(r"access_?token|bearer", re.IGNORECASE)


def _read_token_answer(content: bytes) -> tuple[str, float, str]:
    """``(token, lifetime_s, "")`` from a 2xx body, or ``("", 0, problem)`` where `problem`
    describes the body's shape (types and key names only, never a value)."""
    try:
        answer = json.loads(content)
    except (ValueError, RecursionError):
        return "", 0.0, f"the body is not JSON ({len(content)} bytes)"
    if not isinstance(answer, dict):
        return "", 0.0, f"the body is {_json_kind(answer)}, not an object"
    if "access_token" not in answer:
        return "", 0.0, "access_token is missing"
    value = answer["access_token"]
    problem = _token_problem(value)
    lifetime = answer.get("expires_in", _DEFAULT_LIFETIME_S)
    lifetime_s = _seconds(lifetime)
    if problem or lifetime_s is None:
        expiry = f"expires_in is {_json_kind(lifetime)}, not a positive number of seconds"
        return "", 0.0, problem or expiry
    return str(value), lifetime_s, ""


def _token_problem(value: Any) -> str:
    """What is wrong with an answer's access_token (its type, never its text), or ""."""
    if not isinstance(value, str) or not value:
        shown = "an empty string" if isinstance(value, str) else _json_kind(value)
        return f"access_token is {shown}, not a token"
    if not _BEARER_TOKEN.fullmatch(value):
        # It would go into an Authorization header, where httpx refuses it with an error
        # that quotes it.
        return "access_token holds characters no bearer token has"
    return ""


def _seconds(value: Any) -> float | None:
    # Halo sends a number; a numeric string is read the same. Booleans, NaN, infinity, zero
    # and negative lifetimes describe no token a worker could use or cache.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, _MAX_LIFETIME_S)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _error_detail(text: str) -> str:
    if _TOKEN_IN_TEXT.search(text):
        return f"(a {len(text)}-character answer that mentions a token; not quoted)"
    return summarize_body(text)


class TokenSource:
    """The current token of one connection; shared by every job of a process.

    `get` refreshes ahead of expiry with a single flight: while one worker (anywhere in the
    fleet, with a shared cache) requests a new token, the others keep using the old one until
    it really expires, and only then wait for the new one.
    """

    def __init__(
        self,
        connection: Connection,
        cache: Cache,
        *,
        refresh_margin_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connection = connection
        self._cache = cache
        self._margin_s = refresh_margin_s
        self._clock = clock
        self._key = token_key(connection.name)
        self._seal = Fernet(_sealing_key(connection))
        # This process's copy of the shared token: every job needs the token, and reading and
        # unsealing it from the shared cache for each would be most of a job's token cost.
        self._memo: AccessToken | None = None

    def get(self, fetch: Callable[[], AccessToken]) -> str:
        """A token valid now, fetching one with `fetch` when needed.

        Raises:
            Whatever `fetch` raises (HaloAuthFailed, HaloUnavailable, HaloRateLimited).
        """
        now = self._clock()
        memo = self._memo
        if memo is not None and memo.expires_at_s - self._margin_s > now:
            return memo.value
        cached = self._load()
        if cached and cached.expires_at_s - self._margin_s > now:
            self._memo = cached
            return cached.value
        if cached and cached.expires_at_s > now:
            with self._cache.lock(self._key, ttl_s=_REFRESH_LOCK_S, wait_s=0) as held:
                if held:
                    # Renewing early is a courtesy: if Halo cannot answer now, the cached token
                    # still works, and a job must not fail for want of a courtesy.
                    with contextlib.suppress(RetryableError):
                        return self._store(fetch()).value
            return cached.value
        return self.refresh(fetch, stale=cached.value if cached else None)

    def refresh(self, fetch: Callable[[], AccessToken], *, stale: str | None) -> str:
        """A token other than `stale`: the one another worker just fetched, or a new one."""
        self._memo = None
        with self._cache.lock(self._key, ttl_s=_REFRESH_LOCK_S, wait_s=_REFRESH_LOCK_S):
            cached = self._load()
            if cached and cached.value != stale and cached.expires_at_s > self._clock():
                self._memo = cached
                return cached.value
            return self._store(fetch()).value

    def _load(self) -> AccessToken | None:
        sealed = self._cache.get(self._key)
        if sealed is None:
            return None
        try:
            data = json.loads(self._seal.decrypt(sealed.encode()))
            return AccessToken(str(data["value"]), float(data["expires_at_s"]))
        except (InvalidToken, ValueError, KeyError, TypeError):
            # Sealed under a rotated secret, or damaged: as good as absent.
            return None

    def _store(self, token: AccessToken) -> AccessToken:
        ttl_s = token.expires_at_s - self._clock()
        if ttl_s > 0:
            payload = json.dumps({"value": token.value, "expires_at_s": token.expires_at_s})
            self._cache.set(self._key, self._seal.encrypt(payload.encode()).decode(), ttl_s)
        self._memo = token
        return token


def _sealing_key(connection: Connection) -> bytes:
    secret = connection.client_secret.get_secret_value().encode()
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"halo token cache/{connection.name}/{connection.client_id}".encode(),
    ).derive(secret)
    return base64.urlsafe_b64encode(derived)
