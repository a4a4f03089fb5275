"""`halo-jobs submit --jsonl FILE [--wait S]`: submit a file of jobs, wait for all of them under
one deadline, and sum up what became of them.

Output: each submitted job's id on stdout, one per line, in file order. On stderr: one line per
refused line, progress while submitting and while waiting, then (with `--wait`) one line per job
that failed or did not finish, and a last summary line:

    41 jobs: 30 succeeded, 8 failed (ticket_not_found 5, lookup_not_found 3),
      3 not finished within 60 s                                          (on one line)

Exit codes follow the single-job contract, the first that applies wins:

    2   a line was refused or not submitted, or a job did not finish within S seconds: the
        outcome of some line is not known, so the file needs another look
    1   every job finished and at least one failed
    0   every job succeeded (without `--wait`: every line was submitted)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import redis

from producers import Producer, SubmitError
from worker.errors import InvalidJob

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_UNFINISHED = 0, 1, 2
# Where stderr is not a terminal (a log, CI), a line of counts this often: frequent enough to
# show a long wait is alive, rare enough not to flood the log.
PROGRESS_EVERY_S: Final = 5.0
# A terminal's bar is redrawn at most this often; more is flicker, not information.
_REDRAW_EVERY_S: Final = 0.1
_BAR_WIDTH: Final = 30


@dataclass
class Tally:
    """What became of a file's lines: the summary and the exit code are read from here.

    A job id submitted on two lines counts on both: each line is one submission.
    """

    wait_s: float | None = None
    refused: int = 0
    not_submitted: int = 0
    submitted: int = 0
    succeeded: int = 0
    failed_by_code: Counter[str] = field(default_factory=Counter)
    unfinished: int = 0

    @property
    def failed(self) -> int:
        """Jobs whose record says they failed."""
        return sum(self.failed_by_code.values())

    def count(self, record: dict[str, Any] | None) -> None:
        """Count one submitted job's record (None: it had none when the wait ended)."""
        if record is None:
            self.unfinished += 1
        elif record.get("outcome") == "succeeded":
            self.succeeded += 1
        else:
            self.failed_by_code[error_code(record)] += 1

    def submit_summary(self) -> str:
        """One line once the file is submitted: lines submitted, refused and not submitted."""
        text = f"{self.submitted} submitted, {self.refused} refused"
        return text + (f", {self.not_submitted} not submitted" if self.not_submitted else "")

    def summary(self) -> str:
        """One line once the wait ends: jobs by outcome, failures by error code (most first),
        then lines refused or not submitted."""
        by_count = sorted(self.failed_by_code.items(), key=lambda item: (-item[1], item[0]))
        codes = ", ".join(f"{code} {n}" for code, n in by_count)
        text = (
            f"{self.submitted} {'job' if self.submitted == 1 else 'jobs'}: "
            f"{self.succeeded} succeeded, {self.failed} failed"
            + (f" ({codes})" if codes else "")
            + f", {self.unfinished} not finished within {self.wait_s or 0:g} s"
        )
        if self.refused:
            text += f"; {self.refused} {_lines(self.refused)} refused"
        if self.not_submitted:
            text += f"; {self.not_submitted} {_lines(self.not_submitted)} not submitted"
        return text

    def exit_code(self) -> int:
        """2 when any line's outcome is unknown, else 1 when any job failed, else 0."""
        if self.refused or self.not_submitted or self.unfinished:
            return EXIT_UNFINISHED
        return EXIT_FAILED if self.failed else EXIT_SUCCEEDED


def error_code(record: dict[str, Any]) -> str:
    """A failed record's error code ("unknown" if a record breaks the contract and has none)."""
    error = record.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code else "unknown"


def submit_lines(
    producer: Producer,
    lines: Sequence[tuple[int, str]],
    wait_s: float | None,
    *,
    out: TextIO,
    err: TextIO,
) -> int:
    """Submit each (line number, job) in order, then wait for all of them up to `wait_s`.

    A refused line is named on `err` and the rest are still submitted. When the broker becomes
    unreachable the remaining lines are not submitted, and say so. Returns the exit code.
    """
    tally = Tally(wait_s=wait_s)
    submitted: list[tuple[int, str]] = []
    progress = Progress("submitted", len(lines), err)
    for index, (number, line) in enumerate(lines):
        try:
            job_id = producer.submit(line)
        except InvalidJob as exc:
            tally.refused += 1
            print(f"halo-jobs: line {number}: {exc}", file=err)
        except SubmitError as exc:
            tally.not_submitted = len(lines) - index
            last = lines[-1][0]
            print(
                f"halo-jobs: line {number}: {exc}; lines {number}-{last} were not submitted",
                file=err,
            )
            break
        else:
            submitted.append((number, job_id))
            print(job_id, file=out, flush=True)
        progress.update(index + 1)
    progress.close()
    tally.submitted = len(submitted)
    print(tally.submit_summary(), file=err)
    if wait_s is None or not submitted:
        return tally.exit_code()
    return _wait(producer, submitted, tally, wait_s, err)


def _wait(
    producer: Producer, submitted: list[tuple[int, str]], tally: Tally, wait_s: float, err: TextIO
) -> int:
    progress = Progress("finished", len({job_id for _, job_id in submitted}), err)
    deadline = time.monotonic() + wait_s

    def show(finished: int, _total: int) -> None:
        progress.update(finished, note=f"{max(0.0, deadline - time.monotonic()):.0f} s left")

    try:
        waited = producer.wait_many([job_id for _, job_id in submitted], wait_s, on_progress=show)
    except redis.RedisError as exc:
        progress.close()
        print(
            f"halo-jobs: the result store is unreachable ({type(exc).__name__}); the "
            f"{tally.submitted} submitted jobs still run: read their records later with "
            "`halo-jobs result JOB_ID`",
            file=err,
        )
        return EXIT_UNFINISHED
    progress.close()
    for number, job_id in submitted:
        record = waited.records.get(job_id)
        tally.count(record)
        if record is None:
            print(
                f"halo-jobs: line {number}: job {job_id} not finished within {wait_s:g} s", file=err
            )
        elif record.get("outcome") != "succeeded":
            print(f"halo-jobs: line {number}: job {job_id} failed: {error_code(record)}", file=err)
    print(tally.summary(), file=err)
    return tally.exit_code()


def _lines(n: int) -> str:
    return "line" if n == 1 else "lines"


class Progress:
    """How far a long step has got, on stderr: a bar redrawn in place on a terminal; elsewhere
    (a log, CI) a line of counts every `every_s` seconds, so a long wait shows it is alive.

    `what` is the participle counted: "12/41 submitted", "30/41 finished, 12 s left".
    """

    def __init__(
        self,
        what: str,
        total: int,
        stream: TextIO,
        *,
        every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what, self._total, self._stream = what, total, stream
        self._every_s, self._clock = every_s, clock
        self._live = stream.isatty()
        self._shown_at = clock()
        self._drawn = False

    def update(self, done: int, *, note: str = "") -> None:
        """Report `done` of the total; shown only when it is time to."""
        now = self._clock()
        counts = f"{done}/{self._total} {self._what}" + (f", {note}" if note else "")
        if self._live:
            if now - self._shown_at >= _REDRAW_EVERY_S or done >= self._total:
                filled = _BAR_WIDTH * done // max(self._total, 1)
                bar = "#" * filled + "." * (_BAR_WIDTH - filled)
                self._stream.write(f"\r[{bar}] {counts}\033[K")
                self._stream.flush()
                self._shown_at, self._drawn = now, True
        elif now - self._shown_at >= self._every_s:
            self._stream.write(f"halo-jobs: {counts}\n")
            self._stream.flush()
            self._shown_at = now

    def close(self) -> None:
        """End the bar's line on a terminal, so what follows starts on a line of its own."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
