"""Submit one Update Halo Ticket job by pushing the raw broker message, without Celery.

    python push_raw.py REDIS_URL JOB_FILE      (JOB_FILE "-" reads the job from stdin)

A reference for producers in languages that have no Celery client: it builds the message
exactly as docs/producers.md lays it out, using only a Redis client and JSON, and LPUSHes it
onto the `halo` list. Prints ``{"job_id": ..., "task_id": ...}``: `job_id` is the key the
job's record will be stored under (the job's own `job_id` when it has a valid one, else the
task id made here).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import redis

TASK_NAME = "halo.update_ticket"
QUEUE = "halo"  # the Redis list the workers take jobs from
# The contract's job_id: a job without a valid one is recorded under its task id.
JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def task_message(job: dict[str, Any], task_id: str, submitted_at: str | None = None) -> bytes:
    """The message that runs `job` as task `task_id`: a kombu envelope around a Celery
    protocol 2 body ``[args, kwargs, embed]``."""
    kwargs = {"submitted_at": submitted_at} if submitted_at else {}
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = json.dumps([[job], kwargs, embed]).encode()
    envelope = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": TASK_NAME, "id": task_id},
        "properties": {
            "body_encoding": "base64",
            # A fresh one per message: the transport keys its in-flight messages by this tag.
            "delivery_tag": str(uuid.uuid4()),
            "delivery_info": {"exchange": "", "routing_key": QUEUE},
            "delivery_mode": 2,
            "priority": 0,
        },
    }
    return json.dumps(envelope).encode()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: push_raw.py REDIS_URL JOB_FILE", file=sys.stderr)
        return 2
    redis_url, job_file = argv
    text = sys.stdin.read() if job_file == "-" else Path(job_file).read_text(encoding="utf-8")
    job = json.loads(text)
    task_id = str(uuid.uuid4())
    with redis.Redis.from_url(redis_url) as client:
        client.lpush(QUEUE, task_message(job, task_id))
    own = job.get("job_id") if isinstance(job, dict) else None
    job_id = own if isinstance(own, str) and JOB_ID.fullmatch(own) else task_id
    print(json.dumps({"job_id": job_id, "task_id": task_id}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
