"""Halo's REST endpoints, as the fake answers them: auth, tickets, lookups.

Paths are matched case-insensitively and query parameter names too. Halo ignores a query
parameter it does not know; the fake instead answers 400 to one that Halo's OpenAPI document does
not list for the operation, so that a client sending a misspelt or invented parameter (which
real Halo would silently ignore) fails its tests. Every `/api/...` endpoint but `authinfo` needs
a bearer token; a path with no endpoint is 404 before any token is looked at.

Not thread-safe on its own: `FakeHalo` holds its lock around every call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from worker.halo.fake import answers, schema, seeds
from worker.halo.fake.auth import Refusal, Token, TokenStore
from worker.halo.fake.config import FakeConfig
from worker.halo.fake.faults import FaultKind, FaultPlan
from worker.halo.fake.requestlog import DecodedBody
from worker.halo.fake.state import HaloState, TicketRejected

_TICKET_PATH = re.compile(r"^/api/tickets/([^/]+)$")
_LOOKUP_WRAPPERS = {"status": "statuses", "priority": "priorities", "agent": "agents"}
_DOTNET_TYPES = {
    "integer": "System.Nullable`1[System.Int32]",
    "number": "System.Nullable`1[System.Double]",
    "boolean": "System.Nullable`1[System.Boolean]",
    "string": "System.String",
    "array": "System.Collections.Generic.List`1[System.Object]",
    "object": "System.Object",
}
# Halo's paging cap: a page_size above it is clamped.
_MAX_PAGE_SIZE = 100


@dataclass
class Routed:
    """A Halo answer (None: no answer), the tickets the request created, the fault applied."""

    response: httpx.Response | None
    created: list[tuple[int, Any, dict[str, Any]]] = field(default_factory=list)
    fault: str | None = None


class HaloApi:
    """Answers Halo requests from a state, a token store and the current configuration."""

    def __init__(self, state: HaloState, tokens: TokenStore, faults: FaultPlan) -> None:
        """Serve `state`, authenticating with `tokens`; `faults` supplies answer_for_other_id."""
        self.state = state
        self.tokens = tokens
        self.faults = faults
        self._expired_answers = 0
        self._lookups: dict[str, Callable[[Mapping[str, str]], list[Any]]] = {
            "/api/status": lambda q: self.state.statuses(_int(q.get("tickettype_id"))),
            "/api/priority": lambda q: self.state.priorities(_int(q.get("slaid"))),
            "/api/team": lambda _: self.state.lookups["team"],
            "/api/sla": lambda _: self.state.lookups["sla"],
            "/api/tickettype": lambda _: self.state.lookups["tickettype"],
        }

    def answer(
        self, request: httpx.Request, path: str, body: DecodedBody, config: FakeConfig
    ) -> Routed:
        """Route one request (path already normalised) to its endpoint. Never raises."""
        method = request.method.upper()
        query = {key.lower(): value for key, value in request.url.params.multi_items()}
        token = self._checks(request, path, query=query, body=body, config=config)
        if isinstance(token, httpx.Response):
            return Routed(token)
        if path == "/api/agent":
            if method != "GET":
                return Routed(answers.html_answer(405))
            return Routed(self._agents(query, config))
        if path in self._lookups:
            if method != "GET":
                return Routed(answers.html_answer(405))
            records = self._lookups[path](query)
            return Routed(self._lookup(path.rsplit("/", 1)[1], records, config))
        return self._tickets(method, path, query, body=body, token=token, config=config)

    def _checks(
        self,
        request: httpx.Request,
        path: str,
        *,
        query: Mapping[str, str],
        body: DecodedBody,
        config: FakeConfig,
    ) -> httpx.Response | Token:
        """The answer to a request that does not reach an endpoint (unknown query parameter,
        token request or authinfo, missing or refused token), or the token to route it with."""
        method = request.method.upper()
        unknown = schema.unknown_query_params(method, path, list(query))
        if unknown:
            return answers.validation_problem(
                unknown[0],
                f"Query parameter(s) {', '.join(unknown)} are not in Halo's OpenAPI document "
                f"for {method} {path}.",
            )
        unauthenticated = self._unauthenticated(request, path, body, config)
        if unauthenticated is not None:
            return unauthenticated
        token = self.tokens.check(request.headers.get("authorization"))
        if isinstance(token, Refusal):
            return self._refuse(token, config)
        if config.resource_401:
            return answers.text_answer(
                401, "", content_type="", headers={"WWW-Authenticate": "Bearer"}
            )
        return token

    def _unauthenticated(
        self, request: httpx.Request, path: str, body: DecodedBody, config: FakeConfig
    ) -> httpx.Response | None:
        """The answer to a request that needs no token, or None if it needs one."""
        method = request.method.upper()
        if path == "/auth/token":
            if method != "POST":
                return answers.html_answer(405)
            status, data = self.tokens.issue(body.form or {}, ttl_s=config.token_ttl_s)
            return answers.json_answer(status, data)
        if path == "/api/authinfo" and method == "GET":
            origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
            return answers.json_answer(
                200, {"auth_url": f"{origin}/auth", "tenant_id": config.tenant}
            )
        if not self._routed(path):
            # Routing comes before authentication, as on a real tenant: a path Halo has no
            # endpoint for (`/api/api/Tickets/1`, `/api/auth/token` from a url ending in /api)
            # is 404 with or without a token.
            return answers.html_answer(404)
        return None

    def _routed(self, path: str) -> bool:
        """Whether Halo has an endpoint at this (normalised) path."""
        return (
            path in self._lookups
            or path in {"/api/agent", "/api/tickets"}
            or bool(_TICKET_PATH.match(path))
        )

    def _tickets(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        *,
        body: DecodedBody,
        token: Token,
        config: FakeConfig,
    ) -> Routed:
        single = _TICKET_PATH.match(path)
        if path != "/api/tickets" and single is None:
            return Routed(answers.html_answer(404))
        needed = "edit:tickets" if method == "POST" else "read:tickets"
        if not token.allows(needed):
            message = f"The API application's token lacks the '{needed}' permission."
            return Routed(answers.text_answer(403, message))
        if method == "GET":
            if single is not None:
                return Routed(self._single(single.group(1)))
            return Routed(self._list(query, config))
        if method == "POST" and single is None:
            return self._post(path, body, config)
        return Routed(answers.html_answer(405))

    def _refuse(self, refusal: Refusal, config: FakeConfig) -> httpx.Response:
        if refusal is not Refusal.EXPIRED:
            return answers.text_answer(
                401, "", content_type="", headers={"WWW-Authenticate": "Bearer"}
            )
        status = config.expired_token_status
        if status == "alternate":
            status = 400 if self._expired_answers % 2 == 0 else 401
        self._expired_answers += 1
        if status == 400:
            return answers.json_answer(
                400,
                {
                    "ClassName": "System.Exception",
                    "Message": "Authorization has been denied for this request. "
                    "The access token has expired.",
                },
            )
        return answers.text_answer(
            401,
            "",
            content_type="",
            headers={
                "WWW-Authenticate": 'Bearer error="invalid_token", '
                'error_description="The access token has expired"'
            },
        )

    def _lookup(self, name: str, records: list[Any], config: FakeConfig) -> httpx.Response:
        if name not in config.wrapped_lookups:
            return answers.json_answer(200, records)
        if name == "team":
            # Halo's wrapped answers are not uniform: some lists come without a count.
            return answers.json_answer(200, {"teams": records})
        return answers.json_answer(
            200, {"record_count": len(records), _LOOKUP_WRAPPERS[name]: records}
        )

    def _agents(self, query: Mapping[str, str], config: FakeConfig) -> httpx.Response:
        # Halo leaves out the Unassigned agent and agents restricted to other organisations
        # unless asked (`includeunassigned`, `showall`), and pages only when asked to.
        hidden = set()
        if not _flag(query.get("includeunassigned")):
            hidden.add("unassigned")
        if not _flag(query.get("showall")):
            hidden.add("restricted")
        search = query.get("search", "").strip().lower()
        agents = [
            {k: v for k, v in a.items() if k != seeds.VISIBILITY_KEY}
            for a in self.state.lookups["agent"]
            if a.get(seeds.VISIBILITY_KEY) not in hidden
            and (
                not search or search in str(a["name"]).lower() or search in str(a["email"]).lower()
            )
        ]
        if not _flag(query.get("pageinate")) and config.large_tenant:
            # A large tenant's unpaged list stops at one page: a client that does not page
            # never sees the rest (the safe assumption; docs/halo.md, "Lookups").
            return self._lookup("agent", agents[: config.max_page_size], config)
        if not _flag(query.get("pageinate")) or config.agent_paging == "ignored":
            return self._lookup("agent", agents, config)
        size = min(_int(query.get("page_size")) or 50, config.max_page_size)
        if config.agent_paging == "first_page_only":
            return answers.json_answer(200, agents[:size])
        page = max(_int(query.get("page_no")) or 1, 1)
        return answers.json_answer(
            200,
            {"record_count": len(agents), "agents": agents[(page - 1) * size : page * size]},
        )

    def _single(self, raw_id: str) -> httpx.Response:
        ticket_id = _int(raw_id)
        ticket = None if ticket_id is None else self.state.single(ticket_id)
        if ticket is None:
            # Halo's unknown-ticket answer is not JSON: clients must not parse error bodies.
            return answers.html_answer(404, f"No ticket found with id {raw_id}.")
        return answers.json_answer(200, ticket)

    def _list(self, query: Mapping[str, str], config: FakeConfig) -> httpx.Response:
        ids = None
        if "ticketids" in query and not config.ticketids_ignored:
            ids = [i for i in map(_int, query["ticketids"].split(",")) if i is not None]
        tickets = self.state.listed(ids, include_details=_flag(query.get("includedetails")))
        count = len(tickets)
        cap = min(config.list_page_cap or _MAX_PAGE_SIZE, _MAX_PAGE_SIZE)
        if _flag(query.get("pageinate")):
            size = min(_int(query.get("page_size")) or 50, cap)
            page = max(_int(query.get("page_no")) or 1, 1)
            tickets = tickets[(page - 1) * size : page * size]
        elif config.list_page_cap is not None:
            tickets = tickets[:cap]
        return answers.json_answer(200, {"record_count": count, "tickets": tickets})

    def _post(self, path: str, body: DecodedBody, config: FakeConfig) -> Routed:
        if not body.is_json:
            return Routed(answers.validation_problem("$", "The request body is not valid JSON."))
        if not isinstance(body.json, list):
            return Routed(
                answers.validation_problem(
                    "$",
                    "The JSON value could not be converted to "
                    "System.Collections.Generic.List`1[Halo.Models.Faults]. Path: $",
                )
            )
        if not body.json:
            return Routed(answers.text_answer(400, "No tickets were supplied."))
        problem = self._schema_problem(body.json, config)
        if problem is not None:
            return Routed(problem)
        try:
            pending = [self.state.prepare(element) for element in body.json]
        except TicketRejected as rejected:
            return Routed(answers.text_answer(400, rejected.message))
        saved, created = [], []
        for item in pending:
            ticket_id = self.state.commit(item)
            if item.ticket_id is None:
                created.append((ticket_id, item.requested_id, self.state.stored(ticket_id)))
            saved.append(self.state.single(ticket_id))
        fault = None
        if self.faults.take(FaultKind.OTHER_ID, "POST", path) is not None:
            saved[0] = self._other_ticket(saved[0])
            fault = FaultKind.OTHER_ID.value
        if config.update_answer_id_only:
            saved = [{"id": ticket["id"]} if ticket else ticket for ticket in saved]
        response = answers.json_answer(201, _shape(saved, config.update_answer_shape))
        return Routed(response, created, fault)

    def _schema_problem(self, elements: list[Any], config: FakeConfig) -> httpx.Response | None:
        properties = schema.load_faults_schema()["properties"]
        # The shipped extract follows the newest document; an older build lacks its additions,
        # and a build whose tickets carry no team_id does not take one either.
        absent = set(schema.NOT_IN_2024_09) if config.schema_version == "2024-09" else set()
        if not config.tickets_have_team_id:
            absent.add("team_id")
        for index, element in enumerate(elements):
            where = f"$[{index}]"
            if not isinstance(element, dict):
                return answers.validation_problem(
                    where,
                    f"The JSON value could not be converted to Halo.Models.Faults. Path: {where}",
                )
            for key, value in element.items():
                prop = None if key in absent else properties.get(key)
                if prop is None:
                    return answers.validation_problem(
                        f"{where}.{key}",
                        f"Could not find member '{key}' on object of type 'Faults'. "
                        f"Path '{where}.{key}'.",
                    )
                reason = schema.type_error(value, prop)
                if reason is not None:
                    return answers.validation_problem(
                        f"{where}.{key}",
                        f"The JSON value could not be converted to {_DOTNET_TYPES[prop['type']]}. "
                        f"Path: {where}.{key} | {reason}.",
                    )
        return None

    def _other_ticket(self, ticket: Any) -> Any:
        others = [i for i in sorted(self.state.tickets) if i != ticket["id"]]
        if others:
            return self.state.single(others[0])
        return {**ticket, "id": ticket["id"] + 1}


def _shape(saved: list[Any], shape: str) -> Any:
    if shape == "wrapped":
        return {"tickets": saved}
    if shape == "first" or (shape == "object" and len(saved) == 1):
        return saved[0]
    return saved


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def _flag(text: str | None) -> bool:
    return str(text).strip().lower() in ("true", "1", "yes")
