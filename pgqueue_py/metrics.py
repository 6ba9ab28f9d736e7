"""Prometheus metrics: what a worker did, and what the queues hold.

Three parts, each on a registry of its caller's (never the process-wide default, so that
several workers or tests in one process do not collide):

- :class:`WorkerMetrics`, a worker observer: jobs finished by outcome, handler duration,
  pickup delay (from the time a job was due to its claim, both the database's times) and
  the handlers running now.
- :class:`QueueStatsCollector`: the queue gauges, from one read of ``pgq.queue_stats``
  cached for at least a second, so that frequent scrapes cost the server one query a
  second at most. A failed read is logged and shown as ``pgqueue_queue_stats_up 0``; the
  other series of the registry are scraped as usual.
- :func:`serve`: ``/metrics`` over HTTP, on a thread of its own.

Needs ``prometheus_client``: ``pip install 'pgqueue[metrics]'``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pgqueue_py.client.rows import ClaimedJob, QueueStats

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from pgqueue_py.client.queue import Queue
    from pgqueue_py.worker import Outcome, Worker

__all__ = [
    "DURATION_BUCKETS",
    "PICKUP_DELAY_BUCKETS",
    "QUEUE_STATES",
    "MetricsServer",
    "QueueStatsCollector",
    "WorkerMetrics",
    "serve",
]

log = logging.getLogger(__name__)

DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
)  # fmt: skip
"""Handler duration buckets, in seconds: from a few milliseconds to an hour."""

PICKUP_DELAY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
)  # fmt: skip
"""Pickup delay buckets, in seconds: an idle worker claims within milliseconds, a backlog
can keep jobs waiting for minutes."""

QUEUE_STATES = ("available", "scheduled", "running", "succeeded", "dead", "cancelled")
"""The ``state`` label values of ``pgqueue_queue_jobs``, columns of ``pgq.queue_stats``:
``available`` is due now, ``scheduled`` waits for a later ``run_at``."""

MIN_CACHE = timedelta(seconds=1)


class WorkerMetrics:
    """A worker observer (``Worker(..., observer=metrics)``) keeping the worker-local
    series in ``registry``; :meth:`track_running` adds the running-jobs gauge once the
    worker exists."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self.finished = Counter(
            "pgqueue_jobs_finished",
            "Attempts this worker finished, by how they ended: succeeded, failed (a retry "
            "is scheduled), dead, lease_lost, timed_out, cancelled.",
            ["queue", "job_name", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "pgqueue_job_duration_seconds",
            "How long handlers ran, per attempt.",
            ["queue", "job_name"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.pickup_delay = Histogram(
            "pgqueue_job_pickup_delay_seconds",
            "From the time a job was due (run_at) to its claim, by the database's clock.",
            ["queue"],
            buckets=PICKUP_DELAY_BUCKETS,
            registry=registry,
        )
        self._running: Gauge | None = None

    def track_running(self, worker: Worker) -> None:
        """Expose ``pgqueue_worker_running_jobs``: ``worker``'s handlers running at
        scrape time."""
        if self._running is not None:
            raise RuntimeError("WorkerMetrics tracks one worker")
        self._running = Gauge(
            "pgqueue_worker_running_jobs",
            "Handlers this worker runs now.",
            registry=self._registry,
        )
        self._running.set_function(lambda: worker.running_jobs)

    def job_started(self, job: ClaimedJob) -> None:
        """Observe the pickup delay: the claim's time is when its lease began."""
        claimed_at = job.lease_expires_at - job.lease_duration
        delay = (claimed_at - job.run_at).total_seconds()
        self.pickup_delay.labels(job.queue).observe(max(delay, 0.0))

    def job_finished(self, job: ClaimedJob, outcome: Outcome, duration: float) -> None:
        """Count the outcome; time the handler if it ran."""
        self.finished.labels(job.queue, job.job_name, outcome).inc()
        if duration > 0:
            self.duration.labels(job.queue, job.job_name).observe(duration)


@dataclass(frozen=True)
class _Read:
    at: float
    """When (``clock()``) the read ended."""
    rows: list[QueueStats] | None
    """None when the read failed."""


class QueueStatsCollector(Collector):
    """The queue gauges, from ``queue.stats()`` (one query of ``pgq.queue_stats``),
    read at most once per ``cache_for`` (at least a second) however often it is scraped:

    - ``pgqueue_queue_jobs{queue,state}`` for each state of :data:`QUEUE_STATES`
    - ``pgqueue_queue_oldest_runnable_age_seconds{queue}``, 0 when nothing is due
    - ``pgqueue_queue_paused{queue}``, 1 when paused
    - ``pgqueue_queue_stats_up``, 0 when the last read failed (the failure is logged and
      cached like a result, so a database that is down is not asked again at each
      scrape)

    ``reads`` counts the reads. ``clock`` is a monotonic clock in seconds."""

    def __init__(
        self,
        queue: Queue,
        *,
        cache_for: timedelta = MIN_CACHE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_for < MIN_CACHE:
            raise ValueError(f"cache_for must be at least one second, not {cache_for}")
        self._queue = queue
        self._cache_for = cache_for.total_seconds()
        self._clock = clock
        self._lock = threading.Lock()
        self._last: _Read | None = None
        self.reads = 0

    def describe(self) -> Iterable[Any]:
        """The families, without reading the database (called once, at registration)."""
        yield from _stats_up(None)
        yield from _queue_families([])

    def collect(self) -> Iterable[Any]:
        rows = self._rows()
        yield from _stats_up(rows)
        if rows is not None:
            yield from _queue_families(rows)

    def _rows(self) -> list[QueueStats] | None:
        # One read at a time: concurrent scrapes wait for it and share its result.
        with self._lock:
            last = self._last
            if last is None or self._clock() - last.at >= self._cache_for:
                rows = self._read()
                last = self._last = _Read(self._clock(), rows)
            return last.rows

    def _read(self) -> list[QueueStats] | None:
        self.reads += 1
        try:
            return self._queue.stats()
        except Exception:
            log.warning("metrics: reading pgq.queue_stats failed", exc_info=True)
            return None


def _stats_up(rows: list[QueueStats] | None) -> Iterator[GaugeMetricFamily]:
    up = GaugeMetricFamily(
        "pgqueue_queue_stats_up", "1 if the last read of pgq.queue_stats succeeded."
    )
    up.add_metric([], 0 if rows is None else 1)
    yield up


def _queue_families(rows: list[QueueStats]) -> Iterator[GaugeMetricFamily]:
    jobs = GaugeMetricFamily(
        "pgqueue_queue_jobs",
        "Jobs per queue and state (available: due now; scheduled: due later; "
        "succeeded: until pruned).",
        labels=["queue", "state"],
    )
    oldest = GaugeMetricFamily(
        "pgqueue_queue_oldest_runnable_age_seconds",
        "How long the oldest job that is due has waited; 0 when none is due.",
        labels=["queue"],
    )
    paused = GaugeMetricFamily(
        "pgqueue_queue_paused", "1 if the queue is paused.", labels=["queue"]
    )
    for row in rows:
        for state in QUEUE_STATES:
            jobs.add_metric([row.queue, state], getattr(row, state))
        age = row.oldest_runnable_age
        oldest.add_metric([row.queue], age.total_seconds() if age is not None else 0.0)
        paused.add_metric([row.queue], 1 if row.paused else 0)
    yield jobs
    yield oldest
    yield paused


class MetricsServer:
    """``/metrics`` served on a daemon thread; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when asked for port 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(registry: CollectorRegistry, *, host: str = "127.0.0.1", port: int) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (port 0: any free port).
    OSError when the address is taken or cannot be bound."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
