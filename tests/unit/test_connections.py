"""The connections file (`HALO_CONNECTIONS_FILE`, CONTRACT §5): a bad file is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.connections import (
    DEFAULT_RATE_LIMIT,
    Connection,
    ConnectionsError,
    RateLimit,
    load_connections,
)

SECRET = "s3cr3t-value-never-shown"
ENV = {"HALO_ACME_SECRET": SECRET}
GOOD = """
[connections.acme]
url = "https://acme.halopsa.com/"
auth_url = "https://acme.halopsa.com/auth"
tenant = "acme"
client_id = "3f1c-client"
client_secret_env = "HALO_ACME_SECRET"
scope = "edit:tickets read:lookups"
rate_limit = "500/5m"

[connections.beta]
url = "http://beta.example:8080"
allow_insecure_http = true
client_id = "beta-client"
client_secret_file = "{secret_file}"
"""
MINIMAL = """
[connections.acme]
url = "https://acme.halopsa.com"
client_id = "3f1c-client"
client_secret_env = "HALO_ACME_SECRET"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connections.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConnectionsError) as caught:
        load_connections(write(tmp_path, text), ENV if environ is None else environ)
    return str(caught.value)


def with_line(line: str, *, drop: str | None = None) -> str:
    lines = [row for row in MINIMAL.splitlines() if drop is None or not row.startswith(drop)]
    return "\n".join([*lines, line]) + "\n"


def test_a_good_file_gives_every_connection(tmp_path: Path) -> None:
    secret_file = tmp_path / "beta.secret"
    secret_file.write_text("beta-secret\n", encoding="utf-8")
    loaded = load_connections(write(tmp_path, GOOD.format(secret_file=secret_file)), ENV)

    assert set(loaded) == {"acme", "beta"}
    acme = loaded["acme"]
    assert acme.name == "acme"
    assert acme.url == "https://acme.halopsa.com"  # trailing slash dropped
    assert acme.api_url == "https://acme.halopsa.com/api"
    assert acme.token_url == "https://acme.halopsa.com/auth/token"
    assert acme.tenant == "acme"
    assert acme.client_id == "3f1c-client"
    assert acme.client_secret.get_secret_value() == SECRET
    assert acme.scope == "edit:tickets read:lookups"
    assert acme.rate_limit == RateLimit(500, 300.0)

    beta = loaded["beta"]
    assert beta.auth_url == "http://beta.example:8080/auth"
    assert beta.tenant is None
    assert beta.scope == "all"
    assert beta.client_secret.get_secret_value() == "beta-secret"  # trimmed
    assert beta.rate_limit == RateLimit.parse(DEFAULT_RATE_LIMIT) == RateLimit(300, 300.0)


def test_the_process_environment_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALO_ACME_SECRET", "from-env")
    loaded = load_connections(write(tmp_path, MINIMAL))
    assert loaded["acme"].client_secret.get_secret_value() == "from-env"


def test_a_missing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConnectionsError, match="connections file not found") as caught:
        load_connections(tmp_path / "absent.toml", ENV)
    assert "HALO_CONNECTIONS_FILE" in str(caught.value)
    assert "absent.toml" in str(caught.value)


def test_bad_toml_is_refused_with_its_place(tmp_path: Path) -> None:
    message = refused(tmp_path, '[connections.acme]\nurl = "https://x\n')
    assert "cannot read connections file" in message
    assert "line 2" in message


def test_a_file_without_connections_is_refused(tmp_path: Path) -> None:
    assert "no [connections.<name>] table found" in refused(tmp_path, "[other]\nx = 1\n")
    assert "no [connections.<name>] table found" in refused(tmp_path, "connections = 3\n")


def test_a_connection_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, '[connections]\nacme = "x"\n').endswith(
        "connections.acme: must be a table"
    )


@pytest.mark.parametrize("key", ["url", "client_id"])
def test_a_missing_required_key_names_the_connection_and_key(tmp_path: Path, key: str) -> None:
    message = refused(tmp_path, with_line("", drop=key))
    assert message.endswith(f"connections.acme.{key}: required key is missing")


@pytest.mark.parametrize("key", ["client_id", "tenant", "scope"])
def test_an_empty_or_non_text_value_names_the_key(tmp_path: Path, key: str) -> None:
    assert refused(tmp_path, with_line(f'{key} = "  "', drop=key)).endswith(
        f"connections.acme.{key}: must be a non-empty string"
    )
    assert refused(tmp_path, with_line(f"{key} = 7", drop=key)).endswith(
        f"connections.acme.{key}: must be a non-empty string"
    )


@pytest.mark.parametrize("key", ["url", "auth_url"])
def test_a_url_must_be_http(tmp_path: Path, key: str) -> None:
    message = refused(tmp_path, with_line(f'{key} = "acme.halopsa.com"', drop=key))
    assert f"connections.acme.{key}: must be an http(s) URL" in message


@pytest.mark.parametrize(
    ("key", "lines"),
    [
        ("url", ['url = "http://acme.halopsa.com"']),
        ("url", ['url = "HTTP://acme.halopsa.com"']),
        ("auth_url", ['auth_url = "http://acme.halopsa.com/auth"']),
        ("url", ['url = "http://127.0.0.1:8080"', "allow_insecure_http = false"]),
    ],
)
def test_a_plain_http_url_is_refused_unless_the_connection_allows_it(
    tmp_path: Path, key: str, lines: list[str]
) -> None:
    message = refused(tmp_path, with_line("\n".join(lines), drop=key))

    assert f"connections.acme.{key}: " in message
    assert "plain http" in message
    assert "client secret" in message
    assert "allow_insecure_http = true in [connections.acme]" in message


def test_a_connection_that_allows_plain_http_may_use_it(tmp_path: Path) -> None:
    text = with_line('url = "http://halo-fake:8080"\nallow_insecure_http = true', drop="url")

    [acme] = load_connections(write(tmp_path, text), ENV).values()

    assert acme.url == "http://halo-fake:8080"
    assert acme.token_url == "http://halo-fake:8080/auth/token"


@pytest.mark.parametrize("value", ['"yes"', "1", '"true"'])
def test_allow_insecure_http_must_be_a_boolean(tmp_path: Path, value: str) -> None:
    message = refused(tmp_path, with_line(f"allow_insecure_http = {value}"))

    assert message.endswith("connections.acme.allow_insecure_http: must be true or false")


@pytest.mark.parametrize(("line", "batching"), [("", "auto"), ('batching = "off"', "off")])
def test_batching_is_auto_unless_the_connection_turns_it_off(
    tmp_path: Path, line: str, batching: str
) -> None:
    connection = load_connections(write(tmp_path, with_line(line)), ENV)["acme"]
    assert connection.batching == batching


@pytest.mark.parametrize("value", ['"on"', "false", '"OFF"'])
def test_a_batching_value_other_than_auto_or_off_is_named(tmp_path: Path, value: str) -> None:
    message = refused(tmp_path, with_line(f"batching = {value}"))
    assert 'connections.acme.batching: must be "auto" or "off", got ' in message


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    message = refused(tmp_path, with_line('client_secret = "inline"'))
    assert "connections.acme: unknown key 'client_secret'" in message


def test_both_secret_sources_are_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, with_line('client_secret_file = "/run/secrets/acme"'))
    assert message.endswith(
        "connections.acme: set exactly one of client_secret_env or client_secret_file"
    )


def test_neither_secret_source_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, with_line("", drop="client_secret_env"))
    assert message.endswith(
        "connections.acme: set exactly one of client_secret_env or client_secret_file"
    )


@pytest.mark.parametrize("environ", [{}, {"HALO_ACME_SECRET": ""}, {"HALO_ACME_SECRET": "  \n"}])
def test_an_unset_or_empty_secret_variable_is_named(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    message = refused(tmp_path, MINIMAL, environ)
    assert message.endswith(
        "connections.acme.client_secret_env: environment variable HALO_ACME_SECRET is not set "
        "or empty"
    )


def test_a_missing_secret_file_is_named(tmp_path: Path) -> None:
    absent = tmp_path / "nope.secret"
    text = with_line(f'client_secret_file = "{absent}"', drop="client_secret_env")
    message = refused(tmp_path, text)
    assert f"connections.acme.client_secret_file: cannot read {absent}" in message
    assert "No such file" in message


def test_an_empty_secret_file_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.secret"
    empty.write_text("\n  \n", encoding="utf-8")
    text = with_line(f'client_secret_file = "{empty}"', drop="client_secret_env")
    assert refused(tmp_path, text).endswith(
        f"connections.acme.client_secret_file: {empty} is empty"
    )


@pytest.mark.parametrize("rate", ["300", "0/300s", "300/0s", "300/5d", "fast", "-1/5m", "3/"])
def test_a_bad_rate_limit_is_named(tmp_path: Path, rate: str) -> None:
    message = refused(tmp_path, with_line(f'rate_limit = "{rate}"'))
    assert f"connections.acme.rate_limit: {rate!r} is not a rate like '300/300s'" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300/300s", RateLimit(300, 300.0)),
        ("300/5m", RateLimit(300, 300.0)),
        (" 700 / 5 m ", RateLimit(700, 300.0)),
        ("10000/1h", RateLimit(10000, 3600.0)),
        ("5/2.5s", RateLimit(5, 2.5)),
    ],
)
def test_rate_limits_parse_in_seconds(text: str, expected: RateLimit) -> None:
    assert RateLimit.parse(text) == expected


def test_a_rate_limit_prints_in_seconds() -> None:
    assert str(RateLimit.parse("300/5m")) == "300/300s"


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, with_line("colour = 'red'"))
    with pytest.raises(ConnectionsError, match=r"^" + str(path)):
        load_connections(path, ENV)


def test_connections_errors_are_value_errors() -> None:
    assert issubclass(ConnectionsError, ValueError)


def test_the_secret_never_appears_in_repr_or_str(tmp_path: Path) -> None:
    connection: Connection = load_connections(write(tmp_path, MINIMAL), ENV)["acme"]
    for text in (repr(connection), str(connection), f"{connection}", repr(vars(connection))):
        assert SECRET not in text
    assert "**********" in repr(connection)


def test_the_secret_never_appears_in_an_error(tmp_path: Path) -> None:
    message = refused(tmp_path, with_line('rate_limit = "bad"'))
    assert SECRET not in message
