"""The worker: one asyncio event loop owns every claimed job.

The coordinator claims, dispatches, batches outcomes, heartbeats, times out and wakes up;
handlers only run and report. Nothing else changes the worker's state, so no lock guards
it. The life of a claimed job, top to bottom in this file:

1. ``_claim_loop`` leases jobs in one ``pgq.claim`` (free slots plus a small buffer sized
   to what the handlers get through in ``_PREFETCH_HORIZON``), and waits for a
   notification or the jittered poll when the queues run dry. A listening worker claims
   with ``pgq.claim_and_wait`` instead, which also records the slots the claim left
   free: a one-row enqueue then hands its job over at commit, and ``_listen_loop``
   receives it already leased, in a notification (no claim between enqueue and start);
2. ``_dispatch`` starts a handler per job while a slot is free: plain handlers run on a
   thread pool of ``concurrency`` threads and report back to the loop, ``async def``
   ones in a task each on the loop;
3. ``_Outcomes`` records what the handler did: successes batched into one
   ``pgq.complete_many``, failures with ``pgq.fail``, resent after a lost connection;
4. ``_heartbeat_loop`` extends every lease this worker holds (buffered, running or
   awaiting its record) in one ``pgq.heartbeat_many``; a lost lease drops the job, a
   cancelled one tells its handler.

A task that dies unexpectedly stops the worker, and ``run`` raises
:class:`WorkerThreadDied` naming it. The database going away is not a death: each task
backs off (exponentially, capped, with jitter) and goes on when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from queue import SimpleQueue
from typing import Any, TypeVar

import psycopg

from pgqueue_py.client import _calls, _sql
from pgqueue_py.client.async_queue import AsyncQueue
from pgqueue_py.client.errors import LeaseLost, OutcomeUnknown, PgqError
from pgqueue_py.client.jobs import JobType
from pgqueue_py.client.queue import Queue
from pgqueue_py.client.rows import ClaimedJob
from pgqueue_py.worker.attempt import Attempt, Stage
from pgqueue_py.worker.context import Effects, Handler, JobContext, is_async_handler
from pgqueue_py.worker.observer import Outcome, WorkerObserver
from pgqueue_py.worker.retry import Backoff, Retrier, one_line

log = logging.getLogger("pgqueue_py.worker")

T = TypeVar("T")
_Returned = Callable[[bool, object], None]
"""A plain handler's report: ok and its return value, or not ok and its exception."""

_FLUSH_MAX = 1000
"""Most jobs recorded by one ``pgq.complete_many`` call."""
_CLAIM_LINGER = 0.002
"""How long the claim loop waits for half its room to free up before claiming less."""
_PREFETCH_HORIZON = 0.020
"""Seconds of handler work the buffer of claimed, not yet started jobs holds."""
_RATE_WINDOW = 256
"""How many of the latest handler returns measure the rate the buffer is sized by."""
_DEFAULT_LEASE = 30.0
"""Seconds; the engine's default lease, until the first claim shows the real one."""
_HANDOFF_BARRIER_TIMEOUT = 10.0
"""Seconds to wait for the notification ``pgq.stop_waiting`` sends after the last job
handed to this worker, before giving back the jobs it holds no record of."""
_POOL_TIMEOUT = timedelta(seconds=2)
"""How long a worker call waits for a connection before it backs off and retries."""


class WorkerThreadDied(RuntimeError):
    """One of the worker's tasks died unexpectedly; the worker stopped."""


class Worker:
    """Runs jobs of the given types from PostgreSQL until stopped.

    ``handlers`` maps each job type to its handler ``handler(ctx, payload)``, a plain
    function or an ``async def``. ``queues`` defaults to the queues of those job types.
    ``concurrency`` is how many handlers run at once: that many threads for plain
    handlers, that many tasks for async ones. ``prefetch`` bounds the jobs claimed ahead
    of a free slot (leased and heartbeated while they wait; the buffer adapts to handler
    durations, and stays empty for slow jobs), so a crash strands at most
    ``concurrency + prefetch`` leases until they expire. ``lease`` None takes each
    queue's configured lease; heartbeats come every third of the lease granted.

    The worker opens connections of its own (from ``queue.dsn``): a small pool for its
    calls and, unless ``listen`` is false or the queue is in transaction-pooler mode, one
    for ``LISTEN``. ``queue`` may be a :class:`Queue` or an :class:`AsyncQueue`; an
    ``AsyncQueue`` is used as it is.
    """

    def __init__(
        self,
        queue: Queue | AsyncQueue,
        handlers: Mapping[JobType[Any], Handler[Any]],
        *,
        concurrency: int = 8,
        queues: Sequence[str] | None = None,
        lease: timedelta | None = None,
        prefetch: int | None = None,
        poll_interval: timedelta = timedelta(seconds=1),
        shutdown_timeout: timedelta = timedelta(seconds=30),
        worker_id: str | None = None,
        listen: bool = True,
        observer: WorkerObserver | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("a worker needs at least one job type to handle")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if prefetch is not None and prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more, not {prefetch}")
        if poll_interval <= timedelta(0):
            raise ValueError("poll_interval must be positive")
        if lease is not None and lease < timedelta(seconds=1):
            raise ValueError("lease must be at least one second")
        self._queue = queue
        self._observer = observer
        self._handlers: dict[str, tuple[JobType[Any], Handler[Any], bool]] = {}
        for job_type, handler in handlers.items():
            if job_type.name in self._handlers:
                raise ValueError(f"two handlers for job name {job_type.name!r}")
            self._handlers[job_type.name] = (job_type, handler, is_async_handler(handler))
        self._queues = list(queues) if queues is not None else sorted(
            {job_type.queue for job_type in handlers}
        )  # fmt: skip
        if not self._queues:
            raise ValueError("a worker needs at least one queue")
        self._queue_set = frozenset(self._queues)
        self.concurrency = concurrency
        self.prefetch = prefetch if prefetch is not None else max(100, concurrency)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = lease
        self._poll = poll_interval.total_seconds()
        self._shutdown_timeout = shutdown_timeout.total_seconds()
        self._listen = listen and not queue.transaction_pooler
        self._max_held = concurrency + self.prefetch
        lease_seconds = lease.total_seconds() if lease is not None else _DEFAULT_LEASE
        self._heartbeat_every = lease_seconds / 3

        # Owned by the event loop once run() starts.
        self._held: dict[int, Attempt] = {}
        """Every attempt this worker holds a lease for: buffered, running or recording."""
        self._buffer: deque[Attempt] = deque()
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._running: set[Attempt] = set()
        """Attempts whose handler runs and counts against concurrency (a sync handler past
        its timeout keeps its thread, so it keeps its slot until it returns)."""
        self._next_tick = 0.0
        """When (monotonic) this worker next calls ``pgq.tick``."""
        self._handoff: tuple[int, str] | None = None
        """(wake_key, channel) of the listening connection, while it is up."""
        self._waiting = False
        """A ``pgq.claim_and_wait`` may have left this worker waiting for hand-overs."""
        self._handoffs_lost = False
        """The listening connection dropped while waiting: jobs handed over may never
        arrive, and are given back before the next claim."""
        self._finishes: deque[float] = deque(maxlen=_RATE_WINDOW)
        """When (monotonic) the last handlers returned: their rate sizes the buffer."""
        self._started = False
        self._stop_requested: bool | None = None
        """Set by stop() before the loop runs: None, or whether it asked to stop at once."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fatal: tuple[str, BaseException] | None = None
        self._signals = 0

    # -- public ----------------------------------------------------------------------------

    @property
    def queues(self) -> list[str]:
        """The queues this worker claims from."""
        return list(self._queues)

    @property
    def running_jobs(self) -> int:
        """Handlers running now (for a metrics gauge; read from any thread)."""
        return len(self._running)

    def run(self) -> None:
        """Run until stopped (``stop()``, SIGTERM or SIGINT); return when done.

        In the main thread, SIGTERM and SIGINT are handled while running: the first
        stops claiming and lets running handlers finish within ``shutdown_timeout``; the
        second stops at once, leaving unfinished jobs to be retried when their leases
        expire. Raises :class:`WorkerThreadDied` if one of the worker's tasks died.
        """
        asyncio.run(self.run_async(handle_signals=True))

    async def run_async(self, *, handle_signals: bool = False) -> None:
        """:meth:`run` inside a running event loop (an asyncio application's)."""
        if self._started:
            raise RuntimeError("a Worker runs once; make a new one")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        """No more claims; running handlers may finish."""
        self._halt = asyncio.Event()
        """Stop at once: stop waiting for handlers and for the database."""
        self._wake = asyncio.Event()
        """A notification came, or a claim may find more."""
        self._room = asyncio.Event()
        """An attempt left the buffer, a slot or this worker: there may be room to claim."""
        self._heartbeat_sooner = asyncio.Event()
        """A claim granted a shorter lease than the heartbeat period assumed."""
        self._handoffs_done = asyncio.Event()
        """The notification after the last hand-over came (or cannot come any more)."""
        self._retrier = Retrier(self.worker_id, self._halt)
        if self._stop_requested is not None:
            self._request_stop(now=self._stop_requested)
        restore = self._install_signal_handlers() if handle_signals else (lambda: None)
        log.info("worker %s started: queues %s, concurrency %s, job types %s",
                 self.worker_id, ",".join(self._queues), self.concurrency,
                 ",".join(sorted(self._handlers)))  # fmt: skip
        try:
            async with self._database() as db:
                self._db = db
                await self._run_tasks(db)
        finally:
            restore()
        if self._fatal is not None:
            name, cause = self._fatal
            raise WorkerThreadDied(f"worker {self.worker_id}: {name} died: {cause!r}") from cause
        log.info("worker %s stopped", self.worker_id)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; running handlers finish within ``shutdown_timeout`` and their
        outcomes are recorded. ``now=True`` stops waiting for them. Safe to call more
        than once, from any thread, before or while the worker runs."""
        loop = self._loop
        if loop is None:
            self._stop_requested = now or bool(self._stop_requested)
            return
        if loop.is_closed():
            return
        # RuntimeError: the loop closed meanwhile, so the worker has stopped.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._request_stop, now)

    # -- the tasks -------------------------------------------------------------------------

    def _database(self) -> contextlib.AbstractAsyncContextManager[AsyncQueue]:
        """The worker's connections: the AsyncQueue it was given, or a pool of its own."""
        if isinstance(self._queue, AsyncQueue):
            return contextlib.nullcontext(self._queue)
        return AsyncQueue(
            self._queue.dsn,
            min_connections=2,
            max_connections=3 + min(self.concurrency, 16),
            transaction_pooler=self._queue.transaction_pooler,
            pool_timeout=_POOL_TIMEOUT,
        )

    async def _run_tasks(self, db: AsyncQueue) -> None:
        loop = asyncio.get_running_loop()
        needs_threads = any(not is_async for _, _, is_async in self._handlers.values())
        self._threads = _HandlerThreads(self.concurrency if needs_threads else 0, loop,
                                        lambda exc: self._died("handler results", exc))
        self._effects = Effects(db, loop, self._retrier, self._lose)
        self._outcomes = _Outcomes(self, db)
        services: dict[str, Callable[[], Awaitable[None]]] = {
            "claim loop": self._claim_loop,
            "outcomes": self._outcomes.run,
            "heartbeats": self._heartbeat_loop,
        }
        if self._listen:
            services["listener"] = self._listen_loop
        tasks = {name: loop.create_task(self._watched(name, fn), name=f"pgq-{name}")
                 for name, fn in services.items()}  # fmt: skip
        try:
            await tasks.pop("claim loop")
            await self._drain()
            await self._outcomes.finish(self._shutdown_deadline)
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            self._threads.close()
            if self._held:
                log.warning("worker %s: left %s jobs unrecorded; they are retried when their "
                            "leases expire", self.worker_id, len(self._held))  # fmt: skip

    async def _watched(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._died(name, exc)

    def _died(self, name: str, exc: BaseException) -> None:
        log.critical("worker %s: task %s died, stopping: %r", self.worker_id, name, exc,
                     exc_info=exc)  # fmt: skip
        if self._fatal is None:
            self._fatal = (name, exc)
        self._request_stop(now=True)

    def _request_stop(self, now: bool) -> None:
        if now:
            self._halt.set()
        self._stopping.set()
        self._wake.set()
        self._room.set()

    # -- 1. claiming -----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = Backoff()
        answer_lost = False  # a claim failed with its connection: it may have leased jobs
        while not self._stopping.is_set():
            batch = await self._room_to_claim()
            if self._stopping.is_set():
                break
            self._wake.clear()
            try:
                if answer_lost or self._handoffs_lost:
                    # Back after an outage: record what finished meanwhile before claiming,
                    # so that no finished job is claimed (and run) again first.
                    self._handoffs_lost = False
                    await self._outcomes.recorded()
                    await self._release_lost_claims()
                    answer_lost = False
                jobs = await self._claim(batch)
            except psycopg.OperationalError as exc:
                answer_lost = True
                await self._retrier.wait(exc, backoff, "claim")
                continue
            if backoff.failures:
                log.info("worker %s: claiming again", self.worker_id)
                backoff.failures = 0
            self._accept(jobs)
            # Due schedule slots after the claim, so that the claim a notification asked
            # for never waits behind a tick; what the tick enqueued is claimed next round.
            try:
                if await self._tick_if_due():
                    self._wake.set()
            except psycopg.OperationalError as exc:
                await self._retrier.wait(exc, backoff, "tick")
                continue
            if len(jobs) < batch:
                await self._wait_for_work()
        await self._release_buffered()

    async def _tick_if_due(self) -> int:
        """Enqueue due schedule slots, once a poll interval: every worker ticks, and the
        engine's idempotency keys make each slot one job, with no leader. Returns how
        many jobs it enqueued."""
        now = time.monotonic()
        if now < self._next_tick:
            return 0
        self._next_tick = now + self._poll * random.uniform(0.8, 1.2)
        enqueued = await self._db.tick()
        if enqueued:
            log.info("worker %s: enqueued %s scheduled jobs", self.worker_id, enqueued)
        return enqueued

    async def _claim(self, batch: int) -> list[ClaimedJob]:
        handoff = self._handoff
        if handoff is None:
            return await self._db.claim(
                self.worker_id, queues=self._queues, batch=batch, lease=self._lease
            )
        self._waiting = True
        wake_key, channel = handoff
        return await self._db.claim_and_wait(
            self.worker_id, queues=self._queues, batch=batch, lease=self._lease,
            wake_key=wake_key, channel=channel,
            free_slots=max(0, self.concurrency - len(self._running) - len(self._buffer)),
        )  # fmt: skip

    def _claimable(self) -> tuple[int, int]:
        """(how many to claim now, how many make a worthwhile batch)."""
        target = self.concurrency + self._buffer_target()
        wanted = target - len(self._running) - len(self._buffer)
        room = self._max_held - len(self._held)
        return max(0, min(wanted, room)), max(1, target // 2)

    def _buffer_target(self) -> int:
        """Jobs to hold ahead of free slots: what the handlers get through in
        ``_PREFETCH_HORIZON`` at the rate they finished lately; none for slow jobs, and
        none until a few have finished."""
        finishes = self._finishes
        if len(finishes) < 8:
            return 0
        span = finishes[-1] - finishes[0]
        rate = (len(finishes) - 1) / span if span > 0 else float("inf")
        return int(min(self.prefetch, rate * _PREFETCH_HORIZON))

    async def _room_to_claim(self) -> int:
        """Wait until a worthwhile batch may be claimed: half the room, or what is free
        after a short linger, so that a backlog is claimed in batches."""
        deadline: float | None = None
        while True:
            self._room.clear()
            batch, worthwhile = self._claimable()
            if batch >= worthwhile or self._stopping.is_set():
                return batch
            if batch > 0:
                now = time.monotonic()
                deadline = deadline or now + _CLAIM_LINGER
                if now >= deadline:
                    return batch
                timeout: float | None = deadline - now
            else:
                timeout = None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._room.wait(), timeout)

    async def _wait_for_work(self) -> None:
        """The queues ran dry: wait for a notification, or the jittered poll."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll * random.uniform(0.8, 1.2))

    async def _release_lost_claims(self) -> None:
        """Give back the jobs a lost claim answer (or a lost hand-over) may have leased to
        this worker, so they run at once instead of after their leases expire, their
        attempt uncounted."""
        if not await self._stop_waiting():
            return
        released = await self._db.release_lost_claims(self.worker_id, list(self._held))
        if released:
            log.info("worker %s: released %s jobs a lost claim had leased to it",
                     self.worker_id, released)  # fmt: skip

    async def _stop_waiting(self) -> bool:
        """No more hand-overs to this worker. Returns once every job handed to it has
        arrived (it is then in ``_held``), or False when that cannot be made sure: then
        nothing may be given back, or a job on its way would run after it was."""
        if not self._waiting:
            return True
        handoff = self._handoff
        self._handoffs_done.clear()
        await self._db.stop_waiting(self.worker_id, channel=handoff[1] if handoff else None)
        self._waiting = False
        if handoff is None:
            return True  # not listening: no notification of a hand-over can arrive now
        try:
            await asyncio.wait_for(self._handoffs_done.wait(), _HANDOFF_BARRIER_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("worker %s: the listening connection did not confirm the last "
                        "hand-over within %ss; jobs it may have been handed are retried "
                        "when their leases expire", self.worker_id,
                        f"{_HANDOFF_BARRIER_TIMEOUT:g}")  # fmt: skip
            return False
        return True

    async def _release_buffered(self) -> None:
        """Stopping: jobs claimed ahead (or handed over) and not started go back, their
        attempt uncounted."""
        if (not self._buffer and not self._waiting) or self._halt.is_set():
            return
        try:
            if not await self._stop_waiting():
                return
            for attempt in self._buffer:
                del self._held[attempt.job_id]
            self._buffer.clear()
            await self._release_lost_claims()
        except psycopg.OperationalError as exc:
            log.warning("worker %s: could not give back jobs claimed ahead (%s); they "
                        "are retried when their leases expire", self.worker_id,
                        one_line(exc))  # fmt: skip

    def _accept(self, jobs: list[ClaimedJob], *, handed: bool = False) -> None:
        if not jobs:
            return
        # Heartbeat every third of the shortest lease granted so far: the database says
        # how long, no clock is compared.
        period = min(j.lease_duration for j in jobs).total_seconds() / 3
        if period < self._heartbeat_every:
            self._heartbeat_every = period
            self._heartbeat_sooner.set()
        for job in jobs:
            attempt = Attempt(job, self.worker_id, handed=handed)
            self._held[job.id] = attempt
            self._buffer.append(attempt)
        self._dispatch()

    # -- 2. running handlers ---------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start handlers for buffered jobs while slots are free. Once stopping, none
        starts: a claim answered after the stop is given back."""
        if self._stopping.is_set():
            return
        buffer, running = self._buffer, self._running
        while buffer and len(running) < self.concurrency:
            attempt = buffer.popleft()
            attempt.stage = Stage.RUNNING
            running.add(attempt)
            self._start(attempt)

    def _start(self, attempt: Attempt) -> None:
        """Start an attempt's handler: an ``async def`` one in a task of its own, a plain
        one on a handler thread, which reports back to a callback on the loop (no task:
        for a short job, a task costs the loop a sizeable part of the job's work)."""
        started = time.monotonic()
        if self._observer is not None:
            self._observer.job_started(attempt.job)
        entry = self._handlers.get(attempt.job.job_name)
        if entry is None:
            known = ", ".join(sorted(self._handlers))
            error = (f"unknown job name {attempt.job.job_name!r}: worker {self.worker_id} "
                     f"handles {known}")  # fmt: skip
            self._outcomes.fail(attempt, error, retry=False)
            self._handler_done(attempt, started, dispatch=False)
            return
        job_type, handler, is_async = entry
        try:
            payload = job_type.decode(attempt.job.payload)
        except Exception as exc:
            expected = job_type.payload_type.__name__
            self._outcomes.fail(attempt, f"the payload does not decode as {expected}: {exc!r}",
                                retry=False)  # fmt: skip
            self._handler_done(attempt, started, dispatch=False)
            return
        context = JobContext(attempt, self._effects)
        timeout = job_type.timeout.total_seconds() if job_type.timeout else None
        loop = asyncio.get_running_loop()
        if is_async:
            task = loop.create_task(self._run_async(attempt, handler, context, payload,
                                                    timeout, started))  # fmt: skip
            # The loop keeps only a weak reference to a task.
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)
            return
        timer = (loop.call_later(timeout, self._thread_timed_out, attempt, timeout, started)
                 if timeout is not None else None)  # fmt: skip

        def returned(ok: bool, value: object) -> None:
            if timer is not None:
                timer.cancel()
            if attempt.timed_out:
                # Failed at its timeout already: whatever it returned is ignored, and
                # only now does its thread, and so its slot, come free.
                self._leave_slot(attempt)
                return
            self._record(attempt, ok, value)
            self._handler_done(attempt, started)

        self._threads.submit(lambda: handler(context, payload), returned)

    async def _run_async(
        self,
        attempt: Attempt,
        handler: Handler[Any],
        context: JobContext,
        payload: object,
        timeout: float | None,
        started: float,
    ) -> None:
        # The timeout is the worker's own timer, as for a plain handler, and not
        # asyncio.wait_for: that raises TimeoutError, which the handler may raise too.
        fired = False
        timer = None
        if timeout is not None:
            task = asyncio.current_task()

            def time_out() -> None:
                nonlocal fired
                fired = True
                if task is not None:
                    task.cancel()

            timer = asyncio.get_running_loop().call_later(timeout, time_out)
        try:
            try:
                result = await handler(context, payload)  # type: ignore[misc]  # a coroutine
                ok = True
            except asyncio.CancelledError:
                if not fired:
                    raise
                ok, result = False, None
            except Exception as exc:
                ok, result = False, exc
            if fired and timeout is not None:
                # Past its timeout: cancelled, and whatever it did after is ignored.
                attempt.timed_out = True
                self._fail_timed_out(attempt, timeout)
            else:
                self._record(attempt, ok, result)
        finally:
            if timer is not None:
                timer.cancel()
            self._handler_done(attempt, started)

    def _thread_timed_out(self, attempt: Attempt, timeout: float, started: float) -> None:
        """A plain handler outlived its timeout. The thread cannot be stopped: it keeps
        its slot until it returns, and whatever it returns is ignored."""
        attempt.timed_out = True
        self._fail_timed_out(attempt, timeout)
        finished = time.monotonic()
        attempt.handler_seconds = finished - started
        self._finishes.append(finished)

    def _fail_timed_out(self, attempt: Attempt, timeout: float) -> None:
        log.warning("job %s (%s) attempt %s timed out after %ss", attempt.job_id,
                    attempt.job.job_name, attempt.job.attempt, f"{timeout:g}",
                    extra=attempt.extra())  # fmt: skip
        self._outcomes.fail(attempt, f"timed out after {timeout:g}s", retry=True)

    def _record(self, attempt: Attempt, ok: bool, value: object) -> None:
        """What the handler did: its return value (ok) or the exception it raised."""
        if not ok:
            exc = value
            assert isinstance(exc, BaseException)
            if attempt.lost or attempt.cancelled:
                return  # the engine moved on; nothing more is recorded
            summary = f"{type(exc).__name__}: {exc}"
            log.warning("job %s (%s) attempt %s failed: %s", attempt.job_id,
                        attempt.job.job_name, attempt.job.attempt, summary,
                        extra=attempt.extra())  # fmt: skip
            tb = "".join(traceback.format_exception(exc))
            # Retrying cannot settle an unknown run-once outcome: the job goes to the
            # dead letter at once, for an operator to check and resolve.
            retry = not isinstance(exc, OutcomeUnknown)
            self._outcomes.fail(attempt, f"{summary}\n\n{tb}", retry=retry)
            return
        if value is not None:
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                self._outcomes.fail(attempt, "the handler's return value is not "
                                    f"JSON-serialisable, so it cannot be the job's "
                                    f"result: {exc}", retry=True)  # fmt: skip
                return
        self._outcomes.succeed(attempt, value)

    def _handler_done(self, attempt: Attempt, started: float, *, dispatch: bool = True) -> None:
        """The handler returned (or never started): time it and free its slot (an async
        handler past its timeout was cancelled, so its slot is free too). ``dispatch``
        False: called from inside ``_dispatch``, which goes on by itself."""
        finished = time.monotonic()
        attempt.handler_seconds = finished - started
        self._finishes.append(finished)
        self._leave_slot(attempt, dispatch=dispatch)

    def _leave_slot(self, attempt: Attempt, *, dispatch: bool = True) -> None:
        self._running.discard(attempt)
        self._room.set()
        if attempt.handed:
            # Its hand-over used up a slot the worker waited with: claim again to wait
            # with it once more (or to find a job that was not handed over).
            self._wake.set()
        if dispatch:
            self._dispatch()

    async def _drain(self) -> None:
        """Let running handlers finish, until ``shutdown_timeout`` or a stop at once."""
        self._shutdown_deadline = time.monotonic() + self._shutdown_timeout
        working = self._working()
        if working and not self._halt.is_set():
            log.info("worker %s: stopping; waiting for %s running jobs", self.worker_id, working)
        while self._working() and not self._halt.is_set():
            remaining = self._shutdown_deadline - time.monotonic()
            if remaining <= 0:
                log.warning("worker %s: %s jobs still running after the shutdown timeout; "
                            "they are retried when their leases expire", self.worker_id,
                            self._working())  # fmt: skip
                self._halt.set()
                return
            self._room.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._room.wait(), min(remaining, 0.5))

    def _working(self) -> int:
        """Handlers still running whose outcome is wanted (not past their timeout)."""
        return sum(1 for a in self._running if not a.timed_out)

    # -- 3. recording outcomes: see _Outcomes below ----------------------------------------

    def _ended(self, attempt: Attempt, outcome: Outcome) -> None:
        """The attempt is over: the engine recorded its outcome, or the lease is gone."""
        if self._observer is not None:
            self._observer.job_finished(attempt.job, outcome, attempt.handler_seconds)
        self._forget(attempt)

    def _forget(self, attempt: Attempt) -> None:
        """Stop tracking an attempt: its outcome is recorded or its lease is lost. The job
        may have been claimed again by this worker since; that attempt stays tracked."""
        if self._held.get(attempt.job_id) is attempt:
            del self._held[attempt.job_id]
            self._room.set()

    def _lose(self, attempt: Attempt, *, cancelled: bool = False) -> None:
        """The job's lease is gone: record nothing more for it; a handler not started
        never starts."""
        if attempt.lost:
            return
        attempt.lost = True
        if cancelled:
            attempt.cancelled = True
            attempt.cancel_seen.set()
            log.info("job %s: cancelled while running", attempt.job_id, extra=attempt.extra())
        else:
            log.warning("job %s: lease lost", attempt.job_id, extra=attempt.extra())
        if attempt.stage is Stage.BUFFERED:
            with contextlib.suppress(ValueError):
                self._buffer.remove(attempt)
        self._ended(attempt, "cancelled" if cancelled else "lease_lost")

    # -- 4. heartbeats ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        backoff = Backoff()
        wait = self._heartbeat_every
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._heartbeat_sooner.wait(), wait)
            if self._heartbeat_sooner.is_set():
                # The lease turned out shorter than assumed: start over with the new period.
                self._heartbeat_sooner.clear()
                wait = self._heartbeat_every
                continue
            period = wait = self._heartbeat_every
            attempts = list(self._held.values())
            if not attempts:
                continue
            try:
                outcomes = await self._db.heartbeat_many(
                    [a.job_id for a in attempts], [a.job.lease_token for a in attempts],
                    lease=self._lease,
                )  # fmt: skip
            except psycopg.OperationalError as exc:
                wait = min(backoff.next_delay(), period)
                log.warning("worker %s: heartbeat failed (%s); retrying in %.2fs",
                            self.worker_id, one_line(exc), wait)  # fmt: skip
                continue
            if backoff.failures:
                log.info("worker %s: heartbeats go through again", self.worker_id)
                backoff.failures = 0
            for attempt, outcome in zip(attempts, outcomes, strict=True):
                if outcome.outcome == "extended" or attempt.stage is Stage.RECORDING:
                    # A handler that returned has its outcome sent whatever the lease: the
                    # engine accepts it late while no other attempt claimed the job.
                    continue
                if self._held.get(attempt.job_id) is attempt:
                    self._lose(attempt, cancelled=outcome.outcome == "cancelled")

    # -- wake-ups --------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        backoff = Backoff()
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._queue.dsn, autocommit=True, connect_timeout=10
                ) as conn:
                    await conn.execute(_sql.LISTEN_JOBS)
                    cur = await conn.execute(_sql.LISTEN_FOR_HANDOFFS)
                    wake_key, channel = await cur.fetchone() or (None, None)
                    if wake_key is None or channel is None:
                        raise RuntimeError("pgq.listen_for_handoffs returned no row")
                    self._handoff = (int(wake_key), str(channel))
                    if backoff.failures:
                        log.info("worker %s: listening again", self.worker_id)
                        backoff.failures = 0
                    self._wake.set()  # notifications may have been missed while away
                    async for notify in conn.notifies():
                        if notify.channel == channel:
                            self._handed_over(notify.payload)
                        elif notify.payload in self._queue_set:
                            self._wake.set()
            except psycopg.OperationalError as exc:
                # What was handed over on that connection and not read is lost with it.
                self._handoff = None
                self._handoffs_done.set()
                if self._waiting:
                    self._handoffs_lost = True
                    self._wake.set()
                await self._retrier.wait(exc, backoff, "listening")

    def _handed_over(self, payload: str) -> None:
        """A job leased to this worker at an enqueue's commit; an empty payload is the
        notification ``pgq.stop_waiting`` sends after the last one."""
        if not payload:
            self._handoffs_done.set()
            return
        try:
            job = _calls.handed_job(payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("worker %s: a hand-over notification does not decode (%r); its job "
                      "is retried when its lease expires: %.200s", self.worker_id, exc,
                      payload)  # fmt: skip
            return
        if job.id not in self._held:
            self._accept([job], handed=True)

    # -- signals ---------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        loop = self._loop
        if loop is None or threading.current_thread() is not threading.main_thread():
            return lambda: None
        sigs = (signal.SIGTERM, signal.SIGINT)
        for sig in sigs:
            loop.add_signal_handler(sig, self._on_signal, sig)

        def restore() -> None:
            for sig in sigs:
                loop.remove_signal_handler(sig)

        return restore

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info(
                "worker %s: %s received: finishing running jobs (up to %ss); send it again "
                "to stop at once", self.worker_id, sig.name, f"{self._shutdown_timeout:g}",
            )  # fmt: skip
            self._request_stop(now=False)
        else:
            log.warning("worker %s: %s received again: stopping at once; unfinished jobs are "
                        "retried when their leases expire", self.worker_id, sig.name)  # fmt: skip
            self._request_stop(now=True)


class _Outcomes:
    """Finished attempts awaiting their record. Successes go in batches: while one
    ``complete_many`` is on the wire, the next batch gathers, so a busy worker records
    many jobs per round trip and an idle one records each at once. Failures go one by one
    with ``pgq.fail``. What a lost connection kept from the engine is sent again."""

    def __init__(self, worker: Worker, db: AsyncQueue) -> None:
        self._worker = worker
        self._db = db
        self._successes: list[tuple[Attempt, object]] = []
        self._failures: deque[tuple[Attempt, str, bool]] = deque()
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def succeed(self, attempt: Attempt, result: object) -> None:
        if attempt.lost:
            return
        attempt.stage = Stage.RECORDING
        self._successes.append((attempt, result))
        self._pending.set()

    def fail(self, attempt: Attempt, error: str, *, retry: bool) -> None:
        if attempt.lost:
            return
        attempt.stage = Stage.RECORDING
        # PostgreSQL text cannot hold NUL characters.
        self._failures.append((attempt, error.replace("\x00", "\\x00"), retry))
        self._pending.set()

    async def run(self) -> None:
        worker = self._worker
        backoff = Backoff()
        while True:
            if not self._successes and not self._failures:
                self._idle.set()
                self._pending.clear()
                await self._pending.wait()
                self._idle.clear()
            try:
                await self._send_failures()
                await self._send_successes()
            except psycopg.OperationalError as exc:
                await worker._retrier.wait(exc, backoff, "recording outcomes")
                if worker._halt.is_set():
                    return
                continue
            if backoff.failures:
                log.info("worker %s: recording outcomes again", worker.worker_id)
                backoff.failures = 0

    async def recorded(self) -> None:
        """Wait until every outcome waiting now is recorded (or the worker halts)."""
        while not self._idle.is_set() and not self._worker._halt.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 0.5)

    async def finish(self, deadline: float) -> None:
        """Stopping: wait until every outcome is recorded, until ``deadline`` (at least a
        second from now) or a stop at once."""
        deadline = max(deadline, time.monotonic() + 1.0)
        while not self._idle.is_set() or self._successes or self._failures:
            if self._worker._halt.is_set():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("worker %s: outcomes not recorded within the shutdown timeout; "
                            "those jobs are retried when their leases expire",
                            self._worker.worker_id)  # fmt: skip
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), min(remaining, 0.1))

    async def _send_failures(self) -> None:
        worker = self._worker
        while self._failures:
            attempt, error, retry = self._failures[0]
            if attempt.lost:
                self._failures.popleft()
                continue
            outcome: Outcome = "timed_out" if attempt.timed_out else "failed"
            try:
                job = attempt.job
                state = await self._db.fail(job.id, job.lease_token, error, retry=retry)
            except LeaseLost:
                outcome = "lease_lost"
                log.warning("job %s: lease lost", attempt.job_id, extra=attempt.extra())
            except PgqError as exc:
                log.error("job %s: the failure could not be recorded: %s", attempt.job_id,
                          exc, extra=attempt.extra())  # fmt: skip
            else:
                if state == "dead":
                    outcome = "timed_out" if attempt.timed_out else "dead"
                    log.warning("job %s (%s) is dead after attempt %s", attempt.job_id,
                                attempt.job.job_name, attempt.job.attempt,
                                extra=attempt.extra())  # fmt: skip
            self._failures.popleft()
            worker._ended(attempt, outcome)

    async def _send_successes(self) -> None:
        worker = self._worker
        while self._successes:
            # A job listed twice (claimed again by this worker after its first lease
            # expired) waits for the next call: complete_many refuses duplicates.
            batch: list[tuple[Attempt, object]] = []
            later: list[tuple[Attempt, object]] = []
            seen: set[int] = set()
            for entry in self._successes:
                attempt = entry[0]
                if attempt.lost:
                    continue
                if attempt.job_id in seen or len(batch) >= _FLUSH_MAX:
                    later.append(entry)
                else:
                    seen.add(attempt.job_id)
                    batch.append(entry)
            self._successes = later
            if not batch:
                continue
            results = [result for _, result in batch]
            try:
                outcomes = await self._db.complete_many(
                    [a.job_id for a, _ in batch], [a.job.lease_token for a, _ in batch],
                    results=results if any(r is not None for r in results) else None,
                )  # fmt: skip
            except BaseException:
                self._successes[:0] = batch
                raise
            for (attempt, _), outcome in zip(batch, outcomes, strict=True):
                worker._ended(attempt, outcome.outcome)
                if outcome.outcome == "failed":
                    log.warning("job %s (%s) attempt %s: its result is over the 1 MiB limit, "
                                "so the engine failed the attempt", attempt.job_id,
                                attempt.job.job_name, attempt.job.attempt,
                                extra=attempt.extra())  # fmt: skip
                elif outcome.outcome == "lease_lost":
                    log.warning("job %s: lease lost", attempt.job_id, extra=attempt.extra())


class _HandlerThreads:
    """The thread pool of plain handlers. Daemon threads, so a handler stuck past the
    shutdown cannot keep the process alive; results come back to the loop in bunches:
    one wake-up carries every result that finished meanwhile, each to the callback it
    was submitted with."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop,
                 died: Callable[[BaseException], None]) -> None:  # fmt: skip
        self._loop = loop
        self._died = died
        """Called when taking a result in fails: a bug, which stops the worker."""
        self._inbox: SimpleQueue[tuple[Callable[[], object], _Returned] | None]
        self._inbox = SimpleQueue()
        self._lock = threading.Lock()
        self._finished: list[tuple[_Returned, bool, object]] = []
        """Results on their way to the loop; guarded by the lock, the only shared state."""
        self._threads = [
            threading.Thread(target=self._main, name=f"pgq-handler-{n}", daemon=True)
            for n in range(1, count + 1)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], object], returned: _Returned) -> None:
        """Run fn on a thread; ``returned(ok, value)`` is called on the loop with its
        return value (ok) or the exception it raised."""
        self._inbox.put((fn, returned))

    def close(self) -> None:
        for _ in self._threads:
            self._inbox.put(None)

    def _main(self) -> None:
        while (item := self._inbox.get()) is not None:
            fn, returned = item
            try:
                outcome: tuple[_Returned, bool, object] = (returned, True, fn())
            except BaseException as exc:
                outcome = (returned, False, exc)
            with self._lock:
                self._finished.append(outcome)
                first = len(self._finished) == 1
            if first:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:
                    return  # the loop is closed: the worker has stopped

    def _deliver(self) -> None:
        with self._lock:
            finished, self._finished = self._finished, []
        for returned, ok, value in finished:
            try:
                returned(ok, value)
            except BaseException as exc:
                self._died(exc)
