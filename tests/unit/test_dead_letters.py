"""Dead letters without a broker: which queue items are envelopes, how an item is kept, and
what `halo-jobs dead` finds in an entry and shows of it."""

from __future__ import annotations

import base64
import json
import uuid
from functools import partial
from types import SimpleNamespace
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.transport import virtual

from producers.dead import job_in, preview
from worker.deadletters import MAX_RAW_BYTES, DeadLetter, Reason
from worker.transport import read_item

MARKER: Final = "EMAIL-BODY-7f3a"
JOB: Final = {
    "connection": "acme",
    "ticket_id": "4711",
    "status": "Closed",
    "variables": {"email": {"body": MARKER}},
}


def envelope(**changes: Any) -> dict[str, Any]:
    """A kombu envelope as kombu 5.7.0's Redis transport writes one for a Celery task."""
    made: dict[str, Any] = {
        "body": base64.b64encode(json.dumps([[JOB], {}, {}]).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "halo.update_ticket", "id": "t-1", "root_id": "t-1"},
        "properties": {
            "correlation_id": "t-1",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "halo"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    made.update(changes)
    return made


def item(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe\x00", Reason.NOT_UTF8),
        (b'{"connection": "acme", "tick', Reason.NOT_JSON),
        (b"hello", Reason.NOT_JSON),
        (b"[" * 100_000, Reason.NOT_JSON),
        (b"9" * 5000, Reason.NOT_JSON),
        (b'{"__type__": "decimal", "__value__": "x"}', Reason.NOT_JSON),
        (item(JOB), Reason.NOT_AN_ENVELOPE),
        (item({"foo": 1}), Reason.NOT_AN_ENVELOPE),
        (item([[JOB], {}, {}]), Reason.NOT_AN_ENVELOPE),
        (item(None), Reason.NOT_AN_ENVELOPE),
        (item(envelope(properties={"delivery_tag": "x"})), Reason.BAD_ENVELOPE),
        (item(envelope(headers=[1])), Reason.BAD_ENVELOPE),
        (item(envelope(headers={"task": {"a": 1}})), Reason.BAD_ENVELOPE),
        (item(envelope(body=5)), Reason.BAD_ENVELOPE),
        (item(envelope(body="a")), Reason.BAD_ENVELOPE),
        (item(envelope(**{"content-type": 5})), Reason.BAD_ENVELOPE),
    ],
)
def test_an_item_kombu_would_crash_on_or_lose_is_refused_with_its_reason(
    raw: bytes, reason: Reason
) -> None:
    found = read_item(raw)

    assert isinstance(found, tuple)
    assert found[0] == reason
    assert found[1]
    assert MARKER not in found[1], "a reason never quotes the item"


def test_an_envelope_as_kombu_writes_it_is_delivered_as_it_is() -> None:
    sent = envelope()

    assert read_item(item(sent)) == sent


# Values a foreign producer might put in an envelope's fields, right and wrong.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=5),
    st.sampled_from(["base64", "utf-8", "rot13", "halo", "", "aGk="]),
    st.lists(st.integers(), max_size=2),
)
field_values = st.one_of(
    scalars,
    st.dictionaries(st.sampled_from(["task", "id", "exchange", "routing_key"]), scalars),
)
# Where a field can be changed in a good envelope (a dotted path), or removed (value DELETE).
PATHS: Final = [
    "body",
    "headers",
    "headers.task",
    "headers.id",
    "content-type",
    "content-encoding",
    "properties",
    "properties.delivery_tag",
    "properties.body_encoding",
    "properties.delivery_info",
    "properties.delivery_info.exchange",
    "properties.delivery_info.routing_key",
]
DELETE: Final = object()


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """A good envelope with some fields replaced or removed."""
    made: dict[str, Any] = json.loads(json.dumps(envelope()))
    for path, value in changes.items():
        *parents, name = path.split(".")
        target: Any = made
        for parent in parents:
            target = target.get(parent) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        if value is DELETE:
            target.pop(name, None)
        else:
            target[name] = value
    return made


envelopes = st.dictionaries(
    st.sampled_from(PATHS), st.one_of(field_values, st.just(DELETE)), max_size=3
).map(changed)


# No per-example deadline: the first examples import kombu's codecs, and the machine is shared.
@settings(max_examples=500, deadline=None)
@given(payload=envelopes)
def test_every_envelope_let_through_is_one_kombu_and_celery_can_read(
    payload: dict[str, Any],
) -> None:
    found = read_item(item(payload))
    if isinstance(found, tuple):
        return
    # What kombu 5.7.0 does with a delivered envelope before Celery sees it: build the virtual
    # Message (decoding the body), record it as unacked (delivery_info's exchange and routing
    # key), and what Celery reads next (the task header, used as a dict key).
    decoder: Any = SimpleNamespace(codecs=virtual.Channel.codecs)
    channel: Any = SimpleNamespace(decode_body=partial(virtual.Channel.decode_body, decoder))
    message = virtual.Message(found, channel=channel)
    assert isinstance(message.delivery_info["exchange"], str)
    assert isinstance(message.delivery_info["routing_key"], str)
    assert isinstance(message.delivery_tag, str)
    hash(message.headers.get("task"))
    json.dumps([message.delivery_tag, message.properties])


def test_an_item_is_kept_whole_up_to_the_bound_and_cut_beyond_it() -> None:
    small = DeadLetter.of(b"hello", Reason.NOT_JSON, "not JSON", "halo")
    big = DeadLetter.of(b"x" * (MAX_RAW_BYTES + 10), Reason.NOT_JSON, "not JSON", "halo")

    assert (small.raw, small.raw_encoding, small.truncated, small.size_bytes) == (
        "hello",
        "text",
        False,
        5,
    )
    assert big.truncated is True
    assert big.size_bytes == MAX_RAW_BYTES + 10
    assert big.raw_bytes() == b"x" * MAX_RAW_BYTES


def test_a_cut_through_a_character_keeps_the_whole_characters_before_it() -> None:
    data = b"a" * (MAX_RAW_BYTES - 1) + "é".encode()

    letter = DeadLetter.of(data, Reason.NOT_JSON, "not JSON", "halo")

    assert letter.raw_encoding == "text"
    assert letter.raw == "a" * (MAX_RAW_BYTES - 1)
    assert letter.truncated is True


@pytest.mark.parametrize(
    "data", [b"\xff\xfe binary", b"\x01" * 1000], ids=["not UTF-8", "control characters"]
)
def test_bytes_that_are_not_text_or_would_grow_as_json_are_kept_in_base64(data: bytes) -> None:
    letter = DeadLetter.of(data, Reason.NOT_UTF8, "x", "halo")

    assert letter.raw_encoding == "base64"
    assert letter.raw_bytes() == data
    assert len(letter.to_json()) < 2 * len(data) + 400


def test_an_entry_reads_back_as_it_was_stored() -> None:
    letter = DeadLetter.of(item(JOB), Reason.NOT_AN_ENVELOPE, "x", "halo")

    assert DeadLetter.from_json(letter.to_json()) == letter
    assert DeadLetter.from_json('{"id": 1}') is None
    assert DeadLetter.from_json("not json") is None


@pytest.mark.parametrize(
    "raw",
    [item(JOB), item([[JOB], {}, {}]), item(envelope()), item(envelope(headers=[1]))],
    ids=["a bare job", "a Celery body", "an envelope", "a bad envelope carrying a job"],
)
def test_an_entry_holding_a_job_gives_the_job_and_a_preview_without_its_content(
    raw: bytes,
) -> None:
    letter = DeadLetter.of(raw, Reason.NOT_AN_ENVELOPE, "x", "halo")

    job, because = job_in(letter)

    assert job == JOB
    assert because == ""
    shown = preview(letter, job)
    assert shown == 'job {"connection": "acme", "ticket_id": "4711"}'
    assert MARKER not in shown


@pytest.mark.parametrize(
    ("raw", "because", "shown"),
    [
        (item({"foo": 1}), "not a valid job: job.connection", "JSON object with keys: foo"),
        (item({**JOB, "ticket_id": None}), "not a valid job: job.ticket_id", "JSON object"),
        (b'{"connection": "acme", "variables": {"email"', "not JSON", 'text starting "{'),
        (b"\xff\xfe binary", "not JSON", "9 bytes, not UTF-8 text"),
        (item(42), "holds no job object", "a JSON number"),
    ],
)
def test_an_entry_without_a_valid_job_says_why_and_previews_only_its_shape(
    raw: bytes, because: str, shown: str
) -> None:
    letter = DeadLetter.of(raw, Reason.NOT_JSON, "x", "halo")

    job, why = job_in(letter)

    assert job is None
    assert why.startswith(because)
    assert preview(letter, None).startswith(shown)
    assert MARKER not in preview(letter, None)


def test_a_job_kept_cut_is_not_replayable() -> None:
    raw = item({**JOB, "summary": "s" * MAX_RAW_BYTES})
    letter = DeadLetter.of(raw, Reason.NOT_AN_ENVELOPE, "x", "halo")

    job, because = job_in(letter)

    assert job is None
    assert because.startswith("kept cut to")
