"""``AsyncQueue`` against a real database: the same methods as ``Queue``, awaited, with
the same rows and errors, the caller's ``AsyncConnection``, and a clear error when no
connection comes within ``pool_timeout``.

Each test runs its coroutine with ``asyncio.run``: no pytest plugin is needed."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar
from uuid import uuid4

import psycopg
import pytest
from helpers import backdate_finished, count_jobs, greet, job_row, scalar

from pgqueue_py import (
    AsyncQueue,
    ConfigurationError,
    ConnectionUnavailable,
    InvalidArgument,
    JobNotFound,
    JobStateConflict,
    LeaseLost,
    MarkerNotBegun,
    MarkerNotFound,
    Queue,
    QueueNotFound,
)
from pgqueue_py.client import (
    AttemptError,
    ClaimedJob,
    CompletionOutcome,
    DeadJob,
    HeartbeatOutcome,
    JobDetails,
    OnceStatus,
    QueueStats,
)

T = TypeVar("T")


def run(dsn: str, body: Callable[[AsyncQueue], Awaitable[T]], **options: Any) -> T:
    """Run ``body`` with an open AsyncQueue on ``dsn`` in a fresh event loop."""

    async def main() -> T:
        async with AsyncQueue(dsn, max_connections=4, **options) as queue:
            return await body(queue)

    return asyncio.run(main())


async def running(queue: AsyncQueue, name: str = "Ada") -> ClaimedJob:
    job_id = await queue.add(greet, {"name": name, "times": 1})
    claimed = await queue.claim("async-worker", queues=["default"])
    assert [c.id for c in claimed] == [job_id]
    return claimed[0]


def make_due(dsn: str, job_id: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("update pgq.jobs set run_at = now() where id = %s", (job_id,))


# -- the same surface as Queue -------------------------------------------------------------


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def test_async_queue_has_every_queue_method_with_the_same_parameters() -> None:
    sync, asynchronous = public_methods(Queue), public_methods(AsyncQueue)

    assert set(asynchronous) - {"open"} == set(sync)
    for name, signature in sync.items():
        assert list(asynchronous[name].parameters) == list(signature.parameters), name
        assert inspect.iscoroutinefunction(getattr(AsyncQueue, name)), name


def test_async_queue_without_dsn_or_database_url_raises_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    with pytest.raises(ConfigurationError, match="AsyncQueue"):
        AsyncQueue()


def test_async_queue_exposes_its_dsn_and_mode(dsn: str) -> None:
    queue = AsyncQueue(dsn, transaction_pooler=True, pool_timeout=timedelta(seconds=2))

    assert (queue.dsn, queue.transaction_pooler, queue.pool_timeout) == (
        dsn,
        True,
        timedelta(seconds=2),
    )
    asyncio.run(queue.close())


def test_async_queue_opens_on_first_use_and_closes_twice(dsn: str) -> None:
    async def main() -> int:
        queue = AsyncQueue(dsn)  # made outside any `async with`, as a module global would be
        job_id = await queue.add(greet, {"name": "Ada", "times": 1})
        await queue.close()
        await queue.close()
        return job_id

    job_id = asyncio.run(main())

    assert job_row(dsn, job_id)["state"] == "available"


def test_concurrent_first_calls_share_one_pool(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> list[int]:
        return list(await asyncio.gather(*(queue.add(greet, {"name": str(i), "times": i})
                                           for i in range(20))))  # fmt: skip

    async def main() -> list[int]:
        queue = AsyncQueue(dsn, max_connections=3)
        try:
            return await body(queue)
        finally:
            await queue.close()

    ids = asyncio.run(main())

    assert len(set(ids)) == 20
    assert count_jobs(dsn) == 20


def test_a_dead_server_raises_connection_unavailable_within_pool_timeout() -> None:
    # Port 1 on localhost: nothing listens, every connection attempt is refused.
    dead = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=1"

    async def main() -> None:
        async with AsyncQueue(dead, pool_timeout=timedelta(seconds=0.5)) as queue:
            await queue.add(greet, {"name": "Ada", "times": 1})

    started = time.monotonic()
    with pytest.raises(ConnectionUnavailable, match="pool_timeout") as caught:
        asyncio.run(main())

    assert time.monotonic() - started < 5
    assert isinstance(caught.value, psycopg.OperationalError)  # retried like a lost connection


def test_a_dead_server_raises_connection_unavailable_from_queue_too() -> None:
    dead = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=1"

    with (
        Queue(dead, pool_timeout=timedelta(seconds=0.5)) as queue,
        pytest.raises(ConnectionUnavailable, match="nothing was sent"),
    ):
        queue.add(greet, {"name": "Ada", "times": 1})


def test_a_non_positive_pool_timeout_raises_invalid_argument(dsn: str) -> None:
    with pytest.raises(InvalidArgument, match="pool_timeout"):
        AsyncQueue(dsn, pool_timeout=timedelta(0))
    with pytest.raises(InvalidArgument, match="pool_timeout"):
        Queue(dsn, pool_timeout=timedelta(seconds=-1))


# -- producer ------------------------------------------------------------------------------


def test_add_and_add_many_store_jobs(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> tuple[int, list[int]]:
        one = await queue.add(greet, {"name": "Ada", "times": 2}, priority=4, queue="mail")
        many = await queue.add_many(greet, [{"name": "B", "times": 1}, {"name": "C", "times": 3}])
        return one, many

    one, many = run(dsn, body)

    row = job_row(dsn, one)
    assert (row["payload"], row["priority"], row["queue"]) == (
        {"name": "Ada", "times": 2},
        4,
        "mail",
    )
    assert [job_row(dsn, i)["payload"]["name"] for i in many] == ["B", "C"]


def test_add_with_bad_input_raises_invalid_argument_and_inserts_nothing(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> None:
        with pytest.raises(InvalidArgument):
            await queue.add(greet, {"name": "Ada", "times": 1}, max_retries=-1)
        with pytest.raises(InvalidArgument, match="exclusive"):
            await queue.add(greet, {"name": "Ada", "times": 1}, delay=timedelta(1),
                            run_at=scalar(dsn, "select now()"))  # fmt: skip

    run(dsn, body)

    assert count_jobs(dsn) == 0


def test_add_in_a_callers_async_transaction_follows_its_commit_or_rollback(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> tuple[int, list[int]]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await queue.add(greet, {"name": "gone", "times": 1}, conn=conn)
            await queue.add_many(greet, [{"name": "gone", "times": 2}], conn=conn)
            await conn.rollback()
            kept = await queue.add(greet, {"name": "kept", "times": 1}, conn=conn)
            assert count_jobs(dsn) == 0  # not committed yet
            await conn.commit()
            return kept, await queue.add_many(greet, [], conn=conn)

    kept, none = run(dsn, body)

    assert none == []
    assert count_jobs(dsn) == 1
    assert job_row(dsn, kept)["payload"]["name"] == "kept"


# -- worker --------------------------------------------------------------------------------


def test_claim_heartbeat_and_complete_return_the_same_rows_as_queue(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> tuple[Any, ...]:
        first = await running(queue, "one")
        second = await running(queue, "two")
        beat = await queue.heartbeat(first.id, first.lease_token, lease=timedelta(minutes=5))
        beats = await queue.heartbeat_many([first.id, second.id], [first.lease_token, uuid4()])
        done = await queue.complete_many([first.id, second.id], [first.lease_token, uuid4()])
        await queue.complete(second.id, second.lease_token)
        return first, beat, beats, done

    first, beat, beats, done = run(dsn, body)

    assert isinstance(first, ClaimedJob) and first.payload == {"name": "one", "times": 1}
    assert job_row(dsn, first.id)["state"] == "succeeded"
    assert beat > first.lease_expires_at
    assert [type(b) for b in beats] == [HeartbeatOutcome, HeartbeatOutcome]
    assert [b.outcome for b in beats] == ["extended", "lease_lost"]
    assert [type(d) for d in done] == [CompletionOutcome, CompletionOutcome]
    assert [d.outcome for d in done] == ["succeeded", "lease_lost"]


def test_stale_tokens_raise_lease_lost_and_change_nothing(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> ClaimedJob:
        job = await running(queue)
        with pytest.raises(LeaseLost):
            await queue.heartbeat(job.id, uuid4())
        with pytest.raises(LeaseLost):
            await queue.complete(job.id, uuid4())
        with pytest.raises(LeaseLost):
            await queue.fail(job.id, uuid4(), "boom")
        with pytest.raises(LeaseLost):
            await queue.once_begin(job.id, uuid4(), "charge")
        return job

    job = run(dsn, body)

    row = job_row(dsn, job.id)
    assert (row["state"], row["lease_token"], row["attempt"]) == ("running", job.lease_token, 1)


def test_fail_and_release_lost_claims(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> tuple[str, str, int, int]:
        retried = await running(queue, "retried")
        again = await queue.fail(retried.id, retried.lease_token, "first", retry=True)
        buried = await running(queue, "buried")
        dead = await queue.fail(buried.id, buried.lease_token, "second", retry=False)
        await queue.add(greet, {"name": "lost", "times": 1})
        lost = await queue.claim("async-worker")
        released = await queue.release_lost_claims("async-worker", [])
        return again, dead, released, lost[0].id

    again, dead, released, lost_id = run(dsn, body)

    assert (again, dead, released) == ("available", "dead", 1)
    assert job_row(dsn, lost_id)["state"] == "available"


def test_run_once_calls_round_trip(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> tuple[OnceStatus, ...]:
        job = await running(queue)
        first = await queue.once_begin(job.id, job.lease_token, "charge")
        await queue.once_finish(job.id, job.lease_token, "charge", {"receipt": 7})
        replay = await queue.once_begin(job.id, job.lease_token, "charge")
        begun = await queue.once_begin(job.id, job.lease_token, "refund")
        await queue.once_abort(job.id, job.lease_token, "refund")
        with pytest.raises(MarkerNotBegun):
            await queue.once_finish(job.id, job.lease_token, "refund", None)
        with pytest.raises(MarkerNotFound):
            await queue.once_resolve(job.id, "refund", ran=True)
        return first, replay, begun

    first, replay, begun = run(dsn, body)

    assert (first.status, replay.status, replay.result, begun.status) == (
        "run", "done", {"receipt": 7}, "run")  # fmt: skip


def test_once_resolve_settles_an_unknown_outcome(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> OnceStatus:
        job = await running(queue)
        await queue.once_begin(job.id, job.lease_token, "charge")
        await queue.fail(job.id, job.lease_token, "crashed mid-effect")
        make_due(dsn, job.id)  # its retry's backoff has passed
        retried = (await queue.claim("async-worker"))[0]
        unknown = await queue.once_begin(retried.id, retried.lease_token, "charge")
        assert unknown.status == "unknown"
        await queue.once_resolve(job.id, "charge", ran=True, result="ok")
        return await queue.once_begin(retried.id, retried.lease_token, "charge")

    settled = run(dsn, body)

    assert (settled.status, settled.result) == ("done", "ok")


# -- operator ------------------------------------------------------------------------------


def test_operator_calls(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> tuple[Any, ...]:
        await queue.configure_queue("mail", max_retries=0, lease=timedelta(minutes=1))
        await queue.pause("mail")
        job_id = await queue.add(greet, {"name": "Ada", "times": 1}, queue="mail")
        paused = await queue.claim("w", queues=["mail"])
        await queue.resume("mail")
        job = (await queue.claim("w", queues=["mail"]))[0]
        await queue.fail(job.id, job.lease_token, "boom")  # max_retries 0: dead
        dead = await queue.dead_letter(queue="mail")
        errors = await queue.job_errors(job_id)
        stats = await queue.stats()
        retried = await queue.retry_dead("mail")
        cancelled = await queue.cancel(job_id)
        await queue.retry(job_id)
        details = await queue.job(job_id)
        missing = await queue.job(10**9)
        return paused, dead, errors, stats, retried, cancelled, details, missing

    paused, dead, errors, stats, retried, cancelled, details, missing = run(dsn, body)

    assert paused == []
    assert [type(d) for d in dead] == [DeadJob] and dead[0].last_error == "boom"
    assert [type(e) for e in errors] == [AttemptError] and errors[0].error == "boom"
    assert [(type(s), s.queue, s.dead) for s in stats] == [(QueueStats, "mail", 1)]
    assert (retried, cancelled) == (1, "cancelled")
    assert isinstance(details, JobDetails) and details.state == "available"
    assert missing is None


def test_operator_errors_arrive_as_their_classes_and_change_nothing(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> int:
        job_id = await queue.add(greet, {"name": "Ada", "times": 1})
        with pytest.raises(QueueNotFound):
            await queue.pause("nowhere")
        with pytest.raises(JobNotFound):
            await queue.cancel(10**9)
        with pytest.raises(JobStateConflict):
            await queue.retry(job_id)
        with pytest.raises(InvalidArgument):
            await queue.prune(timedelta(days=-1))
        return job_id

    job_id = run(dsn, body)

    assert job_row(dsn, job_id)["state"] == "available"
    assert scalar(dsn, "select count(*) from pgq.queues where queue = 'nowhere'") == 0


def test_prune_deletes_jobs_finished_long_ago(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> int:
        job = await running(queue)
        await queue.complete(job.id, job.lease_token)
        backdate_finished(dsn, job.id)
        return await queue.prune(timedelta(days=1))

    assert run(dsn, body) == 1
    assert count_jobs(dsn) == 0


def test_migrate_on_a_migrated_database_applies_no_migration(dsn: str) -> None:
    async def body(queue: AsyncQueue) -> tuple[str, ...]:
        return (await queue.migrate()).applied_migrations

    assert run(dsn, body) == ()
