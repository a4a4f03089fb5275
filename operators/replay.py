"""`halo-jobs replay`: list failed jobs, and resubmit chosen ones once the cause is fixed.

    halo-jobs replay --code halo_forbidden --since 2h             # list, newest first
    halo-jobs replay --code halo_forbidden --since 2h --resubmit  # resubmit those (asks first)
    halo-jobs replay --job-id rule-7f3a:step-2 --yes              # resubmit one, without asking

Each resubmitted job is a new job, `<job_id>:replay-<n>`, whose `meta` links it to the original
(`replay_of`, `replay_count`); see `operators.failed` for how jobs are found and resubmitted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Final, TextIO

import redis

from operators.failed import (
    FailedJob,
    Filters,
    ReplayError,
    find_failed,
    list_failed,
    parse_time,
    resubmit,
)
from producers import Producer, SubmitError
from worker.errors import ErrorCode, InvalidJob

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_LIMIT: Final = 50
_MESSAGE_CHARS: Final = 60
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `replay` on the `halo-jobs` command line."""
    parser = commands.add_parser(
        "replay",
        help="list failed jobs; resubmit chosen ones as new jobs linked to the original",
        description="List failed jobs, newest first; resubmit chosen ones as new jobs.",
    )
    parser.add_argument(
        "--code",
        action="append",
        choices=[code.value for code in ErrorCode],
        metavar="CODE",
        help="only jobs that failed with this error code (repeatable)",
    )
    parser.add_argument(
        "--connection", action="append", metavar="NAME", help="only this connection (repeatable)"
    )
    parser.add_argument(
        "--since",
        type=parse_when,
        metavar="WHEN",
        help="finished at or after WHEN: ISO 8601 (UTC unless it says) or an age: 30m, 2h, 7d",
    )
    parser.add_argument(
        "--until", type=parse_when, metavar="WHEN", help="finished at or before WHEN"
    )
    parser.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"list at most N jobs, newest first (default {DEFAULT_LIMIT})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--resubmit", action="store_true", help="resubmit every listed job that can be replayed"
    )
    chosen.add_argument(
        "--job-id",
        action="append",
        dest="job_ids",
        metavar="ID",
        help="resubmit this failed job (repeatable); the filters still apply",
    )
    parser.add_argument("--yes", action="store_true", help="resubmit without asking")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `halo-jobs replay`; returns the exit code.

    0: listed, or every chosen job resubmitted. 1: a chosen job could not be resubmitted, or
    the question was answered no. 2: bad input, no confirmation possible, or Redis or the
    broker unreachable.
    """
    filters = Filters(
        codes=frozenset(args.code or ()),
        connections=frozenset(args.connection or ()),
        since=args.since,
        until=args.until,
    )
    if filters.since and filters.until and filters.since > filters.until:
        return _fail("--since is later than --until: nothing can match")
    try:
        with Producer.from_settings() as producer:
            return _Replay(args, filters, producer).run()
    except (redis.RedisError, OSError) as exc:
        return _fail(f"the result store is unreachable ({type(exc).__name__}: {exc})")


class _Replay:
    def __init__(self, args: argparse.Namespace, filters: Filters, producer: Producer) -> None:
        self.args = args
        self.filters = filters
        self.producer = producer
        self.redis = producer.redis
        self.out: TextIO = sys.stdout
        self.err: TextIO = sys.stderr

    def run(self) -> int:
        problems: list[str] = []
        if self.args.job_ids:
            jobs, problems = find_failed(self.redis, self.args.job_ids, self.filters)
        else:
            jobs = list_failed(self.redis, self.filters, self.args.limit)
        if not (self.args.resubmit or self.args.job_ids):
            self._show(jobs)
            return EXIT_OK
        if not self.args.json:
            self._table(jobs)
        for problem in problems:
            self._note(problem)
        chosen = [job for job in jobs if job.replayable]
        for job in jobs:
            if not job.replayable:
                job.replay_error = f"not replayable: {job.not_replayable_because}"
                self._note(f"{job.job_id} is {job.replay_error}")
        not_done = len(jobs) - len(chosen) + len(problems)
        refused = self._refused(jobs, len(chosen))
        if refused is not None:
            return refused
        broker_down = self._resubmit_all(chosen)
        self._print_json(jobs)
        done = sum(1 for job in chosen if job.replayed_as)
        if not jobs and not problems:
            self._note("no failed jobs match: nothing to resubmit")
        elif chosen:
            self._note(f"{done} resubmitted, {len(chosen) - done + not_done} not")
        if broker_down:
            return EXIT_USAGE
        return EXIT_FAILED if done < len(chosen) or not_done else EXIT_OK

    def _refused(self, jobs: list[FailedJob], count: int) -> int | None:
        """The exit code when resubmitting `count` jobs is not confirmed, else None."""
        if not count or self.args.yes:
            return None
        if not sys.stdin.isatty():
            self._print_json(jobs)
            return _fail(
                f"not resubmitting {count} job(s) without confirmation: standard input is "
                "not a terminal; add --yes to resubmit without asking"
            )
        self.err.write(f"Resubmit {count} failed job(s) as new jobs? [y/N] ")
        self.err.flush()
        if sys.stdin.readline().strip().lower() in ("y", "yes"):
            return None
        self._note("nothing resubmitted")
        return EXIT_FAILED

    def _resubmit_all(self, chosen: list[FailedJob]) -> bool:
        """Resubmit each job; True if the broker was unreachable (the rest are not tried)."""
        for job in chosen:
            try:
                job.replayed_as = resubmit(self.redis, self.producer, job.job_id)
            except SubmitError as exc:
                job.replay_error = str(exc)
                for rest in chosen[chosen.index(job) + 1 :]:
                    rest.replay_error = "not tried: the broker is unreachable"
                self._note(str(exc))
                return True
            except (InvalidJob, ReplayError) as exc:
                job.replay_error = str(exc)
                self._note(f"{job.job_id} not resubmitted: {exc}")
                continue
            if not self.args.json:
                print(f"resubmitted {job.job_id} as {job.replayed_as}", file=self.out)
        return False

    def _show(self, jobs: list[FailedJob]) -> None:
        if self.args.json:
            self._print_json(jobs)
            return
        if not jobs:
            print("no failed jobs match", file=self.out)
            return
        self._table(jobs)
        more = "; more may match: raise --limit" if len(jobs) >= self.args.limit else ""
        print(f"{len(jobs)} failed job(s), newest first{more}", file=self.out)

    def _table(self, jobs: list[FailedJob]) -> None:
        if jobs:
            for line in table_lines(jobs):
                print(line, file=self.out)

    def _print_json(self, jobs: list[FailedJob]) -> None:
        if self.args.json:
            print(json.dumps([asdict(job) for job in jobs], indent=2), file=self.out)

    def _note(self, text: str) -> None:
        print(f"halo-jobs: replay: {text}", file=self.err)


def table_lines(jobs: Sequence[FailedJob]) -> list[str]:
    """The jobs as an aligned table, header first; messages cut to one short line."""
    header = ("JOB ID", "FINISHED (UTC)", "CONNECTION", "CODE", "REPLAY", "MESSAGE")
    rows = [header] + [
        (
            job.job_id,
            job.finished_at,
            job.connection or "?",
            job.code,
            _replay_cell(job),
            _shorten(job.message, _MESSAGE_CHARS),
        )
        for job in jobs
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def parse_when(text: str) -> datetime:
    """A time from ``2026-11-27T10:00:00Z`` (UTC when no offset is given) or an age before
    now: ``45s``, ``30m``, ``2h``, ``7d``, ``1w``.

    Raises:
        argparse.ArgumentTypeError: neither form.
    """
    age = _AGE.match(text)
    if age:
        return datetime.now(UTC) - timedelta(seconds=int(age[1]) * _UNIT_S[age[2]])
    when = parse_time(text.strip())
    if when is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give ISO 8601 (2026-11-27T10:00Z) or an age (30m, 2h, 7d)"
        )
    return when


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _replay_cell(job: FailedJob) -> str:
    if not job.replayable:
        return "no (invalid job)" if job.code == ErrorCode.INVALID_JOB else "no (not kept)"
    return f"yes ({job.replays} done)" if job.replays else "yes"


def _shorten(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _fail(message: str) -> int:
    print(f"halo-jobs: replay: {message}", file=sys.stderr)
    return EXIT_USAGE
