"""The worker runtime: ``Worker`` runs handlers for claimed jobs; ``JobContext`` is what a
handler sees of its job."""

from __future__ import annotations

from pgqueue_py.worker.runtime import Handler, JobContext, Worker, WorkerThreadDied

__all__ = ["Handler", "JobContext", "Worker", "WorkerThreadDied"]
