"""Every Redis key and stream the service keeps, named once.

The contract (docs/contract.md §3) fixes the first two, `halo:result:<job_id>` and the stream
`halo:results`; the rest are the workers' own state. docs/contract.md's key table describes
each one (type, contents, lifetime) and a test holds that table and this module to the same
list, so a key added here and not documented there, or the reverse, fails the build.

Modules take their key names and builders from here and spell no key themselves. Lua scripts
get their keys in KEYS[]; where a script can only build a key at run time (the result and claim
of a job it found in a set, the line of a ticket it found in a set), it gets the prefix or the
suffix from here, in ARGV or in the script's text.

Nothing here imports the rest of the service, so every module can import it.
"""

from __future__ import annotations

from typing import Final

# -- a job's record, runs and waits (worker.records, worker.claims, worker.deferred) --------

RESULTS_STREAM: Final = "halo:results"
RESULT_PREFIX: Final = "halo:result:"
CLAIM_PREFIX: Final = "halo:claim:"
DEFERRED: Final = "halo:deferred"
DEFERRED_JOBS: Final = "halo:deferred:jobs"
UNFINISHED: Final = "halo:unfinished"
UNFINISHED_JOBS: Final = "halo:unfinished:jobs"


def result_key(job_id: str) -> str:
    """Where a job's record lives: ``halo:result:<job_id>``."""
    return RESULT_PREFIX + job_id


def job_state_key(job_id: str) -> str:
    """A job's state across its runs (attempts, run ends, the write journal)."""
    return f"halo:job:{job_id}"


def claim_key(job_id: str) -> str:
    """Who runs a job now: ``halo:claim:<job_id>``."""
    return CLAIM_PREFIX + job_id


def notify_key(job_id: str) -> str:
    """The wake-up for producers waiting on a job's record."""
    return f"halo:notify:{job_id}"


def failed_job_key(job_id: str) -> str:
    """Where a failed job's payload is kept for replay: ``halo:failed-job:<job_id>``."""
    return f"halo:failed-job:{job_id}"


# -- backlogs behind a connection's budget (worker.backlog) -----------------------------------

BACKLOGS: Final = "halo:backlogs"
BACKLOG_JOBS: Final = "halo:backlog:jobs"


def backlog_key(connection: str) -> str:
    """The backlog of one connection: job ids in arrival order."""
    return f"halo:backlog:{connection}"


def backlog_seq_key(connection: str) -> str:
    """The counter that orders a connection's backlog."""
    return backlog_key(connection) + ":seq"


def backlog_taken_key(connection: str) -> str:
    """A connection's backlog jobs being published, scored by the end of their lease."""
    return backlog_key(connection) + ":taken"


def dispatch_key(connection: str) -> str:
    """The lock that lets one worker at a time release a connection's backlog."""
    return f"halo:dispatch:{connection}"


# -- one job at a time per ticket (worker.tickets) --------------------------------------------

TICKET_WAITING: Final = "halo:ticket:waiting"
TICKET_LINES: Final = "halo:ticket:lines"
# A ticket's other keys are its hold key plus one of these. The ticket scripts build them from
# hold keys they find in `TICKET_LINES`, so they take the suffixes too.
TICKET_LINE_SUFFIX: Final = ":line"
TICKET_SEEN_SUFFIX: Final = ":seen"
TICKET_PARKED_SUFFIX: Final = ":parked"


def ticket_hold_key(connection: str, ticket_id: int) -> str:
    """The hold of one ticket (the job running on it now); its line's keys add a suffix."""
    return f"halo:ticket:{connection}:{ticket_id}"


def ticket_line_key(connection: str, ticket_id: int) -> str:
    """A ticket's jobs in line, scored by submission time."""
    return ticket_hold_key(connection, ticket_id) + TICKET_LINE_SUFFIX


def ticket_seen_key(connection: str, ticket_id: int) -> str:
    """When a worker last saw each job in a ticket's line."""
    return ticket_hold_key(connection, ticket_id) + TICKET_SEEN_SUFFIX


def ticket_parked_key(connection: str, ticket_id: int) -> str:
    """The payloads of the jobs parked on a ticket."""
    return ticket_hold_key(connection, ticket_id) + TICKET_PARKED_SUFFIX


# -- the fleet (worker.fleet) and its shared rate budget (worker.governor) --------------------

WORKERS: Final = "halo:workers"


def rate_key(connection: str) -> str:
    """The fleet's sliding log of Halo requests granted on a connection."""
    return f"halo:rate:{connection}"


def rate_seq_key(connection: str) -> str:
    """The counter that names grants in a connection's rate log."""
    return rate_key(connection) + ":seq"


def rate_pause_key(connection: str) -> str:
    """Present while Halo asked every worker to wait on a connection."""
    return rate_key(connection) + ":pause"


def rate_strikes_key(connection: str) -> str:
    """429s in a row on a connection."""
    return rate_key(connection) + ":strikes"


def rate_learned_key(connection: str) -> str:
    """The limit Halo stated for a connection in a 429."""
    return rate_key(connection) + ":learned"


# -- what the fleet shares of Halo (worker.sharedcache, worker.halo) --------------------------


def token_key(connection: str) -> str:
    """A connection's access token, sealed (`worker.halo.auth`)."""
    return f"halo:token:{connection}"


def lookup_key(
    connection: str, kind: str, sla_id: int | None = None, tickettype_id: int | None = None
) -> str:
    """A connection's cached lookup list. Priorities are listed per SLA: their kind is
    ``priority:<sla_id>`` (``priority:None``: a ticket without an SLA, every SLA's); statuses
    per ticket type when one is given: ``status:type-<tickettype_id>``."""
    key = f"halo:lookup:{connection}:{kind}"
    if kind == "priority":
        return f"{key}:{sla_id}"
    if kind == "status" and tickettype_id is not None:
        return f"{key}:type-{tickettype_id}"
    return key


def learned_key(connection: str) -> str:
    """What a connection's tenant was seen to do with batches (`worker.learned`)."""
    return f"halo:learned:{connection}"


def route_key(connection: str) -> str:
    """Whether Halo's API answers at a connection's url, as learned from its answers."""
    return f"halo:learned:{connection}:route"


def lock_key(key: str) -> str:
    """The lock that lets one worker at a time refill a shared cache entry (a token)."""
    return key + ":lock"


# -- dead letters, in the broker's Redis (worker.deadletters) ----------------------------------

DEAD_LETTERS: Final = "halo:dead"
DEAD_LETTER_COUNTS: Final = "halo:dead:counts"
