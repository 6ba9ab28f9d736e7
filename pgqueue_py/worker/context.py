"""What a handler sees of its job: :class:`JobContext`, and the run-once protocol behind
``run_once``. The engine settles every run-once question (``pgq.once_begin`` answers a
resent request the same way); this module only asks, retries lost connections with the
same request, and runs the effect."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pgqueue_py.client.errors import JobCancelled, LeaseLost, OutcomeUnknown
from pgqueue_py.client.jobs import P

if TYPE_CHECKING:
    from pgqueue_py.client.async_queue import AsyncQueue
    from pgqueue_py.client.rows import OnceStatus
    from pgqueue_py.worker.attempt import Attempt
    from pgqueue_py.worker.retry import Retrier

log = logging.getLogger("pgqueue_py.worker")

T = TypeVar("T")

Handler = Callable[["JobContext", P], object | Awaitable[object]]
"""What a worker calls for a job: ``handler(ctx, payload)``, a plain function (run on the
worker's thread pool) or an ``async def`` (run on its event loop). The return value, if
JSON-serialisable, is the job's result."""


class JobContext:
    """What a handler knows about the job it runs, and ``run_once`` for side effects.

    ``attempt`` is 1 on the first run; ``retry_count`` is ``attempt - 1``. ``cancelled``
    turns true within a heartbeat period of ``Queue.cancel`` on the running job.
    """

    __slots__ = ("_attempt", "_effects", "attempt", "job_id", "job_name", "queue",
                 "retry_count")  # fmt: skip

    def __init__(self, attempt: Attempt, effects: Effects) -> None:
        job = attempt.job
        self.job_id: int = job.id
        self.attempt: int = job.attempt
        self.retry_count: int = job.attempt - 1
        self.job_name: str = job.job_name
        self.queue: str = job.queue
        self._attempt = attempt
        self._effects = effects

    def __repr__(self) -> str:
        return f"<JobContext job {self.job_id} {self.job_name!r} attempt {self.attempt}>"

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled while this attempt ran."""
        return self._attempt.cancelled

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled; a handler calls it between
        steps of long work."""
        if self._attempt.cancelled:
            raise JobCancelled(f"job {self.job_id}: the job was cancelled")

    async def wait_cancelled(self) -> None:
        """Return when the job is cancelled (async handlers only): race it against work
        with ``asyncio.wait``."""
        await self._attempt.cancel_seen.wait()

    def run_once(self, key: str, fn: Callable[[], T]) -> T:
        """Run the side effect ``fn`` at most once for this job and ``key``, across
        retries, crashes and workers; return its result. For plain handlers; an ``async
        def`` handler awaits :meth:`run_once_async`.

        The result must be JSON-serialisable: it is stored, and a later attempt (or a
        second call in this one) gets it back without ``fn`` being called. Raises
        :class:`OutcomeUnknown` when an earlier attempt began the effect and never recorded
        it (it may or may not have happened; an operator settles it with
        ``Queue.once_resolve``), and :class:`LeaseLost` when this attempt no longer holds
        the job. If ``fn`` raises, the marker is withdrawn and the error propagates.
        """
        effects = self._effects
        effects.refuse_on_loop()
        done, stored = effects.blocking(effects.begin(self._attempt, key))
        if done:
            return stored  # type: ignore[no-any-return]  # the stored JSON result
        try:
            result = fn()
        except BaseException:
            effects.blocking(effects.abort(self._attempt, key))
            raise
        effects.blocking(effects.finish(self._attempt, key, result))
        return result

    @overload
    async def run_once_async(self, key: str, fn: Callable[[], Awaitable[T]]) -> T: ...

    @overload
    async def run_once_async(self, key: str, fn: Callable[[], T]) -> T: ...

    async def run_once_async(self, key: str, fn: Callable[[], Any]) -> Any:
        """:meth:`run_once` for ``async def`` handlers: ``fn`` may be a plain function or
        return an awaitable."""
        effects = self._effects
        done, stored = await effects.begin(self._attempt, key)
        if done:
            return stored
        try:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
        except BaseException:
            await effects.abort(self._attempt, key)
            raise
        await effects.finish(self._attempt, key, result)
        return result


class Effects:
    """The run-once calls of every attempt of one worker, made on its event loop."""

    def __init__(
        self,
        db: AsyncQueue,
        loop: asyncio.AbstractEventLoop,
        retrier: Retrier,
        on_lease_lost: Callable[[Attempt], None],
    ) -> None:
        self._db = db
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._retrier = retrier
        self._on_lease_lost = on_lease_lost

    def refuse_on_loop(self) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("ctx.run_once blocks, so it cannot run on the event loop: "
                               "an async def handler awaits ctx.run_once_async(...)")  # fmt: skip

    def blocking(self, coro: Awaitable[T]) -> T:
        """Run one of the calls below on the loop from a handler thread, and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]  # a coroutine

    async def begin(self, attempt: Attempt, key: str) -> tuple[bool, Any]:
        """(True, stored result) if the effect is done; (False, None) to run it now."""
        attempt.check_held()
        job = attempt.job
        request_id = uuid.uuid4()  # the same on every resend: the engine answers it alike

        async def call() -> OnceStatus:
            return await self._db.once_begin(job.id, job.lease_token, key, request_id=request_id)

        try:
            status = await self._retrier.retrying(call, f"job {job.id}: run-once {key!r}")
        except LeaseLost:
            self._on_lease_lost(attempt)
            raise
        if status.status == "done":
            return True, status.result
        if status.status == "unknown":
            raise OutcomeUnknown(
                f"job {job.id}: run-once effect {key!r} was begun by an earlier attempt and "
                "its outcome was never recorded; it is not repeated. Check whether it "
                "happened and settle it with once_resolve"
            )
        return False, None

    async def finish(self, attempt: Attempt, key: str, result: object) -> None:
        job = attempt.job
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            # The effect happened: record it, so that it is never repeated.
            await self._record(attempt, key, None)
            raise TypeError(
                f"job {job.id}: the result of run-once effect {key!r} is not "
                f"JSON-serialisable ({exc}); the effect is recorded as done with a null result"
            ) from exc
        await self._record(attempt, key, result)

    async def abort(self, attempt: Attempt, key: str) -> None:
        job = attempt.job
        try:
            await self._retrier.retrying(
                lambda: self._db.once_abort(job.id, job.lease_token, key),
                f"job {job.id}: run-once {key!r}",
            )
        except Exception as exc:
            log.warning("job %s: could not withdraw run-once marker %r: %s", job.id, key, exc,
                        extra=attempt.extra())  # fmt: skip

    async def _record(self, attempt: Attempt, key: str, result: object) -> None:
        job = attempt.job
        await self._retrier.retrying(
            lambda: self._db.once_finish(job.id, job.lease_token, key, result),
            f"job {job.id}: run-once {key!r}",
        )


def is_async_handler(handler: Callable[..., object]) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004  # a callable object's method
    return call is not None and inspect.iscoroutinefunction(call)


__all__ = ["Effects", "Handler", "JobContext", "is_async_handler"]
