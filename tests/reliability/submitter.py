"""A producer submitting a steady stream of jobs while Redis fails under it."""

from __future__ import annotations

import threading
import time

from producers.jobs import Producer, SubmitError
from tests.reliability.fleet import Job

# A submission every this often: the outage falls in the middle of a steady stream.
SUBMIT_EVERY_S = 0.05
# How long a refused submission waits before trying again, as SubmitError says to.
RESUBMIT_AFTER_S = 0.5


class Submitter(threading.Thread):
    """A producer that submits `jobs` one by one and, as SubmitError says to, submits a
    refused job again later. Remembers when each job was accepted."""

    def __init__(self, producer: Producer, jobs: list[Job]) -> None:
        super().__init__(name="submitter", daemon=True)
        self.producer = producer
        self.jobs = jobs
        self.accepted_at: dict[str, float] = {}
        self.refusals: list[SubmitError] = []

    def run(self) -> None:
        for job in self.jobs:
            while True:
                try:
                    job_id = self.producer.submit(job)
                except SubmitError as refused:
                    self.refusals.append(refused)
                    time.sleep(RESUBMIT_AFTER_S)
                    continue
                self.accepted_at[job_id] = time.monotonic()
                break
            time.sleep(SUBMIT_EVERY_S)
