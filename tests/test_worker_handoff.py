"""Hand-overs against a real database: a listening, idle worker is handed a one-row
enqueue's job at commit, already leased, with no claim and no wake-up; a worker that
stops or dies is handed nothing more; a lost listening connection loses no job.
"""

from __future__ import annotations

import logging
import select
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import scalar
from test_worker import Item, item, running, state
from worker_apps.apps import gated
from worker_apps.procs import APPS, WorkerProcess, all_terminal, jobs, ledger, wait_for

from pgqueue_py.client import Queue
from pgqueue_py.client._calls import handed_job
from pgqueue_py.worker import JobContext


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=12) as q:
        yield q


def waiting_slots(dsn: str, worker_id: str) -> int | None:
    """How many jobs ``worker_id`` waits to be handed; None when it waits for none."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select slots from pgq.waiting_workers where worker_id = %s",
                           (worker_id,)).fetchone()  # fmt: skip
    return None if row is None else int(row[0])


def wakes_sent(conn: psycopg.Connection[Any], timeout: float) -> list[str]:
    """Payloads of the pgq_jobs notifications ``conn`` (listening) gets within timeout."""
    select.select([conn.fileno()], [], [], timeout)
    return [n.payload for n in conn.notifies(timeout=0.05) if n.channel == "pgq_jobs"]


def test_an_idle_worker_is_handed_a_one_row_enqueue_without_a_claim_or_a_wake(
    queue: Queue,
) -> None:
    started: list[tuple[int, int]] = []
    done = threading.Event()

    def handle(ctx: JobContext, payload: Item) -> None:
        started.append((ctx.job_id, ctx.attempt))
        done.set()

    with psycopg.connect(queue.dsn, autocommit=True) as watcher, \
            running(queue, {item: handle}, worker_id="w-hand", concurrency=3):
        watcher.execute("listen pgq_jobs")
        wait_for(lambda: waiting_slots(queue.dsn, "w-hand") == 3, 10,
                 "the idle worker to wait with its 3 free slots")  # fmt: skip
        job_id = queue.add(item, {"n": 1})
        # Handed over at the commit: leased before the add returned.
        assert scalar(queue.dsn, "select worker_id from pgq.jobs where id = %s", (job_id,)) \
            == "w-hand"
        assert done.wait(10), "the handed job did not start"
        assert wakes_sent(watcher, 0.3) == [], "a handed job wakes no worker"
        wait_for(lambda: state(queue, job_id) == "succeeded", 10, "the job to succeed")
        # Its slot is free again: the worker waits with all three.
        wait_for(lambda: waiting_slots(queue.dsn, "w-hand") == 3, 10,
                 "the worker to wait with 3 slots again")  # fmt: skip
    assert started == [(job_id, 1)]
    assert waiting_slots(queue.dsn, "w-hand") is None, "a stopped worker waits for nothing"


def test_a_handed_job_carries_what_a_claim_returns(queue: Queue) -> None:
    with psycopg.connect(queue.dsn, autocommit=True) as listener:
        wake_key, channel = listener.execute(
            "select wake_key, channel from pgq.listen_for_handoffs()").fetchone() or (0, "")
        claimed = queue.claim_and_wait("w-client", queues=["default"], batch=2,
                                       wake_key=wake_key, channel=channel, free_slots=2)
        assert claimed == []
        job_id = queue.add(item, {"n": 7}, priority=3)
        [note] = list(listener.notifies(timeout=5, stop_after=1))
        assert note.channel == channel
        handed = handed_job(note.payload)
        row = queue.job(job_id)
        assert row is not None
        assert (handed.id, handed.job_name, handed.queue, handed.payload, handed.attempt,
                handed.priority) == (job_id, "item", "default", {"n": 7}, 1, 3)  # fmt: skip
        lease = listener.execute("select lease_token, lease_expires_at, lease_duration, run_at,"
                                 " created_at, max_retries from pgq.jobs where id = %s",
                                 (job_id,)).fetchone()  # fmt: skip
        assert lease == (handed.lease_token, handed.lease_expires_at, handed.lease_duration,
                         handed.run_at, handed.created_at, handed.max_retries)  # fmt: skip
        assert queue.complete(job_id, handed.lease_token) == "succeeded"

        queue.stop_waiting("w-client", channel=channel)
        [note] = list(listener.notifies(timeout=5, stop_after=1))
        assert (note.channel, note.payload) == (channel, ""), \
            "stop_waiting ends with an empty notification on the worker's channel"
        second = queue.add(item, {"n": 8})
        assert state(queue, second) == "available", "a worker that stopped waiting gets nothing"


def test_stopping_a_waiting_worker_is_prompt_and_leaves_no_registration(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgqueue_py.worker")
    with running(queue, {item: lambda ctx, p: None}, worker_id="w-stop") as run:
        wait_for(lambda: waiting_slots(queue.dsn, "w-stop") is not None, 10,
                 "the worker to wait")  # fmt: skip
        began = time.monotonic()
        run.worker.stop()
        run.join()
    # The stop waited for its own confirmation notification, not for the 10 s timeout.
    assert time.monotonic() - began < 5
    assert waiting_slots(queue.dsn, "w-stop") is None
    assert "did not confirm" not in caplog.text


@pytest.mark.parametrize("app", sorted(APPS))
def test_a_killed_waiting_worker_is_handed_nothing_and_its_job_runs_once(
    queue: Queue, tmp_path: Path, app: str
) -> None:
    first = WorkerProcess(queue.dsn, tmp_path / "first.log", "--worker-id", "first",
                          "--poll", "0.1", app=APPS[app])  # fmt: skip
    second: WorkerProcess | None = None
    try:
        wait_for(lambda: waiting_slots(queue.dsn, "first") is not None, 20,
                 "the first worker to wait", detail=first.log)  # fmt: skip
        first.proc.kill()
        first.wait()
        # Its registration outlives it; its listening session (and lock) do not.
        wait_for(lambda: not scalar(queue.dsn, "select exists (select from pg_locks where"
                                    " locktype = 'advisory' and classid = 1885434163)"),
                 10, "the killed worker's session to end")  # fmt: skip
        job_id = queue.add(gated, {"dir": str(tmp_path), "block_attempts": [], "effect": True})
        assert state(queue, job_id) == "available", "the dead worker was handed the job"
        assert waiting_slots(queue.dsn, "first") is None, "the dead worker's registration stays"
        second = WorkerProcess(queue.dsn, tmp_path / "second.log", "--worker-id", "second",
                               "--poll", "0.1", app=APPS[app])  # fmt: skip
        wait_for(lambda: all_terminal(queue.dsn), 20, "the job to finish", detail=second.log)
        [job] = jobs(queue.dsn)
        assert (job["state"], job["attempt"], job["worker_id"]) == ("succeeded", 1, "second")
        assert ledger(tmp_path) == [job_id]
    finally:
        first.kill()
        if second is not None:
            second.kill()


@pytest.mark.parametrize("app", sorted(APPS))
def test_jobs_handed_while_the_listening_connection_dies_run_once(
    queue: Queue, tmp_path: Path, app: str
) -> None:
    """SIGSTOP the waiting worker, hand it jobs, kill its listening backend, SIGCONT: the
    jobs it read before the connection died run; the others are given back uncounted
    and run by claim. Every job runs exactly once."""
    worker = WorkerProcess(queue.dsn, tmp_path / "w.log", "--worker-id", "w",
                           "--poll", "0.2", "--concurrency", "8", app=APPS[app])  # fmt: skip
    try:
        wait_for(lambda: (waiting_slots(queue.dsn, "w") or 0) >= 4, 20, "the worker to wait",
                 detail=worker.log)  # fmt: skip
        worker.signal(signal.SIGSTOP)
        job_ids = [queue.add(gated, {"dir": str(tmp_path), "block_attempts": [], "effect": True})
                   for _ in range(4)]
        assert scalar(queue.dsn, "select count(*) from pgq.jobs where worker_id = 'w'") == 4, \
            "the stopped worker (its connection alive) was handed the jobs"
        listener_pid = scalar(queue.dsn, "select pid from pg_locks where locktype = 'advisory'"
                              " and classid = 1885434163")  # fmt: skip
        assert scalar(queue.dsn, "select pg_terminate_backend(%s)", (listener_pid,))
        worker.signal(signal.SIGCONT)
        wait_for(lambda: all_terminal(queue.dsn), 30, "every job to finish", detail=worker.log)
        assert sorted(ledger(tmp_path)) == sorted(job_ids), "an effect ran twice or never"
        assert {j["state"] for j in jobs(queue.dsn)} == {"succeeded"}
        assert {j["attempt"] for j in jobs(queue.dsn)} == {1}, \
            "a job given back was counted as an attempt"
    finally:
        worker.kill()


def test_a_job_no_waiting_worker_takes_still_wakes_the_listening_workers(queue: Queue) -> None:
    with psycopg.connect(queue.dsn, autocommit=True) as worker_side, \
            psycopg.connect(queue.dsn, autocommit=True) as watcher:
        wake_key, channel = worker_side.execute(
            "select wake_key, channel from pgq.listen_for_handoffs()").fetchone() or (0, "")
        queue.claim_and_wait("w-other", queues=["other"], batch=1, wake_key=wake_key,
                             channel=channel, free_slots=1)  # fmt: skip
        watcher.execute("listen pgq_jobs")
        # A worker waits, but for another queue: the enqueue asks for a hand-over, none
        # happens at commit, and the wake-up comes from the commit instead.
        job_id = queue.add(item, {"n": 1})
        assert state(queue, job_id) == "available"
        assert wakes_sent(watcher, 5) == ["default"]
        assert waiting_slots(queue.dsn, "w-other") == 1, "the other queue's worker still waits"


def test_a_hand_over_notification_that_does_not_decode_is_logged_and_its_job_given_back(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """A notification on the worker's channel that is not a handed job starts nothing:
    the worker says so, names the payload, and goes on being handed jobs. The job it
    stood for is leased to the worker, which holds no record of it: the stop gives it
    back uncounted."""
    caplog.set_level(logging.ERROR, logger="pgqueue_py.worker")
    started: list[int] = []

    def handle(ctx: JobContext, payload: Item) -> None:
        started.append(ctx.job_id)

    with running(queue, {item: handle}, worker_id="w-garbled", concurrency=2) as run:
        wait_for(lambda: waiting_slots(queue.dsn, "w-garbled") == 2, 10, "the worker to wait")
        channel = scalar(queue.dsn, "select channel from pgq.waiting_workers"
                         " where worker_id = 'w-garbled'")  # fmt: skip
        garbled = queue.add(item, {"n": 1}, delay=timedelta(hours=1))
        with psycopg.connect(queue.dsn, autocommit=True) as producer, producer.transaction():
            # Leased to the worker as a hand-over would, but announced in a notification
            # that lacks every field but the id. One transaction: the worker's own claims
            # never see the job due and unleased.
            producer.execute("update pgq.jobs set run_at = now() where id = %s", (garbled,))
            producer.execute("select pgq.claim('w-garbled', array['default'], 1, '1 hour')")
            producer.execute("select pg_notify(%s, %s)", (channel, f'{{"id": {garbled}}}'))
        wait_for(lambda: "does not decode" in caplog.text, 10, "the worker to log the failure")
        assert f'{{"id": {garbled}}}' in caplog.text, "the log quotes the payload"
        assert "w-garbled" in caplog.text
        handed = queue.add(item, {"n": 2})
        wait_for(lambda: state(queue, handed) == "succeeded", 10,
                 "a later hand-over to run")  # fmt: skip
        assert started == [handed], "the garbled notification started a handler"
        assert (state(queue, garbled), scalar(queue.dsn, "select worker_id from pgq.jobs"
                                              " where id = %s", (garbled,))) \
            == ("running", "w-garbled")  # fmt: skip
        run.worker.stop()
        run.join()
    job = queue.job(garbled)
    assert job is not None
    assert (job.state, job.attempt) == ("available", 0), \
        "the stop gives back, uncounted, the job the worker never started"
