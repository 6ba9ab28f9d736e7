"""``Queue``: one method per pgq function, typed, over a psycopg connection pool.

Every method sends one statement from ``_sql``. ``_call_value``, ``_call_row`` and
``_call_rows`` alone touch connections: the caller's when a method gets ``conn=`` (the
statement joins the caller's transaction, which is never committed here), else one of
the pool's, which run in autocommit so each call is one round trip. They translate the
engine's SQLSTATEs into ``pgqueue_py.client.errors`` classes and return frozen dataclasses
whose fields are the SQL result columns.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from uuid import UUID

import psycopg
from psycopg.rows import BaseRowFactory, RowMaker
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from pgqueue_py.client import _sql
from pgqueue_py.client.errors import ConfigurationError, InvalidArgument, translate
from pgqueue_py.client.jobs import JobType, P, PayloadArg, PayloadsArg

if TYPE_CHECKING:
    from typing_extensions import LiteralString, Self

    from pgqueue_py.migrate import MigrateResult

T = TypeVar("T")

DSN_ENV = "DATABASE_URL"

JobState = Literal["available", "running", "succeeded", "dead", "cancelled"]


# -- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedJob:
    """A job ``pgq.claim`` leased to a worker; later calls present ``lease_token``."""

    id: int
    job_name: str
    queue: str
    payload: dict[str, Any]
    attempt: int
    """1 on the first run."""
    max_retries: int
    lease_token: UUID
    lease_expires_at: datetime
    priority: int
    run_at: datetime
    created_at: datetime
    lease_duration: timedelta
    """How long the lease lasts from each claim or heartbeat."""


@dataclass(frozen=True)
class HeartbeatOutcome:
    """One job's result in ``pgq.heartbeat_many``."""

    job_id: int
    outcome: Literal["extended", "lease_lost"]
    lease_expires_at: datetime | None
    """The new expiry; None when the lease was lost."""


@dataclass(frozen=True)
class CompletionOutcome:
    """One job's result in ``pgq.complete_many``."""

    job_id: int
    outcome: Literal["succeeded", "lease_lost"]


@dataclass(frozen=True)
class OnceStatus:
    """``pgq.once_begin``'s answer: run the effect now, it is done (with its stored
    result), or an earlier attempt began it and its outcome is unknown."""

    status: Literal["run", "done", "unknown"]
    result: Any


@dataclass(frozen=True)
class QueueStats:
    """One row of ``pgq.queue_stats``."""

    queue: str
    available: int
    """Jobs due now."""
    scheduled: int
    """Jobs waiting for a later ``run_at`` (scheduled, or backing off before a retry)."""
    running: int
    succeeded: int
    dead: int
    cancelled: int
    oldest_runnable_age: timedelta | None
    paused: bool


@dataclass(frozen=True)
class DeadJob:
    """One row of ``pgq.dead_letter``."""

    id: int
    queue: str
    job_name: str
    payload: dict[str, Any]
    attempt: int
    max_retries: int
    last_error: str | None
    died_at: datetime | None
    created_at: datetime
    idempotency_key: str | None


@dataclass(frozen=True)
class AttemptError:
    """One row of ``pgq.job_errors``: the error of one failed attempt."""

    job_id: int
    queue: str
    job_name: str
    attempt: int
    error: str
    worker_id: str | None
    failed_at: datetime


@dataclass(frozen=True)
class JobDetails:
    """One row of ``pgq.job_details``: a job as the operator sees it."""

    id: int
    queue: str
    job_name: str
    state: JobState
    payload: dict[str, Any]
    priority: int
    run_at: datetime
    attempt: int
    max_retries: int
    idempotency_key: str | None
    worker_id: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class JobStatus:
    """``pgq.job_status``'s answer: a job's state, attempt, result and last error."""

    state: JobState
    attempt: int
    result: Any
    """What ``complete`` stored; None until the job succeeded with a result."""
    last_error: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class OnceOutcome:
    """One row of ``pgq.once_outcomes``: a run-once marker and its outcome."""

    job_id: int
    effect_key: str
    outcome: Literal["done", "in_progress", "unknown"]
    """``unknown``: begun by an attempt that no longer holds the job, never finished;
    ``once_resolve`` settles it."""
    result: Any
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    queue: str | None
    job_name: str | None
    job_state: JobState | None


@dataclass(frozen=True)
class Schedule:
    """One row of ``pgq.schedules``: a periodic schedule and the last slot it ran."""

    schedule_name: str
    cron: str
    timezone: str
    job_name: str
    queue: str
    payload: dict[str, Any]
    priority: int
    max_retries: int | None
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: int | None
    last_job_state: JobState | None
    created_at: datetime
    updated_at: datetime


# -- the client ----------------------------------------------------------------------------


class Queue:
    """A pgqueue database: producer, worker and operator calls.

    ``dsn`` is a libpq connection string or URL; without it, ``DATABASE_URL``. Calls
    take a connection from a pool of ``min_connections`` to ``max_connections``.
    """

    def __init__(
        self, dsn: str | None = None, *, min_connections: int = 1, max_connections: int = 10
    ) -> None:
        resolved = dsn or os.environ.get(DSN_ENV)
        if not resolved:
            raise ConfigurationError(
                f"no database to connect to: pass Queue(dsn=...) or set {DSN_ENV}"
            )
        self._dsn = resolved
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            resolved,
            min_size=min_connections,
            max_size=max_connections,
            kwargs={"autocommit": True},
            open=True,
            name="pgqueue",
        )

    @property
    def dsn(self) -> str:
        """The connection string this queue connects with."""
        return self._dsn

    def close(self) -> None:
        """Close the pool's connections. Safe to call twice."""
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- producer --------------------------------------------------------------------------

    def add(
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
        conn: psycopg.Connection[Any] | None = None,
    ) -> int:
        """Enqueue one job; returns its id. Calls ``pgq.enqueue``.

        With an ``idempotency_key`` that already exists, nothing is inserted and the
        existing job's id is returned. ``run_at`` (timezone-aware) or ``delay`` (from the
        database's clock) schedule it for later. Options left None take the job type's.
        With ``conn`` the job joins that connection's transaction.
        """
        _check_schedule(run_at, delay)
        params = {
            "job_name": job.name,
            "payload": Jsonb(job.encode(cast(P, payload))),
            "queue": queue if queue is not None else job.queue,
            "run_at": run_at,
            "delay": delay,
            "priority": priority if priority is not None else job.priority,
            "max_retries": max_retries if max_retries is not None else job.max_retries,
            "idempotency_key": idempotency_key,
        }
        return self._call_value(_sql.ENQUEUE, params, int, conn=conn)

    def add_many(
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
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Enqueue many jobs of one type in one statement; returns their ids in input
        order. Calls ``pgq.enqueue_many``.

        ``idempotency_keys``, when given, has one key (or None) per payload; a job whose
        key exists is not inserted and the existing id takes its place. Nothing is
        inserted when any payload is invalid.
        """
        _check_schedule(run_at, delay)
        payloads = cast("Sequence[P]", payloads)
        keys = list(idempotency_keys) if idempotency_keys is not None else None
        if keys is not None and len(keys) != len(payloads):
            raise InvalidArgument(
                f"invalid idempotency_keys: {len(keys)} keys for {len(payloads)} payloads"
            )
        params = {
            "job_name": job.name,
            "count": len(payloads),
            "payloads": Jsonb([job.encode(p) for p in payloads]),
            "queue": queue if queue is not None else job.queue,
            "run_at": run_at,
            "delay": delay,
            "priority": priority if priority is not None else job.priority,
            "max_retries": max_retries if max_retries is not None else job.max_retries,
            # An all-NULL array says nothing the absent array does not.
            "idempotency_keys": keys if keys and any(k is not None for k in keys) else None,
        }
        ids = self._call_value(_sql.ENQUEUE_MANY, params, list, conn=conn)
        return [int(i) for i in ids]

    # -- worker ----------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        *,
        queues: Sequence[str] = ("default",),
        batch: int = 1,
        lease: timedelta | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[ClaimedJob]:
        """Lease up to ``batch`` runnable jobs from ``queues``. Calls ``pgq.claim``.

        ``lease`` None takes each queue's default. Never waits for a job another
        worker holds.
        """
        params = {"worker_id": worker_id, "queues": list(queues), "batch": batch, "lease": lease}
        return self._call_rows(_sql.CLAIM, params, ClaimedJob, conn=conn)

    def release_lost_claims(
        self,
        worker_id: str,
        held_job_ids: Sequence[int],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> int:
        """Return to available, uncounted, this worker's running jobs other than
        ``held_job_ids``: a claim whose answer was lost. Calls ``pgq.release_lost_claims``."""
        params = {"worker_id": worker_id, "held_job_ids": list(held_job_ids)}
        return self._call_value(_sql.RELEASE_LOST_CLAIMS, params, int, conn=conn)

    def heartbeat(
        self,
        job_id: int,
        lease_token: UUID,
        *,
        lease: timedelta | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> datetime:
        """Extend a running job's lease; returns the new expiry. Calls ``pgq.heartbeat``;
        LeaseLost if the token is stale."""
        params = {"job_id": job_id, "lease_token": lease_token, "lease": lease}
        return self._call_value(_sql.HEARTBEAT, params, datetime, conn=conn)

    def heartbeat_many(
        self,
        job_ids: Sequence[int],
        lease_tokens: Sequence[UUID],
        *,
        lease: timedelta | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[HeartbeatOutcome]:
        """Extend many leases in one call; one outcome per job, in input order. Calls
        ``pgq.heartbeat_many``; a stale token refuses that job only."""
        params = {"job_ids": list(job_ids), "lease_tokens": list(lease_tokens), "lease": lease}
        return self._call_rows(_sql.HEARTBEAT_MANY, params, HeartbeatOutcome, conn=conn)

    def complete(
        self, job_id: int, lease_token: UUID, *, conn: psycopg.Connection[Any] | None = None
    ) -> None:
        """Mark a running job succeeded. Calls ``pgq.complete``; LeaseLost if stale."""
        params = {"job_id": job_id, "lease_token": lease_token}
        self._call_value(_sql.COMPLETE, params, type(None), conn=conn)

    def complete_many(
        self,
        job_ids: Sequence[int],
        lease_tokens: Sequence[UUID],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[CompletionOutcome]:
        """Mark many running jobs succeeded; one outcome per job, in input order. Calls
        ``pgq.complete_many``; a stale token refuses that job only."""
        params = {"job_ids": list(job_ids), "lease_tokens": list(lease_tokens)}
        return self._call_rows(_sql.COMPLETE_MANY, params, CompletionOutcome, conn=conn)

    def fail(
        self,
        job_id: int,
        lease_token: UUID,
        error: str,
        *,
        retry: bool = True,
        conn: psycopg.Connection[Any] | None = None,
    ) -> str:
        """Fail the job's current attempt; returns its new state, ``available`` (retry
        scheduled) or ``dead``. Calls ``pgq.fail``; LeaseLost if stale."""
        params = {"job_id": job_id, "lease_token": lease_token, "error": error, "retry": retry}
        return self._call_value(_sql.FAIL, params, str, conn=conn)

    def once_begin(
        self,
        job_id: int,
        lease_token: UUID,
        effect_key: str,
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> OnceStatus:
        """Ask whether to run a side effect: run, done (with its result) or unknown.
        Calls ``pgq.once_begin``; LeaseLost if stale."""
        params = {"job_id": job_id, "lease_token": lease_token, "effect_key": effect_key}
        return self._call_row(_sql.ONCE_BEGIN, params, OnceStatus, conn=conn)

    def once_finish(
        self,
        job_id: int,
        lease_token: UUID,
        effect_key: str,
        result: Any,
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> None:
        """Record that a begun side effect ran, with its JSON-serialisable result. Calls
        ``pgq.once_finish``; MarkerNotBegun if this lease did not begin it."""
        params = {
            "job_id": job_id,
            "lease_token": lease_token,
            "effect_key": effect_key,
            "result": Jsonb(result),
        }
        self._call_value(_sql.ONCE_FINISH, params, type(None), conn=conn)

    def once_abort(
        self,
        job_id: int,
        lease_token: UUID,
        effect_key: str,
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> None:
        """Withdraw a begun, unfinished marker because the effect raised. Calls
        ``pgq.once_abort``; MarkerNotBegun otherwise."""
        params = {"job_id": job_id, "lease_token": lease_token, "effect_key": effect_key}
        self._call_value(_sql.ONCE_ABORT, params, type(None), conn=conn)

    # -- operator --------------------------------------------------------------------------

    def configure_queue(
        self,
        queue: str,
        *,
        max_retries: int | None = None,
        backoff_base: timedelta | None = None,
        backoff_max: timedelta | None = None,
        lease: timedelta | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> None:
        """Create or update a queue's settings; None keeps the current value. Calls
        ``pgq.configure_queue``."""
        params = {
            "queue": queue,
            "max_retries": max_retries,
            "backoff_base": backoff_base,
            "backoff_max": backoff_max,
            "lease": lease,
        }
        self._call_value(_sql.CONFIGURE_QUEUE, params, type(None), conn=conn)

    def pause(self, queue: str, *, conn: psycopg.Connection[Any] | None = None) -> None:
        """Stop claims from a queue. Calls ``pgq.pause``; QueueNotFound if unknown."""
        self._call_value(_sql.PAUSE, {"queue": queue}, type(None), conn=conn)

    def resume(self, queue: str, *, conn: psycopg.Connection[Any] | None = None) -> None:
        """Let claims from a paused queue go on. Calls ``pgq.resume``; QueueNotFound if
        unknown."""
        self._call_value(_sql.RESUME, {"queue": queue}, type(None), conn=conn)

    def cancel(self, job_id: int, *, conn: psycopg.Connection[Any] | None = None) -> str:
        """Cancel an available or running job; returns ``cancelled``. Calls
        ``pgq.cancel``; JobNotFound, JobStateConflict."""
        return self._call_value(_sql.CANCEL, {"job_id": job_id}, str, conn=conn)

    def retry(self, job_id: int, *, conn: psycopg.Connection[Any] | None = None) -> None:
        """Retry a dead or cancelled job now, with fresh attempts. Calls ``pgq.retry``;
        JobNotFound, JobStateConflict."""
        self._call_value(_sql.RETRY, {"job_id": job_id}, type(None), conn=conn)

    def retry_dead(
        self, queue: str | None = None, *, conn: psycopg.Connection[Any] | None = None
    ) -> int:
        """Retry every dead job, of one queue or all; returns how many. Calls
        ``pgq.retry_dead``."""
        return self._call_value(_sql.RETRY_DEAD, {"queue": queue}, int, conn=conn)

    def prune(
        self,
        older_than: timedelta,
        *,
        include_dead: bool = False,
        conn: psycopg.Connection[Any] | None = None,
    ) -> int:
        """Delete jobs finished longer ago than ``older_than``; returns how many. Calls
        ``pgq.prune``."""
        params = {"older_than": older_than, "include_dead": include_dead}
        return self._call_value(_sql.PRUNE, params, int, conn=conn)

    def once_resolve(
        self,
        job_id: int,
        effect_key: str,
        *,
        ran: bool,
        result: Any = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> None:
        """Settle an unknown run-once outcome: ``ran=True`` records it done with
        ``result``, ``ran=False`` lets the next attempt run it. Calls
        ``pgq.once_resolve``; MarkerNotFound if no marker is unfinished."""
        params = {"job_id": job_id, "effect_key": effect_key, "ran": ran, "result": Jsonb(result)}
        self._call_value(_sql.ONCE_RESOLVE, params, type(None), conn=conn)

    def stats(self, *, conn: psycopg.Connection[Any] | None = None) -> list[QueueStats]:
        """Every queue's counts, by queue name. Reads ``pgq.queue_stats``."""
        return self._call_rows(_sql.QUEUE_STATS, {}, QueueStats, conn=conn)

    def dead_letter(
        self,
        *,
        queue: str | None = None,
        limit: int = 100,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[DeadJob]:
        """Dead jobs, latest first, of one queue or all. Reads ``pgq.dead_letter``."""
        params = {"queue": queue, "limit": limit}
        return self._call_rows(_sql.DEAD_LETTER, params, DeadJob, conn=conn)

    def job_errors(
        self, job_id: int, *, conn: psycopg.Connection[Any] | None = None
    ) -> list[AttemptError]:
        """The error of each failed attempt of a job, oldest first. Reads
        ``pgq.job_errors``."""
        return self._call_rows(_sql.JOB_ERRORS, {"job_id": job_id}, AttemptError, conn=conn)

    def job(self, job_id: int, *, conn: psycopg.Connection[Any] | None = None) -> JobDetails | None:
        """One job whatever its state, or None if there is none. Reads
        ``pgq.job_details``."""
        rows = self._call_rows(_sql.JOB_DETAILS, {"job_id": job_id}, JobDetails, conn=conn)
        return rows[0] if rows else None

    def job_status(self, job_id: int, *, conn: psycopg.Connection[Any] | None = None) -> JobStatus:
        """A job's state, attempt, result and last error. Calls ``pgq.job_status``;
        JobNotFound if there is no such job."""
        return self._call_row(_sql.JOB_STATUS, {"job_id": job_id}, JobStatus, conn=conn)

    def once_outcomes(
        self,
        *,
        job_id: int | None = None,
        outcome: Literal["done", "in_progress", "unknown"] | None = None,
        limit: int = 100,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[OnceOutcome]:
        """Run-once markers with their outcome, of one job or all, latest first.
        Reads ``pgq.once_outcomes``."""
        params = {"job_id": job_id, "outcome": outcome, "limit": limit}
        return self._call_rows(_sql.ONCE_OUTCOMES, params, OnceOutcome, conn=conn)

    def schedules(self, *, conn: psycopg.Connection[Any] | None = None) -> list[Schedule]:
        """Every periodic schedule, by name. Reads ``pgq.schedules``."""
        return self._call_rows(_sql.SCHEDULES, {}, Schedule, conn=conn)

    def migrate(self) -> MigrateResult:
        """Bring the database up to this package's engine (``pgqueue_py.migrate``)."""
        from pgqueue_py.migrate import migrate

        return migrate(self._dsn)

    # -- the only code that touches connections --------------------------------------------

    @contextmanager
    def _connection(
        self, conn: psycopg.Connection[Any] | None
    ) -> Iterator[psycopg.Connection[Any]]:
        if conn is not None:
            yield conn
        else:
            with self._pool.connection() as pooled:
                yield pooled

    def _call_rows(
        self,
        query: LiteralString,
        params: Mapping[str, Any],
        row_type: type[T],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[T]:
        try:
            with self._connection(conn) as c, c.cursor(row_factory=_rows_of(row_type)) as cur:
                cur.execute(query, params)
                return cur.fetchall()
        except psycopg.Error as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def _call_row(
        self,
        query: LiteralString,
        params: Mapping[str, Any],
        row_type: type[T],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> T:
        rows = self._call_rows(query, params, row_type, conn=conn)
        if len(rows) != 1:
            raise RuntimeError(f"expected one row from {query.split('(')[0]!r}, got {len(rows)}")
        return rows[0]

    def _call_value(
        self,
        query: LiteralString,
        params: Mapping[str, Any],
        kind: type[T],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> T:
        try:
            with self._connection(conn) as c, c.cursor() as cur:
                cur.execute(query, params)
                row = cur.fetchone()
        except psycopg.Error as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        if kind is type(None):
            # A `returns void` function: psycopg reads the void value as ''.
            return None
        value = row[0] if row is not None else None
        if not isinstance(value, kind):
            raise TypeError(f"{query.split('(')[0]!r} returned {value!r}, not {kind.__name__}")
        return value


def _rows_of(row_type: type[T]) -> BaseRowFactory[T]:
    """Rows as ``row_type`` instances, built from positional values: psycopg's
    ``class_row`` builds a keyword dict per row, a cost the claim path feels. The
    result columns must be the dataclass's fields, in order; that is checked once
    per statement."""
    fields = tuple(f.name for f in dataclasses.fields(row_type))  # type: ignore[arg-type]  # row types are dataclasses

    def factory(cursor: Any) -> RowMaker[T]:
        names = tuple(c.name for c in cursor.description or ())
        if names != fields:
            raise RuntimeError(f"{row_type.__name__} expects columns {fields}, got {names}")
        return lambda values: row_type(*values)

    return factory


def _check_schedule(run_at: datetime | None, delay: timedelta | None) -> None:
    if run_at is not None and delay is not None:
        raise InvalidArgument("run_at and delay are exclusive: pass one of them")
    if run_at is not None and run_at.utcoffset() is None:
        raise InvalidArgument(f"invalid run_at {run_at.isoformat()}: must be timezone-aware")
