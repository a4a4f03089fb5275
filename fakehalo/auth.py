"""OAuth2 client credentials and bearer tokens, as Halo's auth server issues and checks them.

Scopes are kept simple but real: `all` (or `all:standard`) grants everything; ticket reads need
`read:tickets` or `edit:tickets`; a ticket POST needs `edit:tickets`. Lookup lists need only a
valid token.

Not thread-safe on its own: `FakeHalo` holds its lock around every call.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# A documented demo pair, so a fake started without configuration can be used at once.
DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105 (a public demo credential of a test double)

# Halo's usual token lifetime; tests shorten it, code must read expires_in rather than assume it.
DEFAULT_TOKEN_TTL_S = 3600

_FULL_SCOPES = frozenset({"all", "all:standard"})
# Holding the right to edit implies the right to read what one edits.
_IMPLIED = {"read:tickets": frozenset({"edit:tickets"})}


@dataclass
class Token:
    """An issued access token.

    Attributes:
        client_id: the API application it was issued to.
        scopes: the scopes granted.
        expires_at: clock time (seconds) after which it is refused.
        revoked: set by `TokenStore.expire_all`: refused as expired from then on.
    """

    client_id: str
    scopes: frozenset[str]
    expires_at: float
    revoked: bool = False

    def allows(self, scope: str) -> bool:
        """Whether this token may do what `scope` guards."""
        if self.scopes & _FULL_SCOPES or scope in self.scopes:
            return True
        return bool(self.scopes & _IMPLIED.get(scope, frozenset()))


class Refusal(enum.Enum):
    """Why a bearer token was refused."""

    MISSING = "missing"
    UNKNOWN = "unknown"
    EXPIRED = "expired"


class TokenStore:
    """Issues and checks tokens for a set of client credentials."""

    def __init__(self, clients: Mapping[str, str], *, clock: Callable[[], float]) -> None:
        """Accept the given `client_id -> client_secret` pairs.

        Args:
            clients: valid credentials.
            clock: monotonic time source in seconds.
        """
        self.clients = dict(clients)
        self._clock = clock
        self._tokens: dict[str, Token] = {}

    def issue(self, form: Mapping[str, str], *, ttl_s: int) -> tuple[int, dict[str, Any]]:
        """Answer a token request.

        Args:
            form: the decoded form of `POST /auth/token`.
            ttl_s: lifetime of the token, in seconds, announced as `expires_in`.

        Returns:
            (HTTP status, JSON body): 200 with the token; 400 `unsupported_grant_type`; 401
            `invalid_client` for unknown credentials.
        """
        if form.get("grant_type") != "client_credentials":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "Only grant_type=client_credentials is supported.",
            }
        client_id = form.get("client_id", "")
        expected = self.clients.get(client_id)
        given = form.get("client_secret", "")
        if expected is None or not hmac.compare_digest(expected.encode(), given.encode()):
            return 401, {
                "error": "invalid_client",
                "error_description": "The client credentials are invalid.",
            }
        scope = form.get("scope") or "all"
        access_token = secrets.token_urlsafe(32)
        self._tokens[access_token] = Token(
            client_id=client_id,
            scopes=frozenset(scope.split()),
            expires_at=self._clock() + ttl_s,
        )
        return 200, {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl_s,
            "scope": scope,
        }

    def check(self, authorization: str | None) -> Token | Refusal:
        """The token an `Authorization` header carries, or why it is refused."""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return Refusal.MISSING
        token = self._tokens.get(value.strip())
        if token is None:
            return Refusal.UNKNOWN
        if token.revoked or self._clock() >= token.expires_at:
            return Refusal.EXPIRED
        return token

    def expire_all(self) -> int:
        """Make every token issued so far expired. Idempotent. Returns how many were live."""
        live = [t for t in self._tokens.values() if not t.revoked]
        for token in live:
            token.revoked = True
        return len(live)

    def clear(self) -> None:
        """Forget every token."""
        self._tokens.clear()
