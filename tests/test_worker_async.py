"""``async def`` handlers on the worker's event loop: the same context, run-once in its
awaitable form, timeouts that really cancel, and a worker inside an asyncio application."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import TypedDict

import pytest
from test_worker import FAST, running, state, wait_for_state

from pgqueue_py import AsyncQueue, JobContext, JobType, Queue, Worker


class Item(TypedDict):
    n: int


item = JobType("item", Item)
other = JobType("other", Item)
slow = JobType("slow", Item, timeout=timedelta(seconds=0.3))
timed = JobType("timed", Item, timeout=timedelta(seconds=30))
timed_other = JobType("timed_other", Item, timeout=timedelta(seconds=30))


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=12) as q:
        yield q


def test_async_handlers_run_jobs_to_success_with_their_context(queue: Queue) -> None:
    seen: dict[int, tuple[int, int, str]] = {}
    loops: set[int] = set()

    async def handle(ctx: JobContext, payload: Item) -> None:
        await asyncio.sleep(0.001)
        loops.add(threading.get_ident())
        seen[ctx.job_id] = (payload["n"], ctx.attempt, ctx.job_name)

    ids = queue.add_many(item, [{"n": n} for n in range(50)])
    with running(queue, {item: handle}, concurrency=20):
        wait_for_state(queue, ids, "succeeded")

    assert seen == {job_id: (n, 1, "item") for n, job_id in enumerate(ids)}
    assert len(loops) == 1, "every async handler runs on the worker's one event loop"


def test_sync_and_async_handlers_run_side_by_side(queue: Queue) -> None:
    threads: dict[str, set[int]] = {"sync": set(), "async": set()}

    def handle_sync(ctx: JobContext, payload: Item) -> None:
        threads["sync"].add(threading.get_ident())

    async def handle_async(ctx: JobContext, payload: Item) -> None:
        threads["async"].add(threading.get_ident())

    ids = queue.add_many(item, [{"n": n} for n in range(20)])
    ids += queue.add_many(other, [{"n": n} for n in range(20)])
    with running(queue, {item: handle_sync, other: handle_async}, concurrency=4):
        wait_for_state(queue, ids, "succeeded")

    assert threads["sync"].isdisjoint(threads["async"])


def test_async_handler_error_is_retried_with_its_traceback(queue: Queue) -> None:
    queue.configure_queue("default", backoff_base=timedelta(milliseconds=100))

    async def handle(ctx: JobContext, payload: Item) -> None:
        if ctx.attempt == 1:
            raise ValueError("async boom")

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}):
        wait_for_state(queue, [job_id], "succeeded")

    [error] = queue.job_errors(job_id)
    assert error.error.startswith("ValueError: async boom")
    assert "in handle" in error.error


def test_a_timeout_error_from_a_handler_is_its_failure_not_a_timeout(queue: Queue) -> None:
    # Its own TimeoutError (an HTTP call that gave up, say) is the attempt's error, kept
    # like any other: with no timeout set, and with one set that it came well within.
    queue.configure_queue("default", backoff_base=timedelta(milliseconds=100))

    async def handle_async(ctx: JobContext, payload: Item) -> None:
        if ctx.attempt == 1:
            raise TimeoutError("upstream gave up")

    def handle_sync(ctx: JobContext, payload: Item) -> None:
        if ctx.attempt == 1:
            raise TimeoutError("upstream gave up")

    ids = [queue.add(item, {"n": 1}), queue.add(other, {"n": 2}),
           queue.add(timed, {"n": 3}), queue.add(timed_other, {"n": 4})]
    with running(queue, {item: handle_async, other: handle_sync,
                         timed: handle_async, timed_other: handle_sync}):
        wait_for_state(queue, ids, "succeeded")

    for job_id in ids:
        [error] = queue.job_errors(job_id)
        assert error.error.startswith("TimeoutError: upstream gave up")
        assert "Traceback (most recent call last)" in error.error


def test_async_handler_past_its_timeout_is_cancelled_and_frees_its_slot(queue: Queue) -> None:
    queue.configure_queue("default", max_retries=0)
    cancelled = threading.Event()

    async def handle(ctx: JobContext, payload: Item) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = queue.add(slow, {"n": 1})
    with running(queue, {slow: handle, item: lambda ctx, p: None}, concurrency=1):
        wait_for_state(queue, [job_id], "dead")
        assert cancelled.wait(5)
        # Unlike a thread, the coroutine stopped: its one slot takes the next job at once.
        next_job = queue.add(item, {"n": 2})
        wait_for_state(queue, [next_job], "succeeded")

    assert [e.error for e in queue.job_errors(job_id)] == ["timed out after 0.3s"]


def test_async_handler_that_returns_after_its_timeout_has_timed_out(queue: Queue) -> None:
    # Cancelled at its timeout, it swallows the cancellation and returns: the attempt
    # timed out all the same, as a plain handler's late return is ignored.
    queue.configure_queue("default", max_retries=0)

    async def handle(ctx: JobContext, payload: Item) -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return "late"

    job_id = queue.add(slow, {"n": 1})
    with running(queue, {slow: handle}):
        wait_for_state(queue, [job_id], "dead")

    assert [e.error for e in queue.job_errors(job_id)] == ["timed out after 0.3s"]


def test_run_once_async_replays_the_stored_result(queue: Queue) -> None:
    queue.configure_queue("default", backoff_base=timedelta(milliseconds=10))
    effects: list[int] = []
    results: list[tuple[int, object]] = []

    async def charge() -> dict[str, int]:
        await asyncio.sleep(0)
        effects.append(1)
        return {"charged": 42}

    async def handle(ctx: JobContext, payload: Item) -> None:
        results.append((ctx.attempt, await ctx.run_once_async("charge", charge)))
        if ctx.attempt == 1:
            raise RuntimeError("failed after the effect")

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}):
        wait_for_state(queue, [job_id], "succeeded")

    assert effects == [1]
    assert results == [(1, {"charged": 42}), (2, {"charged": 42})]


def test_a_second_run_once_of_a_key_in_one_attempt_does_not_run_it_again(
    queue: Queue,
) -> None:
    effects: list[str] = []

    def send(mark: str) -> str:
        effects.append(mark)
        return "sent" if mark == "a" else "again"

    async def handle(ctx: JobContext, payload: Item) -> None:
        first = await ctx.run_once_async("mail", lambda: send("a"))
        second = await ctx.run_once_async("mail", lambda: send("b"))
        assert (first, second) == ("sent", "sent")

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}):
        wait_for_state(queue, [job_id], "succeeded")

    assert effects == ["a"]


def test_blocking_run_once_in_an_async_handler_is_refused_clearly(queue: Queue) -> None:
    queue.configure_queue("default", max_retries=0)

    async def handle(ctx: JobContext, payload: Item) -> None:
        ctx.run_once("mail", lambda: None)

    job_id = queue.add(item, {"n": 1})
    with running(queue, {item: handle}):
        wait_for_state(queue, [job_id], "dead")

    [error] = queue.job_errors(job_id)
    assert "awaits ctx.run_once_async" in error.error
    assert queue.job(job_id) is not None


def test_a_worker_runs_inside_an_asyncio_application(dsn: str) -> None:
    done: list[int] = []

    async def handle(ctx: JobContext, payload: Item) -> None:
        done.append(payload["n"])

    async def application() -> None:
        async with AsyncQueue(dsn) as queue:
            worker = Worker(queue, {item: handle}, poll_interval=FAST)
            serving = asyncio.create_task(worker.run_async())
            ids = await queue.add_many(item, [{"n": n} for n in range(10)])
            while len(done) < 10:
                await asyncio.sleep(0.01)
            worker.stop()
            await asyncio.wait_for(serving, 10)
            for job_id in ids:
                details = await queue.job(job_id)
                assert details is not None and details.state == "succeeded"

    asyncio.run(asyncio.wait_for(application(), 30))
    assert sorted(done) == list(range(10))


def test_stop_before_run_stops_the_worker_as_soon_as_it_starts(queue: Queue) -> None:
    job_id = queue.add(item, {"n": 1})
    worker = Worker(queue, {item: lambda ctx, p: None}, poll_interval=FAST)
    worker.stop()
    worker.run()

    assert state(queue, job_id) == "available"
