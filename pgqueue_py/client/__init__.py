"""The client: ``Queue`` (one method per pgq function), its rows, errors and job types."""

from __future__ import annotations

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
from pgqueue_py.client.queue import (
    AttemptError,
    ClaimedJob,
    CompletionOutcome,
    DeadJob,
    HeartbeatOutcome,
    JobDetails,
    JobState,
    JobStatus,
    OnceOutcome,
    OnceStatus,
    Queue,
    QueueStats,
    Schedule,
)

__all__ = [
    "AttemptError",
    "ClaimedJob",
    "CompletionOutcome",
    "ConfigurationError",
    "DeadJob",
    "HeartbeatOutcome",
    "InvalidArgument",
    "JobDetails",
    "JobNotFound",
    "JobState",
    "JobStateConflict",
    "JobStatus",
    "JobType",
    "LeaseLost",
    "MarkerNotBegun",
    "MarkerNotFound",
    "OnceOutcome",
    "OnceStatus",
    "OutcomeUnknown",
    "PgqError",
    "Queue",
    "QueueNotFound",
    "QueueStats",
    "Schedule",
    "ScheduleNotFound",
]
