"""`halo-jobs doctor CONNECTION`: check one Halo connection end to end, and say what to fix.

    $ halo-jobs doctor acme --ticket 4711
    ok   file        /etc/halo/connections.toml has [connections.acme]
    ok   secret      HALO_ACME_SECRET is set (value not shown)
    ok   connection  https://acme.halopsa.com/api, client id "3f1c...", scope "all"
    ok   redis       redis://redis:6379/0 answers; the doctor's requests count against the budget
    ok   token       issued in 120 ms by https://acme.halopsa.com/auth/token, scope "all"
    ok   api route   https://acme.halopsa.com/api answers (GET /api/Status: 200 in 35 ms)
    ok   statuses    12 read in 35 ms
    ok   agents      8 read in 30 ms
    FAIL teams       403: the API application's agent lacks permission to read teams
                     Halo answered: Access is denied
                     fix: in Halo, give the API application's agent (or its role) access to teams
    ok   ticket      4711 read in 41 ms: SLA 1, status id 1
    ok   priorities  4 read for SLA 1 in 22 ms
    ok   rate limit  300/300s configured; Halo has stated no lower limit
    ok   batching    on: list reads honour ticketids (seen 4 min ago); no POST of several ...
    1 check(s) failed, 12 passed

Every Halo request goes through the worker's own `HaloClient`, built as the workers build theirs
(`worker.operations.halo_clients`), so it is budgeted by the fleet's shared governor (when
Redis answers), counted and classified exactly as a job's would be; a
`operators.diagnosis.Watcher` under it sees timings, the scope granted and Halo's words on a
refusal, and keeps no token. The doctor asks for its own token (it neither
reads nor replaces the fleet's cached one), so the credentials are tested as configured here.
It only reads Halo: whether the application may write (edit:tickets, closed tickets, status
changes, reassigning) shows only when a job writes.

This module runs the checks in order and prints each line as it ends; it checks the
configuration, Redis and the rate limit itself. The Halo lines are `operators.halochecks`'s,
the batching line `operators.batching`'s, and each line's form and fix `operators.diagnosis`'s.

Exit status: 0 when no check failed, 1 otherwise; `warn` and `skip` lines do not fail.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import redis
from pydantic import ValidationError

from operators.batching import batching_check
from operators.diagnosis import Check, Watcher, quoted
from operators.halochecks import halo_checks
from worker.connections import Connection, ConnectionsError, load_connections
from worker.operations import halo_clients, rate_limit, result_redis
from worker.settings import Settings, get_settings


def doctor(name: str, *, ticket_id: int | None = None, out: TextIO | None = None) -> int:
    """Check connection `name` and print the report; returns the exit status (0 or 1)."""
    stream = out or sys.stdout
    try:
        settings = get_settings()
    except ValidationError as exc:
        detail = " ".join(str(exc).split())[:300]
        check = Check("FAIL", "settings", f"the HALO_* environment is invalid: {detail}")
        print("\n".join(check.lines()), file=stream)
        return 1
    report = _Doctor(name, settings, stream)
    report.run(ticket_id)
    return report.finish()


class _Doctor:
    def __init__(self, name: str, settings: Settings, out: TextIO) -> None:
        self.name = name
        self.settings = settings
        self.out = out
        self.checks: list[Check] = []

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        print("\n".join(check.lines()), file=self.out, flush=True)
        return check

    def finish(self) -> int:
        failed = sum(1 for check in self.checks if check.status == "FAIL")
        passed = sum(1 for check in self.checks if check.status in ("ok", "warn"))
        if failed:
            print(f"{failed} check(s) failed, {passed} passed", file=self.out)
            return 1
        print(f"all {passed} checks passed", file=self.out)
        return 0

    def run(self, ticket_id: int | None) -> None:
        connection = self._configuration()
        if connection is None:
            self.add(Check("skip", "halo", "not contacted: fix the configuration first"))
            return
        client = self._redis()
        watcher = Watcher(connection.token_url)
        clients = halo_clients(
            self.settings,
            {connection.name: connection},
            store=client,
            share_cache=False,
            transport=watcher,
        )
        try:
            for check in halo_checks(clients.for_job(connection.name), watcher, ticket_id):
                self.add(check)
            self._rate_limit(connection, client)
            self.add(batching_check(connection, client))
        finally:
            clients.close()
            if client is not None:
                client.close()

    # -- configuration -------------------------------------------------------------------------

    def _configuration(self) -> Connection | None:
        path = self.settings.connections_file.absolute()
        try:
            tables = tomllib.loads(path.read_text(encoding="utf-8")).get("connections")
        except FileNotFoundError:
            self.add(Check("FAIL", "file", f"{path} not found", fix=_FILE_FIX))
            return None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            self.add(Check("FAIL", "file", f"{path}: {exc}", fix="correct the file's TOML"))
            return None
        table = tables.get(self.name) if isinstance(tables, dict) else None
        if not isinstance(table, dict):
            names = ", ".join(sorted(tables)) if isinstance(tables, dict) else "none"
            detail = f"{path} has no [connections.{self.name}] (it has: {names or 'none'})"
            self.add(Check("FAIL", "file", detail, fix=_FILE_FIX))
            return None
        self.add(Check("ok", "file", f"{path} has [connections.{self.name}]"))
        if self.add(_secret_check(table)).status == "FAIL":
            return None
        try:
            connection = load_connections(path)[self.name]
        except ConnectionsError as exc:
            fix = "the workers load every connection in the file and cannot start until it is fixed"
            self.add(Check("FAIL", "connection", str(exc), fix=fix))
            return None
        client_id, scope = quoted(connection.client_id), quoted(connection.scope)
        detail = f"{connection.api_url}, client id {client_id}, scope {scope}"
        self.add(Check("ok", "connection", detail))
        return connection

    def _redis(self) -> redis.Redis | None:
        url = self.settings.results_redis_url
        shown = _without_password(url)
        try:
            client = result_redis(self.settings)
            client.ping()
        except (redis.RedisError, OSError, ValueError) as exc:
            detail = (
                f"{shown} unreachable ({type(exc).__name__}): the requests below are not "
                "counted in the fleet's shared budget, and the learned rate limit is unknown"
            )
            fix = "check HALO_RESULT_URL (default HALO_BROKER_URL) and that this host reaches it"
            self.add(Check("warn", "redis", detail, fix=fix))
            return None
        detail = f"{shown} answers; the doctor's requests count against the fleet's budget"
        self.add(Check("ok", "redis", detail))
        return client

    # -- rate limit ----------------------------------------------------------------------------

    def _rate_limit(self, connection: Connection, client: redis.Redis | None) -> None:
        configured = connection.rate_limit
        try:
            effective = rate_limit(client, connection) if client is not None else None
        except redis.RedisError:
            effective = None
        if effective is None:
            detail = f"{configured} configured; the learned limit is unknown (Redis unreachable)"
            self.add(Check("warn", "rate limit", detail))
        elif effective == configured:
            detail = f"{configured} configured; Halo has stated no lower limit"
            self.add(Check("ok", "rate limit", detail))
        else:
            detail = (
                f"{configured} configured, but Halo stated {effective} in a 429: the fleet "
                f"keeps to {effective} (learned, for up to a day)"
            )
            fix = (
                f'if that is the tenant\'s limit, set rate_limit = "{effective}" on the connection'
            )
            self.add(Check("warn", "rate limit", detail, fix=fix))


_FILE_FIX = "set HALO_CONNECTIONS_FILE to the workers' connections file, or check the name"


def _secret_check(table: dict[str, Any]) -> Check:
    env_name, file_name = table.get("client_secret_env"), table.get("client_secret_file")
    if isinstance(env_name, str) and env_name.strip():
        if os.environ.get(env_name.strip(), "").strip():
            return Check("ok", "secret", f"{env_name} is set (value not shown)")
        fix = f"set {env_name} to the API application's client secret, here and on the workers"
        return Check("FAIL", "secret", f"{env_name} is not set, or empty", fix=fix)
    if isinstance(file_name, str) and file_name.strip():
        try:
            present = bool(Path(file_name).read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError) as exc:
            return Check("FAIL", "secret", f"cannot read {file_name}: {exc}")
        if present:
            return Check("ok", "secret", f"read from {file_name} (value not shown)")
        return Check("FAIL", "secret", f"{file_name} is empty")
    fix = "set client_secret_env (or client_secret_file) on the connection"
    return Check("FAIL", "secret", "the connection names no client secret", fix=fix)


def _without_password(url: str) -> str:
    """A Redis URL fit to print: no user or password."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return f"{parts.scheme}://{parts.path}"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
