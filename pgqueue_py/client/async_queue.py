"""``AsyncQueue``: the asyncio twin of ``Queue``, over psycopg's async connection pool.

The same methods, awaited, with the same arguments, typing, rows and errors: each
builds its call in ``_calls``, written once for both front ends, and ``_run`` executes
it on the caller's ``AsyncConnection`` (``conn=``, never committed here) or one of the
pool's (autocommit). Use it as ``async with AsyncQueue(dsn) as queue: ...``, or create
it anywhere and ``await queue.close()`` at shutdown: the pool opens on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue_py.client import _calls, _sql
from pgqueue_py.client._calls import (
    DEFAULT_POOL_TIMEOUT,
    Call,
    pool_kwargs,
    pool_timeout_seconds,
    resolve_dsn,
)
from pgqueue_py.client.errors import ResultTimeout
from pgqueue_py.client.jobs import JobType, P, PayloadArg, PayloadsArg
from pgqueue_py.client.rows import (
    AttemptError,
    ClaimedJob,
    CompletionOutcome,
    DeadJob,
    HeartbeatOutcome,
    JobDetails,
    JobStatus,
    OnceOutcome,
    OnceStatus,
    QueueStats,
    Schedule,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from pgqueue_py.migrate import MigrateResult

T = TypeVar("T")


class AsyncQueue:
    """A pgqueue database for asyncio code: producer, worker and operator calls.

    The arguments are ``Queue``'s: ``dsn`` (else ``DATABASE_URL``), a pool of
    ``min_connections`` to ``max_connections``, ``pool_timeout`` (then
    ``ConnectionUnavailable``) and ``transaction_pooler``.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        transaction_pooler: bool = False,
        pool_timeout: timedelta = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        self._dsn = resolve_dsn(dsn, front_end="AsyncQueue")
        self._transaction_pooler = transaction_pooler
        self._pool_timeout = pool_timeout
        self._prepare: bool | None = False if transaction_pooler else None
        # Opened on first use (or `open()`), inside a running event loop, as psycopg's
        # async pool requires.
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._dsn,
            min_size=min_connections,
            max_size=max_connections,
            kwargs=pool_kwargs(transaction_pooler),
            timeout=pool_timeout_seconds(pool_timeout),
            open=False,
            name="pgqueue-async",
        )
        self._opened = False

    @property
    def dsn(self) -> str:
        """The connection string this queue connects with."""
        return self._dsn

    @property
    def transaction_pooler(self) -> bool:
        """Whether the DSN goes through a transaction-mode pooler (no prepared
        statements, no LISTEN)."""
        return self._transaction_pooler

    @property
    def pool_timeout(self) -> timedelta:
        """How long a call waits for a pooled connection."""
        return self._pool_timeout

    async def open(self) -> None:
        """Open the pool; calls do it themselves when needed. Safe to call twice; a
        closed queue cannot be opened again."""
        await self._pool.open()
        self._opened = True

    async def close(self) -> None:
        """Close the pool's connections. Safe to call twice."""
        await self._pool.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- producer --------------------------------------------------------------------------

    async def add(
        self,
        job: JobType[P],
        payload: PayloadArg[P],
        *,
        idempotency_key: str | None = None,
        max_retries: int | None = None,
        run_at: datetime | None = None,
        delay: timedelta | None = None,
        priority: int | None = None,
        queue: str | None = None,
        concurrency_key: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """Enqueue one job; returns its id. Calls ``pgq.enqueue``.

        With an ``idempotency_key`` that already exists, nothing is inserted and the
        existing job's id is returned. ``run_at`` (timezone-aware) or ``delay`` (from the
        database's clock) schedule it for later. Options left None take the job type's.
        ``concurrency_key`` names the group the queue's ``key_concurrency`` limits (say,
        a customer id). With ``conn`` the job joins that connection's transaction.
        """
        return await self._run(
            _calls.add(
                job,
                payload,
                idempotency_key=idempotency_key,
                max_retries=max_retries,
                run_at=run_at,
                delay=delay,
                priority=priority,
                queue=queue,
                concurrency_key=concurrency_key,
            ),
            conn,
        )

    async def add_many(
        self,
        job: JobType[P],
        payloads: PayloadsArg[P],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        run_at: datetime | None = None,
        delay: timedelta | None = None,
        priority: int | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        concurrency_keys: Sequence[str | None] | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Enqueue many jobs of one type in one statement; returns their ids in input
        order. Calls ``pgq.enqueue_many``.

        ``idempotency_keys``, when given, has one key (or None) per payload; a job whose
        key exists is not inserted and the existing id takes its place.
        ``concurrency_keys``, likewise one per payload, are the jobs' concurrency keys.
        Nothing is inserted when any payload is invalid.
        """
        return await self._run(
            _calls.add_many(
                job,
                payloads,
                idempotency_keys=idempotency_keys,
                run_at=run_at,
                delay=delay,
                priority=priority,
                queue=queue,
                max_retries=max_retries,
                concurrency_keys=concurrency_keys,
            ),
            conn,
        )

    # -- worker ----------------------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        *,
        queues: Sequence[str] = ("default",),
        batch: int = 1,
        lease: timedelta | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[ClaimedJob]:
        """Lease up to ``batch`` runnable jobs from ``queues``. Calls ``pgq.claim``.

        ``lease`` None takes each queue's default. Never waits for a job another
        worker holds.
        """
        return await self._run(
            _calls.claim(worker_id, queues=queues, batch=batch, lease=lease), conn
        )

    async def claim_and_wait(
        self,
        worker_id: str,
        *,
        queues: Sequence[str] = ("default",),
        batch: int = 1,
        lease: timedelta | None = None,
        wake_key: int,
        channel: str,
        free_slots: int,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[ClaimedJob]:
        """``claim``, and then wait for up to ``free_slots`` less the jobs claimed: while
        this worker waits, one-row enqueues of ``queues`` hand their jobs to it at
        commit, sent on ``channel``. ``wake_key`` and ``channel`` are what
        ``pgq.listen_for_handoffs`` returned on the worker's listening connection.
        Calls ``pgq.claim_and_wait``."""
        return await self._run(
            _calls.claim_and_wait(worker_id, queues=queues, batch=batch, lease=lease,
                                  wake_key=wake_key, channel=channel, free_slots=free_slots),
            conn,
        )  # fmt: skip

    async def stop_waiting(
        self,
        worker_id: str,
        *,
        channel: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        """Hand this worker no more jobs; returns once any hand-over to it in progress
        has committed, and then notifies ``channel`` with an empty payload, which the
        worker receives after every job handed to it. Calls ``pgq.stop_waiting``."""
        return await self._run(_calls.stop_waiting(worker_id, channel), conn)

    async def release_lost_claims(
        self,
        worker_id: str,
        held_job_ids: Sequence[int],
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """Return to available, uncounted, this worker's running jobs other than
        ``held_job_ids``: a claim whose answer was lost. Calls ``pgq.release_lost_claims``."""
        return await self._run(_calls.release_lost_claims(worker_id, held_job_ids), conn)

    async def heartbeat(
        self,
        job_id: int,
        lease_token: UUID,
        *,
        lease: timedelta | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> datetime:
        """Extend a running job's lease; returns the new expiry. Calls ``pgq.heartbeat``;
        LeaseLost if the token is stale."""
        return await self._run(_calls.heartbeat(job_id, lease_token, lease=lease), conn)

    async def heartbeat_many(
        self,
        job_ids: Sequence[int],
        lease_tokens: Sequence[UUID],
        *,
        lease: timedelta | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[HeartbeatOutcome]:
        """Extend many leases in one call; one outcome per job, in input order. Calls
        ``pgq.heartbeat_many``; a stale token refuses that job only."""
        return await self._run(_calls.heartbeat_many(job_ids, lease_tokens, lease=lease), conn)

    async def complete(
        self,
        job_id: int,
        lease_token: UUID,
        *,
        result: Any = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> str:
        """Mark a running job succeeded, keeping its JSON ``result``; returns ``succeeded``,
        or ``failed`` when the result is over the 1 MiB limit (the attempt failed instead).
        Calls ``pgq.complete``; LeaseLost if stale."""
        return await self._run(_calls.complete(job_id, lease_token, result), conn)

    async def complete_many(
        self,
        job_ids: Sequence[int],
        lease_tokens: Sequence[UUID],
        *,
        results: Sequence[Any] | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[CompletionOutcome]:
        """Mark many running jobs succeeded, with one JSON result each (or None); one
        outcome per job, in input order. Calls ``pgq.complete_many``; a stale token
        refuses that job only."""
        return await self._run(_calls.complete_many(job_ids, lease_tokens, results), conn)

    async def fail(
        self,
        job_id: int,
        lease_token: UUID,
        error: str,
        *,
        retry: bool = True,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> str:
        """Fail the job's current attempt; returns its new state, ``available`` (retry
        scheduled) or ``dead``. Calls ``pgq.fail``; LeaseLost if stale."""
        return await self._run(_calls.fail(job_id, lease_token, error, retry=retry), conn)

    async def once_begin(
        self,
        job_id: int,
        lease_token: UUID,
        effect_key: str,
        *,
        request_id: UUID | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> OnceStatus:
        """Ask whether to run a side effect: run, done (with its result) or unknown. A
        resend with the same ``request_id`` gets the same answer. Calls
        ``pgq.once_begin``; LeaseLost if stale."""
        return await self._run(
            _calls.once_begin(job_id, lease_token, effect_key, request_id), conn
        )

    async def once_finish(
        self,
        job_id: int,
        lease_token: UUID,
        effect_key: str,
        result: Any,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        """Record that a begun side effect ran, with its JSON-serialisable result. Calls
        ``pgq.once_finish``; MarkerNotBegun if this lease did not begin it."""
        return await self._run(_calls.once_finish(job_id, lease_token, effect_key, result), conn)

    async def once_abort(
        self,
        job_id: int,
        lease_token: UUID,
        effect_key: str,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        """Withdraw a begun, unfinished marker because the effect raised. Calls
        ``pgq.once_abort``; MarkerNotBegun otherwise."""
        return await self._run(_calls.once_abort(job_id, lease_token, effect_key), conn)

    # -- operator --------------------------------------------------------------------------

    async def configure_queue(
        self,
        queue: str,
        *,
        max_retries: int | None = None,
        backoff_base: timedelta | None = None,
        backoff_max: timedelta | None = None,
        lease: timedelta | None = None,
        concurrency: int | None = None,
        rate_limit: int | None = None,
        rate_period: timedelta | None = None,
        key_concurrency: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        """Create or update a queue's settings; None keeps the current value. The flow
        limits hold fleet-wide inside ``pgq.claim``: at most ``concurrency`` running jobs,
        ``rate_limit`` starts per sliding ``rate_period``, ``key_concurrency`` running jobs
        per concurrency key; 0 removes a limit. Calls ``pgq.configure_queue``."""
        return await self._run(
            _calls.configure_queue(
                queue,
                max_retries=max_retries,
                backoff_base=backoff_base,
                backoff_max=backoff_max,
                lease=lease,
                concurrency=concurrency,
                rate_limit=rate_limit,
                rate_period=rate_period,
                key_concurrency=key_concurrency,
            ),
            conn,
        )

    async def pause(self, queue: str, *, conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Stop claims from a queue. Calls ``pgq.pause``; QueueNotFound if unknown."""
        return await self._run(_calls.pause(queue), conn)

    async def resume(self, queue: str, *, conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Let claims from a paused queue go on. Calls ``pgq.resume``; QueueNotFound if
        unknown."""
        return await self._run(_calls.resume(queue), conn)

    async def cancel(self, job_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None) -> str:
        """Cancel an available or running job; returns ``cancelled``. Calls
        ``pgq.cancel``; JobNotFound, JobStateConflict."""
        return await self._run(_calls.cancel(job_id), conn)

    async def retry(self, job_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Retry a dead or cancelled job now, with fresh attempts. Calls ``pgq.retry``;
        JobNotFound, JobStateConflict."""
        return await self._run(_calls.retry(job_id), conn)

    async def retry_dead(
        self,
        queue: str | None = None,
        *,
        batch: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """Retry the dead jobs, of one queue or all; returns how many. Calls
        ``pgq.retry_dead``. With ``batch``, at most that many (lowest ids first): call
        again until it returns 0, each call its own transaction; None retries them all."""
        return await self._run(_calls.retry_dead(queue, batch=batch), conn)

    async def prune(
        self,
        older_than: timedelta,
        *,
        include_dead: bool = False,
        batch: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """Delete one batch of jobs finished longer ago than ``older_than``; returns how
        many. Calls ``pgq.prune``. A batch is at most ``batch`` jobs (None: the engine's
        5000); call again until it returns 0, each call its own transaction."""
        return await self._run(
            _calls.prune(older_than, include_dead=include_dead, batch=batch), conn
        )

    async def once_resolve(
        self,
        job_id: int,
        effect_key: str,
        *,
        ran: bool,
        result: Any = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        """Settle an unknown run-once outcome: ``ran=True`` records it done with
        ``result``, ``ran=False`` lets the next attempt run it. Calls
        ``pgq.once_resolve``; MarkerNotFound if no marker is unfinished."""
        return await self._run(
            _calls.once_resolve(job_id, effect_key, ran=ran, result=result), conn
        )

    async def stats(self, *, conn: psycopg.AsyncConnection[Any] | None = None) -> list[QueueStats]:
        """Every queue's counts, by queue name. Reads ``pgq.queue_stats``."""
        return await self._run(_calls.stats(), conn)

    async def dead_letter(
        self,
        *,
        queue: str | None = None,
        limit: int = 100,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[DeadJob]:
        """Dead jobs, latest first, of one queue or all. Reads ``pgq.dead_letter``."""
        return await self._run(_calls.dead_letter(queue=queue, limit=limit), conn)

    async def job_errors(
        self, job_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[AttemptError]:
        """The error of each failed attempt of a job, oldest first. Reads
        ``pgq.job_errors``."""
        return await self._run(_calls.job_errors(job_id), conn)

    async def once_outcomes(
        self,
        *,
        job_id: int | None = None,
        outcome: Literal["done", "in_progress", "unknown"] | None = None,
        limit: int = 100,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[OnceOutcome]:
        """Run-once markers with their outcome, of one job or all, latest first. Reads
        ``pgq.once_outcomes``."""
        call = _calls.once_outcomes(job_id=job_id, outcome=outcome, limit=limit)
        return await self._run(call, conn)

    async def schedule(
        self,
        name: str,
        job: JobType[P],
        cron: str,
        payload: PayloadArg[P],
        *,
        timezone: str = "UTC",
        queue: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> datetime:
        """Create or replace the periodic schedule ``name``: a job of type ``job`` with
        ``payload`` at every slot of ``cron`` (5 fields, or ``@hourly``...``@yearly``) in
        ``timezone``; returns the next slot. Options left None take the job type's. Calls
        ``pgq.schedule``; InvalidArgument names a bad cron field."""
        call = _calls.schedule(name, job, cron, payload, timezone=timezone, queue=queue,
                               priority=priority, max_retries=max_retries)  # fmt: skip
        return await self._run(call, conn)

    async def unschedule(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> None:
        """Remove a schedule. Calls ``pgq.unschedule``; ScheduleNotFound if there is none."""
        return await self._run(_calls.unschedule(name), conn)

    async def schedules(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[Schedule]:
        """Every schedule, by name. Reads ``pgq.schedules``."""
        return await self._run(_calls.schedules(), conn)

    async def tick(self, *, conn: psycopg.AsyncConnection[Any] | None = None) -> int:
        """Enqueue every schedule slot that is due; returns how many jobs. Workers call it
        as they poll. Calls ``pgq.tick``."""
        return await self._run(_calls.tick(), conn)

    async def job_status(
        self, job_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> JobStatus:
        """A job's state, attempt, result, last error and finish time, as its producer
        follows it. Calls ``pgq.job_status``; JobNotFound for no such job."""
        return await self._run(_calls.job_status(job_id), conn)

    async def result(self, job_id: int, *, timeout: timedelta = timedelta(seconds=30)) -> Any:
        """Wait until the job succeeds and return its result (None if it has none).

        Waits on the ``pgq_finished`` notification, reading ``pgq.job_status`` when it
        comes (and every second, in case one is missed); behind a transaction pooler it
        polls. Raises NoResult for a dead or cancelled job, ResultTimeout after
        ``timeout``, JobNotFound for no such job."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _calls.check_timeout(timeout)
        async with contextlib.AsyncExitStack() as stack:
            listener: psycopg.AsyncConnection[Any] | None = None
            if not self._transaction_pooler:
                await self.open()
                listener = await stack.enter_async_context(self._pool.connection())
                await listener.execute(_sql.LISTEN_FINISHED)
                stack.push_async_callback(listener.execute, _sql.UNLISTEN_FINISHED)
            pause = 0.02
            while True:
                status = await self._run(_calls.job_status(job_id), listener)
                if _calls.settled(job_id, status):
                    return status.result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ResultTimeout(f"job {job_id} is still {status.state} after "
                                        f"{timeout.total_seconds():g} s")  # fmt: skip
                if listener is None:
                    await asyncio.sleep(min(pause, remaining))
                    pause = min(pause * 2, _calls.RESULT_POLL)
                    continue
                async for notify in listener.notifies(
                    timeout=min(remaining, _calls.RESULT_POLL)
                ):
                    if job_id in _calls.finished_ids(notify.payload):
                        break

    async def job(
        self, job_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> JobDetails | None:
        """One job whatever its state, or None if there is none. Reads
        ``pgq.job_details``."""
        return await self._run(_calls.job(job_id), conn)

    async def migrate(self) -> MigrateResult:
        """Bring the database up to this package's engine (``pgqueue_py.migrate``), on a
        thread: migrating is a one-off, blocking job."""
        from pgqueue_py.migrate import migrate

        return await asyncio.to_thread(
            migrate, self._dsn, transaction_pooler=self._transaction_pooler
        )

    # -- the only code that touches connections --------------------------------------------

    async def _run(self, call: Call[T], conn: psycopg.AsyncConnection[Any] | None) -> T:
        try:
            if conn is not None:
                rows = await self._execute(conn, call)
            else:
                if not self._opened:
                    await self.open()
                async with self._pool.connection() as pooled:
                    rows = await self._execute(pooled, call)
        except psycopg.Error as exc:
            error = _calls.failure(exc, self._pool_timeout)
            if error is exc:
                raise
            raise error from exc
        return call.decode(call.query, rows)

    async def _execute(self, conn: psycopg.AsyncConnection[Any], call: Call[Any]) -> list[Any]:
        async with conn.cursor(row_factory=call.row_factory) as cur:
            await cur.execute(call.query, call.params, prepare=self._prepare)
            return await cur.fetchall()
