"""The database goes away under a running worker: its connections are killed
(``pg_terminate_backend``), or the server restarts. The worker logs, reconnects and goes
on, and every job still ends succeeded with its run-once effect done exactly once."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from worker_apps.apps import Work, handle_work, handle_work_async, work
from worker_apps.procs import jobs, ledger, wait_for

from pgqueue_py.client import Queue
from pgqueue_py.testing.throwaway import ThrowawayPostgres
from pgqueue_py.worker import Handler, Worker


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=10) as q:
        yield q


def terminate_other_backends(dsn: str) -> int:
    """Kill every connection to the test database but this one: the worker's pool, its
    LISTEN connection and anything else."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def succeeded(dsn: str) -> int:
    return sum(1 for job in jobs(dsn) if job["state"] == "succeeded")


def assert_each_job_succeeded_with_one_effect(dsn: str, ids: list[int], folder: Path) -> None:
    final = jobs(dsn)
    assert sorted(job["id"] for job in final) == sorted(ids)
    assert [job for job in final if job["state"] != "succeeded"] == []
    assert Counter(ledger(folder)) == Counter(ids)


@pytest.fixture(params=["sync", "async"])
def work_handler(request: pytest.FixtureRequest) -> Handler[Work]:
    """Each test runs with a plain handler and with an ``async def`` one."""
    return handle_work if request.param == "sync" else handle_work_async


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, name="test-worker-run")
    thread.start()
    return thread


def test_killed_connections_are_replaced_and_every_job_succeeds_once(
    queue: Queue, work_handler: Handler[Work], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = queue.add_many(work, [{"dir": str(tmp_path), "work_ms": 10}] * 300)
    # A short lease: a job whose heartbeat a killed connection missed is retried soon.
    worker = Worker(queue, {work: work_handler}, concurrency=4, lease=timedelta(seconds=2),
                    poll_interval=timedelta(milliseconds=100))  # fmt: skip
    caplog.set_level(logging.INFO, logger="pgqueue_py.worker")
    thread = run_in_thread(worker)
    try:
        for round_ in (1, 2, 3):
            wait_for(lambda r=round_: len(ledger(tmp_path)) >= 60 * r, 30,  # type: ignore[misc]
                     f"{60 * round_} effects")  # fmt: skip
            assert terminate_other_backends(queue.dsn) > 0
        wait_for(lambda: succeeded(queue.dsn) == len(ids), 40, "every job to succeed",
                 detail=lambda: caplog.text[-3000:])  # fmt: skip
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()

    assert_each_job_succeeded_with_one_effect(queue.dsn, ids, tmp_path)
    assert "database unavailable" in caplog.text


def test_worker_rides_out_a_server_restart(
    throwaway_pg: ThrowawayPostgres, queue: Queue, work_handler: Handler[Work], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    ids = queue.add_many(work, [{"dir": str(tmp_path), "work_ms": 10}] * 200)
    worker = Worker(queue, {work: work_handler}, concurrency=4, lease=timedelta(seconds=5),
                    poll_interval=timedelta(milliseconds=100))  # fmt: skip
    caplog.set_level(logging.INFO, logger="pgqueue_py.worker")
    thread = run_in_thread(worker)
    try:
        wait_for(lambda: len(ledger(tmp_path)) >= 50, 30, "50 effects")
        throwaway_pg.restart()
        done_before = len(ledger(tmp_path))
        assert done_before < len(ids), "the restart came too late to test anything"
        wait_for(lambda: succeeded(queue.dsn) == len(ids), 60, "every job to succeed",
                 detail=lambda: caplog.text[-3000:])  # fmt: skip
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()

    assert_each_job_succeeded_with_one_effect(queue.dsn, ids, tmp_path)
    assert "database unavailable" in caplog.text
