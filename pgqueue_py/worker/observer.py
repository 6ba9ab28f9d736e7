"""What a worker tells an observer (metrics, tracing): each job it starts, and how each
attempt ended once the engine recorded it. Called on the worker's event loop, so an
observer must be quick and must not block."""

from __future__ import annotations

from typing import Literal, Protocol

from pgqueue_py.client.rows import ClaimedJob

Outcome = Literal["succeeded", "failed", "dead", "lease_lost", "timed_out", "cancelled"]
"""How an attempt ended: ``failed`` when the engine scheduled a retry, ``dead`` when it
dead-lettered the job, ``timed_out`` when the handler outlived its job type's timeout,
``lease_lost`` when the engine refused its outcome or a heartbeat, ``cancelled`` when the
job was cancelled while it ran."""


class WorkerObserver(Protocol):
    def job_started(self, job: ClaimedJob) -> None:
        """A handler starts. ``job.run_at`` is when the job was due; the database's time
        of the claim is ``job.lease_expires_at - job.lease_duration``."""

    def job_finished(self, job: ClaimedJob, outcome: Outcome, duration: float) -> None:
        """The attempt ended; ``duration`` is how long its handler ran, in seconds (0 if
        it never started)."""
