"""Halo's URLs in the connections file, as users paste them from Halo's API settings page.

Each row is one connection as written, and what the workers then call: the resource base
(`api_url`, where tickets are read) and the token endpoint (`token_url`), or the error that
stops the worker at start, naming the connection and the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from worker.connections import ConnectionsError, load_connections

ENV = {"HALO_ACME_SECRET": "s3cr3t"}
API = "https://acme.halopsa.com/api"
TOKEN = "https://acme.halopsa.com/auth/token"


H = "https://acme.halopsa.com"  # the tenant's web address, as Halo's pages show it


def load(tmp_path: Path, keys: Mapping[str, str | bool]) -> tuple[str, str]:
    path = tmp_path / "connections.toml"
    path.write_text(
        "[connections.acme]\n"
        'client_id = "3f1c-client"\n'
        'client_secret_env = "HALO_ACME_SECRET"\n'
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items()),
        encoding="utf-8",
    )
    connection = load_connections(path, ENV)["acme"]
    return connection.api_url, connection.token_url


@pytest.mark.parametrize(
    ("keys", "api_url", "token_url"),
    [
        # The web address, as before.
        ({"url": H}, API, TOKEN),
        ({"url": f"{H}/"}, API, TOKEN),
        # The Resource Server URL as Halo shows it, with the default auth_url.
        ({"url": f"{H}/api"}, API, TOKEN),
        ({"url": f"{H}/api/"}, API, TOKEN),
        ({"url": f"{H}/API"}, API, TOKEN),
        ({"url": f"  {H}/api  "}, API, TOKEN),
        # Both as Halo shows them.
        ({"url": f"{H}/api", "auth_url": f"{H}/auth"}, API, TOKEN),
        ({"url": f"{H}/api", "auth_url": f"{H}/auth/"}, API, TOKEN),
        # The token endpoint itself pasted as auth_url.
        ({"url": H, "auth_url": f"{H}/auth/token"}, API, TOKEN),
        ({"url": H, "auth_url": f"{H}/auth/token/"}, API, TOKEN),
        # The names Halo's page uses.
        ({"resource_server": f"{H}/api"}, API, TOKEN),
        ({"resource_server": f"{H}/api", "authorisation_server": f"{H}/auth"}, API, TOKEN),
        # Scheme and host in any case; a port, an IPv6 host; an authorisation server on
        # another host, under a path of its own.
        ({"url": "HTTPS://Acme.HaloPSA.com/api"}, API, TOKEN),
        (
            {"url": "http://127.0.0.1:8080/api", "allow_insecure_http": True},
            "http://127.0.0.1:8080/api",
            "http://127.0.0.1:8080/auth/token",
        ),
        (
            {"url": "http://[::1]:8080", "allow_insecure_http": True},
            "http://[::1]:8080/api",
            "http://[::1]:8080/auth/token",
        ),
        (
            {"url": "https://halo.msp.example/api", "auth_url": "https://login.msp.example/h/auth"},
            "https://halo.msp.example/api",
            "https://login.msp.example/h/auth/token",
        ),
    ],
)
def test_urls_are_accepted_as_halo_shows_them(
    tmp_path: Path, keys: Mapping[str, str | bool], api_url: str, token_url: str
) -> None:
    assert load(tmp_path, keys) == (api_url, token_url)


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        # Not an http(s) URL.
        ({"url": "acme.halopsa.com"}, "connections.acme.url: must be an http(s) URL"),
        ({"url": "ftp://acme.halopsa.com"}, "connections.acme.url: must be an http(s) URL"),
        ({"url": "https:///api"}, "connections.acme.url: must be an http(s) URL"),
        ({"url": f"{H} /api"}, "connections.acme.url: must be an http(s) URL without spaces"),
        ({"url": f"{H}:99999"}, "connections.acme.url: has an invalid port"),
        # A path that cannot lead to Halo's API.
        ({"url": f"{H}/api/api"}, "connections.acme.url: path '/api/api' of"),
        ({"url": f"{H}/auth"}, "connections.acme.url: path '/auth' of"),
        ({"url": f"{H}/api/Tickets"}, "connections.acme.url: path '/api/Tickets' of"),
        ({"url": f"{H}/halo"}, "is neither empty nor /api"),
        # Query strings, fragments and credentials.
        ({"url": f"{H}/api?tenant=acme"}, "connections.acme.url: must not have a query string"),
        ({"url": f"{H}/api?"}, "connections.acme.url: must not have a query string"),
        ({"url": f"{H}/#/api"}, "connections.acme.url: must not have a fragment"),
        ({"url": "https://sam:pw@acme.halopsa.com"}, "connections.acme.url: must not hold a user"),
        # An auth_url that is not Halo's authorisation server.
        ({"url": H, "auth_url": H}, "connections.acme.auth_url: path '' of"),
        ({"url": H, "auth_url": f"{H}/token"}, "does not end in /auth or /auth/token"),
        ({"url": H, "auth_url": f"{H}/api/auth"}, f"connections.acme.auth_url: '{H}/api/auth' is"),
        ({"url": H, "auth_url": f"{H}/auth/token?tenant=acme"}, "a tenant goes in the connection"),
        ({"url": H, "auth_url": "mailto:a@halopsa.com"}, "acme.auth_url: must be an http(s) URL"),
        # The names Halo's page uses are checked alike, and named in the error.
        ({"resource_server": f"{H}/v2/api"}, "connections.acme.resource_server: path '/v2/api'"),
        (
            {"url": H, "authorisation_server": f"{H}/oauth"},
            "connections.acme.authorisation_server: path '/oauth' of",
        ),
        # One setting, two names.
        (
            {"url": H, "resource_server": f"{H}/api"},
            "connections.acme: set url or resource_server, not both",
        ),
        (
            {"url": H, "auth_url": f"{H}/auth", "authorisation_server": f"{H}/auth"},
            "connections.acme: set auth_url or authorisation_server, not both",
        ),
        ({}, "connections.acme.url: required key is missing"),
    ],
)
def test_urls_that_cannot_lead_to_halo_stop_the_load_naming_the_connection_and_key(
    tmp_path: Path, keys: dict[str, str], error: str
) -> None:
    with pytest.raises(ConnectionsError) as caught:
        load(tmp_path, keys)
    assert error in str(caught.value)


def test_a_password_in_a_url_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectionsError) as caught:
        load(tmp_path, {"url": "https://sam:hunter2@acme.halopsa.com/api"})
    assert "hunter2" not in str(caught.value)
    assert "https://***@acme.halopsa.com/api" in str(caught.value)
