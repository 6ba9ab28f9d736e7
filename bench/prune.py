"""Prune benchmark: delete old succeeded jobs in batches while a worker drains another
queue, and compare the worker's throughput with its throughput without a prune.

    python bench/prune.py [--dsn DSN] [--rows 2000000] [--batch 5000]
                          [--sweep 1000,5000,10000,50000] [--sweep-rows 200000]

Uses DATABASE_URL (or --dsn) when given, else a throwaway local cluster with durable
settings (fsync on). For each batch size of --sweep (on --sweep-rows old jobs), then for
--batch on --rows old jobs, in a fresh database: load the old jobs (succeeded 8 days
ago, vacuumed, as an old table is) and a backlog of no-op jobs in queue 'bench'; run a
worker (concurrency 8, in this process) for --baseline seconds without a prune, then
prune everything older than 7 days, one transaction per batch as ``pgqueue prune`` does,
while the worker goes on. Prints one line per run: the prune's rows/s, its batches'
median and longest duration (the longest time one transaction held the xmin horizon),
and the worker's jobs/s during the prune as a share of its jobs/s before.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TypedDict

import psycopg
from engine import fresh_database, server

from pgqueue_py import JobContext, JobType, Queue, Worker

CHUNK = 200_000
OLDER_THAN = timedelta(days=7)


class NoPayload(TypedDict):
    pass


noop = JobType("noop", NoPayload, queue="bench")


@dataclass(frozen=True)
class Run:
    batch: int
    rows: int
    prune_rows_per_second: float
    batch_p50_ms: float
    batch_max_ms: float
    worker_before: float
    worker_during: float
    backlog_left: int

    @property
    def share(self) -> float:
        return self.worker_during / self.worker_before if self.worker_before else 0.0


def load(dsn: str, old_rows: int, backlog: int) -> None:
    """``old_rows`` jobs that succeeded 8 days ago (lower ids), then ``backlog`` available
    no-op jobs in queue 'bench'; vacuumed and analyzed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Jobs inserted by hand: their queues must exist, as enqueue would make them.
        conn.execute("select pgq.configure_queue('old'), pgq.configure_queue('bench')")
        for start in range(0, old_rows, CHUNK):
            conn.execute(
                "insert into pgq.jobs (queue, job_name, max_retries, state, attempt, run_at,"
                " started_at, finished_at, created_at)"
                " select 'old', 'report', 5, 'succeeded', 1, now() - interval '8 days',"
                " now() - interval '8 days', now() - interval '8 days', now() - interval '8 days'"
                " from generate_series(1, %s)",
                (min(CHUNK, old_rows - start),),
            )
        for start in range(0, backlog, CHUNK):
            conn.execute(
                "insert into pgq.jobs (queue, job_name, max_retries)"
                " select 'bench', 'noop', 0 from generate_series(1, %s)",
                (min(CHUNK, backlog - start),),
            )
        conn.execute("vacuum (analyze, freeze) pgq.jobs")


def backlog_left(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select count(*) from pgq.jobs where queue = 'bench' and state = 'available'"
        ).fetchone()
    return int(row[0]) if row else 0


class CountingWorker:
    """A worker of no-op jobs in a thread, counting the jobs its handler ran."""

    def __init__(self, queue: Queue) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._worker = Worker(queue, {noop: self._handle}, concurrency=8, queues=["bench"])
        self._thread = threading.Thread(target=self._worker.run, name="bench-worker")

    def _handle(self, ctx: JobContext, payload: NoPayload) -> None:
        with self._lock:
            self.count += 1

    def rate_over(self, seconds: float) -> float:
        """Jobs/s over the next ``seconds``."""
        before, started = self.count, time.perf_counter()
        time.sleep(seconds)
        return (self.count - before) / (time.perf_counter() - started)

    def __enter__(self) -> CountingWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._worker.stop()
        self._thread.join()


def prune_all(queue: Queue, dsn: str, batch: int) -> tuple[int, float, list[float]]:
    """Prune everything older than OLDER_THAN, a batch per transaction; (rows, seconds,
    each batch's seconds)."""
    durations: list[float] = []
    total = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            done = queue.prune(OLDER_THAN, batch=batch, conn=conn)
            durations.append(time.perf_counter() - t0)
            total += done
            if not done:
                break
        elapsed = time.perf_counter() - started
    return total, elapsed, durations


def run(server_dsn: str, rows: int, batch: int, baseline: float, backlog: int) -> Run:
    with fresh_database(server_dsn) as dsn:
        load(dsn, rows, backlog)
        with Queue(dsn, max_connections=12) as queue, CountingWorker(queue) as worker:
            worker.rate_over(2)  # warm up: connections, first claims
            before = worker.rate_over(baseline)
            count_before = worker.count
            pruned, seconds, durations = prune_all(queue, dsn, batch)
            during = (worker.count - count_before) / seconds
        left = backlog_left(dsn)
    if pruned != rows:
        raise RuntimeError(f"pruned {pruned} of {rows} rows")
    return Run(
        batch=batch,
        rows=rows,
        prune_rows_per_second=pruned / seconds,
        batch_p50_ms=statistics.median(durations) * 1000,
        batch_max_ms=max(durations) * 1000,
        worker_before=before,
        worker_during=during,
        backlog_left=left,
    )


def show(result: Run) -> None:
    dry = "  (backlog ran dry: raise --backlog)" if result.backlog_left == 0 else ""
    print(f"{result.rows:>10,}  {result.batch:>7,}  {result.prune_rows_per_second:>10,.0f}"
          f"  {result.batch_p50_ms:>9,.0f}  {result.batch_max_ms:>9,.0f}"
          f"  {result.worker_before:>9,.0f}  {result.worker_during:>9,.0f}"
          f"  {result.share:>6.0%}{dry}", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--sweep", default="1000,5000,10000,50000",
                        help="batch sizes to compare first; empty: none")
    parser.add_argument("--sweep-rows", type=int, default=200_000)
    parser.add_argument("--baseline", type=float, default=10.0,
                        help="seconds the worker runs alone before each prune")
    parser.add_argument("--backlog", type=int, default=400_000,
                        help="no-op jobs for the worker; it must not run dry")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    print(f"{'old rows':>10}  {'batch':>7}  {'prune/s':>10}  {'p50 ms':>9}  {'max ms':>9}"
          f"  {'w. alone':>9}  {'w. during':>9}  {'share':>6}")  # fmt: skip
    with server(args.dsn) as server_dsn:
        for batch in (int(b) for b in args.sweep.split(",") if b.strip()):
            show(run(server_dsn, args.sweep_rows, batch, args.baseline, args.backlog))
        show(run(server_dsn, args.rows, args.batch, args.baseline, args.backlog))
    print("prune/s: rows deleted per second; p50/max ms: a batch's transaction; w. alone /"
          " w. during: the worker's jobs/s before and during the prune; share: during / alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
