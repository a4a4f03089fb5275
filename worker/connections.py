"""Halo connections: the `HALO_CONNECTIONS_FILE` TOML that names each Halo a job may target.

A job says only `"connection": "acme"`; the URL, client id and secret live here, on the
workers, so no job or result ever carries a credential (CONTRACT §5).

Halo is reached over https only: the token request carries the client secret and every other
request a bearer token. A connection to a test Halo on plain http (the fake Halo of the tests
and the demo) must say so with ``allow_insecure_http = true``; it is not limited to loopback,
since the compose demo reaches its fake Halo by service name.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from worker.halo.urls import authorisation_server, web_address

_KEYS = frozenset(
    {
        "url",
        "auth_url",
        "resource_server",
        "authorisation_server",
        "tenant",
        "client_id",
        "client_secret_env",
        "client_secret_file",
        "scope",
        "rate_limit",
        "allow_insecure_http",
        "batching",
    }
)
# `batching`: "auto" batches a backlog once the tenant has shown it answers batched requests
# as the worker reads them (`worker.learned`); "off" never batches it.
BATCHING_MODES = ("auto", "off")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}
# Halo's hosted tenants report "300 Requests per rolling 5 minute window"; the lowest figure
# seen is the safe default until the connection's own rate_limit or Halo's 429 text says more.
DEFAULT_RATE_LIMIT = "300/300s"


class ConnectionsError(ValueError):
    """Raised when the connections file is missing, malformed, or names a secret not present."""


@dataclass(frozen=True)
class RateLimit:
    """`requests` per rolling `window_s` seconds."""

    requests: int
    window_s: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``"300/300s"``, ``"300/5m"`` or ``"10000/1h"``.

        Raises:
            ValueError: the text is not of that form, or a number is zero.
        """
        match = _RATE.match(text)
        if not match or int(match[1]) == 0 or float(match[2]) == 0:
            raise ValueError(f"{text!r} is not a rate like '300/300s' (requests/window, s|m|h)")
        return cls(int(match[1]), float(match[2]) * _UNIT_S[match[3]])

    def __str__(self) -> str:
        return f"{self.requests}/{self.window_s:g}s"


@dataclass(frozen=True)
class Connection:
    """One Halo tenant the workers can write to."""

    name: str
    url: str
    auth_url: str
    tenant: str | None
    client_id: str
    client_secret: SecretStr
    scope: str
    rate_limit: RateLimit
    batching: str = "auto"

    @property
    def api_url(self) -> str:
        """Base of resource calls: ``{url}/api``."""
        return f"{self.url}/api"

    @property
    def token_url(self) -> str:
        """Where client-credentials tokens come from: ``{auth_url}/token``."""
        return f"{self.auth_url}/token"


def load_connections(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, Connection]:
    """Read and check every connection in a connections file.

    Args:
        path: the TOML file (`HALO_CONNECTIONS_FILE`).
        environ: where `client_secret_env` variables are read; the process environment by default.

    Raises:
        ConnectionsError: with a message naming the connection and the key to fix.
    """
    env = os.environ if environ is None else environ
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConnectionsError(
            f"{path}: connections file not found (set HALO_CONNECTIONS_FILE)"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConnectionsError(f"{path}: cannot read connections file: {exc}") from None
    tables = document.get("connections")
    if not isinstance(tables, dict) or not tables:
        raise ConnectionsError(f"{path}: no [connections.<name>] table found")
    return {name: _connection(path, name, table, env) for name, table in tables.items()}


def _connection(path: Path, name: str, table: Any, env: Mapping[str, str]) -> Connection:
    where = f"{path}: connections.{name}"
    if not isinstance(table, dict):
        raise ConnectionsError(f"{where}: must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConnectionsError(f"{where}: unknown key {unknown[0]!r} (allowed: {sorted(_KEYS)})")

    def text(key: str, *, required: bool = False) -> str | None:
        value = table.get(key)
        if value is None and required:
            raise ConnectionsError(f"{where}.{key}: required key is missing")
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConnectionsError(f"{where}.{key}: must be a non-empty string")
        return value.strip() if value is not None else None

    insecure = table.get("allow_insecure_http", False)
    if not isinstance(insecure, bool):
        raise ConnectionsError(f"{where}.allow_insecure_http: must be true or false")
    url, auth_url = _halo_urls(where, text)
    for key, value in (("url", url), ("auth_url", auth_url)):
        _require_https(where, key, value, insecure=insecure, table_name=f"[connections.{name}]")
    rate_text = text("rate_limit") or DEFAULT_RATE_LIMIT
    try:
        rate_limit = RateLimit.parse(rate_text)
    except ValueError as exc:
        raise ConnectionsError(f"{where}.rate_limit: {exc}") from None
    batching = table.get("batching", "auto")
    if batching not in BATCHING_MODES:
        raise ConnectionsError(f'{where}.batching: must be "auto" or "off", got {batching!r}')
    return Connection(
        name=name,
        url=url,
        auth_url=auth_url,
        tenant=text("tenant"),
        client_id=text("client_id", required=True) or "",
        client_secret=_secret(where, text("client_secret_env"), text("client_secret_file"), env),
        scope=text("scope") or "all",
        rate_limit=rate_limit,
        batching=batching,
    )


def _require_https(where: str, key: str, value: str, *, insecure: bool, table_name: str) -> None:
    """Refuse plain http unless the connection says it is a local test Halo
    (``allow_insecure_http = true``)."""
    if value.lower().startswith("http://") and not insecure:
        raise ConnectionsError(
            f"{where}.{key}: {value!r} is plain http, which would send the client secret and "
            "access tokens in clear; use https://, or, for a local test Halo only, set "
            f"allow_insecure_http = true in {table_name}"
        )


def _halo_urls(where: str, text: Callable[..., str | None]) -> tuple[str, str]:
    """The connection's web address and authorisation server, from `url` / `auth_url` or
    the names Halo's API settings page gives them, `resource_server` / `authorisation_server`,
    accepted as that page shows them (see `worker.halo.urls`)."""
    url_key = _one_of(where, text, "url", "resource_server")
    try:
        url = web_address(text(url_key, required=True) or "")
    except ValueError as exc:
        raise ConnectionsError(f"{where}.{url_key}: {exc}") from None
    auth_key = _one_of(where, text, "auth_url", "authorisation_server")
    given = text(auth_key)
    if given is None:
        return url, f"{url}/auth"
    try:
        return url, authorisation_server(given)
    except ValueError as exc:
        raise ConnectionsError(f"{where}.{auth_key}: {exc}") from None


def _one_of(where: str, text: Callable[..., str | None], key: str, alias: str) -> str:
    """Which of two keys naming one setting the table uses (`key` when neither)."""
    if text(alias) is None:
        return key
    if text(key) is not None:
        raise ConnectionsError(f"{where}: set {key} or {alias}, not both (they name one setting)")
    return alias


def _secret(
    where: str, env_name: str | None, file_name: str | None, env: Mapping[str, str]
) -> SecretStr:
    if (env_name is None) == (file_name is None):
        raise ConnectionsError(
            f"{where}: set exactly one of client_secret_env or client_secret_file"
        )
    if env_name is not None:
        secret = env.get(env_name, "").strip()
        if not secret:
            raise ConnectionsError(
                f"{where}.client_secret_env: environment variable {env_name} is not set or empty"
            )
        return SecretStr(secret)
    try:
        secret = Path(file_name or "").read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConnectionsError(
            f"{where}.client_secret_file: cannot read {file_name}: {exc.strerror}"
        ) from None
    if not secret:
        raise ConnectionsError(f"{where}.client_secret_file: {file_name} is empty")
    return SecretStr(secret)
