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

Exit status: 0 when no check failed, 1 otherwise; `warn` and `skip` lines do not fail.
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import redis
from pydantic import ValidationError

from operators.batching import batching_check
from operators.diagnosis import (
    Check,
    Exchange,
    Watcher,
    explain,
    quoted,
    route_missing,
    token_refused,
)
from worker.connections import Connection, ConnectionsError, load_connections
from worker.errors import JobError
from worker.halo.client import HaloClient
from worker.halo.errors import halo_could_not_answer, route_answers, summarize_body
from worker.halo.lookups import LookupKind
from worker.operations import halo_clients, rate_limit, result_redis
from worker.settings import Settings, get_settings

# Scopes that allow a ticket update (FACTS, Authentication).
_UPDATE_SCOPES = frozenset({"all", "all:standard", "edit:tickets"})


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
            self._halo(clients.for_job(connection.name), watcher, ticket_id)
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

    # -- Halo ----------------------------------------------------------------------------------

    def _halo(self, client: HaloClient, watcher: Watcher, ticket_id: int | None) -> None:
        # The first read fetches the token: the watcher tells the two requests apart.
        statuses = _timed(watcher, lambda: client.lookup("status"))
        token = next((e for e in watcher.exchanges if e.token_request), None)
        checked = self._token_check(client.connection, token, statuses.error, watcher)
        if self.add(checked).status != "ok":
            self.add(Check("skip", "halo reads", "not tried without a token"))
            return
        if self.add(_route_check(client.connection, statuses, watcher)).status == "FAIL":
            self.add(Check("skip", "halo reads", "not tried where Halo's API does not answer"))
            return
        self._lookup_check("statuses", "status", statuses, watcher)
        self._lookup_check(
            "agents", "agent", _timed(watcher, lambda: client.lookup("agent")), watcher
        )
        self._lookup_check("teams", "team", _timed(watcher, lambda: client.lookup("team")), watcher)
        if ticket_id is None:
            self.add(Check("skip", "ticket", "give --ticket ID to read a ticket and its SLA"))
            return
        read = _timed(watcher, lambda: client.get_ticket(ticket_id))
        ticket = read.result
        if read.error is not None or not isinstance(ticket, dict):
            self.add(_explain_read("ticket", "ticket", read.error, watcher))
            return
        sla_id = ticket.get("sla_id") if isinstance(ticket.get("sla_id"), int) else None
        detail = f"{ticket_id} read in {read.elapsed_ms:.0f} ms: SLA {sla_id}, status id "
        self.add(Check("ok", "ticket", detail + str(ticket.get("status_id"))))
        priorities = _timed(watcher, lambda: client.lookup("priority", sla_id=sla_id))
        self._lookup_check("priorities", "priority", priorities, watcher, f" for SLA {sla_id}")

    def _token_check(
        self,
        connection: Connection,
        token: Exchange | None,
        error: Exception | None,
        watcher: Watcher,
    ) -> Check:
        if token is None and error is None:
            # Sent through a proxy mount from the environment, past the watcher.
            return Check("ok", "token", "issued (not timed: the request went through a proxy)")
        if token is None:
            # No token request went out: the fleet's budget had no room for it.
            return _explain_read("token", "token", error, None)
        if token.status is not None and halo_could_not_answer(token.status):
            # Halo could not answer now, as it could not answer any request now.
            return _explain_read("token", "token", error, watcher)
        if token.error is not None or token.status is None or token.status >= 300:
            return token_refused(connection, token)
        asked = connection.scope
        granted = token.scope
        shown = f"scope {quoted(granted)}" if granted else "no scope stated by Halo"
        if granted and granted != asked:
            shown += f" (asked {quoted(asked)})"
        detail = f"issued in {token.elapsed_ms:.0f} ms by {connection.token_url}, {shown}"
        if granted and not set(granted.split()) & _UPDATE_SCOPES:
            fix = (
                'an update needs scope "all" or "edit:tickets": allow it in the Halo API '
                "application and set scope on the connection"
            )
            return Check("FAIL", "token", detail, fix=fix)
        return Check("ok", "token", detail)

    def _lookup_check(
        self, name: str, kind: LookupKind, read: _Read, watcher: Watcher, scope: str = ""
    ) -> None:
        if read.error is not None or not isinstance(read.result, tuple):
            self.add(_explain_read(name, kind, read.error, watcher))
            return
        count = len(read.result[0])
        if count == 0:
            fix = f"a job naming a {kind} fails with lookup_not_found until Halo lists some"
            self.add(Check("warn", name, f"Halo lists no {name}{scope}", fix=fix))
            return
        self.add(Check("ok", name, f"{count} read{scope} in {read.elapsed_ms:.0f} ms"))

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


def _route_check(connection: Connection, statuses: _Read, watcher: Watcher) -> Check:
    """Whether Halo's API answers at the url, judged from the status list's read by the rule
    the workers use (`worker.halo.errors.route_answers`): a success or a 403 shows the
    endpoint is there. Only then can a 404 on a ticket mean "no such ticket"."""
    last = next((e for e in reversed(watcher.exchanges) if not e.token_request), None)
    answers = route_answers(statuses.error)
    if answers:
        answered = f"{last.status} in {last.elapsed_ms:.0f} ms" if last and last.status else "ok"
        detail = f"{connection.api_url} answers (GET /api/Status: {answered})"
        return Check("ok", "api route", detail)
    if answers is False:
        said = summarize_body(last.body_head) if last and last.body_head else None
        return route_missing(connection, said)
    return Check("skip", "api route", "not known: GET /api/Status did not answer (see statuses)")


@dataclass(frozen=True)
class _Read:
    """One read of Halo: its result or its error, and how long its API request took."""

    result: Any
    error: Exception | None
    elapsed_ms: float


def _timed(watcher: Watcher, call: Callable[[], Any]) -> _Read:
    before = len(watcher.exchanges)
    started_s = time.perf_counter()
    try:
        result, error = call(), None
    except (JobError, redis.RedisError) as exc:
        result, error = None, exc
    api = [e.elapsed_ms for e in watcher.exchanges[before:] if not e.token_request]
    return _Read(result, error, sum(api) if api else (time.perf_counter() - started_s) * 1000)


def _explain_read(name: str, what: str, error: Exception | None, watcher: Watcher | None) -> Check:
    last = watcher.exchanges[-1] if watcher and watcher.exchanges else None
    return explain(name, what, error, last)


def _without_password(url: str) -> str:
    """A Redis URL fit to print: no user or password."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return f"{parts.scheme}://{parts.path}"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
