"""What scraping the metrics costs the database: 1,000 scrapes of ``/metrics``, back to back.

    python bench/metrics_scrape.py [--dsn DSN] [--scrapes 1000] [--jobs 100000]

Uses DATABASE_URL (or --dsn) when given, else a throwaway local cluster. Fills one queue
with ``--jobs`` finished jobs and a few hundred available ones (``pgq.queue_stats`` reads
them all), serves a worker's series and the queue gauges, scrapes as fast as one client
can, and prints: reads of ``pgq.queue_stats`` (the only queries a scrape sends), server time
per read (EXPLAIN ANALYZE of the view), and so the server time per scrape, beside what a
scrape without the cache would cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from typing import TypedDict

import psycopg
from prometheus_client import CollectorRegistry

from pgqueue_py import JobType, Queue
from pgqueue_py.metrics import QueueStatsCollector, WorkerMetrics, serve
from pgqueue_py.migrate import migrate
from pgqueue_py.testing import create_database, drop_database, unique_name
from pgqueue_py.testing.throwaway import ThrowawayPostgres


class NoPayload(TypedDict):
    pass


noop = JobType("noop", NoPayload, queue="bench")


@contextlib.contextmanager
def fresh_database(dsn: str | None) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        if not dsn:
            dsn = stack.enter_context(ThrowawayPostgres()).dsn
        name = unique_name("pgq_bench")
        create_database(dsn, name)
        stack.callback(drop_database, dsn, name)
        db_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=name)
        migrate(db_dsn)
        yield db_dsn


def fill(dsn: str, finished: int, available: int) -> None:
    """``finished`` succeeded jobs and ``available`` due ones, written directly."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pgq.configure_queue(queue => 'bench')")
        conn.execute(
            "insert into pgq.jobs (queue, job_name, payload, max_retries, state, finished_at)"
            " select 'bench', 'noop', '{}', 3, 'succeeded', now() from generate_series(1, %s)",
            (finished,),
        )
        conn.execute("vacuum analyze pgq.jobs")
    with Queue(dsn) as queue:
        queue.add_many(noop, [{} for _ in range(available)])


def server_ms_per_read(dsn: str, rounds: int = 20) -> float:
    """The median execution time of ``pgq.queue_stats`` on the server, in milliseconds."""
    times = []
    with psycopg.connect(dsn) as conn:
        for _ in range(rounds):
            row = conn.execute(
                "explain (analyze, format json) select * from pgq.queue_stats"
            ).fetchone()
            assert row is not None
            plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
            times.append(float(plan[0]["Execution Time"]))
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    with fresh_database(args.dsn) as dsn, Queue(dsn, max_connections=1) as queue:
        fill(dsn, args.jobs, 500)
        registry = CollectorRegistry()
        WorkerMetrics(registry).finished.labels("bench", "noop", "succeeded").inc()
        collector = QueueStatsCollector(queue)
        registry.register(collector)
        per_read = server_ms_per_read(dsn)
        with serve(registry, port=0) as server:
            size = 0
            cpu = time.process_time()
            started = time.perf_counter()
            for _ in range(args.scrapes):
                with urllib.request.urlopen(server.url, timeout=10) as response:
                    size = len(response.read())
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu
    reads = collector.reads
    print(f"pgq.queue_stats over {args.jobs:,} finished + 500 available jobs")
    print(f"{'scrapes':<34}{args.scrapes:>12,}")
    print(f"{'wall time, s':<34}{wall:>12.2f}")
    print(f"{'scrapes per second':<34}{args.scrapes / wall:>12,.0f}")
    print(f"{'response size, bytes':<34}{size:>12,}")
    print(f"{'exporter CPU per scrape, ms':<34}{cpu * 1000 / args.scrapes:>12.3f}")
    print(f"{'reads of pgq.queue_stats':<34}{reads:>12,}")
    print(f"{'round trips per scrape':<34}{reads / args.scrapes:>12.4f}")
    print(f"{'server time per read, ms':<34}{per_read:>12.2f}")
    print(f"{'server time per scrape, ms':<34}{per_read * reads / args.scrapes:>12.4f}")
    print(f"{'  without the cache, ms':<34}{per_read:>12.2f}")


if __name__ == "__main__":
    main()
