"""A result record that can always be written, whatever a message or Halo put in it.

Every job that reaches the task must end in a record, so nothing a record copies may stop it
from being serialised:

- An invalid job's record echoes its `meta` only within the job limits (an object, nested at
  most `MAX_NESTING_DEPTH` levels, at most `MAX_JOB_BYTES` of JSON, valid Unicode); otherwise
  it echoes ``{}`` and a warning says why. A 2 KB message nested a few hundred levels deep
  would otherwise make the record unwritable (pydantic refuses to serialise past 255 levels,
  `json` past about 1,000), and a large message would be copied into Redis twice.
- `record_key_of` gives a record's job_id: the job's own, else its task id when that is a valid
  job id, else a key derived from the task id (`INVALID_TASK_ID_PREFIX` and a hash), so that no
  task id, whatever its length or characters, becomes a Redis key as it is.
- `record_json` writes a record as JSON; a record that cannot be written as it is (a value
  from Halo's answer nested too deeply, text that is not valid Unicode) is written with those
  values replaced, and a warning saying so, rather than not at all.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from worker.errors import InvalidJob
from worker.models import JOB_ID_PATTERN, MAX_JOB_BYTES, MAX_NESTING_DEPTH, Job, ResultRecord

# What replaces a value nested deeper than a record keeps.
CUT: Final = f"[nested deeper than {MAX_NESTING_DEPTH} levels: not recorded]"
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
WRITTEN_CUT: Final = (
    "this record holds values that could not be written as they were (nested deeper than "
    f"{MAX_NESTING_DEPTH} levels, or text that is not valid Unicode); they were replaced"
)


# The job_id of a record kept for a task id that is not a valid job id; a valid job id itself.
INVALID_TASK_ID_PREFIX: Final = "invalid-task-id-"
# 128 bits of SHA-256: no two task ids share a record by accident.
_TASK_HASH_CHARS: Final = 32
INVALID_TASK_ID: Final = (
    "job.job_id: the job has none, and the task id it was sent under is not a valid job id "
    "either (1-128 characters of A-Z a-z 0-9 . _ : -); send it with a job_id, which the "
    "producers also use as the task id"
)


def record_key_of(payload: Any, task_id: str) -> str:
    """The job_id a delivery is recorded under: the job's own when valid, else the task id
    when it is a valid job id, else ``invalid-task-id-<hash of the task id>``."""
    if isinstance(payload, Mapping):
        candidate = payload.get("job_id")
        if isinstance(candidate, str) and JOB_ID_PATTERN.fullmatch(candidate):
            return candidate
    if JOB_ID_PATTERN.fullmatch(task_id):
        return task_id
    digest = hashlib.sha256(task_id.encode("utf-8", errors="surrogatepass")).hexdigest()
    return INVALID_TASK_ID_PREFIX + digest[:_TASK_HASH_CHARS]


def check_task_id(job: Job, task_id: str | None) -> None:
    """Refuse a job that has no job_id of its own and was sent under a task id that is not a
    valid job id: its record cannot be kept where its producer would look for it.

    Raises:
        InvalidJob: naming `job.job_id` as what to fix.
    """
    if job.job_id is None and task_id is not None and not JOB_ID_PATTERN.fullmatch(task_id):
        raise InvalidJob(INVALID_TASK_ID, field="job_id")


def invalid_job_meta(payload: Any) -> tuple[dict[str, Any], list[str]]:
    """The `meta` an invalid job's record echoes, and the warnings to add to the record.

    Args:
        payload: the job as it came off the queue, any JSON value.
    """
    meta = payload.get("meta") if isinstance(payload, Mapping) else None
    if not isinstance(meta, dict):
        # Absent, or of the wrong type: the job's error names it when it is wrong.
        return {}, []
    problem = _beyond_limits(meta)
    if problem:
        return {}, [f"meta: not copied to this record: {problem}"]
    return meta, []


def record_json(record: ResultRecord) -> str:
    """The record as the JSON text stored and sent on the feed; never fails for its content."""
    try:
        return record.model_dump_json()
    except (ValueError, RecursionError):
        # PydanticSerializationError is a ValueError: too deep, or a lone surrogate in text.
        pass
    error = record.error
    fixed = record.model_copy(
        update={
            "result": _writable(record.result, 0),
            "variables": _writable(record.variables, 0),
            "meta": _writable(record.meta, 0),
            "warnings": [_text(w) for w in record.warnings] + [WRITTEN_CUT],
            "changed_fields": [_text(f) for f in record.changed_fields],
            "error": error.model_copy(update={"message": _text(error.message)}) if error else None,
        }
    )
    return fixed.model_dump_json()


def _beyond_limits(meta: dict[str, Any]) -> str:
    """Why `meta` cannot be echoed, or "" when it can."""
    if not _within_depth(meta, MAX_NESTING_DEPTH):
        return f"nested deeper than {MAX_NESTING_DEPTH} levels"
    try:
        size = len(json.dumps(meta, ensure_ascii=False).encode())
    except UnicodeEncodeError:
        return "holds text that is not valid Unicode"
    except ValueError:
        return "not representable as JSON"
    if size > MAX_JOB_BYTES:
        return f"{size} bytes of JSON, more than the job limit of {MAX_JOB_BYTES}"
    return ""


def _within_depth(value: Any, limit: int) -> bool:
    """Whether a JSON value nests at most `limit` objects and arrays; iterative, so that no
    depth can exhaust the stack."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, Mapping | list):
            if level + 1 > limit:
                return False
            children = item.values() if isinstance(item, Mapping) else item
            pending.extend((child, level + 1) for child in children)
    return True


def _writable(value: Any, level: int) -> Any:
    """`value` with what lies below `MAX_NESTING_DEPTH` levels replaced by `CUT`, and text
    made valid Unicode. Recursion is bounded by that depth."""
    if isinstance(value, Mapping | list) and level >= MAX_NESTING_DEPTH:
        return CUT
    if isinstance(value, Mapping):
        return {_text(str(k)): _writable(v, level + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_writable(v, level + 1) for v in value]
    if isinstance(value, str):
        return _text(value)
    return value


def _text(text: str) -> str:
    # A lone surrogate (from "\ud800" in JSON) has no UTF-8 form: it shows as U+FFFD, as a
    # decoder shows bytes it cannot read.
    return _SURROGATE.sub("\ufffd", text)
