"""pgqueue: a job queue engine that lives inside PostgreSQL (schema ``pgq``)."""

from __future__ import annotations

from pgqueue_py.client import Queue
from pgqueue_py.client.errors import (
    ConfigurationError,
    InvalidArgument,
    JobNotFound,
    JobStateConflict,
    LeaseLost,
    MarkerNotBegun,
    MarkerNotFound,
    OutcomeUnknown,
    PgqError,
    QueueNotFound,
    ScheduleNotFound,
)
from pgqueue_py.client.jobs import JobType
from pgqueue_py.worker import Handler, JobContext, Worker, WorkerThreadDied

__all__ = [
    "ConfigurationError",
    "Handler",
    "InvalidArgument",
    "JobContext",
    "JobNotFound",
    "JobStateConflict",
    "JobType",
    "LeaseLost",
    "MarkerNotBegun",
    "MarkerNotFound",
    "OutcomeUnknown",
    "PgqError",
    "Queue",
    "QueueNotFound",
    "ScheduleNotFound",
    "Worker",
    "WorkerThreadDied",
]
