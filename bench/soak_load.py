"""The soak benchmarks' load: consumers, producers and a sampler, all through ``Queue``.

Consumers are threads, each on its own autocommit connection, looping ``claim(batch=B)``
then ``complete_many`` of what they got, sleeping briefly only when a claim returns
nothing; each claim call is timed (perf_counter around the call). A producer offers a
fixed rate, ``enqueue_many`` every 100 ms on a schedule that does not drift. The sampler
closes a bin every 10 s: its counts and claim times, and the table's dead tuples and
sizes from the statistics views.
"""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict

import psycopg
from soak_report import percentile

from pgqueue_py import JobType, Queue
from pgqueue_py.testing.throwaway import ThrowawayPostgres, find_bindir

QUEUE = "soak"
INDEXES = ("jobs_claim_idx", "jobs_lease_expiry_idx")
BIN_SECONDS = 10.0
TICK_SECONDS = 0.1
IDLE_SLEEP = 0.005
# Durable and vacuumed as a production server is, and sized as one for a 24 GiB machine
# (a quarter of the memory for shared_buffers, WAL room for a checkpoint every
# checkpoint_timeout rather than every few hundred MB); max_connections is the
# throwaway's. The PgQueuer soak (bench/peers/soak_pgqueuer.py) uses the same.
CLUSTER_SETTINGS = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on",
                    "autovacuum": "on", "shared_buffers": "6GB", "wal_buffers": "16MB",
                    "max_wal_size": "8GB", "min_wal_size": "2GB",
                    "checkpoint_timeout": "5min", "checkpoint_completion_target": "0.9"}
WAL_TIMING_SINCE = 140000
"""pg_stat_wal and track_wal_io_timing came with PostgreSQL 14; on 13 a bin has no WAL
flush time."""
REPORTED_SETTINGS = ("server_version", *CLUSTER_SETTINGS, "track_wal_io_timing",
                     "autovacuum_naptime", "autovacuum_max_workers",
                     "autovacuum_vacuum_threshold", "autovacuum_vacuum_scale_factor",
                     "autovacuum_vacuum_cost_delay", "autovacuum_vacuum_cost_limit",
                     "max_connections")


def cluster_settings() -> dict[str, str]:
    """CLUSTER_SETTINGS, and WAL flush timing (which shows when a slow bin is the disk's
    flushes) where the local server binaries have it."""
    out = subprocess.run([str(find_bindir() / "postgres"), "--version"], capture_output=True,
                         text=True, check=True).stdout  # "postgres (PostgreSQL) 15.2 ..."
    found = re.search(r"\) (\d+)", out)
    if found is None:
        raise RuntimeError(f"cannot tell the PostgreSQL version from: {out.strip()}")
    timing = int(found.group(1)) * 10000 >= WAL_TIMING_SINCE
    return {**CLUSTER_SETTINGS, **({"track_wal_io_timing": "on"} if timing else {})}


class NoPayload(TypedDict):
    pass


soak_job = JobType("soak_job", NoPayload, queue=QUEUE)


@contextlib.contextmanager
def cluster(dsn: str | None) -> Iterator[str]:
    """The server to use: ``dsn`` when given, else a fresh throwaway cluster."""
    if dsn:
        yield dsn
        return
    with ThrowawayPostgres(settings=cluster_settings()) as pg:
        yield pg.dsn


def server_settings(dsn: str) -> dict[str, str]:
    """The server settings that shape a soak, as the server reports them."""
    values = {}
    with psycopg.connect(dsn) as conn:
        for name in REPORTED_SETTINGS:
            # missing_ok: a setting this server version does not have reads as ''.
            setting = conn.execute("select current_setting(%s, true)", (name,)).fetchone()
            values[name] = str(setting[0]) if setting and setting[0] is not None else ""
    return values


def jobs_reloptions(dsn: str) -> str:
    """pgq.jobs' own storage settings (its autovacuum thresholds) in a migrated database."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select coalesce(array_to_string(reloptions, ', '), '')"
                           " from pg_class where oid = 'pgq.jobs'::regclass").fetchone()
    return str(row[0]) if row else ""


def enqueue_backlog(dsn: str, jobs: int, chunk: int = 50_000) -> None:
    """``jobs`` available jobs in the soak queue, by ``pgq.enqueue_many`` in batches of
    ``chunk``, then VACUUM ANALYZE (a loaded table as autovacuum leaves it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, jobs, chunk):
            conn.execute(
                "select pgq.enqueue_many(array_fill('soak_job'::text, array[%(n)s]),"
                " array_fill('{}'::jsonb, array[%(n)s]), array_fill(%(q)s::text, array[%(n)s]))",
                {"n": min(chunk, jobs - start), "q": QUEUE},
            )
        conn.execute("vacuum analyze pgq.jobs")


@dataclass
class Counters:
    """What the threads did, since the last ``take`` and in all."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    claim_ms: list[float] = field(default_factory=list)
    offered: int = 0
    completed: int = 0
    enqueued_total: int = 0
    claimed_total: int = 0
    completed_total: int = 0
    errors: list[BaseException] = field(default_factory=list)

    def claimed(self, seconds: float, jobs: int) -> None:
        with self.lock:
            self.claim_ms.append(seconds * 1000)
            self.claimed_total += jobs

    def done(self, jobs: int) -> None:
        with self.lock:
            self.completed += jobs
            self.completed_total += jobs

    def enqueued(self, jobs: int) -> None:
        with self.lock:
            self.offered += jobs
            self.enqueued_total += jobs

    def take(self) -> tuple[list[float], int, int]:
        """(claim ms, offered, completed) since the last take."""
        with self.lock:
            taken = (self.claim_ms, self.offered, self.completed)
            self.claim_ms, self.offered, self.completed = [], 0, 0
            return taken

    @property
    def backlog(self) -> int:
        """Jobs enqueued and not yet claimed (no job fails or expires in a soak)."""
        with self.lock:
            return self.enqueued_total - self.claimed_total

    def check(self) -> None:
        if self.errors:
            raise RuntimeError("a load thread failed") from self.errors[0]


class Threads:
    """Background threads that loop until stopped; an exception stops them all and is
    kept in the counters."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def spawn(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:
                with self.counters.lock:
                    self.counters.errors.append(exc)
                self.stopping.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self.stopping.clear()


def consume(queue: Queue, threads: Threads, number: int, batch: int,
            ready: threading.Barrier) -> None:
    counters = threads.counters
    worker_id = f"soak-consumer-{number}"
    with psycopg.connect(queue.dsn, autocommit=True) as conn:
        # Connected and the functions' plans made before the clock starts; a job it takes
        # is completed, not timed.
        warm = queue.claim(worker_id, queues=[QUEUE], batch=1, conn=conn)
        queue.complete_many([j.id for j in warm], [j.lease_token for j in warm], conn=conn)
        with counters.lock:
            counters.claimed_total += len(warm)  # gone from the backlog all the same
        ready.wait()
        while not threads.stopping.is_set():
            started = time.perf_counter()
            jobs = queue.claim(worker_id, queues=[QUEUE], batch=batch, conn=conn)
            counters.claimed(time.perf_counter() - started, len(jobs))
            if not jobs:
                time.sleep(IDLE_SLEEP)
                continue
            outcomes = queue.complete_many([j.id for j in jobs], [j.lease_token for j in jobs],
                                           conn=conn)
            succeeded = sum(o.outcome == "succeeded" for o in outcomes)
            if succeeded != len(jobs):
                raise RuntimeError(f"{worker_id}: {len(jobs) - succeeded} completions refused")
            counters.done(succeeded)


def start_consumers(queue: Queue, threads: Threads, consumers: int, batch: int) -> None:
    """Start the consumers; returns once each has connected and claimed once."""
    ready = threading.Barrier(consumers + 1)
    for number in range(consumers):
        threads.spawn(f"consumer-{number}",
                      functools.partial(consume, queue, threads, number, batch, ready))
    ready.wait(timeout=60)


def produce(queue: Queue, threads: Threads, rate: float, started: float) -> None:
    """``rate`` jobs/s from ``started`` on: tick i enqueues the jobs due by tick i + 1
    (rounded down), so no fraction is lost and a late tick does not shift the later ones."""
    with psycopg.connect(queue.dsn, autocommit=True) as conn:
        tick = 0
        while not threads.stopping.is_set():
            due = started + tick * TICK_SECONDS
            delay = due - time.perf_counter()
            if delay > 0 and threads.stopping.wait(delay):
                return
            jobs = int(rate * (tick + 1) * TICK_SECONDS) - int(rate * tick * TICK_SECONDS)
            if jobs:
                queue.add_many(soak_job, [{}] * jobs, conn=conn)
                threads.counters.enqueued(jobs)
            tick += 1


def refill(queue: Queue, threads: Threads, target: int, every: float = 0.02) -> None:
    """Keep the backlog near ``target``: every ``every`` s, enqueue what was claimed."""
    with psycopg.connect(queue.dsn, autocommit=True) as conn:
        while not threads.stopping.wait(every):
            missing = min(target - threads.counters.backlog, 10_000)
            if missing > 0:
                queue.add_many(soak_job, [{}] * missing, conn=conn)
                threads.counters.enqueued(missing)


CHECKPOINTS_SQL = "select checkpoints_timed + checkpoints_req from pg_stat_bgwriter"
"""Checkpoints begun since the server started: a slow bin may be a checkpoint's writes."""
WAL_FLUSH_SQL = ("select wal_sync_time from pg_stat_wal"
                 " where current_setting('track_wal_io_timing') = 'on'")
"""Milliseconds spent flushing WAL since the server started (PostgreSQL 14+, and no row
unless it is timed): a slow bin may be the disk's flushes."""


def server_io(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """A bin's checkpoints begun and, where the server times them, WAL flush ms."""
    row = conn.execute(CHECKPOINTS_SQL).fetchone()
    if row is None:
        raise RuntimeError("pg_stat_bgwriter returned no row")
    figures: dict[str, float] = {"checkpoints": int(row[0])}
    if conn.info.server_version >= WAL_TIMING_SINCE:
        wal = conn.execute(WAL_FLUSH_SQL).fetchone()
        if wal is not None:
            figures["wal_sync_ms"] = float(wal[0])
    return figures


def table_stats(conn: psycopg.Connection[Any]) -> tuple[int, int, dict[str, int], int]:
    """pgq.jobs' (dead tuples, table bytes, index bytes by name, autovacuum count)."""
    row = conn.execute(
        "select s.n_dead_tup, pg_table_size(s.relid), s.autovacuum_count,"
        " array(select pg_relation_size(to_regclass('pgq.' || name))"
        "        from unnest(%s::text[]) with ordinality as i(name, n) order by n)"
        " from pg_stat_user_tables s where s.relid = 'pgq.jobs'::regclass",
        (list(INDEXES),),
    ).fetchone()
    if row is None:
        raise RuntimeError("pgq.jobs is not in pg_stat_user_tables")
    dead, table_bytes, autovacuums, index_sizes = row
    return (int(dead), int(table_bytes), dict(zip(INDEXES, map(int, index_sizes), strict=True)),
            int(autovacuums))


def sample_bins(dsn: str, threads: Threads, started: float, seconds: float,
                phase_of: Callable[[float], str],
                extra: Callable[[], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Close a bin every BIN_SECONDS from ``started`` until ``seconds`` have passed; the
    caller's thread sleeps in between. ``extra`` adds its own fields to each bin."""
    bins: list[dict[str, Any]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for number in range(1, round(seconds / BIN_SECONDS) + 1):
            end = started + number * BIN_SECONDS
            while (left := end - time.perf_counter()) > 0:
                threads.counters.check()
                time.sleep(min(left, 0.5))
            claims, offered, completed = threads.counters.take()
            dead, table_bytes, index_bytes, autovacuums = table_stats(conn)
            t = number * BIN_SECONDS
            bins.append({
                "t": t, "phase": phase_of(t - BIN_SECONDS / 2), "offered": offered,
                "completed": completed, "claim_p50_ms": percentile(claims, 50),
                "claim_p99_ms": percentile(claims, 99), "dead_tuples": dead,
                "table_bytes": table_bytes, "index_bytes": index_bytes,
                "backlog": threads.counters.backlog, "claims": len(claims),
                "autovacuum_count": autovacuums, **server_io(conn),
                **(extra() if extra else {}),
            })
    return bins


def measure_peak(dsn: str, consumers: int, batch: int, seconds: float,
                 backlog: int) -> tuple[float, str]:
    """The consumers' jobs/s draining a backlog made first; (rate, note). The drain stops
    early when the backlog runs out, and the note says so."""
    enqueue_backlog(dsn, backlog)
    counters = Counters()
    threads = Threads(counters)
    with Queue(dsn, min_connections=1, max_connections=2) as queue:
        try:
            start_consumers(queue, threads, consumers, batch)
            counters.take()
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline and counters.claimed_total < backlog:
                counters.check()
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            _, _, completed = counters.take()
        finally:
            threads.stop()
        counters.check()
    note = (f"drained {completed:,} jobs of a {backlog:,}-job backlog in {elapsed:.1f} s"
            + (" (ran dry: a lower bound)" if counters.claimed_total >= backlog else ""))
    return completed / elapsed, note
