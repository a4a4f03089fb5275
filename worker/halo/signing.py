"""Lookup lists in the shared cache, bound to their connection's client secret.

A cached lookup list decides which id a name such as "Closed" is written as, on real tickets.
Whoever can write the shared cache (Redis) but does not hold the connection's secret must not be
able to change that: each entry carries an HMAC-SHA256 over its key, its expiry and its value, keyed
from the client secret, and an entry whose tag does not verify (forged, damaged, written before
the tag existed, or under a rotated secret) or whose signed expiry has passed (an old entry
written back) is treated as absent, so the list is fetched from Halo again. The lists stay
readable JSON for operators: they hold names and ids, nothing secret.

Stored form: ``v1.<expiry, Unix ms>.<64 hex digits>.<the JSON>``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.connections import Connection

_VERSION: Final = "v1"
_TAG_HEX_CHARS: Final = 64  # SHA-256


class CacheSigner:
    """Tags and checks one connection's cached values. Thread-safe (it holds only its key)."""

    def __init__(self, connection: Connection) -> None:
        secret = connection.client_secret.get_secret_value().encode()
        # Its own derivation (another `info` than the token's sealing key), so the two keys
        # are unrelated although both come from the same secret.
        self._key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=f"halo lookup cache/{connection.name}/{connection.client_id}".encode(),
        ).derive(secret)

    def sign(self, key: str, value: str, *, expires_at_s: float) -> str:
        """`value` with a tag binding it to `key`, to its expiry (Unix seconds) and to the
        connection's secret."""
        expires_ms = str(int(expires_at_s * 1000))
        return f"{_VERSION}.{expires_ms}.{self._tag(key, expires_ms, value)}.{value}"

    def verify(self, key: str, stored: str, *, now_s: float) -> str | None:
        """The value of an entry `sign` made for this `key` that has not expired at `now_s`;
        None for anything else.

        Constant-time in the tag, so a forger learns nothing from how long a check takes.
        """
        version, _, rest = stored.partition(".")
        expires_ms, _, rest = rest.partition(".")
        tag, dot, value = rest.partition(".")
        if version != _VERSION or not dot or len(tag) != _TAG_HEX_CHARS:
            return None
        if not (expires_ms.isascii() and expires_ms.isdigit()):
            return None
        if not hmac.compare_digest(tag, self._tag(key, expires_ms, value)):
            return None
        # Signed, so an entry written back after its time is refused, however it got there.
        return value if int(expires_ms) > now_s * 1000 else None

    def _tag(self, key: str, expires_ms: str, value: str) -> str:
        # The key is inside the tag, so a valid entry cannot be copied under another key (the
        # team list passed off as the status list); NULs separate the parts unambiguously.
        message = b"\0".join((key.encode(), expires_ms.encode(), value.encode()))
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
