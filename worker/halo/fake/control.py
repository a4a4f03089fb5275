"""Control endpoints under `/_fake/`: drive a fake Halo running in another process.

Not part of Halo. Never rate limited, never faulted, never recorded in the request log.
Answers are JSON; a bad control request answers 400 `{"error": ...}`.

| endpoint                      | does                                                        |
|-------------------------------|-------------------------------------------------------------|
| GET  /_fake/health            | `{"ok": true}`: the fake is up                              |
| GET  /_fake/requests          | the request log, a list (`?since=SEQ` for later ones only)  |
| GET  /_fake/created           | tickets created by POSTs (the trap)                         |
| POST /_fake/reset             | restore seed and configuration, clear log and faults        |
| GET  /_fake/faults            | pending faults                                              |
| POST /_fake/faults            | inject faults: see `apply_faults`                           |
| POST /_fake/expire-tokens     | expire every issued token: `{"expired": N}`                 |
| GET  /_fake/config            | current options                                             |
| POST /_fake/config            | change options, e.g. `{"rate_limit": "60/10s"}`             |
| POST /_fake/profile           | play another tenant: `{"profile": "legacy", ...options}`    |
| GET  /_fake/tickets/{id}      | the raw stored ticket, 404 if none                          |
| POST /_fake/tickets           | add a ticket (body: its fields), 201 with the stored ticket |
| GET  /_fake/lookups           | every lookup list, keyed by kind                            |
| POST /_fake/lookups           | replace lists: `{"status": [...], "team": [...]}`           |
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import httpx

from worker.halo.fake import answers
from worker.halo.fake.config import FakeConfig
from worker.halo.fake.state import LOOKUP_KINDS

if TYPE_CHECKING:
    from worker.halo.fake.app import FakeHalo


def answer(fake: FakeHalo, request: httpx.Request, path: str) -> httpx.Response:
    """Answer one control request (`path` normalised, starting with `/_fake`). Never raises."""
    method = request.method.upper()
    try:
        body = json.loads(request.content) if request.content else {}
        return _route(fake, method, path, request.url.params, body)
    except (TypeError, ValueError, KeyError) as error:
        return answers.json_answer(400, {"error": str(error)})


def _route(
    fake: FakeHalo, method: str, path: str, params: Mapping[str, str], body: Any
) -> httpx.Response:
    getters: dict[str, Callable[[], Any]] = {
        "/_fake/health": lambda: {"ok": True},
        "/_fake/requests": lambda: [
            r.to_json() for r in fake.requests() if r.seq > int(params.get("since", 0))
        ],
        "/_fake/created": lambda: [asdict(c) for c in fake.created_tickets()],
        "/_fake/faults": lambda: {
            "latency_s": fake.config.latency_s,
            "pending": fake.pending_faults(),
        },
        "/_fake/config": lambda: config_json(fake.config),
        "/_fake/lookups": lambda: {kind: fake.lookup(kind) for kind in LOOKUP_KINDS},
    }
    if method == "GET" and path in getters:
        return answers.json_answer(200, getters[path]())
    if method == "GET" and path.startswith("/_fake/tickets/"):
        ticket = fake.ticket(int(path.rsplit("/", 1)[1]))
        if ticket is None:
            return answers.json_answer(404, {"error": "no such ticket"})
        return answers.json_answer(200, ticket)
    if method != "POST" or path not in _POSTS:
        return answers.json_answer(404, {"error": f"no control endpoint {method} {path}"})
    if not isinstance(body, dict):
        raise TypeError("the body must be a JSON object")
    return _POSTS[path](fake, body)


def _reset(fake: FakeHalo, body: dict[str, Any]) -> httpx.Response:
    fake.reset()
    return answers.json_answer(200, {"ok": True})


def _expire_tokens(fake: FakeHalo, body: dict[str, Any]) -> httpx.Response:
    return answers.json_answer(200, {"expired": fake.expire_tokens()})


def _faults(fake: FakeHalo, body: dict[str, Any]) -> httpx.Response:
    apply_faults(fake, body)
    return answers.json_answer(200, {"ok": True, "pending": fake.pending_faults()})


def _config(fake: FakeHalo, body: dict[str, Any]) -> httpx.Response:
    fake.configure(**body)
    return answers.json_answer(200, config_json(fake.config))


def _profile(fake: FakeHalo, body: dict[str, Any]) -> httpx.Response:
    options = {k: v for k, v in body.items() if k != "profile"}
    fake.use_profile(str(body.get("profile", "")), **options)
    return answers.json_answer(200, config_json(fake.config))


def _add_ticket(fake: FakeHalo, body: dict[str, Any]) -> httpx.Response:
    return answers.json_answer(201, fake.add_ticket(**body))


def _lookups(fake: FakeHalo, body: dict[str, Any]) -> httpx.Response:
    for kind, records in body.items():
        fake.set_lookup(kind, records)
    return answers.json_answer(200, {"ok": True})


_POSTS: dict[str, Callable[[FakeHalo, dict[str, Any]], httpx.Response]] = {
    "/_fake/reset": _reset,
    "/_fake/expire-tokens": _expire_tokens,
    "/_fake/faults": _faults,
    "/_fake/config": _config,
    "/_fake/profile": _profile,
    "/_fake/tickets": _add_ticket,
    "/_fake/lookups": _lookups,
}


def apply_faults(fake: FakeHalo, spec: Mapping[str, Any]) -> None:
    """Inject the faults a `POST /_fake/faults` body describes.

    Keys (all optional, applied in this order):
        clear: true drops pending faults first.
        latency_s: constant latency, seconds.
        expire_tokens: true expires every issued token.
        fail_next, hang_next, connect_error_next, answer_for_other_id_next: the keyword
            arguments of the `FakeHalo` method of that name (e.g. `{"n": 3, "status": 503}`),
            a list of such objects, or a bare count.

    Raises:
        TypeError, ValueError: an unknown key or argument, or a value out of range.
    """
    injectors: dict[str, Callable[..., None]] = {
        "fail_next": fake.fail_next,
        "hang_next": fake.hang_next,
        "connect_error_next": fake.connect_error_next,
        "answer_for_other_id_next": fake.answer_for_other_id_next,
    }
    unknown = set(spec) - {"clear", "latency_s", "expire_tokens", *injectors}
    if unknown:
        raise TypeError(f"unknown fault option(s): {', '.join(sorted(unknown))}")
    if spec.get("clear"):
        fake.clear_faults()
    if "latency_s" in spec:
        fake.configure(latency_s=float(spec["latency_s"]))
    if spec.get("expire_tokens"):
        fake.expire_tokens()
    for name, inject in injectors.items():
        value = spec.get(name)
        for kwargs in value if isinstance(value, list) else [value]:
            if kwargs is None:
                continue
            if isinstance(kwargs, int):
                inject(kwargs)
            elif isinstance(kwargs, dict):
                inject(**kwargs)
            else:
                raise TypeError(f"{name} takes an object, a list of objects or a count")


def config_json(config: FakeConfig) -> dict[str, Any]:
    """The options as JSON, in the form `POST /_fake/config` accepts them."""
    data = asdict(config)
    limit = config.rate_limit
    data["rate_limit"] = None if limit is None else f"{limit.max_requests}/{limit.window_s:g}s"
    data["wrapped_lookups"] = sorted(config.wrapped_lookups)
    return data
