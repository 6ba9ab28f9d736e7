"""The rows pgq calls return: frozen dataclasses whose fields are the SQL result columns,
in the order the statements in ``_sql`` select them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

JobState = Literal["available", "running", "succeeded", "dead", "cancelled"]


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
    outcome: Literal["extended", "lease_lost", "cancelled"]
    lease_expires_at: datetime | None
    """The new expiry; None when the lease was lost."""


@dataclass(frozen=True)
class CompletionOutcome:
    """One job's result in ``pgq.complete_many``."""

    job_id: int
    outcome: Literal["succeeded", "failed", "lease_lost"]
    """``failed``: the result was over the 1 MiB limit, so the engine failed the attempt."""


@dataclass(frozen=True)
class JobStatus:
    """``pgq.job_status``: a job as its producer follows it."""

    state: JobState
    attempt: int
    result: Any
    """The handler's JSON result once succeeded; None before, or for no result."""
    last_error: str | None
    finished_at: datetime | None


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
