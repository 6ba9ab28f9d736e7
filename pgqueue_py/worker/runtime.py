"""The worker: claims jobs in batches and runs their handlers on a pool of threads.

Threads, each named:

- the claim loop (the thread that calls :meth:`Worker.run`) claims as many jobs as there
  are free handler slots, in one ``pgq.claim`` call, and hands them to the handlers; after
  a full batch it claims again at once, else it waits for a notification or the poll;
- ``pgq-handler-N`` (``concurrency`` of them) run handlers, fed by one queue;
- ``pgq-flusher`` records outcomes: successes in batches with ``pgq.complete_many``
  (a finished job waits at most ``_FLUSH_DELAY`` for company), failures with ``pgq.fail``;
  what could not be sent for lack of a connection is kept and sent again;
- ``pgq-heartbeat`` extends every running lease in one ``pgq.heartbeat_many`` call, every
  third of the lease; a job whose lease was lost is dropped: nothing more is recorded for it;
- ``pgq-listener`` (unless ``listen=False``) owns a dedicated ``LISTEN pgq_jobs``
  connection and wakes the claim loop; polling with jitter is the fallback;
- ``pgq-watchdog`` fails the attempt of a handler that outlives its job type's ``timeout``.

A thread that dies unexpectedly stops the worker, and :meth:`Worker.run` raises
:class:`WorkerThreadDied`. The database going away is not a death: every thread logs,
backs off (exponentially, capped, with jitter) and goes on when it is back.
"""

from __future__ import annotations

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
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from queue import SimpleQueue
from types import FrameType
from typing import Any, TypeVar
from uuid import UUID

import psycopg

from pgqueue_py.client import _sql
from pgqueue_py.client.errors import LeaseLost, MarkerNotBegun, OutcomeUnknown, PgqError
from pgqueue_py.client.jobs import JobType, P
from pgqueue_py.client.queue import ClaimedJob, Queue

log = logging.getLogger(__name__)

T = TypeVar("T")

_FLUSH_DELAY = 0.010
"""Longest time a finished job waits for others before its completion is sent."""
_FLUSH_MAX = 1000
"""Most jobs recorded by one ``pgq.complete_many`` call."""
_CLAIM_LINGER = 0.005
"""After a full batch, how long the claim loop waits for half its slots to free up."""
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 5.0
_DEFAULT_LEASE = 30.0
"""Seconds; the engine's default lease, until the first claim shows the real one."""


Handler = Callable[["JobContext", P], object]
"""What a worker calls for a job: ``handler(ctx, payload)``; the return value is ignored."""


class WorkerThreadDied(RuntimeError):
    """One of the worker's threads died unexpectedly; the worker stopped."""


class _Backoff:
    """Exponential backoff, capped, with equal jitter: delays in [d/2, d]."""

    def __init__(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** min(self.failures, 20))
        self.failures += 1
        return delay / 2 + random.uniform(0, delay / 2)

    def reset(self) -> None:
        self.failures = 0


class JobContext:
    """What a handler knows about the job it runs, and ``run_once`` for side effects.

    ``attempt`` is 1 on the first run; ``retry_count`` is ``attempt - 1``.
    """

    __slots__ = (
        "_began",
        "_deadline",
        "_finished",
        "_lost",
        "_payload",
        "_sending",
        "_timed_out",
        "_worker",
        "attempt",
        "job_id",
        "job_name",
        "lease_expires_at",
        "lease_token",
        "queue",
        "retry_count",
    )

    def __init__(self, worker: Worker, job: ClaimedJob) -> None:
        self.job_id: int = job.id
        self.attempt: int = job.attempt
        self.retry_count: int = job.attempt - 1
        self.job_name: str = job.job_name
        self.queue: str = job.queue
        self.lease_token: UUID = job.lease_token
        self.lease_expires_at: datetime = job.lease_expires_at
        self._worker = worker
        self._payload: dict[str, Any] = job.payload
        self._lost = False
        """The lease was lost: nothing more is recorded for this job."""
        self._timed_out = False
        """The handler outlived its timeout; its attempt was failed, its result is ignored."""
        self._finished = False
        """The handler returned (under the worker's lock, for jobs with a timeout)."""
        self._sending = False
        """The flusher is sending this job's outcome; a heartbeat's verdict waits for it."""
        self._deadline = 0.0
        self._began: set[str] | None = None

    def __repr__(self) -> str:
        return f"<JobContext job {self.job_id} {self.job_name!r} attempt {self.attempt}>"

    def run_once(self, key: str, fn: Callable[[], T]) -> T:
        """Run the side effect ``fn`` at most once for this job and ``key``, across
        retries, crashes and workers; return its result.

        The result must be JSON-serialisable: it is stored, and a later attempt gets it
        back without ``fn`` being called. Raises :class:`OutcomeUnknown` when an earlier
        attempt began the effect and never recorded it (it may or may not have
        happened; an operator settles it with ``Queue.once_resolve``), and
        :class:`LeaseLost` when this attempt no longer holds the job. If ``fn`` raises,
        the marker is withdrawn (``pgq.once_abort``) and the error propagates.
        """
        worker = self._worker
        queue = worker._queue
        self._check_held()
        job_id, token = self.job_id, self.lease_token
        began_here = self._began is not None and key in self._began
        status = None
        begin_lost = False
        backoff = _Backoff()
        while status is None:
            try:
                status = queue.once_begin(job_id, token, key)
            except LeaseLost:
                worker._lease_lost(self)
                raise
            except psycopg.OperationalError as exc:
                if worker._halt.is_set():
                    raise
                # The begin may have been recorded before the connection broke.
                begin_lost = True
                worker._wait_to_retry(exc, backoff, f"job {job_id}: once_begin {key!r}")
                self._check_held()
                continue
            if status.status == "unknown" and begin_lost and not began_here:
                # Perhaps our own begin, whose answer was lost: fn has not run, so
                # withdraw it and ask again. Another attempt's marker is refused.
                try:
                    worker._retrying(lambda: queue.once_abort(job_id, token, key), key, self)
                except MarkerNotBegun:
                    pass
                else:
                    status = None
                    begin_lost = False
        if status.status == "done":
            return status.result  # type: ignore[no-any-return]  # the stored JSON result
        if status.status == "unknown":
            raise OutcomeUnknown(
                f"job {job_id}: run-once effect {key!r} was begun by an earlier attempt and "
                "its outcome was never recorded; it is not repeated. Check whether it "
                "happened and settle it with once_resolve"
            )
        if self._began is None:
            self._began = set()
        self._began.add(key)
        try:
            result = fn()
        except BaseException:
            try:
                worker._retrying(lambda: queue.once_abort(job_id, token, key), key, self)
            except Exception as abort_exc:
                log.warning("job %s: could not withdraw run-once marker %r: %s",
                            job_id, key, abort_exc, extra=self._extra())  # fmt: skip
            raise
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            # The effect happened: record it, so that it is never repeated.
            worker._retrying(lambda: queue.once_finish(job_id, token, key, None), key, self)
            raise TypeError(
                f"job {job_id}: the result of run-once effect {key!r} is not "
                f"JSON-serialisable ({exc}); the effect is recorded as done with a null result"
            ) from exc
        worker._retrying(lambda: queue.once_finish(job_id, token, key, result), key, self)
        return result

    def _check_held(self) -> None:
        if self._lost:
            raise LeaseLost(f"job {self.job_id}: lease lost")
        if self._timed_out:
            raise LeaseLost(f"job {self.job_id}: the attempt timed out and was failed")

    def _extra(self) -> dict[str, object]:
        return {"job_id": self.job_id, "queue": self.queue}


class Worker:
    """Runs jobs of the given types from PostgreSQL until stopped.

    ``handlers`` maps each job type to its handler ``handler(ctx, payload)``.
    ``queues`` defaults to the queues of those job types. ``lease`` None takes each
    queue's configured lease; heartbeats then come every third of the lease the database
    granted, as read against this machine's clock. Each claim takes at most as many jobs
    as there are free handler threads, so ``concurrency`` also bounds the batch size: a
    high-volume queue of short jobs drains fastest with a high ``concurrency``. The
    queue's pool should have room for ``concurrency`` handlers calling ``run_once`` plus
    three connections of the worker's own.
    """

    def __init__(
        self,
        queue: Queue,
        handlers: Mapping[JobType[Any], Handler[Any]],
        *,
        concurrency: int = 8,
        queues: Sequence[str] | None = None,
        lease: timedelta | None = None,
        poll_interval: timedelta = timedelta(seconds=1),
        shutdown_timeout: timedelta = timedelta(seconds=30),
        worker_id: str | None = None,
        listen: bool = True,
    ) -> None:
        if not handlers:
            raise ValueError("a worker needs at least one job type to handle")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if poll_interval <= timedelta(0):
            raise ValueError("poll_interval must be positive")
        if lease is not None and lease < timedelta(seconds=1):
            raise ValueError("lease must be at least one second")
        self._queue = queue
        self._handlers: dict[str, tuple[JobType[Any], Handler[Any]]] = {}
        for job_type, handler in handlers.items():
            if job_type.name in self._handlers:
                raise ValueError(f"two handlers for job name {job_type.name!r}")
            self._handlers[job_type.name] = (job_type, handler)
        self._queues = list(queues) if queues is not None else sorted(
            {job_type.queue for job_type in handlers}
        )  # fmt: skip
        if not self._queues:
            raise ValueError("a worker needs at least one queue")
        self._queue_set = frozenset(self._queues)
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = lease
        self._poll = poll_interval.total_seconds()
        self._shutdown_timeout = shutdown_timeout.total_seconds()
        self._listen = listen
        self._min_batch = max(1, concurrency // 2)
        # Jobs whose handler returned hold their lease until the flusher records them;
        # past this many held jobs the worker claims nothing more, so that a slow
        # database or a flood of failures cannot pile up leased jobs.
        self._max_held = 2 * concurrency
        lease_seconds = lease.total_seconds() if lease is not None else _DEFAULT_LEASE
        self._heartbeat_every = lease_seconds / 3

        self._lock = threading.Lock()
        self._running: dict[int, JobContext] = {}
        """Claimed jobs whose outcome is not recorded yet, and whose lease was not lost."""
        self._in_flight = 0
        """Busy handler slots: claimed jobs whose handler has not returned."""
        self._abandoned = 0
        """Handlers still running past their timeout: busy slots nobody waits for."""
        self._deadlines: dict[int, JobContext] = {}
        self._inbox: SimpleQueue[JobContext | None] = SimpleQueue()
        self._done: deque[JobContext] = deque()
        self._fails: deque[tuple[JobContext, str, bool]] = deque()

        self._stopping = threading.Event()
        """No more claims; running handlers may finish."""
        self._halt = threading.Event()
        """Stop at once: stop waiting for handlers and for the database."""
        self._closing = threading.Event()
        """The handlers are done (or abandoned): the flusher sends what is left and exits."""
        self._exit = threading.Event()
        """The heartbeat, listener and watchdog threads exit."""
        self._wake = threading.Event()
        self._slot_freed = threading.Event()
        self._idle = threading.Event()
        self._flush_wake = threading.Event()
        self._flush_full = threading.Event()
        self._watch_wake = threading.Event()
        self._heartbeat_wake = threading.Event()

        self._started = False
        self._shutdown_deadline = 0.0
        self._fatal: tuple[str, BaseException] | None = None
        self._signals = 0

    # -- public ----------------------------------------------------------------------------

    @property
    def queues(self) -> list[str]:
        """The queues this worker claims from."""
        return list(self._queues)

    def run(self) -> None:
        """Run until stopped (``stop()``, SIGTERM or SIGINT); return when done.

        In the main thread, SIGTERM and SIGINT are handled while running: the first
        stops claiming and lets running handlers finish within ``shutdown_timeout``; the
        second stops at once, leaving unfinished jobs to be retried when their leases
        expire. Raises :class:`WorkerThreadDied` if one of the threads died.
        """
        if self._started:
            raise RuntimeError("a Worker runs once; make a new one")
        self._started = True
        threads = self._start_threads()
        restore = self._install_signal_handlers()
        log.info("worker %s started: queues %s, concurrency %s, job types %s",
                 self.worker_id, ",".join(self._queues), self.concurrency,
                 ",".join(sorted(self._handlers)))  # fmt: skip
        try:
            try:
                self._claim_loop()
            except BaseException as exc:
                self._die("claim loop", exc)
            self._drain()
        finally:
            self._shut_down(threads)
            restore()
        if self._fatal is not None:
            name, cause = self._fatal
            raise WorkerThreadDied(f"worker {self.worker_id}: {name} died: {cause!r}") from cause
        log.info("worker %s stopped", self.worker_id)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; running handlers finish within ``shutdown_timeout`` and their
        outcomes are recorded. ``now=True`` stops waiting for them. Safe to call more
        than once, from any thread."""
        if now:
            self._halt.set()
        self._stopping.set()
        self._wake.set()
        self._slot_freed.set()
        self._idle.set()
        self._flush_wake.set()

    # -- threads ---------------------------------------------------------------------------

    def _start_threads(self) -> dict[str, threading.Thread]:
        threads: dict[str, threading.Thread] = {}

        def start(name: str, target: Callable[[], None]) -> None:
            thread = threading.Thread(
                target=self._thread_main, args=(name, target), name=name, daemon=True
            )
            threads[name] = thread
            thread.start()

        for n in range(1, self.concurrency + 1):
            start(f"pgq-handler-{n}", self._handler_loop)
        start("pgq-flusher", self._flusher_loop)
        start("pgq-heartbeat", self._heartbeat_loop)
        start("pgq-watchdog", self._watchdog_loop)
        if self._listen:
            start("pgq-listener", self._listener_loop)
        return threads

    def _thread_main(self, name: str, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            self._die(name, exc)

    def _die(self, name: str, exc: BaseException) -> None:
        log.critical("worker %s: thread %s died, stopping: %r", self.worker_id, name, exc,
                     exc_info=exc)  # fmt: skip
        if self._fatal is None:
            self._fatal = (name, exc)
        self.stop(now=True)

    def _drain(self) -> None:
        """Let running handlers finish, until ``shutdown_timeout`` or a stop at once."""
        self._shutdown_deadline = time.monotonic() + self._shutdown_timeout
        if self._working() and not self._halt.is_set():
            log.info("worker %s: stopping; waiting for %s running jobs", self.worker_id,
                     self._working())  # fmt: skip
        while not self._halt.is_set():
            self._idle.clear()
            if self._working() == 0:
                return
            remaining = self._shutdown_deadline - time.monotonic()
            if remaining <= 0:
                log.warning("worker %s: %s jobs still running after the shutdown timeout; "
                            "they are retried when their leases expire", self.worker_id,
                            self._working())  # fmt: skip
                self._halt.set()
                return
            self._idle.wait(min(remaining, 0.5))

    def _shut_down(self, threads: dict[str, threading.Thread]) -> None:
        self._closing.set()
        self._flush_wake.set()
        flusher = threads["pgq-flusher"]
        deadline = max(self._shutdown_deadline, time.monotonic() + 1.0)
        while flusher.is_alive() and not self._halt.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "worker %s: outcomes not recorded within the shutdown timeout; "
                    "those jobs are retried when their leases expire", self.worker_id,
                )  # fmt: skip
                self._halt.set()
                break
            flusher.join(min(remaining, 0.05))
        # Stopped at once: the flusher makes one last attempt, briefly.
        self._flush_wake.set()
        flusher.join(timeout=2.0)
        self._exit.set()
        for event in (self._heartbeat_wake, self._watch_wake, self._wake):
            event.set()
        for _ in range(self.concurrency):
            self._inbox.put(None)
        for name, thread in threads.items():
            if not name.startswith("pgq-handler"):
                thread.join(timeout=2.0)
        with self._lock:
            left = len(self._running)
        if left:
            log.warning("worker %s: left %s jobs unrecorded; they are retried when their "
                        "leases expire", self.worker_id, left)  # fmt: skip

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # A signal handler may interrupt this thread inside a lock it holds: hand the
            # work to a new thread rather than touching events here.
            self._signals += 1
            threading.Thread(target=self._on_signal, args=(signum, self._signals),
                             name="pgq-signal", daemon=True).start()  # fmt: skip

        for sig in previous:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _on_signal(self, signum: int, count: int) -> None:
        name = signal.Signals(signum).name
        if count == 1:
            log.info(
                "worker %s: %s received: finishing running jobs (up to %ss); send it again "
                "to stop at once", self.worker_id, name, f"{self._shutdown_timeout:g}",
            )  # fmt: skip
            self.stop()
        else:
            log.warning("worker %s: %s received again: stopping at once; unfinished jobs "
                        "are retried when their leases expire", self.worker_id, name)  # fmt: skip
            self.stop(now=True)

    # -- claiming --------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        backoff = _Backoff()
        claim_now = True
        answer_lost = False  # a claim failed with its connection: it may have leased jobs
        stopping = self._stopping
        while not stopping.is_set():
            if not claim_now:
                self._wake.wait(self._poll * random.uniform(0.8, 1.2))
                claim_now = True
                continue
            free = self._wait_for_slots()
            if stopping.is_set():
                break
            self._wake.clear()
            try:
                if answer_lost:
                    self._release_lost_claims()
                    answer_lost = False
                jobs = self._queue.claim(
                    self.worker_id, queues=self._queues, batch=free, lease=self._lease
                )
            except psycopg.OperationalError as exc:
                answer_lost = True
                self._wait_to_retry(exc, backoff, "claim", stop=stopping)
                continue
            if backoff.failures:
                log.info("worker %s: claiming again", self.worker_id)
                backoff.reset()
            if jobs:
                self._dispatch(jobs)
            claim_now = len(jobs) == free

    def _release_lost_claims(self) -> None:
        """Give back the jobs a lost claim answer may have leased to this worker, so they
        run at once instead of after their leases expire, their attempt uncounted."""
        with self._lock:
            held = list(self._running)
        released = self._queue.release_lost_claims(self.worker_id, held)
        if released:
            log.info("worker %s: released %s jobs a lost claim had leased to it",
                     self.worker_id, released)  # fmt: skip

    def _wait_for_slots(self) -> int:
        """Free handler slots, at least one: half of them, or what is free after a
        short linger, so that a backlog is claimed in batches rather than job by job."""
        deadline: float | None = None
        while True:
            self._slot_freed.clear()
            with self._lock:
                idle_slots = self.concurrency - self._in_flight
                free = min(idle_slots, self._max_held - len(self._running))
            if free < idle_slots:
                # Finished jobs awaiting their record hold the claims back: record now.
                self._flush_full.set()
            if free >= self._min_batch or self._stopping.is_set():
                return free
            if free > 0:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + _CLAIM_LINGER
                if now >= deadline:
                    return free
                self._slot_freed.wait(deadline - now)
            else:
                self._slot_freed.wait(1.0)

    def _dispatch(self, jobs: list[ClaimedJob]) -> None:
        contexts = [JobContext(self, job) for job in jobs]
        # Heartbeat every third of the shortest lease granted so far (the queues'
        # leases when none was asked for): the database says how long, no clock is read.
        period = min(job.lease_duration for job in jobs).total_seconds() / 3
        if period < self._heartbeat_every * 0.9:
            self._heartbeat_every = period
            self._heartbeat_wake.set()
        with self._lock:
            running = self._running
            for ctx in contexts:
                running[ctx.job_id] = ctx
            self._in_flight += len(contexts)
            self._idle.clear()
        put = self._inbox.put
        for ctx in contexts:
            put(ctx)

    # -- handlers --------------------------------------------------------------------------

    def _working(self) -> int:
        """Handlers still running whose outcome is wanted (not past their timeout)."""
        with self._lock:
            return self._in_flight - self._abandoned

    def _handler_loop(self) -> None:
        get = self._inbox.get
        lock = self._lock
        full = self.concurrency
        threshold = self.concurrency - self._min_batch
        while True:
            ctx = get()
            if ctx is None:
                return
            self._run_job(ctx)
            with lock:
                self._in_flight -= 1
                busy = self._in_flight
                if ctx._timed_out:
                    self._abandoned -= 1
                working = busy - self._abandoned
            if busy == threshold or busy == full - 1:
                self._slot_freed.set()
            if working == 0:
                self._idle.set()

    def _run_job(self, ctx: JobContext) -> None:
        entry = self._handlers.get(ctx.job_name)
        if entry is None:
            known = ", ".join(sorted(self._handlers))
            self._record_fail(ctx, f"unknown job name {ctx.job_name!r}: worker "
                                   f"{self.worker_id} handles {known}", retry=False)  # fmt: skip
            return
        job_type, handler = entry
        try:
            payload = job_type.decode(ctx._payload)
        except Exception as exc:
            expected = job_type.payload_type.__name__
            self._record_fail(
                ctx, f"the payload does not decode as {expected}: {exc!r}", retry=False
            )
            return
        timeout = job_type.timeout
        if timeout is not None:
            self._start_deadline(ctx, timeout.total_seconds())
        try:
            handler(ctx, payload)
        except BaseException as exc:
            if timeout is not None and self._end_deadline(ctx):
                return
            if ctx._lost:
                return
            summary = f"{type(exc).__name__}: {exc}"
            log.warning("job %s (%s) attempt %s failed: %s", ctx.job_id, ctx.job_name,
                        ctx.attempt, summary, extra=ctx._extra())  # fmt: skip
            tb = "".join(traceback.format_exception(exc))
            # Retrying cannot settle an unknown run-once outcome: the job goes to the
            # dead letter at once, for an operator to check and resolve.
            retry = not isinstance(exc, OutcomeUnknown)
            self._record_fail(ctx, f"{summary}\n\n{tb}", retry=retry)
            return
        if timeout is not None and self._end_deadline(ctx):
            return
        if ctx._lost:
            return
        done = self._done
        done.append(ctx)
        size = len(done)
        if size == 1:
            self._flush_wake.set()
        elif size == _FLUSH_MAX:
            self._flush_full.set()

    def _record_fail(self, ctx: JobContext, error: str, *, retry: bool) -> None:
        # PostgreSQL text cannot hold NUL characters.
        self._fails.append((ctx, error.replace("\x00", "\\x00"), retry))
        self._flush_wake.set()
        self._flush_full.set()

    def _start_deadline(self, ctx: JobContext, seconds: float) -> None:
        with self._lock:
            ctx._deadline = time.monotonic() + seconds
            self._deadlines[ctx.job_id] = ctx
        self._watch_wake.set()

    def _end_deadline(self, ctx: JobContext) -> bool:
        """Mark a handler with a timeout finished; True if it had timed out already."""
        with self._lock:
            self._deadlines.pop(ctx.job_id, None)
            ctx._finished = True
            return ctx._timed_out

    def _watchdog_loop(self) -> None:
        while not self._exit.is_set():
            now = time.monotonic()
            expired: list[JobContext] = []
            nearest = now + 1.0
            with self._lock:
                for ctx in list(self._deadlines.values()):
                    if ctx._deadline <= now:
                        if not ctx._finished:
                            ctx._timed_out = True
                            self._abandoned += 1
                            expired.append(ctx)
                        del self._deadlines[ctx.job_id]
                    else:
                        nearest = min(nearest, ctx._deadline)
            if expired and self._working() == 0:
                self._idle.set()
            for ctx in expired:
                job_type, _ = self._handlers[ctx.job_name]
                seconds = job_type.timeout.total_seconds() if job_type.timeout else 0.0
                log.warning("job %s (%s) attempt %s timed out after %ss", ctx.job_id,
                            ctx.job_name, ctx.attempt, f"{seconds:g}",
                            extra=ctx._extra())  # fmt: skip
                if not ctx._lost:
                    self._record_fail(ctx, f"timed out after {seconds:g}s", retry=True)
            self._watch_wake.wait(max(nearest - time.monotonic(), 0.001))
            self._watch_wake.clear()

    # -- recording outcomes ----------------------------------------------------------------

    def _flusher_loop(self) -> None:
        pending: list[JobContext] = []
        failures: list[tuple[JobContext, str, bool]] = []
        backoff = _Backoff()
        done, fails = self._done, self._fails
        while True:
            if not done and not fails and not pending and not failures:
                if self._closing.is_set() and (self._working() == 0 or self._halt.is_set()):
                    return
                self._flush_wake.wait(1.0)
                self._flush_wake.clear()
                continue
            if (len(done) < _FLUSH_MAX and not fails and not failures
                    and not self._stopping.is_set()):  # fmt: skip
                self._flush_full.wait(_FLUSH_DELAY)
            self._flush_full.clear()
            while fails:
                failures.append(fails.popleft())
            while done and len(pending) < _FLUSH_MAX:
                pending.append(done.popleft())
            try:
                if failures:
                    self._send_failures(failures)
                if pending:
                    self._send_completions(pending)
            except psycopg.OperationalError as exc:
                if self._halt.is_set():
                    log.warning("worker %s: %s outcomes not recorded (%s); those jobs are "
                                "retried when their leases expire", self.worker_id,
                                len(pending) + len(failures), exc)  # fmt: skip
                    return
                self._wait_to_retry(exc, backoff, "recording outcomes", stop=self._halt)
                continue
            if backoff.failures:
                log.info("worker %s: recording outcomes again", self.worker_id)
                backoff.reset()
            if self._halt.is_set() and not done and not fails:
                return

    def _send_failures(self, failures: list[tuple[JobContext, str, bool]]) -> None:
        """Send each failure; those sent leave the list, the rest stay for a resend."""
        while failures:
            ctx, error, retry = failures[0]
            if not ctx._lost:
                ctx._sending = True
                try:
                    state = self._queue.fail(ctx.job_id, ctx.lease_token, error, retry=retry)
                except LeaseLost:
                    self._log_lease_lost(ctx)
                except PgqError as exc:
                    log.error("job %s: the failure could not be recorded: %s", ctx.job_id,
                              exc, extra=ctx._extra())  # fmt: skip
                except BaseException:
                    ctx._sending = False
                    raise
                else:
                    if state == "dead":
                        log.warning("job %s (%s) is dead after attempt %s", ctx.job_id,
                                    ctx.job_name, ctx.attempt, extra=ctx._extra())  # fmt: skip
            failures.pop(0)
            self._forget(ctx)
            self._slot_freed.set()

    def _send_completions(self, pending: list[JobContext]) -> None:
        """Send the completions of ``pending`` in one call; a job listed twice (claimed
        again by this worker after its first lease expired) waits for the next call."""
        batch: list[JobContext] = []
        later: list[JobContext] = []
        seen: set[int] = set()
        for ctx in pending:
            if ctx._lost:
                continue
            if ctx.job_id in seen:
                later.append(ctx)
            else:
                seen.add(ctx.job_id)
                batch.append(ctx)
        if batch:
            for ctx in batch:
                ctx._sending = True
            try:
                outcomes = self._queue.complete_many(
                    [ctx.job_id for ctx in batch], [ctx.lease_token for ctx in batch]
                )
            except BaseException:
                for ctx in batch:
                    ctx._sending = False
                raise
            for ctx, outcome in zip(batch, outcomes, strict=True):
                if outcome.outcome != "succeeded":
                    self._log_lease_lost(ctx)
        for ctx in batch:
            self._forget(ctx)
        pending[:] = later
        self._slot_freed.set()

    # -- heartbeats and lost leases --------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        backoff = _Backoff()
        wait = self._heartbeat_every
        while not self._exit.is_set():
            self._heartbeat_wake.wait(wait)
            if self._heartbeat_wake.is_set():
                # The lease turned out shorter than assumed: start over with the new period.
                self._heartbeat_wake.clear()
                wait = self._heartbeat_every
                continue
            wait = self._heartbeat_every
            with self._lock:
                jobs = [ctx for ctx in self._running.values() if not ctx._lost]
            if not jobs:
                continue
            try:
                outcomes = self._queue.heartbeat_many(
                    [ctx.job_id for ctx in jobs], [ctx.lease_token for ctx in jobs],
                    lease=self._lease,
                )  # fmt: skip
            except psycopg.OperationalError as exc:
                delay = min(backoff.next_delay(), self._heartbeat_every)
                log.warning("worker %s: heartbeat failed (%s); retrying in %.2fs",
                            self.worker_id, _one_line(exc), delay)  # fmt: skip
                wait = delay
                continue
            if backoff.failures:
                log.info("worker %s: heartbeats go through again", self.worker_id)
                backoff.reset()
            for ctx, outcome in zip(jobs, outcomes, strict=True):
                if outcome.outcome == "lease_lost" and not ctx._sending:
                    with self._lock:
                        if ctx.job_id not in self._running:
                            continue  # recorded meanwhile
                    self._lease_lost(ctx)

    def _forget(self, ctx: JobContext) -> None:
        """Stop tracking ``ctx``: its outcome is recorded or its lease is lost. The job
        may have been claimed again by this worker since; that attempt stays tracked."""
        with self._lock:
            if self._running.get(ctx.job_id) is ctx:
                del self._running[ctx.job_id]

    def _lease_lost(self, ctx: JobContext) -> None:
        """The job's lease is gone: record nothing more for it."""
        if ctx._lost:
            return
        ctx._lost = True
        self._forget(ctx)
        self._log_lease_lost(ctx)

    def _log_lease_lost(self, ctx: JobContext) -> None:
        ctx._lost = True
        log.warning("job %s: lease lost", ctx.job_id, extra=ctx._extra())

    # -- listening -------------------------------------------------------------------------

    def _listener_loop(self) -> None:
        backoff = _Backoff()
        while not self._exit.is_set():
            try:
                with psycopg.connect(self._queue.dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(_sql.LISTEN_JOBS)
                    if backoff.failures:
                        log.info("worker %s: listening again", self.worker_id)
                        backoff.reset()
                    # Notifications may have been missed while away.
                    self._wake.set()
                    while not self._exit.is_set():
                        for notify in conn.notifies(timeout=0.25):
                            if notify.payload in self._queue_set:
                                self._wake.set()
            except psycopg.OperationalError as exc:
                self._wait_to_retry(exc, backoff, "listening", stop=self._exit)

    # -- retrying ----------------------------------------------------------------------------

    def _wait_to_retry(
        self,
        exc: BaseException,
        backoff: _Backoff,
        what: str,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        """Log a lost connection and wait before the next attempt (or until ``stop``)."""
        delay = backoff.next_delay()
        level = logging.WARNING if backoff.failures <= 1 else logging.INFO
        log.log(level, "worker %s: %s: database unavailable (%s); retrying in %.2fs",
                self.worker_id, what, _one_line(exc), delay)  # fmt: skip
        (stop or self._halt).wait(delay)

    def _retrying(self, call: Callable[[], None], key: str, ctx: JobContext) -> None:
        """Make a run-once bookkeeping call, retrying while the database is away (these
        calls are idempotent, and recording an effect spares a later unknown outcome)."""
        backoff = _Backoff()
        while True:
            try:
                call()
                return
            except psycopg.OperationalError as exc:
                if self._halt.is_set():
                    raise
                self._wait_to_retry(exc, backoff, f"job {ctx.job_id}: run-once {key!r}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
