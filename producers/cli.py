"""`halo-jobs`: submit jobs, read records, preview an update (CONTRACT §4); replay failed
jobs and check a connection (`producers.replay`, `producers.doctor`); list and replay dead
letters (`producers.dead`).

Exit codes: 0 succeeded (or submitted), 1 the job failed, 2 bad input, a timeout, or an
unreachable broker (for a file of jobs, see `producers.bulk`). Errors are one readable line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from producers import bulk, dead, health, replay
from producers.jobs import Producer, SubmitError, record_json
from worker.errors import InvalidJob
from worker.models import MAX_JOB_BYTES

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A problem to report on one line, with exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (CliError, InvalidJob, SubmitError) as exc:
        print(f"halo-jobs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="halo-jobs", description="Submit Update Halo Ticket jobs and read their results."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="validate and enqueue a job; print its job id")
    submit.add_argument("file", help="a job as JSON, or - for standard input")
    submit.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help="wait up to S seconds and print the record (with --jsonl: S bounds the whole wait)",
    )
    submit.add_argument(
        "--jsonl",
        action="store_true",
        help="the file holds one job per line (bulk submit; exit codes in docs/cli.md)",
    )
    submit.set_defaults(run=_submit)

    result = commands.add_parser("result", help="print a job's result record")
    result.add_argument("job_id")
    result.add_argument("--wait", type=float, metavar="S", help="wait up to S seconds for it")
    result.set_defaults(run=_result)

    preview = commands.add_parser(
        "preview", help="show the exact update a job would send to Halo; writes nothing"
    )
    preview.add_argument("file", help="a job as JSON, or - for standard input")
    preview.set_defaults(run=_preview)

    replay.add_parser(commands)
    dead.add_parser(commands)
    health.add_parser(commands)

    doctor = commands.add_parser(
        "doctor", help="check a Halo connection end to end and say what to fix; only reads Halo"
    )
    doctor.add_argument("connection", help="the connection's name in the connections file")
    doctor.add_argument("--ticket", type=int, metavar="ID", help="also read this ticket")
    doctor.set_defaults(run=_doctor)
    return parser


def _submit(args: argparse.Namespace) -> int:
    with Producer.from_settings() as producer:
        if args.jsonl:
            lines = list(_job_lines(args.file))
            return bulk.submit_lines(producer, lines, args.wait, out=sys.stdout, err=sys.stderr)
        job_id = producer.submit(_read_job(args.file))
        if args.wait is None:
            print(job_id)
            return EXIT_OK
        return _print_record(producer.wait(job_id, args.wait), job_id, args.wait)


def _result(args: argparse.Namespace) -> int:
    with Producer.from_settings() as producer:
        record = producer.wait(args.job_id, args.wait) if args.wait else None
        record = record or producer.result(args.job_id)
        return _print_record(record, args.job_id, args.wait)


def _preview(args: argparse.Namespace) -> int:
    # Imported here: previewing talks to Halo, and only this command needs the HTTP client.
    from producers.preview import preview  # noqa: PLC0415

    shown = preview(_read_job(args.file))
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return EXIT_FAILED if "error" in shown else EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    # Imported here for the same reason as preview: it talks to Halo.
    from producers.doctor import doctor  # noqa: PLC0415

    return doctor(args.connection, ticket_id=args.ticket)


def _print_record(record: dict[str, Any] | None, job_id: str, wait_s: float | None) -> int:
    if record is None:
        waited = f" after waiting {wait_s:g} s" if wait_s else ""
        raise CliError(f"job {job_id} has no result record{waited}")
    print(record_json(record))
    return EXIT_OK if record.get("outcome") == "succeeded" else EXIT_FAILED


def _read_job(source: str) -> str:
    text = _read(source)
    if len(text.encode()) > MAX_JOB_BYTES:
        raise CliError(f"{source}: larger than the job limit of {MAX_JOB_BYTES} bytes")
    return text


def _job_lines(source: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(_read(source).splitlines(), start=1):
        if line.strip():
            yield number, line


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"{source}: not UTF-8 text") from None


if __name__ == "__main__":
    sys.exit(main())
