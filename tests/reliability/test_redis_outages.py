"""Redis goes away: restarted mid-run (with its append-only file), or absent when a worker
starts. No job the producer was told was accepted is lost; the producer is told clearly, and
retryably, while Redis is down; the workers resume on their own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from producers.jobs import Producer, SubmitError
from tests.harness.processes import ProcessError, RedisServer, free_port
from tests.reliability.audit import AgentEdits, audit, wait_for_records
from tests.reliability.fleet import Fleet
from tests.reliability.scale import SCALE
from tests.reliability.submitter import Submitter

OUTAGE_S = 4.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_redis_restart_loses_no_accepted_job_and_workers_resume(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = fleet.jobs("outage", SCALE.outage_jobs)
    probe_job, *stream = jobs
    for n in range(2):
        fleet.worker(f"outage{n}")
    fleet.fake.configure(latency_s=0.2)  # jobs are mid-flight when Redis stops
    agent = AgentEdits(fleet)
    agent.start()
    submitter = Submitter(Producer(broker_url=fleet.redis_server.url), stream)
    submitter.start()
    while len(submitter.accepted_at) < len(stream) // 3:
        time.sleep(0.05)

    fleet.redis_server.stop()  # SIGTERM: Redis writes its append-only file and exits
    stopped = time.monotonic()
    with pytest.raises(SubmitError) as refused:
        fleet.producer.submit(probe_job)
    refused_after_s = time.monotonic() - stopped
    time.sleep(max(0.0, OUTAGE_S - refused_after_s))
    fleet.redis_server.start()
    restarted = time.monotonic()

    submitter.join(120)
    assert not submitter.is_alive(), "the producer never got its jobs accepted again"
    submitter.producer.close()
    probe_id = fleet.producer.submit(probe_job)  # submitted again, as the error said to
    accepted = [*submitter.accepted_at, probe_id]
    wait_for_records(fleet, accepted, timeout_s=fleet.visibility_timeout_s + 90)
    all_recorded = time.monotonic()
    found = audit(fleet, accepted, agent, settle_s=fleet.visibility_timeout_s + 20)

    after = [j for j, at in submitter.accepted_at.items() if at > restarted]
    figures = {
        **found.summary(),
        "accepted_before_stop": sum(1 for at in submitter.accepted_at.values() if at < stopped),
        "accepted_after_restart": len(after),
        "refused_while_down": len(submitter.refusals) + 1,
        "submit_error_after_s": round(refused_after_s, 2),
        "outage_s": round(restarted - stopped, 1),
        "all_recorded_after_restart_s": round(all_recorded - restarted, 1),
    }
    with capsys.disabled():
        print(f"\n[Redis restart] {json.dumps(figures)}")

    error = refused.value
    assert error.retryable is True
    assert "broker is unreachable" in str(error)
    assert "submit it again later" in str(error)
    assert refused_after_s < 15, "the producer hung instead of failing fast"
    assert all(e.retryable for e in submitter.refusals)
    assert found.lost == [], found.lost[:5]
    assert found.feed_wrong == [], found.feed_wrong[:5]
    assert found.double_writes == 0
    assert found.never_written == []
    assert all(found.values_kept.values())
    assert {r["outcome"] for r in found.records.values()} == {"succeeded"}
    assert after, "no job was submitted after the restart"
    assert all(j in found.records for j in after), "workers did not resume consuming"
    assert not any(found.stuck.values()), found.stuck


@pytest.mark.timeout(120)
def test_a_worker_started_before_redis_waits_says_so_and_then_works(
    fleet: Fleet, tmp_path: Path
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    worker = fleet.worker("early", start=False, **{"broker_url": url})
    with pytest.raises(ProcessError, match="did not print"):
        worker.start(timeout_s=8)
    assert worker.running, "the worker gave up instead of waiting for Redis"
    waiting = worker.run_text()
    # Celery's line names the broker (password masked) and when it tries again.
    assert "consumer: Cannot connect to redis://" in waiting
    assert f"127.0.0.1:{port}/0: Error 111" in waiting
    assert "Trying again in" in waiting

    server = RedisServer(tmp_path / "late-redis", port=port).start()
    try:
        deadline = time.monotonic() + 60
        while " ready." not in worker.run_text():
            assert time.monotonic() < deadline, "the worker never connected"
            time.sleep(0.1)
        [job] = fleet.jobs("early", 1)
        with Producer(broker_url=url) as producer:
            record = producer.wait(producer.submit(job), timeout_s=30)
        assert record is not None, "the worker connected but did not take the job"
        assert record["outcome"] == "succeeded"
    finally:
        worker.stop(15)
        server.stop()
