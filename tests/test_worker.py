"""The worker in this process against a real database: jobs run to success, failures are
retried and dead-lettered by the engine, timeouts, run-once replay, LISTEN and polling,
stopping, and claiming in batches."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

import psycopg
import pytest
from helpers import backdate_lease, job_row
from worker_apps.procs import wait_for

from pgqueue_py import Handler, JobType
from pgqueue_py.client import AsyncQueue, ClaimedJob, Queue, _sql
from pgqueue_py.client.errors import OutcomeUnknown
from pgqueue_py.worker import JobContext, Worker, WorkerThreadDied


class Item(TypedDict):
    n: int


@dataclass(frozen=True)
class Order:
    number: str
    cents: int


item = JobType("item", Item)
order = JobType("order", Order)
slow = JobType("slow", Item, timeout=timedelta(seconds=0.3))

FAST = timedelta(milliseconds=100)
"""Poll interval for tests that do not exercise LISTEN."""


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=12) as q:
        yield q


class Running:
    """A worker running in a background thread; ``run()``'s exception is kept."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-worker-run")

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 30.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error


@contextmanager
def running(
    queue: Queue | AsyncQueue, handlers: dict[JobType[Any], Handler[Any]], **options: Any
) -> Iterator[Running]:
    options.setdefault("poll_interval", FAST)
    run = Running(Worker(queue, handlers, **options))
    run.thread.start()
    try:
        yield run
    finally:
        run.worker.stop()
        run.join()


def state(queue: Queue, job_id: int) -> str:
    details = queue.job(job_id)
    assert details is not None
    return details.state


def wait_for_state(queue: Queue, job_ids: Sequence[int], wanted: str, timeout: float = 20) -> None:
    wait_for(lambda: all(state(queue, i) == wanted for i in job_ids), timeout,
             f"jobs {list(job_ids)[:5]}... to be {wanted}",
             detail=lambda: str([queue.job(i) for i in job_ids][:3]))  # fmt: skip


def test_worker_runs_jobs_to_success_with_their_context(queue: Queue) -> None:
    seen: dict[int, tuple[int, int, int, str, str]] = {}

    def handle(ctx: JobContext, payload: Item) -> None:
        seen[ctx.job_id] = (payload["n"], ctx.attempt, ctx.retry_count, ctx.job_name, ctx.queue)

    ids = queue.add_many(item, [{"n": n} for n in range(20)])
    with running(queue, {item: handle}):
        wait_for_state(queue, ids, "succeeded")

    assert seen == {job_id: (n, 1, 0, "item", "default") for n, job_id in enumerate(ids)}
    assert all(queue.job_errors(i) == [] for i in ids)


def test_handler_error_is_retried_with_backoff_and_its_traceback_kept(queue: Queue) -> None:
    queue.configure_queue("default", backoff_base=timedelta(milliseconds=200))

    def handle(ctx: JobContext, payload: Item) -> None:
        if ctx.attempt == 1:
            raise ValueError(f"boom {payload['n']}")

    job_id = queue.add(item, {"n": 7})
    with running(queue, {item: handle}):
        wait_for_state(queue, [job_id], "succeeded")

    [error] = queue.job_errors(job_id)
    assert error.attempt == 1
    assert error.error.startswith("ValueError: boom 7")
    assert "Traceback (most recent call last)" in error.error
    assert "in handle" in error.error
    # The engine scheduled the retry for later than the failure: that is the backoff.
    row = job_row(queue.dsn, job_id)
    assert row["attempt"] == 2
    assert row["run_at"] > error.failed_at


def test_plain_handler_raising_system_exit_fails_its_attempt_and_the_worker_goes_on(
    queue: Queue,
) -> None:
    # On a handler thread SystemExit ends nothing but that call: it is the attempt's
    # failure, kept like any other, not the worker's end.
    queue.configure_queue("default", backoff_base=timedelta(milliseconds=100))

    def handle(ctx: JobContext, payload: Item) -> None:
        if ctx.attempt == 1:
            raise SystemExit(f"exit {payload['n']}")

    job_id = queue.add(item, {"n": 3})
    later = queue.add(item, {"n": 4})
    with running(queue, {item: handle}, concurrency=1) as run:
        wait_for_state(queue, [job_id, later], "succeeded")
        assert run.thread.is_alive()

    [first] = queue.job_errors(job_id)
    assert first.attempt == 1
    assert first.error.startswith("SystemExit: exit 3")
    assert "Traceback (most recent call last)" in first.error
    [second] = queue.job_errors(later)
    assert second.error.startswith("SystemExit: exit 4")


def test_job_that_always_fails_is_dead_after_max_retries_plus_one_attempts(
    queue: Queue,
) -> None:
    queue.configure_queue("default", max_retries=2, backoff_base=timedelta(milliseconds=10),
                          backoff_max=timedelta(milliseconds=50))  # fmt: skip
    calls: list[int] = []

    def handle(ctx: JobContext, payload: Item) -> None:
        calls.append(ctx.attempt)
        raise RuntimeError("always")

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}):
        wait_for_state(queue, [job_id], "dead")

    assert calls == [1, 2, 3]
    assert [e.attempt for e in queue.job_errors(job_id)] == [1, 2, 3]
    [dead] = queue.dead_letter()
    assert dead.id == job_id
    assert dead.last_error is not None and dead.last_error.startswith("RuntimeError: always")


def test_unknown_job_name_is_dead_at_once_with_the_known_names(queue: Queue) -> None:
    mystery = JobType("mystery", Item)
    job_id = queue.add(mystery, {"n": 1})

    with running(queue, {item: lambda ctx, p: None, order: lambda ctx, p: None}):
        wait_for_state(queue, [job_id], "dead")

    [error] = queue.job_errors(job_id)
    assert error.attempt == 1
    assert "unknown job name 'mystery'" in error.error
    assert "item, order" in error.error


def test_a_large_claim_of_jobs_that_fail_before_their_handler_starts_all_end_dead(
    queue: Queue,
) -> None:
    # Jobs that fail before a handler starts free their slot at once; thousands claimed
    # together must not make the dispatch call itself once per job.
    mystery = JobType("mystery", Item)
    ids = queue.add_many(mystery, [{"n": n} for n in range(3000)])

    with running(queue, {item: lambda ctx, p: None}, concurrency=4, prefetch=3000) as run:
        wait_for_state(queue, ids, "dead", timeout=60)
        assert run.thread.is_alive()


def test_payload_that_does_not_decode_is_dead_at_once(queue: Queue) -> None:
    bad = JobType("order", Item)  # same name, wrong shape: Order(n=1) fails
    job_id = queue.add(bad, {"n": 1})
    handled: list[Order] = []

    with running(queue, {order: lambda ctx, p: handled.append(p)}):
        wait_for_state(queue, [job_id], "dead")

    [error] = queue.job_errors(job_id)
    assert "does not decode as Order" in error.error
    assert handled == []


def test_dataclass_payload_reaches_the_handler_decoded(queue: Queue) -> None:
    handled: list[Order] = []
    job_id = queue.add(order, Order("A-1", 250))

    with running(queue, {order: lambda ctx, p: handled.append(p)}):
        wait_for_state(queue, [job_id], "succeeded")

    assert handled == [Order("A-1", 250)]


def test_handler_past_its_timeout_fails_the_attempt_and_its_late_result_is_ignored(
    queue: Queue,
) -> None:
    queue.configure_queue("default", max_retries=0)
    release = threading.Event()
    returned = threading.Event()

    def handle(ctx: JobContext, payload: Item) -> None:
        release.wait(30)
        returned.set()

    job_id = queue.add(slow, {"n": 1})
    with running(queue, {slow: handle, item: lambda ctx, p: None}, concurrency=1):
        wait_for_state(queue, [job_id], "dead")
        # The only slot stays busy until the handler returns; then the next job runs.
        next_job = queue.add(item, {"n": 2})
        release.set()
        assert returned.wait(10)
        wait_for_state(queue, [next_job], "succeeded")

    assert state(queue, job_id) == "dead"
    [error] = queue.job_errors(job_id)
    assert error.error == "timed out after 0.3s"


def test_stop_does_not_wait_for_a_handler_past_its_timeout(queue: Queue) -> None:
    queue.configure_queue("default", max_retries=0)
    release = threading.Event()
    job_id = queue.add(slow, {"n": 1})
    try:
        # running() joins for 30 s at most: far less than the shutdown timeout.
        with running(queue, {slow: lambda ctx, p: release.wait(60)},
                     shutdown_timeout=timedelta(seconds=120)):  # fmt: skip
            wait_for_state(queue, [job_id], "dead")
    finally:
        release.set()

    assert [e.error for e in queue.job_errors(job_id)] == ["timed out after 0.3s"]


def test_heartbeats_keep_a_long_handler_lease(queue: Queue) -> None:
    # A 1 s lease and a handler that runs 2.5 s: without heartbeats the worker's own
    # claims (polling every 0.1 s) would expire the lease and fail the attempt.
    pause = threading.Event()
    job_id = queue.add(item, {"n": 1})

    with running(queue, {item: lambda ctx, p: pause.wait(2.5)}, lease=timedelta(seconds=1)):
        wait_for_state(queue, [job_id], "succeeded")

    assert job_row(queue.dsn, job_id)["attempt"] == 1
    assert queue.job_errors(job_id) == []


def test_heartbeats_follow_the_queue_lease_the_database_grants(queue: Queue) -> None:
    # The worker asks for no lease: the queue's 1 s lease, returned by claim, sets the
    # heartbeat period (the default would be 10 s, far too late).
    queue.configure_queue("default", lease=timedelta(seconds=1))
    pause = threading.Event()
    job_id = queue.add(item, {"n": 1})

    with running(queue, {item: lambda ctx, p: pause.wait(2.5)}):
        wait_for_state(queue, [job_id], "succeeded")

    assert job_row(queue.dsn, job_id)["attempt"] == 1
    assert queue.job_errors(job_id) == []


def test_run_once_replays_the_stored_result_without_calling_fn(queue: Queue) -> None:
    queue.configure_queue("default", backoff_base=timedelta(milliseconds=10))
    effects: list[int] = []
    results: list[tuple[int, object]] = []

    def charge() -> dict[str, int]:
        effects.append(1)
        return {"charged": 42}

    def handle(ctx: JobContext, payload: Item) -> None:
        results.append((ctx.attempt, ctx.run_once("charge", charge)))
        if ctx.attempt == 1:
            raise RuntimeError("failed after the effect")

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}):
        wait_for_state(queue, [job_id], "succeeded")

    assert effects == [1]
    assert results == [(1, {"charged": 42}), (2, {"charged": 42})]


def test_run_once_that_raised_runs_again_on_the_next_attempt(queue: Queue) -> None:
    queue.configure_queue("default", backoff_base=timedelta(milliseconds=10))
    calls: list[int] = []

    def handle(ctx: JobContext, payload: Item) -> None:
        def effect() -> int:
            calls.append(ctx.attempt)
            if ctx.attempt == 1:
                raise ConnectionError("the effect failed")
            return ctx.attempt

        ctx.run_once("send", effect)

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}):
        wait_for_state(queue, [job_id], "succeeded")

    assert calls == [1, 2]


def test_run_once_begun_by_an_attempt_that_never_finished_raises_outcome_unknown(
    queue: Queue,
) -> None:
    # Attempts are left, yet the unknown outcome dead-letters the job at once.
    queue.configure_queue("default", max_retries=5, backoff_base=timedelta(milliseconds=10))
    job_id = queue.add(item, {"n": 1})
    # Attempt 1 begins the effect, then its worker vanishes.
    [first] = queue.claim("vanished-worker", batch=1)
    assert queue.once_begin(job_id, first.lease_token, "charge").status == "run"
    backdate_lease(queue.dsn, job_id)
    called: list[int] = []
    raised: list[BaseException] = []

    def handle(ctx: JobContext, payload: Item) -> None:
        try:
            ctx.run_once("charge", lambda: called.append(1))
        except OutcomeUnknown as exc:
            raised.append(exc)
            raise

    with running(queue, {item: handle}):
        wait_for_state(queue, [job_id], "dead")

    assert called == []
    assert [type(e) for e in raised] == [OutcomeUnknown]
    errors = queue.job_errors(job_id)
    assert [e.attempt for e in errors] == [1, 2]
    assert "lease expired" in errors[0].error
    assert errors[1].error.startswith("OutcomeUnknown: ")


def _listening_backends(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity"
            " where datname = current_database() and query = %s",
            (_sql.LISTEN_FOR_HANDOFFS,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_listen_wakes_an_idle_worker_long_before_its_poll(queue: Queue) -> None:
    done = threading.Event()
    with running(queue, {item: lambda ctx, p: done.set()},
                 poll_interval=timedelta(seconds=30)):  # fmt: skip
        wait_for(lambda: _listening_backends(queue.dsn) == 1, 10, "the LISTEN connection")
        job_id = queue.add(item, {"n": 1})
        # The poll fires after 24 s at the earliest; only the notification is this fast.
        assert done.wait(10), "the notification did not wake the worker"
        wait_for_state(queue, [job_id], "succeeded", timeout=10)


def test_worker_without_listen_finds_jobs_by_polling(queue: Queue) -> None:
    with running(queue, {item: lambda ctx, p: None}, listen=False):
        job_id = queue.add(item, {"n": 1})
        wait_for_state(queue, [job_id], "succeeded")
        assert _listening_backends(queue.dsn) == 0


def test_stop_is_safe_twice_and_from_another_thread(queue: Queue) -> None:
    run = Running(Worker(queue, {item: lambda ctx, p: None}, poll_interval=FAST))
    run.thread.start()
    stopper = threading.Thread(target=run.worker.stop)
    stopper.start()
    stopper.join()
    run.worker.stop()
    run.join()
    run.worker.stop()
    run.worker.stop(now=True)

    with pytest.raises(RuntimeError, match="runs once"):
        run.worker.run()


def test_stop_lets_a_running_handler_finish_and_records_it(queue: Queue) -> None:
    started, release = threading.Event(), threading.Event()

    def handle(ctx: JobContext, payload: Item) -> None:
        started.set()
        release.wait(30)

    job_id = queue.add(item, {"n": 1})
    run = Running(Worker(queue, {item: handle}, poll_interval=FAST))
    run.thread.start()
    assert started.wait(20)
    run.worker.stop()
    later = queue.add(item, {"n": 2})
    release.set()
    run.join()

    assert state(queue, job_id) == "succeeded"
    assert state(queue, later) == "available"


class CountingQueue(AsyncQueue):
    """Counts claim calls and the jobs they return."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, max_connections=12)
        self.claims: list[int] = []

    async def claim(self, worker_id: str, **options: Any) -> list[ClaimedJob]:
        jobs = await super().claim(worker_id, **options)
        self.claims.append(len(jobs))
        return jobs

    async def claim_and_wait(self, worker_id: str, **options: Any) -> list[ClaimedJob]:
        jobs = await super().claim_and_wait(worker_id, **options)
        self.claims.append(len(jobs))
        return jobs


def test_a_backlog_is_claimed_in_batches_not_job_by_job(queue: Queue) -> None:
    counting = CountingQueue(queue.dsn)
    ids = queue.add_many(item, [{"n": n} for n in range(100)])
    with running(counting, {item: lambda ctx, p: None}, concurrency=8, prefetch=0):
        wait_for_state(queue, ids, "succeeded")

    claimed = [n for n in counting.claims if n]
    assert sum(claimed) == 100
    assert len(claimed) <= 30, counting.claims
    assert max(claimed) == 8


def test_fast_jobs_are_claimed_ahead_of_free_slots_up_to_the_prefetch(queue: Queue) -> None:
    counting = CountingQueue(queue.dsn)
    ids = queue.add_many(item, [{"n": n} for n in range(2000)])
    with running(counting, {item: lambda ctx, p: None}, concurrency=4, prefetch=50):
        wait_for_state(queue, ids, "succeeded")

    claimed = [n for n in counting.claims if n]
    assert sum(claimed) == 2000
    # Once handler durations are known, claims take more than the free slots...
    assert max(claimed) > 4, counting.claims
    # ...but never more than concurrency + prefetch.
    assert max(claimed) <= 54, counting.claims


def test_slow_jobs_are_not_claimed_ahead(queue: Queue) -> None:
    counting = CountingQueue(queue.dsn)
    pause = threading.Event()
    ids = queue.add_many(item, [{"n": n} for n in range(12)])
    with running(counting, {item: lambda ctx, p: pause.wait(0.2)}, concurrency=4):
        wait_for_state(queue, ids, "succeeded")

    # 0.2 s jobs: the buffer would hold 20 ms of work, less than one job, so every claim
    # takes at most the free slots.
    claimed = [n for n in counting.claims if n]
    assert sum(claimed) == 12
    assert max(claimed) <= 4, counting.claims


class StalledCompletionsQueue(AsyncQueue):
    """complete_many waits until released: finished jobs cannot be recorded meanwhile."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, max_connections=12)
        self.release = threading.Event()

    async def complete_many(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.to_thread(self.release.wait, 30)
        return await super().complete_many(*args, **kwargs)


def test_jobs_awaiting_their_record_stop_the_claims_at_concurrency_plus_prefetch(
    queue: Queue,
) -> None:
    stalled = StalledCompletionsQueue(queue.dsn)
    ids = queue.add_many(item, [{"n": n} for n in range(100)])
    with running(stalled, {item: lambda ctx, p: None}, concurrency=4, prefetch=6) as run:
        held = "select count(*) from pgq.jobs where state = 'running' and worker_id = %s"
        with psycopg.connect(queue.dsn, autocommit=True) as conn:

            def held_jobs() -> int:
                row = conn.execute(held, (run.worker.worker_id,)).fetchone()
                return int(row[0]) if row else 0

            wait_for(lambda: held_jobs() >= 10, 10, "10 jobs held by the stalled worker")
            # The handlers are idle, yet nothing more is claimed while 10 await their record.
            for _ in range(20):
                assert held_jobs() == 10
                threading.Event().wait(0.02)
        stalled.release.set()
        wait_for_state(queue, ids, "succeeded")


class LostClaimAnswerQueue(AsyncQueue):
    """The first claim that leases jobs commits, then its answer is lost with the
    connection, as when the network drops between the server's commit and the reply."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, max_connections=12)
        self.lost: list[int] = []

    async def claim(self, worker_id: str, **options: Any) -> list[ClaimedJob]:
        return self._lose_first(await super().claim(worker_id, **options))

    async def claim_and_wait(self, worker_id: str, **options: Any) -> list[ClaimedJob]:
        return self._lose_first(await super().claim_and_wait(worker_id, **options))

    def _lose_first(self, jobs: list[ClaimedJob]) -> list[ClaimedJob]:
        if jobs and not self.lost:
            self.lost = [job.id for job in jobs]
            raise psycopg.OperationalError("connection lost after the claim committed")
        return jobs


def test_jobs_of_a_claim_whose_answer_was_lost_run_at_once_uncounted(queue: Queue) -> None:
    lossy = LostClaimAnswerQueue(queue.dsn)
    ids = queue.add_many(item, [{"n": n} for n in range(5)])
    # A one-hour lease: only the release, not lease expiry, can bring them back soon.
    with running(lossy, {item: lambda ctx, p: None}, lease=timedelta(hours=1)):
        wait_for_state(queue, ids, "succeeded")

    assert sorted(lossy.lost) == sorted(ids)
    assert [job_row(queue.dsn, job_id)["attempt"] for job_id in ids] == [1] * 5
    assert all(queue.job_errors(job_id) == [] for job_id in ids)


class BrokenHeartbeatQueue(AsyncQueue):
    """A queue whose heartbeat call fails with a bug (not a lost connection)."""

    async def heartbeat_many(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected heartbeat bug")


def test_a_thread_that_dies_stops_the_worker_and_run_says_why(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    with Queue(dsn) as queue:
        job_id = queue.add(item, {"n": 1})
        broken = BrokenHeartbeatQueue(dsn)
        run = Running(Worker(broken, {item: lambda ctx, p: release.wait(30)},
                             lease=timedelta(seconds=1), poll_interval=FAST))  # fmt: skip
        run.thread.start()
        try:
            with pytest.raises(WorkerThreadDied, match="heartbeats died"):
                run.join()
        finally:
            release.set()

        assert "task heartbeats died" in caplog.text
        assert "injected heartbeat bug" in caplog.text
        # Stopped at once: the job is left to its lease, not recorded.
        assert state(queue, job_id) == "running"
