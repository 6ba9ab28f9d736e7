"""The worker runtime: ``Worker`` runs handlers for claimed jobs on one asyncio
coordinator (``coordinator.py``); ``JobContext`` is what a handler sees of its job
(``context.py``); ``Attempt`` is the worker's own record of it (``attempt.py``)."""

from __future__ import annotations

from pgqueue_py.worker.context import Handler, JobContext
from pgqueue_py.worker.coordinator import Worker, WorkerThreadDied

__all__ = ["Handler", "JobContext", "Worker", "WorkerThreadDied"]
