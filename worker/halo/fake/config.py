"""How the fake Halo behaves where real Halo builds and tenants differ.

Every option can be set at construction (`FakeHalo(**options)`), changed later
(`FakeHalo.configure(**options)`, or `POST /_fake/config` from another process), and is reset
to its constructed value by `FakeHalo.reset()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args

from worker.halo.fake.auth import DEFAULT_TOKEN_TTL_S
from worker.halo.fake.ratelimit import RateLimit

AnswerShape = Literal["object", "array", "wrapped", "first"]
ExpiredTokenStatus = Literal[400, 401, "alternate"]
# "2024-09": Halo API v2 as published in September 2024 (no `team_id` in `Faults`, no paging
# parameters on `GET /api/Agent`); "newer": the same with what later documents added.
SchemaVersion = Literal["2024-09", "newer"]
# How `GET /api/Agent` treats `pageinate`: "honoured" pages it; "ignored" answers the whole list
# as a plain array; "first_page_only" answers the first page, without a count, whatever
# `page_no` says (a tenant behind a cache that drops the page number).
PagingMode = Literal["honoured", "ignored", "first_page_only"]
LOOKUP_ENDPOINTS = ("status", "priority", "agent", "team")


@dataclass(frozen=True)
class FakeConfig:
    """The variable behaviour of the fake.

    Attributes:
        token_ttl_s: `expires_in` of issued tokens, seconds.
        rate_limit: the rolling-window limit, or None for unlimited.
        rate_limit_retry_after: whether a 429 from the rate limit carries `Retry-After`.
        expired_token_status: 401, 400 (as some Halo builds answer an expired token), or
            "alternate" (400, 401, 400, ...).
        tickets_have_team_id: whether tickets carry and accept `team_id` (newer Halo builds).
        update_answer_shape: how a ticket POST answers: the saved ticket as an `object` (for a
            one-element POST; more elements always answer a list), an `array`, `wrapped`
            as `{"tickets": [...]}`, or `first`: the first saved ticket alone as an object,
            however many the POST saved.
        ticketids_ignored: whether list reads ignore `ticketids` and answer every ticket (a
            tenant whose build does not filter on it).
        list_page_cap: the most tickets one list answer holds (paged or not), or None for
            Halo's own cap of 100 per page and no cap on an unpaged read.
        wrapped_lookups: the lookup endpoints (of LOOKUP_ENDPOINTS) that answer an object
            wrapping the list instead of a plain array.
        latency_s: delay before every Halo answer, seconds (served over HTTP; in MockTransport
            mode only when `mock_latency`).
        mock_latency: whether MockTransport calls sleep `latency_s` too.
        tenant: the tenant id `GET /api/authinfo` reports.
        profile: the name of the profile (`profiles.PROFILES`) the options started from.
        schema_version: the `Faults` schema ticket POSTs are validated against.
        agent_paging: how `GET /api/Agent` pages (see `PagingMode`).
        max_page_size: the largest `page_size` Halo honours; a larger one is clamped.
        forcereassign_required: whether a POST that changes `agent_id` is refused (400) unless
            it carries `_forcereassign: true`, as a tenant whose agents keep calendars does.
        ticket_type_rules: whether the ticket-type settings of `seeds.TYPE_RULES` apply:
            statuses allowed per type, a status set after any technician update, a team change
            that clears the agent.
        large_tenant: whether the tenant has hundreds of agents and teams besides the seed's;
            an unpaged `GET /api/Agent` then answers only the first `max_page_size` agents.
        update_answer_id_only: whether a ticket POST answers each saved ticket as its `id`
            alone (the shape still follows `update_answer_shape`).
        resource_401: whether every authenticated API call is answered 401, however fresh the
            token (an API application whose agent lacks the permission).
    """

    token_ttl_s: int = DEFAULT_TOKEN_TTL_S
    rate_limit: RateLimit | None = None
    rate_limit_retry_after: bool = True
    expired_token_status: ExpiredTokenStatus = 401
    tickets_have_team_id: bool = True
    update_answer_shape: AnswerShape = "object"
    ticketids_ignored: bool = False
    list_page_cap: int | None = None
    wrapped_lookups: frozenset[str] = field(default_factory=frozenset)
    latency_s: float = 0.0
    mock_latency: bool = False
    tenant: str = "demo"
    profile: str = "current"
    schema_version: SchemaVersion = "newer"
    agent_paging: PagingMode = "honoured"
    max_page_size: int = 100
    forcereassign_required: bool = False
    ticket_type_rules: bool = False
    large_tenant: bool = False
    update_answer_id_only: bool = False
    resource_401: bool = False

    def updated(self, **options: Any) -> FakeConfig:
        """A copy with some options changed, each checked and normalised.

        Accepts `rate_limit` as text ("300/300s") or None, and `wrapped_lookups` as a bool
        (all or none) or names.

        Raises:
            TypeError: an unknown option.
            ValueError: a value out of range.
        """
        known = {f.name for f in fields(self)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        if isinstance(options.get("rate_limit"), str):
            options["rate_limit"] = RateLimit.parse(options["rate_limit"])
        if "wrapped_lookups" in options:
            options["wrapped_lookups"] = _lookup_names(options["wrapped_lookups"])
        new = replace(self, **options)
        new.check()
        return new

    def check(self) -> None:
        """Raise ValueError if an option is out of range."""
        if self.token_ttl_s <= 0:
            raise ValueError("token_ttl_s must be positive")
        if self.latency_s < 0:
            raise ValueError("latency_s must not be negative")
        if self.expired_token_status not in get_args(ExpiredTokenStatus):
            raise ValueError("expired_token_status must be 400, 401 or 'alternate'")
        if self.update_answer_shape not in get_args(AnswerShape):
            raise ValueError("update_answer_shape must be 'object', 'array', 'wrapped' or 'first'")
        if self.schema_version not in get_args(SchemaVersion):
            raise ValueError("schema_version must be '2024-09' or 'newer'")
        if self.agent_paging not in get_args(PagingMode):
            raise ValueError("agent_paging must be 'honoured', 'ignored' or 'first_page_only'")
        if self.max_page_size <= 0:
            raise ValueError("max_page_size must be positive")
        if self.list_page_cap is not None and self.list_page_cap < 1:
            raise ValueError("list_page_cap must be a positive number of tickets, or None")
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise ValueError("rate_limit must be text like '300/300s' or None")


def _lookup_names(value: bool | Iterable[str]) -> frozenset[str]:
    if value is True:
        return frozenset(LOOKUP_ENDPOINTS)
    if value is False:
        return frozenset()
    names = frozenset(str(name).lower() for name in value)
    unknown = names - set(LOOKUP_ENDPOINTS)
    if unknown:
        raise ValueError(f"wrapped_lookups: unknown lookup(s) {', '.join(sorted(unknown))}")
    return names
