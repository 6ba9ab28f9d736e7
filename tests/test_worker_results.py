"""What a worker reports beyond success: a handler's return value as the job's result,
waited for by producers; cooperative cancellation of a running job; run-once that survives
a lost answer; and completions sent late, after an outage, that still count."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypedDict

import psycopg
import pytest
from helpers import job_row
from test_worker import FAST, running, state, wait_for_state

from pgqueue_py import (
    AsyncQueue,
    JobContext,
    JobType,
    NoResult,
    Queue,
    ResultTimeout,
)
from pgqueue_py.client import ClaimedJob, OnceStatus
from pgqueue_py.worker import Outcome


class Item(TypedDict):
    n: int


item = JobType("item", Item)


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=12) as q:
        yield q


# -- results ---------------------------------------------------------------------------------


def test_a_handlers_return_value_is_the_jobs_result(queue: Queue) -> None:
    ids = queue.add_many(item, [{"n": n} for n in range(20)])
    with running(queue, {item: lambda ctx, p: {"square": p["n"] ** 2}}):
        results = [queue.result(job_id, timeout=timedelta(seconds=20)) for job_id in ids]

    assert results == [{"square": n**2} for n in range(20)]
    assert queue.job_status(ids[3]).result == {"square": 9}


def test_an_async_handlers_return_value_is_the_jobs_result(queue: Queue) -> None:
    async def handle(ctx: JobContext, payload: Item) -> list[int]:
        await asyncio.sleep(0)
        return [payload["n"], ctx.attempt]

    job_id = queue.add(item, {"n": 5})
    with running(queue, {item: handle}):
        assert queue.result(job_id, timeout=timedelta(seconds=20)) == [5, 1]


def test_a_handler_returning_none_leaves_no_result(queue: Queue) -> None:
    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: lambda ctx, p: None}):
        assert queue.result(job_id, timeout=timedelta(seconds=20)) is None

    assert job_row(queue.dsn, job_id)["result"] is None


def test_result_waits_on_the_notification_not_a_tight_poll(queue: Queue) -> None:
    job_id = queue.add(item, {"n": 1}, delay=timedelta(milliseconds=500))
    with running(queue, {item: lambda ctx, p: "done"}):
        started = time.monotonic()
        assert queue.result(job_id, timeout=timedelta(seconds=20)) == "done"
        waited = time.monotonic() - started
    # Woken by pgq_finished at commit, not by the one-second poll.
    assert waited < 0.95, waited


def test_result_of_a_dead_job_raises_no_result_with_its_error(queue: Queue) -> None:
    queue.configure_queue("default", max_retries=0)

    def handle(ctx: JobContext, payload: Item) -> None:
        raise ValueError("bad input")

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}), pytest.raises(NoResult, match=r"dead.*bad input") as info:
        queue.result(job_id, timeout=timedelta(seconds=20))

    assert info.value.state == "dead"


def test_result_times_out_while_the_job_waits(queue: Queue) -> None:
    job_id = queue.add(item, {"n": 1})
    with pytest.raises(ResultTimeout, match="still available"):
        queue.result(job_id, timeout=timedelta(milliseconds=200))


def test_async_result_of_a_cancelled_job_raises_no_result(dsn: str) -> None:
    async def main() -> None:
        async with AsyncQueue(dsn) as queue:
            job_id = await queue.add(item, {"n": 1}, delay=timedelta(hours=1))
            waiting = asyncio.create_task(queue.result(job_id, timeout=timedelta(seconds=10)))
            await asyncio.sleep(0.2)
            await queue.cancel(job_id)
            with pytest.raises(NoResult, match="cancelled"):
                await waiting

    asyncio.run(main())


def test_a_result_that_is_not_json_fails_the_attempt(queue: Queue) -> None:
    queue.configure_queue("default", max_retries=0)
    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: lambda ctx, p: object()}):
        wait_for_state(queue, [job_id], "dead")

    [error] = queue.job_errors(job_id)
    assert "not JSON-serialisable" in error.error


def test_a_result_over_the_limit_fails_the_attempt_with_its_size(queue: Queue) -> None:
    queue.configure_queue("default", max_retries=0)
    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: lambda ctx, p: "x" * (2 * 1024 * 1024)}):
        wait_for_state(queue, [job_id], "dead")

    [error] = queue.job_errors(job_id)
    assert "result too large" in error.error


# -- cancellation ----------------------------------------------------------------------------


def test_cancelling_a_running_job_is_seen_by_its_handler_within_a_heartbeat(
    queue: Queue,
) -> None:
    started = threading.Event()
    seen: list[float] = []

    def handle(ctx: JobContext, payload: Item) -> None:
        started.set()
        while not ctx.cancelled:
            time.sleep(0.005)
        seen.append(time.monotonic())
        ctx.raise_if_cancelled()

    job_id = queue.add(item, {"n": 1})
    # A 1 s lease: heartbeats every third of a second.
    with running(queue, {item: handle}, lease=timedelta(seconds=1)):
        assert started.wait(20)
        cancelled_at = time.monotonic()
        queue.cancel(job_id)
        wait_for_state(queue, [job_id], "cancelled")
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)

    assert seen, "the handler never saw the cancellation"
    delay = seen[0] - cancelled_at
    assert delay < 0.5, f"seen {delay:.3f}s after cancel, more than a heartbeat period"
    # Nothing more was recorded for the job: no error, no completion.
    assert state(queue, job_id) == "cancelled"
    assert queue.job_errors(job_id) == []


def test_an_async_handler_can_await_its_cancellation(queue: Queue) -> None:
    outcome: list[str] = []

    async def handle(ctx: JobContext, payload: Item) -> None:
        work = asyncio.ensure_future(asyncio.sleep(30))
        cancelled = asyncio.ensure_future(ctx.wait_cancelled())
        done, _ = await asyncio.wait({work, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        outcome.append("cancelled" if cancelled in done else "finished")
        work.cancel()

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}, lease=timedelta(seconds=1)):
        wait_for_state(queue, [job_id], "running")
        queue.cancel(job_id)
        wait_for_state(queue, [job_id], "cancelled")
        deadline = time.monotonic() + 5
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.01)

    assert outcome == ["cancelled"]
    assert queue.job_errors(job_id) == []


def test_run_once_after_a_cancel_refuses_to_start_the_effect(queue: Queue) -> None:
    effects: list[int] = []
    refused: list[BaseException] = []
    cancelled = threading.Event()

    def handle(ctx: JobContext, payload: Item) -> None:
        while not ctx.cancelled:
            time.sleep(0.005)
        try:
            ctx.run_once("charge", lambda: effects.append(1))
        except Exception as exc:
            refused.append(exc)
        cancelled.set()

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}, lease=timedelta(seconds=1)):
        wait_for_state(queue, [job_id], "running")
        queue.cancel(job_id)
        assert cancelled.wait(10)

    assert effects == []
    assert [type(e).__name__ for e in refused] == ["JobCancelled"]


# -- a lost once_begin answer ----------------------------------------------------------------


class LostOnceAnswerQueue(AsyncQueue):
    """The first once_begin commits, then its answer is lost with the connection."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, max_connections=12)
        self.lost = 0

    async def once_begin(self, *args: Any, **kwargs: Any) -> OnceStatus:
        status = await super().once_begin(*args, **kwargs)
        if not self.lost:
            self.lost += 1
            raise psycopg.OperationalError("connection lost after once_begin committed")
        return status


def test_a_lost_once_begin_answer_is_resent_and_the_effect_runs_once(queue: Queue) -> None:
    lossy = LostOnceAnswerQueue(queue.dsn)
    effects: list[int] = []

    def charge(attempt: int) -> str:
        effects.append(attempt)
        return "charged"

    def handle(ctx: JobContext, payload: Item) -> str:
        return ctx.run_once("charge", lambda: charge(ctx.attempt))

    job_id = queue.add(item, {"n": 1})
    with running(lossy, {item: handle}):
        assert queue.result(job_id, timeout=timedelta(seconds=20)) == "charged"

    assert lossy.lost == 1
    assert effects == [1]
    assert job_row(queue.dsn, job_id)["attempt"] == 1


# -- completions sent after an outage --------------------------------------------------------


class OutageQueue(AsyncQueue):
    """While ``down`` is set, heartbeats, completions and claims fail as if the server
    were gone."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, max_connections=12)
        self.down = threading.Event()

    def _check(self) -> None:
        if self.down.is_set():
            raise psycopg.OperationalError("server unreachable (simulated outage)")

    async def heartbeat_many(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().heartbeat_many(*args, **kwargs)

    async def complete_many(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().complete_many(*args, **kwargs)

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().claim(*args, **kwargs)

    async def claim_and_wait(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().claim_and_wait(*args, **kwargs)

    async def stop_waiting(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().stop_waiting(*args, **kwargs)

    async def release_lost_claims(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().release_lost_claims(*args, **kwargs)


def test_jobs_finished_during_an_outage_are_recorded_late_and_not_run_again(
    queue: Queue,
) -> None:
    outage = OutageQueue(queue.dsn)
    runs: list[int] = []
    release = threading.Event()

    def handle(ctx: JobContext, payload: Item) -> None:
        release.wait(10)
        runs.append(ctx.job_id)

    ids = queue.add_many(item, [{"n": n} for n in range(5)])
    with running(outage, {item: handle}, lease=timedelta(seconds=1), poll_interval=FAST):
        wait_for(lambda: all(state(queue, i) == "running" for i in ids), "5 jobs running")
        outage.down.set()
        release.set()
        # The leases (1 s) expire while the handlers' completions cannot be sent.
        wait_for(lambda: leases_expired(queue.dsn, ids), "the 5 leases to expire")
        outage.down.clear()
        wait_for_state(queue, ids, "succeeded")

    assert sorted(runs) == sorted(ids), "a finished job ran again"
    assert [job_row(queue.dsn, i)["attempt"] for i in ids] == [1] * 5


def leases_expired(dsn: str, ids: list[int]) -> bool:
    """Whether no job of ``ids`` runs under a lease that is still valid, by the server's
    clock."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select bool_and(state <> 'running' or lease_expires_at <= now())"
            " from pgq.jobs where id = any(%s)",
            (ids,),
        ).fetchone()
    return bool(row and row[0])


def wait_for(predicate: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- the observer --------------------------------------------------------------------------


class Recorder:
    """A WorkerObserver that keeps what it is told (called on the worker's loop)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[tuple[int, str, float]] = []

    def job_started(self, job: ClaimedJob) -> None:
        self.started.append(job.id)

    def job_finished(self, job: ClaimedJob, outcome: Outcome, duration: float) -> None:
        self.finished.append((job.id, outcome, duration))


def test_the_observer_hears_every_start_and_how_each_attempt_ended(queue: Queue) -> None:
    queue.configure_queue("default", max_retries=1, backoff_base=timedelta(milliseconds=10),
                          backoff_max=timedelta(milliseconds=20))  # fmt: skip
    slow = JobType("slow", Item, timeout=timedelta(seconds=0.2))
    recorder = Recorder()

    async def handle(ctx: JobContext, payload: Item) -> None:
        if payload["n"] == 1:
            raise ValueError("always")
        await asyncio.sleep(0.05 if payload["n"] == 0 else 5)

    ok = queue.add(item, {"n": 0})
    doomed = queue.add(item, {"n": 1})
    late = queue.add(slow, {"n": 2}, max_retries=0)
    with running(queue, {item: handle, slow: handle}, observer=recorder):
        wait_for_state(queue, [ok], "succeeded")
        wait_for_state(queue, [doomed, late], "dead")

    outcomes = {(job_id, outcome) for job_id, outcome, _ in recorder.finished}
    assert outcomes == {(ok, "succeeded"), (doomed, "failed"), (doomed, "dead"),
                        (late, "timed_out")}  # fmt: skip
    assert sorted(recorder.started) == sorted([ok, doomed, doomed, late])
    [ok_duration] = [d for job_id, _, d in recorder.finished if job_id == ok]
    assert 0.04 < ok_duration < 2
