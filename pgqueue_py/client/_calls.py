"""The call layer: each pgq call written once, for ``Queue`` and ``AsyncQueue`` alike.

A function here builds a :class:`Call`: the statement from ``_sql``, its parameters and
how the fetched rows become the method's return value. It checks the arguments Python
must check before anything is sent, and touches no connection. ``Queue._run`` and
``AsyncQueue._run`` execute a Call on a connection, sync or awaited, and hand the rows
back to ``Call.decode``; :func:`failure` turns what went wrong into the error they raise.
The settings both front ends give their pools are here too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast
from uuid import UUID

import psycopg
from psycopg.rows import BaseRowFactory, RowMaker, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout

from pgqueue_py.client import _sql
from pgqueue_py.client.errors import (
    ConfigurationError,
    ConnectionUnavailable,
    InvalidArgument,
    NoResult,
    translate,
)
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
    from typing_extensions import LiteralString

T = TypeVar("T")
R = TypeVar("R")

DSN_ENV = "DATABASE_URL"

DEFAULT_POOL_TIMEOUT = timedelta(seconds=5)
"""How long a call waits for a pooled connection before it fails with
``ConnectionUnavailable``: long enough for a busy pool, short enough that a producer
notices an outage within its own request timeout."""


# -- what both front ends share -------------------------------------------------------------


def resolve_dsn(dsn: str | None, *, front_end: str) -> str:
    """``dsn``, else ``DATABASE_URL``; ConfigurationError when neither is set."""
    resolved = dsn or os.environ.get(DSN_ENV)
    if not resolved:
        raise ConfigurationError(
            f"no database to connect to: pass {front_end}(dsn=...) or set {DSN_ENV}"
        )
    return resolved


def pool_kwargs(transaction_pooler: bool) -> dict[str, Any]:
    """Settings of every pooled connection. Autocommit: a call is one round trip.
    Behind a transaction-mode pooler, no prepared statements: the next transaction
    may run on another server connection, which never saw them."""
    kwargs: dict[str, Any] = {"autocommit": True}
    if transaction_pooler:
        kwargs["prepare_threshold"] = None
    return kwargs


def pool_timeout_seconds(pool_timeout: timedelta) -> float:
    seconds = pool_timeout.total_seconds()
    if seconds <= 0:
        raise InvalidArgument(f"invalid pool_timeout {pool_timeout}: must be positive")
    return seconds


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One statement to send: its text, its parameters, how its rows are read
    (``row_factory``) and how they become the result (``decode``)."""

    query: LiteralString
    params: Mapping[str, Any]
    row_factory: BaseRowFactory[Any]
    decode: Callable[[LiteralString, list[Any]], T]


def failure(exc: psycopg.Error, pool_timeout: timedelta) -> Exception:
    """The error a front end raises ``from exc``; ``exc`` itself when nothing better
    names it (the front end then re-raises it unchanged)."""
    if isinstance(exc, PoolTimeout):
        return ConnectionUnavailable(
            f"no database connection within pool_timeout ({pool_timeout.total_seconds():g} s):"
            " the server is unreachable or every pooled connection is busy; nothing was sent"
        )
    return translate(exc)


# -- decoding --------------------------------------------------------------------------------


def _rows_of(row_type: type[R]) -> BaseRowFactory[R]:
    """Rows as ``row_type`` instances, built from positional values: psycopg's
    ``class_row`` builds a keyword dict per row, a cost the claim path feels. The
    result columns must be the dataclass's fields, in order; that is checked once
    per statement."""
    fields = tuple(f.name for f in dataclasses.fields(row_type))  # type: ignore[arg-type]  # row types are dataclasses

    def factory(cursor: Any) -> RowMaker[R]:
        names = tuple(c.name for c in cursor.description or ())
        if names != fields:
            raise RuntimeError(f"{row_type.__name__} expects columns {fields}, got {names}")
        return lambda values: row_type(*values)

    return factory


def _name(query: LiteralString) -> str:
    return query.split("(")[0]


def _all(query: LiteralString, rows: list[Any]) -> list[Any]:
    return rows


def _one(query: LiteralString, rows: list[Any]) -> Any:
    if len(rows) != 1:
        raise RuntimeError(f"expected one row from {_name(query)!r}, got {len(rows)}")
    return rows[0]


def _first_or_none(query: LiteralString, rows: list[Any]) -> Any:
    return rows[0] if rows else None


def _void(query: LiteralString, rows: list[Any]) -> None:
    # A `returns void` function: psycopg reads the void value as ''.
    return None


def _value(kind: type[R]) -> Callable[[LiteralString, list[Any]], R]:
    def decode(query: LiteralString, rows: list[Any]) -> R:
        value = rows[0][0] if rows else None
        if not isinstance(value, kind):
            raise TypeError(f"{_name(query)!r} returned {value!r}, not {kind.__name__}")
        return value

    return decode


_as_int = _value(int)
_as_str = _value(str)
_as_datetime = _value(datetime)
_as_list = _value(list)


def _ids(query: LiteralString, rows: list[Any]) -> list[int]:
    return [int(i) for i in _as_list(query, rows)]


_CLAIMED_JOBS = _rows_of(ClaimedJob)
_HEARTBEAT_OUTCOMES = _rows_of(HeartbeatOutcome)
_COMPLETION_OUTCOMES = _rows_of(CompletionOutcome)
_ONCE_STATUS = _rows_of(OnceStatus)
_JOB_STATUS = _rows_of(JobStatus)
_SCHEDULES = _rows_of(Schedule)
_QUEUE_STATS = _rows_of(QueueStats)
_DEAD_JOBS = _rows_of(DeadJob)
_ATTEMPT_ERRORS = _rows_of(AttemptError)
_JOB_DETAILS = _rows_of(JobDetails)
_ONCE_OUTCOMES = _rows_of(OnceOutcome)


def _scalar(query: LiteralString, params: Mapping[str, Any],
            decode: Callable[[LiteralString, list[Any]], T]) -> Call[T]:  # fmt: skip
    return Call(query, params, tuple_row, decode)


def _check_schedule(run_at: datetime | None, delay: timedelta | None) -> None:
    if run_at is not None and delay is not None:
        raise InvalidArgument("run_at and delay are exclusive: pass one of them")
    if run_at is not None and run_at.utcoffset() is None:
        raise InvalidArgument(f"invalid run_at {run_at.isoformat()}: must be timezone-aware")


# -- producer --------------------------------------------------------------------------------


def add(
    job: JobType[P],
    payload: PayloadArg[P],
    *,
    idempotency_key: str | None,
    max_retries: int | None,
    run_at: datetime | None,
    delay: timedelta | None,
    priority: int | None,
    queue: str | None,
    concurrency_key: str | None,
) -> Call[int]:
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
        "concurrency_key": concurrency_key,
    }
    return _scalar(_sql.ENQUEUE, params, _as_int)


def add_many(
    job: JobType[P],
    payloads: PayloadsArg[P],
    *,
    idempotency_keys: Sequence[str | None] | None,
    run_at: datetime | None,
    delay: timedelta | None,
    priority: int | None,
    queue: str | None,
    max_retries: int | None,
    concurrency_keys: Sequence[str | None] | None,
) -> Call[list[int]]:
    _check_schedule(run_at, delay)
    items = cast("Sequence[P]", payloads)
    keys = _one_per_payload("idempotency_keys", idempotency_keys, len(items))
    limit_keys = _one_per_payload("concurrency_keys", concurrency_keys, len(items))
    params = {
        "job_name": job.name,
        "count": len(items),
        "payloads": Jsonb([job.encode(p) for p in items]),
        "queue": queue if queue is not None else job.queue,
        "run_at": run_at,
        "delay": delay,
        "priority": priority if priority is not None else job.priority,
        "max_retries": max_retries if max_retries is not None else job.max_retries,
        # An all-NULL array says nothing the absent array does not.
        "idempotency_keys": keys,
        "concurrency_keys": limit_keys,
    }
    return _scalar(_sql.ENQUEUE_MANY, params, _ids)


def _one_per_payload(
    name: str, keys: Sequence[str | None] | None, count: int
) -> list[str | None] | None:
    """Keys given per payload, checked; None when absent or all None (an all-NULL array
    says nothing the absent array does not)."""
    if keys is None:
        return None
    listed = list(keys)
    if len(listed) != count:
        raise InvalidArgument(f"invalid {name}: {len(listed)} keys for {count} payloads")
    return listed if any(k is not None for k in listed) else None


# -- worker ----------------------------------------------------------------------------------


def claim(
    worker_id: str, *, queues: Sequence[str], batch: int, lease: timedelta | None
) -> Call[list[ClaimedJob]]:
    params = {"worker_id": worker_id, "queues": list(queues), "batch": batch, "lease": lease}
    return Call(_sql.CLAIM, params, _CLAIMED_JOBS, _all)


def claim_and_wait(
    worker_id: str,
    *,
    queues: Sequence[str],
    batch: int,
    lease: timedelta | None,
    wake_key: int,
    channel: str,
    free_slots: int,
) -> Call[list[ClaimedJob]]:
    params = {"worker_id": worker_id, "queues": list(queues), "batch": batch, "lease": lease,
              "wake_key": wake_key, "channel": channel, "free_slots": free_slots}  # fmt: skip
    return Call(_sql.CLAIM_AND_WAIT, params, _CLAIMED_JOBS, _all)


def stop_waiting(worker_id: str, channel: str | None) -> Call[None]:
    return _scalar(_sql.STOP_WAITING, {"worker_id": worker_id, "channel": channel}, _void)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def handed_job(payload: str) -> ClaimedJob:
    """The job a hand-over notification carries (see ``pgq._hand_off``), as ``claim``
    returns it; its times are microseconds since the epoch, read here in UTC."""
    job = json.loads(payload)
    return ClaimedJob(
        id=job["id"], job_name=job["job_name"], queue=job["queue"], payload=job["payload"],
        attempt=job["attempt"], max_retries=job["max_retries"],
        lease_token=UUID(job["lease_token"]),
        lease_expires_at=_EPOCH + timedelta(microseconds=job["lease_expires_at"]),
        priority=job["priority"], run_at=_EPOCH + timedelta(microseconds=job["run_at"]),
        created_at=_EPOCH + timedelta(microseconds=job["created_at"]),
        lease_duration=timedelta(microseconds=job["lease_duration"]),
    )  # fmt: skip


def release_lost_claims(worker_id: str, held_job_ids: Sequence[int]) -> Call[int]:
    params = {"worker_id": worker_id, "held_job_ids": list(held_job_ids)}
    return _scalar(_sql.RELEASE_LOST_CLAIMS, params, _as_int)


def heartbeat(job_id: int, lease_token: UUID, *, lease: timedelta | None) -> Call[datetime]:
    params = {"job_id": job_id, "lease_token": lease_token, "lease": lease}
    return _scalar(_sql.HEARTBEAT, params, _as_datetime)


def heartbeat_many(
    job_ids: Sequence[int], lease_tokens: Sequence[UUID], *, lease: timedelta | None
) -> Call[list[HeartbeatOutcome]]:
    params = {"job_ids": list(job_ids), "lease_tokens": list(lease_tokens), "lease": lease}
    return Call(_sql.HEARTBEAT_MANY, params, _HEARTBEAT_OUTCOMES, _all)


def complete(job_id: int, lease_token: UUID, result: Any) -> Call[str]:
    params = {"job_id": job_id, "lease_token": lease_token, "result": _json_or_null(result)}
    return _scalar(_sql.COMPLETE, params, _as_str)


def complete_many(
    job_ids: Sequence[int], lease_tokens: Sequence[UUID], results: Sequence[Any] | None
) -> Call[list[CompletionOutcome]]:
    if results is not None and len(results) != len(job_ids):
        raise InvalidArgument(
            f"invalid results: {len(results)} results for {len(job_ids)} jobs"
        )
    params = {
        "job_ids": list(job_ids),
        "lease_tokens": list(lease_tokens),
        # No result at all travels as one NULL, not an array of them.
        "results": [_json_or_null(r) for r in results]
        if results is not None and any(r is not None for r in results) else None,
    }  # fmt: skip
    return Call(_sql.COMPLETE_MANY, params, _COMPLETION_OUTCOMES, _all)


def _json_or_null(value: Any) -> Jsonb | None:
    """A result as jsonb; None (no result) as SQL NULL."""
    return None if value is None else Jsonb(value)


def fail(job_id: int, lease_token: UUID, error: str, *, retry: bool) -> Call[str]:
    params = {"job_id": job_id, "lease_token": lease_token, "error": error, "retry": retry}
    return _scalar(_sql.FAIL, params, _as_str)


def once_begin(
    job_id: int, lease_token: UUID, effect_key: str, request_id: UUID | None
) -> Call[OnceStatus]:
    params = {"job_id": job_id, "lease_token": lease_token, "effect_key": effect_key,
              "request_id": request_id}  # fmt: skip
    return Call(_sql.ONCE_BEGIN, params, _ONCE_STATUS, _one)


def once_finish(job_id: int, lease_token: UUID, effect_key: str, result: Any) -> Call[None]:
    params = {
        "job_id": job_id,
        "lease_token": lease_token,
        "effect_key": effect_key,
        "result": Jsonb(result),
    }
    return _scalar(_sql.ONCE_FINISH, params, _void)


def once_abort(job_id: int, lease_token: UUID, effect_key: str) -> Call[None]:
    params = {"job_id": job_id, "lease_token": lease_token, "effect_key": effect_key}
    return _scalar(_sql.ONCE_ABORT, params, _void)


# -- operator --------------------------------------------------------------------------------


def configure_queue(
    queue: str,
    *,
    max_retries: int | None,
    backoff_base: timedelta | None,
    backoff_max: timedelta | None,
    lease: timedelta | None,
    concurrency: int | None,
    rate_limit: int | None,
    rate_period: timedelta | None,
    key_concurrency: int | None,
) -> Call[None]:
    params = {
        "queue": queue,
        "max_retries": max_retries,
        "backoff_base": backoff_base,
        "backoff_max": backoff_max,
        "lease": lease,
        "concurrency": concurrency,
        "rate_limit": rate_limit,
        "rate_period": rate_period,
        "key_concurrency": key_concurrency,
    }
    return _scalar(_sql.CONFIGURE_QUEUE, params, _void)


def pause(queue: str) -> Call[None]:
    return _scalar(_sql.PAUSE, {"queue": queue}, _void)


def resume(queue: str) -> Call[None]:
    return _scalar(_sql.RESUME, {"queue": queue}, _void)


def cancel(job_id: int) -> Call[str]:
    return _scalar(_sql.CANCEL, {"job_id": job_id}, _as_str)


def retry(job_id: int) -> Call[None]:
    return _scalar(_sql.RETRY, {"job_id": job_id}, _void)


def retry_dead(queue: str | None, *, batch: int | None) -> Call[int]:
    return _scalar(_sql.RETRY_DEAD, {"queue": queue, "batch": batch}, _as_int)


def prune(older_than: timedelta, *, include_dead: bool, batch: int | None) -> Call[int]:
    params = {"older_than": older_than, "include_dead": include_dead, "batch": batch}
    return _scalar(_sql.PRUNE, params, _as_int)


def once_resolve(job_id: int, effect_key: str, *, ran: bool, result: Any) -> Call[None]:
    params = {"job_id": job_id, "effect_key": effect_key, "ran": ran, "result": Jsonb(result)}
    return _scalar(_sql.ONCE_RESOLVE, params, _void)


def stats() -> Call[list[QueueStats]]:
    return Call(_sql.QUEUE_STATS, {}, _QUEUE_STATS, _all)


def dead_letter(*, queue: str | None, limit: int) -> Call[list[DeadJob]]:
    return Call(_sql.DEAD_LETTER, {"queue": queue, "limit": limit}, _DEAD_JOBS, _all)


def job_errors(job_id: int) -> Call[list[AttemptError]]:
    return Call(_sql.JOB_ERRORS, {"job_id": job_id}, _ATTEMPT_ERRORS, _all)


def once_outcomes(
    *, job_id: int | None, outcome: str | None, limit: int
) -> Call[list[OnceOutcome]]:
    params = {"job_id": job_id, "outcome": outcome, "limit": limit}
    return Call(_sql.ONCE_OUTCOMES, params, _ONCE_OUTCOMES, _all)


def schedule(
    schedule_name: str,
    job: JobType[P],
    cron: str,
    payload: PayloadArg[P],
    *,
    timezone: str,
    queue: str | None,
    priority: int | None,
    max_retries: int | None,
) -> Call[datetime]:
    params = {
        "schedule_name": schedule_name,
        "cron": cron,
        "job_name": job.name,
        "payload": Jsonb(job.encode(cast(P, payload))),
        "queue": queue if queue is not None else job.queue,
        "timezone": timezone,
        "priority": priority if priority is not None else job.priority,
        "max_retries": max_retries if max_retries is not None else job.max_retries,
    }
    return _scalar(_sql.SCHEDULE, params, _value(datetime))


def unschedule(schedule_name: str) -> Call[None]:
    return _scalar(_sql.UNSCHEDULE, {"schedule_name": schedule_name}, _void)


def schedules() -> Call[list[Schedule]]:
    return Call(_sql.SCHEDULES, {}, _SCHEDULES, _all)


def tick() -> Call[int]:
    return _scalar(_sql.TICK, {}, _value(int))


def job_status(job_id: int) -> Call[JobStatus]:
    return Call(_sql.JOB_STATUS, {"job_id": job_id}, _JOB_STATUS, _one)


RESULT_POLL = 1.0
"""Seconds between ``job_status`` reads while a result waiter also listens: the
notification is what wakes it, the poll only covers one missed while reconnecting."""


def settled(job_id: int, status: JobStatus) -> bool:
    """Whether a result waiter is done: True once succeeded; raises NoResult for a dead
    or cancelled job; False while it may still succeed."""
    if status.state == "succeeded":
        return True
    if status.state in ("dead", "cancelled"):
        detail = f": {status.last_error.splitlines()[0]}" if status.last_error else ""
        raise NoResult(f"job {job_id} is {status.state} after attempt {status.attempt}"
                       f"{detail}", state=status.state)  # fmt: skip
    return False


def finished_ids(payload: str) -> set[int]:
    """The job ids of one ``pgq_finished`` notification."""
    return {int(part) for part in payload.split(",") if part}


def check_timeout(timeout: timedelta) -> float:
    seconds = timeout.total_seconds()
    if seconds < 0:
        raise InvalidArgument(f"invalid timeout {timeout}: must not be negative")
    return seconds


def job(job_id: int) -> Call[JobDetails | None]:
    return Call(_sql.JOB_DETAILS, {"job_id": job_id}, _JOB_DETAILS, _first_or_none)
