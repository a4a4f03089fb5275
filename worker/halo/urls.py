"""Halo's two base URLs, read the way users paste them from Halo's API settings page.

That page shows a "Resource Server" (``https://acme.halopsa.com/api``) and an "Authorisation
Server" (``https://acme.halopsa.com/auth``). The client needs the web address, to which it
appends ``/api/...``, and the authorisation server, to which it appends ``/token``. Both are
accepted as Halo shows them and as the web address, and anything that cannot lead to Halo's
API is refused here, when the connections file loads, rather than as a 404 on every job (a
404 on a ticket read would otherwise say "no such ticket").

The functions raise `ValueError` with a message that does not name the key; the connections
file prefixes the connection and key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

_SCHEMES: Final = ("http", "https")
_API_PATH: Final = "/api"
_AUTH_PATH: Final = "/auth"
_TOKEN_PATH: Final = "/token"  # noqa: S105 - a path, not a password
_RESOURCE_HINT: Final = (
    "use Halo's web address (https://<tenant>.halopsa.com) or the Resource Server URL from "
    "Halo's API settings (https://<tenant>.halopsa.com/api)"
)
_AUTH_HINT: Final = (
    "use the Authorisation Server URL from Halo's API settings "
    "(https://<tenant>.halopsa.com/auth), or leave auth_url out for <url>/auth"
)


@dataclass(frozen=True)
class _Parts:
    origin: str  # scheme://host[:port], scheme and host in lower case
    path: str  # without trailing slashes


def web_address(text: str) -> str:
    """The Halo web address (``scheme://host[:port]``) from a pasted web address or Resource
    Server URL; the API is then ``<web address>/api``.

    ``https://acme.halopsa.com``, ``https://acme.halopsa.com/`` and
    ``https://acme.halopsa.com/api/`` all give ``https://acme.halopsa.com``. Halo matches paths
    without regard to case, so ``/API`` is the same path.

    Raises:
        ValueError: not an http(s) URL with a host; a user name or password, query string or
            fragment in it; or a path other than none and ``/api``.
    """
    parts = _split(text)
    if parts.path.lower() not in ("", _API_PATH):
        raise ValueError(
            f"path {parts.path!r} of {text!r} is neither empty nor /api, so it cannot lead to "
            f"Halo's API: {_RESOURCE_HINT}"
        )
    return parts.origin


def authorisation_server(text: str) -> str:
    """Halo's authorisation server (tokens come from ``<it>/token``), from a pasted
    Authorisation Server URL, with or without ``/token``.

    ``https://acme.halopsa.com/auth``, ``.../auth/`` and ``.../auth/token`` all give
    ``https://acme.halopsa.com/auth``. A path before ``/auth`` is kept (an authorisation server
    on its own path), except ``/api``: Halo never serves tokens under its resource server.

    Raises:
        ValueError: not an http(s) URL with a host; a user name or password, query string or
            fragment in it; a path that does not end in ``/auth`` or ``/auth/token``, or one
            under ``/api``.
    """
    parts = _split(text)
    path = parts.path
    if path.lower().endswith(_AUTH_PATH + _TOKEN_PATH):
        path = path[: -len(_TOKEN_PATH)]
    if not path.lower().endswith(_AUTH_PATH):
        raise ValueError(
            f"path {parts.path!r} of {text!r} does not end in /auth or /auth/token: {_AUTH_HINT}"
        )
    if path.lower().endswith(_API_PATH + _AUTH_PATH):
        raise ValueError(
            f"{text!r} is under /api, where Halo serves no tokens (tokens asked of "
            f"<url>/api/auth/token are answered 404): {_AUTH_HINT}"
        )
    return parts.origin + path


def _split(text: str) -> _Parts:
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ValueError(f"must be an http(s) URL without spaces, got {text!r}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or not parts.netloc or not parts.hostname:
        raise ValueError(f"must be an http(s) URL (https://<host>...), got {text!r}")
    if "@" in parts.netloc:
        # A password here would be copied into every log line that names the URL.
        raise ValueError(
            f"must not hold a user name or password (before '@'), got {_origin_only(text)!r}"
        )
    if "?" in text:
        raise ValueError(
            f"must not have a query string ('?...'), got {text!r}: a tenant goes in the "
            "connection's tenant key"
        )
    if "#" in text:
        raise ValueError(f"must not have a fragment ('#...'), got {text!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"has an invalid port, got {text!r}") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    origin = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    return _Parts(origin, parts.path.rstrip("/"))


def _origin_only(text: str) -> str:
    """The URL with what comes before '@' in its host part hidden."""
    scheme, _, rest = text.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
