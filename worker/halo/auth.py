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
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.connections import Connection
from worker.errors import HaloAuthFailed, HaloUnexpectedResponse, RetryableError
from worker.halo.cache import Cache
from worker.halo.errors import summarize_body

# Long enough for one token request under Halo's 60 s gateway timeout; after it, a waiting
# worker stops waiting for the holder and requests a token itself.
_REFRESH_LOCK_S = 65.0


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and the Unix time it stops working."""

    value: str
    expires_at_s: float


def token_from_answer(response: httpx.Response, connection: Connection) -> AccessToken:
    """Read Halo's token answer.

    Raises:
        HaloAuthFailed: Halo refused the credentials, or the token endpoint answered another
            error; the message says what to check.
        HaloUnexpectedResponse: a 2xx answer without a usable token.
    """
    if response.status_code in (400, 401) or response.status_code == 403:
        detail = summarize_body(response.text)
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
            f"failed ({response.status_code}): {summarize_body(response.text)}; check the "
            "connection's url and auth_url",
            http_status=response.status_code,
        )
    try:
        answer = response.json()
        value = answer["access_token"]
        lifetime_s = float(answer.get("expires_in", 3600))
    except (ValueError, KeyError, TypeError):
        raise HaloUnexpectedResponse(
            f"connection {connection.name!r}: Halo's token answer has no access_token: "
            f"{summarize_body(response.text)}",
            http_status=response.status_code,
        ) from None
    if not isinstance(value, str) or not value:
        raise HaloUnexpectedResponse(
            f"connection {connection.name!r}: Halo's token answer has an empty access_token",
            http_status=response.status_code,
        )
    return AccessToken(value, time.time() + lifetime_s)


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
        self._key = f"halo:token:{connection.name}"
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
