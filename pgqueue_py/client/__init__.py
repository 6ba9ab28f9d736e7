"""The client: ``Queue`` and ``AsyncQueue`` (one method per pgq function), their rows,
errors and job types."""

from __future__ import annotations

from pgqueue_py.client.async_queue import AsyncQueue
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
from pgqueue_py.client.queue import Queue
from pgqueue_py.client.rows import (
    AttemptError,
    ClaimedJob,
    CompletionOutcome,
    DeadJob,
    HeartbeatOutcome,
    JobDetails,
    JobState,
    JobStatus,
    OnceStatus,
    QueueStats,
    Schedule,
)

__all__ = [
    "AsyncQueue",
    "AttemptError",
    "ClaimedJob",
    "CompletionOutcome",
    "ConfigurationError",
    "ConnectionUnavailable",
    "DeadJob",
    "HeartbeatOutcome",
    "InvalidArgument",
    "JobCancelled",
    "JobDetails",
    "JobNotFound",
    "JobState",
    "JobStateConflict",
    "JobStatus",
    "JobType",
    "LeaseLost",
    "MarkerNotBegun",
    "MarkerNotFound",
    "NoResult",
    "OnceStatus",
    "OutcomeUnknown",
    "PgqError",
    "Queue",
    "QueueNotFound",
    "QueueStats",
    "ResultTimeout",
    "Schedule",
    "ScheduleNotFound",
]
