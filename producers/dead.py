"""`halo-jobs dead`: list the dead-letter list, and replay the entries that hold a valid job.

    halo-jobs dead                    # newest first: time, queue, reason, a redacted preview
    halo-jobs dead --replay           # submit every entry that holds a job (asks first)
    halo-jobs dead --replay --id 3f2a --yes

An entry holds a job when its item, whole, is a job object (a job pushed raw onto the queue),
a Celery message body ``[[job], {...}, {...}]``, or a kombu envelope carrying such a body.
Replay submits the job through the producer API, so it is validated and tracked like any
other; its job id is its own, or ``dead-<entry id>`` when it has none, so replaying an entry
twice never updates Halo twice. A replayed entry leaves the list.

The list never shows an item's content beyond a short preview: a job's ids and ticket id
template (as Flower shows them), a JSON object's key names, or the first characters of text.
See `worker.deadletters` for the list itself.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import redis

from producers.jobs import Producer, SubmitError
from worker import deadletters
from worker.deadletters import DeadLetter, Stored
from worker.errors import InvalidJob
from worker.models import parse_job, redacted_fields
from worker.redisconn import RedisOptions, connect
from worker.settings import Settings, get_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_LIMIT: Final = 50
# Enough of an unreadable item to tell its format ("{\"connection\": ", "<html>", "GET /"),
# too little to carry a sentence of an email.
_TEXT_PREVIEW_CHARS: Final = 16
_KEYS_SHOWN: Final = 8
_SHORT_ID_CHARS: Final = 12


@dataclass
class Entry:
    """An entry as listed: the stored entry, the job it holds (if any), and what replay did."""

    stored: Stored
    job: dict[str, Any] | None
    not_a_job: str
    replayed_as: str | None = None
    replay_error: str | None = None

    @property
    def letter(self) -> DeadLetter:
        return self.stored.letter

    def as_json(self) -> dict[str, Any]:
        """What `--json` prints: the entry without its raw item."""
        letter = self.letter
        return {
            "id": letter.id,
            "dead_at": letter.dead_at,
            "queue": letter.queue,
            "reason": letter.reason,
            "detail": letter.detail,
            "size_bytes": letter.size_bytes,
            "truncated": letter.truncated,
            "preview": preview(letter, self.job),
            "replayable": self.job is not None,
            "not_replayable_because": None if self.job is not None else self.not_a_job,
            "replayed_as": self.replayed_as,
            "replay_error": self.replay_error,
        }


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `dead` on the `halo-jobs` command line."""
    parser = commands.add_parser(
        "dead",
        help="list queue items that were no task message; replay those that hold a job",
        description="List the dead-letter list, newest first; replay entries holding a job.",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"look at the newest N entries (default {DEFAULT_LIMIT})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--replay", action="store_true", help="submit the job each listed entry holds"
    )
    parser.add_argument(
        "--id",
        action="append",
        dest="ids",
        metavar="ID",
        help="only the entry whose id starts with ID (repeatable)",
    )
    parser.add_argument("--yes", action="store_true", help="replay without asking")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `halo-jobs dead`; returns the exit code.

    0: listed, or every chosen entry replayed. 1: an entry could not be replayed, or the
    question was answered no. 2: bad input, no confirmation possible, or Redis unreachable.
    """
    if args.limit < 1:
        return _fail("--limit must be a positive whole number")
    settings = get_settings()
    client = _broker_redis(settings)
    try:
        entries = [_entry(stored) for stored in deadletters.read(client, args.limit)]
        if args.ids:
            entries = [e for e in entries if any(e.letter.id.startswith(i) for i in args.ids)]
        if not args.replay:
            _show(entries, args)
            return EXIT_OK
        return _replay(client, entries, args)
    except (redis.RedisError, OSError) as exc:
        return _fail(f"the broker's Redis is unreachable ({type(exc).__name__}: {exc})")
    finally:
        client.close()


def _replay(client: redis.Redis, entries: list[Entry], args: argparse.Namespace) -> int:
    chosen = [entry for entry in entries if entry.job is not None]
    if not chosen:
        _show(entries, args)
        _note("no listed entry holds a job: nothing to replay")
        return EXIT_FAILED if args.ids else EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            _show(entries, args)
            return _fail(
                f"not replaying {len(chosen)} entry(ies) without confirmation: standard input "
                "is not a terminal; add --yes to replay without asking"
            )
        _show(entries, args)
        sys.stderr.write(f"Submit the jobs of {len(chosen)} dead letter(s)? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            _note("nothing replayed")
            return EXIT_FAILED
    with Producer.from_settings() as producer:
        for entry in chosen:
            _replay_one(client, producer, entry)
    if args.json:
        print(json.dumps([entry.as_json() for entry in entries], indent=2))
    else:
        for entry in chosen:
            if entry.replayed_as:
                print(f"replayed {entry.letter.id} as job {entry.replayed_as}")
    done = sum(1 for entry in chosen if entry.replayed_as)
    _note(f"{done} replayed, {len(chosen) - done} not")
    return EXIT_OK if done == len(chosen) else EXIT_FAILED


def _replay_one(client: redis.Redis, producer: Producer, entry: Entry) -> None:
    job = dict(entry.job or {})
    # A job without an id gets one derived from the entry: a second replay of the same entry
    # is then the same job, answered from its record instead of updating Halo again.
    if not job.get("job_id"):
        job["job_id"] = f"dead-{entry.letter.id}"
    try:
        entry.replayed_as = producer.submit(job)
    except (InvalidJob, SubmitError) as exc:
        entry.replay_error = str(exc)
        _note(f"{entry.letter.id} not replayed: {exc}")
        return
    deadletters.remove(client, entry.stored)


def _entry(stored: Stored) -> Entry:
    job, because = job_in(stored.letter)
    return Entry(stored, job, because)


def job_in(letter: DeadLetter) -> tuple[dict[str, Any] | None, str]:
    """The valid job a dead letter's item holds, or None and why it holds none."""
    if letter.truncated:
        return None, f"kept cut to {deadletters.MAX_RAW_BYTES} bytes of {letter.size_bytes}"
    payload = _json(letter.raw_bytes())
    if payload is None:
        return None, "not JSON"
    candidate = _job_candidate(payload)
    if candidate is None:
        return None, "holds no job object"
    try:
        parse_job(candidate)
    except InvalidJob as exc:
        return None, f"not a valid job: {exc.message}"
    return dict(candidate), ""


def _job_candidate(payload: Any) -> Mapping[str, Any] | None:
    """The object that should be a job: the item itself, the one argument of a Celery body,
    or that of the body a kombu envelope carries."""
    if isinstance(payload, Mapping) and isinstance(payload.get("properties"), Mapping):
        body = payload.get("body")
        if not isinstance(body, str):
            return None
        if payload["properties"].get("body_encoding") == "base64":
            try:
                body = base64.b64decode(body).decode("utf-8")
            except (binascii.Error, ValueError):
                return None
        payload = _json(body.encode("utf-8"))
    if isinstance(payload, list) and len(payload) == 3:
        args = payload[0]
        return args[0] if isinstance(args, list) and len(args) == 1 else None
    return payload if isinstance(payload, Mapping) else None


def preview(letter: DeadLetter, job: Mapping[str, Any] | None) -> str:
    """A short, redacted view of the item: never a job's variables, summary or details."""
    if job is not None:
        shown = {k: v for k, v in redacted_fields(job).items() if v is not None}
        return "job " + json.dumps(shown, ensure_ascii=False)
    try:
        text = letter.raw_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return f"{letter.size_bytes} bytes, not UTF-8 text"
    payload = _json(text.encode("utf-8")) if not letter.truncated else None
    if isinstance(payload, Mapping):
        keys = [str(key)[:20] for key in list(payload)[:_KEYS_SHOWN]]
        more = ", …" if len(payload) > _KEYS_SHOWN else ""
        return f"JSON object with keys: {', '.join(keys)}{more}"
    if isinstance(payload, list):
        return f"a JSON array of {len(payload)}"
    if payload is not None:
        return "a JSON string" if isinstance(payload, str) else "a JSON number, boolean or null"
    start = json.dumps(text[:_TEXT_PREVIEW_CHARS], ensure_ascii=False)
    return f"text starting {start}{'…' if len(text) > _TEXT_PREVIEW_CHARS else ''}"


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _show(entries: list[Entry], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps([entry.as_json() for entry in entries], indent=2))
        return
    if not entries:
        print("no dead letters")
        return
    header = ("ID", "DEAD AT (UTC)", "QUEUE", "REASON", "REPLAY", "DETAIL / PREVIEW")
    rows = [header] + [
        (
            entry.letter.id[:_SHORT_ID_CHARS],
            entry.letter.dead_at,
            entry.letter.queue,
            entry.letter.reason,
            "yes" if entry.job is not None else "no",
            f"{entry.letter.detail} | {preview(entry.letter, entry.job)}",
        )
        for entry in entries
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]))
    replayable = sum(1 for entry in entries if entry.job is not None)
    more = "; more may exist: raise --limit" if len(entries) >= args.limit else ""
    print(f"{len(entries)} dead letter(s), newest first, {replayable} holding a job{more}")


def _broker_redis(settings: Settings) -> redis.Redis:
    """A client of the broker's Redis, where the list is (`worker.redisconn`: Sentinel, TLS
    that verifies)."""
    return connect(
        settings.broker_url,
        RedisOptions.from_settings(settings),
        socket_timeout_s=10,
        connect_timeout_s=5,
    )


def _note(text: str) -> None:
    print(f"halo-jobs: dead: {text}", file=sys.stderr)


def _fail(message: str) -> int:
    _note(message)
    return EXIT_USAGE
