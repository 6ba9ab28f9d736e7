"""pgqueue: a job queue engine that lives inside PostgreSQL (schema ``pgq``)."""

from __future__ import annotations

from pgqueue_py.client import AsyncQueue, Queue
from pgqueue_py.client.errors import (
    ConfigurationError,
    ConnectionUnavailable,
    InvalidArgument,
    JobCancelled,
    JobNotFound,
    JobStateConflict,
    LeaseLost,
    MarkerNotBegun,
    MarkerNotFound,
    NoResult,
    OutcomeUnknown,
    PgqError,
    QueueNotFound,
    ResultTimeout,
    ScheduleNotFound,
)
from pgqueue_py.client.jobs import JobType
from pgqueue_py.worker import Handler, JobContext, Worker, WorkerThreadDied

__all__ = [
    "AsyncQueue",
    "ConfigurationError",
    "ConnectionUnavailable",
    "Handler",
    "InvalidArgument",
    "JobCancelled",
    "JobContext",
    "JobNotFound",
    "JobStateConflict",
    "JobType",
    "LeaseLost",
    "MarkerNotBegun",
    "MarkerNotFound",
    "NoResult",
    "OutcomeUnknown",
    "PgqError",
    "Queue",
    "QueueNotFound",
    "ResultTimeout",
    "ScheduleNotFound",
    "Worker",
    "WorkerThreadDied",
]
