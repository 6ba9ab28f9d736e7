"""The worker's own record of one claimed job: where it is in the worker, and what the
engine said about it. Only the coordinator's event loop changes it; a handler never
sees it (its view is :class:`~pgqueue_py.worker.context.JobContext`)."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from pgqueue_py.client import ClaimedJob
from pgqueue_py.client.errors import JobCancelled, LeaseLost


class Stage(enum.Enum):
    BUFFERED = "buffered"
    """Claimed ahead of a free slot: leased and heartbeated, its handler not started."""
    RUNNING = "running"
    """Its handler runs."""
    RECORDING = "recording"
    """Its handler returned; the outcome waits for (or is in) its call to the engine."""


@dataclass(eq=False)
class Attempt:
    """One attempt of one job, from claim until its outcome is recorded or its lease lost."""

    job: ClaimedJob
    worker_id: str
    stage: Stage = Stage.BUFFERED
    lost: bool = False
    """The lease is gone (expired, or the job was cancelled): nothing more is recorded."""
    cancelled: bool = False
    """The job was cancelled while this attempt held it (a heartbeat said so)."""
    timed_out: bool = False
    """The handler outlived its timeout; the attempt was failed, a late result is ignored."""
    handler_seconds: float = 0.0
    """How long the handler ran, once it returned."""
    handed: bool = False
    """Leased by a hand-over at an enqueue's commit, not by a claim."""
    _cancel_seen: asyncio.Event | None = None

    @property
    def cancel_seen(self) -> asyncio.Event:
        """Set once the job is cancelled; made when first asked for (most attempts never
        are), on the event loop that owns the attempt."""
        if self._cancel_seen is None:
            self._cancel_seen = asyncio.Event()
            if self.cancelled:
                self._cancel_seen.set()
        return self._cancel_seen

    @property
    def job_id(self) -> int:
        return self.job.id

    def extra(self) -> dict[str, object]:
        """Logging context."""
        return {"job_id": self.job.id, "queue": self.job.queue, "job_name": self.job.job_name,
                "attempt": self.job.attempt, "worker_id": self.worker_id}  # fmt: skip

    def check_held(self) -> None:
        """Raise if this attempt may no longer act for the job."""
        if self.cancelled:
            raise JobCancelled(f"job {self.job.id}: the job was cancelled")
        if self.lost:
            raise LeaseLost(f"job {self.job.id}: lease lost")
        if self.timed_out:
            raise LeaseLost(f"job {self.job.id}: the attempt timed out and was failed")
