"""Workers in their own processes, crashed for real: SIGKILL mid-job, SIGSTOP past the
lease, a storm of kills and restarts, and SIGTERM's graceful and immediate stops.

Handlers (``worker_apps.apps``) append each job's id to a ledger file inside
``ctx.run_once``: a line written twice would be an effect that ran twice.
"""

from __future__ import annotations

import random
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import backdate_lease
from worker_apps.apps import gated, work
from worker_apps.procs import (
    APPS,
    WorkerProcess,
    all_terminal,
    job_errors,
    jobs,
    ledger,
    wait_for,
)

from pgqueue_py.client import Queue


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=4) as q:
        # Retries come quickly, so that reclaimed jobs finish within the test.
        q.configure_queue("default", backoff_base=timedelta(milliseconds=20),
                          backoff_max=timedelta(milliseconds=100))  # fmt: skip
        yield q


class Workers:
    """Starts worker processes for a test and kills whatever is left at the end."""

    def __init__(self, dsn: str, folder: Path, app: str) -> None:
        self.dsn = dsn
        self.folder = folder
        self.app = app
        self.started: list[WorkerProcess] = []

    def start(self, name: str, *options: str) -> WorkerProcess:
        worker = WorkerProcess(self.dsn, self.folder / f"{name}.log", "--worker-id", name,
                               "--poll", "0.1", *options, app=self.app)  # fmt: skip
        self.started.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()}" for w in self.started)


@pytest.fixture(params=sorted(APPS))
def workers(request: pytest.FixtureRequest, dsn: str, tmp_path: Path) -> Iterator[Workers]:
    """Worker processes whose handlers are plain functions, or ``async def`` ones: every
    crash test runs with both."""
    started = Workers(dsn, tmp_path, APPS[request.param])
    try:
        yield started
    finally:
        for worker in started.started:
            worker.kill()


def started_file(folder: Path, job_id: int, attempt: int) -> Path:
    return folder / f"started-{job_id}-{attempt}"


def test_killed_worker_job_is_reclaimed_and_finished_by_another(
    queue: Queue, workers: Workers, tmp_path: Path
) -> None:
    job_id = queue.add(gated, {"dir": str(tmp_path), "block_attempts": [1], "effect": True})
    first = workers.start("first")
    wait_for(started_file(tmp_path, job_id, 1).exists, 20, "the handler to start",
             detail=workers.logs)  # fmt: skip

    first.proc.kill()
    first.wait()
    # Instead of waiting out the 30 s lease: it expired, as if long ago.
    backdate_lease(queue.dsn, job_id)
    workers.start("second")
    wait_for(lambda: all_terminal(queue.dsn), 20, "the job to finish", detail=workers.logs)

    [job] = jobs(queue.dsn)
    assert (job["state"], job["attempt"], job["worker_id"]) == ("succeeded", 2, "second")
    [error] = job_errors(queue.dsn, job_id)
    assert error["attempt"] == 1
    assert "lease expired" in error["error"]
    assert error["worker_id"] == "first"
    assert ledger(tmp_path) == [job_id]


def test_worker_stopped_past_its_lease_is_refused_after_another_finished_the_job(
    queue: Queue, workers: Workers, tmp_path: Path
) -> None:
    # Two jobs blocked in their first attempt: after the stall one tries its run-once
    # effect, the other completes without one.
    with_effect = queue.add(gated, {"dir": str(tmp_path), "block_attempts": [1],
                                    "effect": True})  # fmt: skip
    no_effect = queue.add(gated, {"dir": str(tmp_path), "block_attempts": [1],
                                  "effect": False})  # fmt: skip
    stalled = workers.start("stalled")
    for job_id in (with_effect, no_effect):
        wait_for(started_file(tmp_path, job_id, 1).exists, 20, f"job {job_id} to start",
                 detail=workers.logs)  # fmt: skip

    stalled.signal(signal.SIGSTOP)
    try:
        for job_id in (with_effect, no_effect):
            backdate_lease(queue.dsn, job_id)
        workers.start("other")
        wait_for(lambda: all_terminal(queue.dsn), 20, "the other worker to finish both",
                 detail=workers.logs)  # fmt: skip
        for job_id in (with_effect, no_effect):
            (tmp_path / f"go-{job_id}").touch()
    finally:
        stalled.signal(signal.SIGCONT)

    for job_id in (with_effect, no_effect):
        stalled.wait_for_log(f"job {job_id}: lease lost")
    stalled.signal(signal.SIGTERM)
    assert stalled.wait() == 0

    for job in jobs(queue.dsn):
        assert (job["state"], job["attempt"], job["worker_id"]) == ("succeeded", 2, "other")
        # Nothing more from the stalled worker than its expired first attempt.
        errors = job_errors(queue.dsn, job["id"])
        assert [(e["attempt"], e["worker_id"]) for e in errors] == [(1, "stalled")]
    assert ledger(tmp_path) == [with_effect]
    assert not (tmp_path / f"finished-{with_effect}-1").exists()


def test_kill_storm_leaves_every_job_terminal_and_no_effect_twice(
    queue: Queue, workers: Workers, tmp_path: Path
) -> None:
    queue.configure_queue("default", max_retries=3)
    ids = queue.add_many(work, [{"dir": str(tmp_path), "work_ms": 80}] * 200)
    options = ("--concurrency", "4", "--lease", "2")
    alive = [workers.start(f"w{n}", *options) for n in range(3)]
    # Kill while the backlog lasts (about 2 s), when each worker holds four jobs.
    wait_for(lambda: len(ledger(tmp_path)) >= 10, 20, "work to start", detail=workers.logs)
    pause = threading.Event()
    rng = random.Random()
    for kill in range(4):
        pause.wait(rng.uniform(0.1, 0.3))
        victim = alive.pop(rng.randrange(len(alive)))
        victim.proc.kill()
        victim.wait()
        alive.append(workers.start(f"restart{kill}", *options))

    wait_for(lambda: all_terminal(queue.dsn), 50, "every job to finish", detail=workers.logs)

    lines = Counter(ledger(tmp_path))
    assert [job_id for job_id, n in lines.items() if n > 1] == []
    final = {job["id"]: job for job in jobs(queue.dsn)}
    assert sorted(final) == sorted(ids)
    for job_id, job in final.items():
        if job["state"] == "succeeded":
            assert lines[job_id] == 1, job
            continue
        # Dead: its effect's outcome was unknown (reported, not repeated), or every
        # attempt died with its worker.
        assert job["state"] == "dead", job
        errors = [e["error"] for e in job_errors(queue.dsn, job_id)]
        unknown = any(e.startswith("OutcomeUnknown") for e in errors)
        killed_every_time = all("lease expired" in e for e in errors)
        assert unknown or killed_every_time, errors
    assert sum(1 for job in final.values() if job["state"] == "succeeded") > 100
    # The kills landed on running jobs, which other workers reclaimed.
    assert any(job["attempt"] > 1 for job in final.values())
    print(
        f"kill storm: {Counter(j['state'] for j in final.values())}, attempts "
        f"{Counter(j['attempt'] for j in final.values())}, ledger {len(lines)}"
    )


def test_sigterm_lets_the_running_handler_finish_records_it_and_exits_0(
    queue: Queue, workers: Workers, tmp_path: Path
) -> None:
    job_id = queue.add(gated, {"dir": str(tmp_path), "block_attempts": [1], "effect": True})
    worker = workers.start("graceful")
    wait_for(started_file(tmp_path, job_id, 1).exists, 20, "the handler to start",
             detail=workers.logs)  # fmt: skip

    worker.signal(signal.SIGTERM)
    worker.wait_for_log("SIGTERM received")
    later = queue.add(gated, {"dir": str(tmp_path), "block_attempts": [], "effect": True})
    assert worker.proc.poll() is None, "exited before its handler finished"
    (tmp_path / f"go-{job_id}").touch()

    assert worker.wait() == 0
    state = {job["id"]: (job["state"], job["attempt"]) for job in jobs(queue.dsn)}
    assert state == {job_id: ("succeeded", 1), later: ("available", 0)}
    assert ledger(tmp_path) == [job_id]


def test_second_sigterm_exits_at_once_leaving_the_job_to_its_lease(
    queue: Queue, workers: Workers, tmp_path: Path
) -> None:
    job_id = queue.add(gated, {"dir": str(tmp_path), "block_attempts": [1], "effect": True})
    worker = workers.start("impatient")
    wait_for(started_file(tmp_path, job_id, 1).exists, 20, "the handler to start",
             detail=workers.logs)  # fmt: skip

    worker.signal(signal.SIGTERM)
    worker.wait_for_log("SIGTERM received")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0

    [job] = jobs(queue.dsn)
    assert (job["state"], job["attempt"]) == ("running", 1)
    # Not lost: once the lease expires, another worker takes it.
    backdate_lease(queue.dsn, job_id)
    workers.start("next")
    wait_for(lambda: all_terminal(queue.dsn), 20, "the job to finish", detail=workers.logs)
    [job] = jobs(queue.dsn)
    assert (job["state"], job["attempt"], job["worker_id"]) == ("succeeded", 2, "next")
    assert ledger(tmp_path) == [job_id]
