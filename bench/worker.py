"""Worker benchmark: bulk enqueue, drain with the worker, idle enqueue-to-start latency.

    python bench/worker.py [--dsn DSN] [--jobs 20000] [--concurrency 8,100,256]

Uses DATABASE_URL (or --dsn) when given, else a throwaway local cluster with durable
settings (fsync on). The worker runs in this process, sharing the machine's cores with the
server, as it would in a small deployment. Prints one table.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypedDict

import psycopg

from pgqueue_py import JobContext, JobType, Queue, Worker
from pgqueue_py.migrate import migrate
from pgqueue_py.testing import create_database, drop_database, unique_name
from pgqueue_py.testing.throwaway import ThrowawayPostgres

DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
RESULTS = Path(__file__).resolve().parent / "results"


class NoPayload(TypedDict):
    pass


noop = JobType("noop", NoPayload, queue="bench")


@contextlib.contextmanager
def fresh_database(dsn: str | None) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        if not dsn:
            dsn = stack.enter_context(ThrowawayPostgres(settings=DURABLE)).dsn
        name = unique_name("pgq_bench")
        create_database(dsn, name)
        stack.callback(drop_database, dsn, name)
        db_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=name)
        migrate(db_dsn)
        yield db_dsn


def bench_enqueue(queue: Queue, jobs: int, rounds: int) -> float:
    """Best jobs/s of ``rounds`` calls of add_many with ``jobs`` jobs each."""
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        queue.add_many(noop, [{} for _ in range(jobs)])
        best = max(best, jobs / (time.perf_counter() - started))
    return best


def succeeded(queue: Queue) -> int:
    return sum(s.succeeded for s in queue.stats() if s.queue == "bench")


def bench_drain(queue: Queue, jobs: int, concurrency: int) -> float:
    """Jobs/s to run ``jobs`` waiting no-op jobs to succeeded, from worker start."""
    done_before = succeeded(queue)
    worker = Worker(queue, {noop: lambda ctx, payload: None}, concurrency=concurrency,
                    queues=["bench"])
    thread = threading.Thread(target=worker.run, name="bench-worker")
    started = time.perf_counter()
    thread.start()
    try:
        while succeeded(queue) - done_before < jobs:
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
        thread.join()
    return jobs / elapsed


def bench_latency(queue: Queue, samples: int) -> list[float]:
    """Seconds from each single add (committed) to its handler starting, on an idle worker."""
    started_at: dict[int, float] = {}
    arrived = threading.Event()

    def handler(ctx: JobContext, payload: NoPayload) -> None:
        started_at[ctx.job_id] = time.perf_counter()
        arrived.set()

    worker = Worker(queue, {noop: handler}, concurrency=4, queues=["bench"],
                    poll_interval=timedelta(seconds=5))
    thread = threading.Thread(target=worker.run, name="bench-worker")
    thread.start()
    latencies: list[float] = []
    try:
        time.sleep(0.5)  # let the listener subscribe before the first job
        for _ in range(samples):
            arrived.clear()
            added = time.perf_counter()
            job_id = queue.add(noop, {})
            if not arrived.wait(10):
                raise RuntimeError(f"job {job_id} did not start within 10 s")
            latencies.append(started_at[job_id] - added)
            time.sleep(0.01)  # idle again before the next one
    finally:
        worker.stop()
        thread.join()
    return latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", default="8,100,256",
                        help="handler threads; a comma-separated list drains once for each")
    parser.add_argument("--latency-samples", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with fresh_database(args.dsn) as dsn, Queue(dsn, max_connections=4) as queue:
        enqueue_rate = bench_enqueue(queue, args.jobs, rounds=3)
        drain_rates: list[tuple[int, float]] = []
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            # Each drain starts from a fresh backlog of exactly --jobs jobs.
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("delete from pgq.jobs")
                conn.execute("vacuum analyze pgq.jobs")
            queue.add_many(noop, [{} for _ in range(args.jobs)])
            drain_rates.append((concurrency, bench_drain(queue, args.jobs, concurrency)))
        latencies = [s * 1000 for s in bench_latency(queue, args.latency_samples)]

    rows = [
        (f"add_many, {args.jobs:,} no-op jobs", f"{enqueue_rate:,.0f} jobs/s"),
        *((f"drain {args.jobs:,} no-op jobs, concurrency {concurrency}", f"{rate:,.0f} jobs/s")
          for concurrency, rate in drain_rates),
        ("idle enqueue-to-start p50", f"{percentile(latencies, 50):.1f} ms"),
        ("idle enqueue-to-start p95", f"{percentile(latencies, 95):.1f} ms"),
        ("idle enqueue-to-start p99", f"{percentile(latencies, 99):.1f} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\nWorker ({args.latency_samples} latency samples)")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>16}")
    write_plots(drain_rates, latencies)
    return 0


def write_plots(drain_rates: list[tuple[int, float]], latencies_ms: list[float]) -> None:
    """PNG plots beside the table: drain throughput by concurrency, and the idle
    latency CDF (the peers benchmark draws its own with the other contestants)."""
    sys.path.insert(0, str(RESULTS.parent / "peers"))
    from peer_plots import plot_latency_cdf, plot_throughput

    RESULTS.mkdir(exist_ok=True)
    sweep = [(f"concurrency={c}", c, [rate], c == 8) for c, rate in drain_rates]
    plot_throughput(RESULTS / "worker_throughput.png", {"pgqueue": sweep})
    plot_latency_cdf(RESULTS / "worker_latency_cdf.png", {"pgqueue": latencies_ms}, None)
    print(f"plots: {RESULTS / 'worker_throughput.png'}, {RESULTS / 'worker_latency_cdf.png'}")


if __name__ == "__main__":
    sys.exit(main())
