"""Engine benchmark: the pgq functions under pgbench, beside a bare SKIP LOCKED queue.

    python bench/engine.py [--dsn DSN] [--clients 2] [--seconds 5]

Uses DATABASE_URL (or --dsn) when given, else a throwaway local cluster with durable
settings (fsync on), so the figures are those of a real server. Each scenario runs in a
fresh database built by ``migrate``. Prints one table, and the plan of a claim on a table
holding 100k finished and 100k available jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgqueue_py.migrate import migrate
from pgqueue_py.testing import create_database, drop_database, libpq_env, unique_name
from pgqueue_py.testing.throwaway import ThrowawayPostgres

HERE = Path(__file__).resolve().parent
PGBENCH_DIR = HERE / "pgbench"
DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}


@dataclass(frozen=True)
class Result:
    scenario: str
    jobs_per_second: float
    note: str


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with ThrowawayPostgres(settings=DURABLE) as pg:
        yield pg.dsn


@contextlib.contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    name = unique_name("pgq_bench")
    create_database(server_dsn, name)
    try:
        db_dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
        migrate(db_dsn)
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute((PGBENCH_DIR / "bare_setup.sql").read_text())
        yield db_dsn
    finally:
        drop_database(server_dsn, name)


def preload(dsn: str, jobs: int) -> None:
    """``jobs`` available jobs in queue 'bench' and as many bare rows, then vacuum."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, jobs, 50_000):
            n = min(50_000, jobs - start)
            conn.execute(
                "select pgq.enqueue_many(array_fill('bench_job'::text, array[%(n)s]),"
                " array_fill('{\"n\": 1}'::jsonb, array[%(n)s]),"
                " array_fill('bench'::text, array[%(n)s]))",
                {"n": n},
            )
            conn.execute(
                "insert into bench_bare_jobs (payload)"
                " select '{\"n\": 1}' from generate_series(1, %(n)s)",
                {"n": n},
            )
        conn.execute("vacuum analyze pgq.jobs")
        conn.execute("vacuum analyze bench_bare_jobs")


def pgbench(dsn: str, script: str, *, clients: int, seconds: int | None = None,
            transactions: int | None = None, batch: int | None = None) -> float:
    """Run one pgbench script; return its transactions per second."""
    argv = ["pgbench", "-n", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1)),
            "-f", str(PGBENCH_DIR / script)]
    argv += ["-T", str(seconds)] if seconds is not None else ["-t", str(transactions)]
    if batch is not None:
        argv += ["-D", f"batch={batch}"]
    env = {**os.environ, **libpq_env(dsn)}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0 or "error" in out.stderr.lower():
        raise RuntimeError(f"pgbench {script} failed:\n{out.stdout}\n{out.stderr}")
    match = re.search(r"tps = ([0-9.]+)", out.stdout)
    if match is None:
        raise RuntimeError(f"no tps in pgbench output:\n{out.stdout}")
    return float(match.group(1))


def run(server_dsn: str, clients: int, seconds: int) -> list[Result]:
    results: list[Result] = []

    with fresh_database(server_dsn) as dsn:
        tps = pgbench(dsn, "bare_enqueue.pgbench", clients=clients, seconds=seconds)
        results.append(Result("bare INSERT ... SELECT, 100 rows a statement", tps * 100,
                              "baseline"))
        tps = pgbench(dsn, "pgq_enqueue_many.pgbench", clients=clients, seconds=seconds)
        results.append(Result("pgq.enqueue_many, 100 jobs a call", tps * 100,
                              "validation, defaults, NOTIFY"))

    # Drains run a fixed number of transactions so the queue never runs dry.
    for batch, transactions in ((100, 1000), (1, 5000)):
        jobs = clients * transactions * max(batch, 1)
        with fresh_database(server_dsn) as dsn:
            preload(dsn, jobs)
            if batch == 100:
                tps = pgbench(dsn, "bare_drain.pgbench", clients=clients,
                              transactions=transactions)
                results.append(Result("bare SKIP LOCKED: claim 100, delete them", tps * 100,
                                      "baseline"))
            tps = pgbench(dsn, "pgq_claim_complete.pgbench", clients=clients,
                          transactions=transactions, batch=batch)
            results.append(Result(f"pgq.claim + pgq.complete_many, batch {batch}",
                                  tps * batch, "leases, attempts, fencing"))
    return results


def explain_claim(server_dsn: str) -> str:
    """The plans inside ``pgq.claim(batch => 100)`` on 100k finished and 100k available
    jobs, as auto_explain logs them (nested statements included)."""
    with fresh_database(server_dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        preload(dsn, 200_000)
        conn.execute((PGBENCH_DIR / "finish_half.sql").read_text())
        conn.execute("vacuum analyze pgq.jobs")
        plans: list[str] = []
        conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        conn.execute("load 'auto_explain'")
        for setting in ("log_min_duration = 0", "log_nested_statements = on",
                        "log_analyze = on", "log_buffers = on", "log_timing = on",
                        "log_level = notice"):
            conn.execute(f"set auto_explain.{setting}")
        conn.execute("select count(*) from pgq.claim('bench-explain', '{bench}', 100)")
        return "\n\n".join(plans)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--no-explain", action="store_true")
    args = parser.parse_args()
    with server(args.dsn) as server_dsn:
        results = run(server_dsn, args.clients, args.seconds)
        width = max(len(r.scenario) for r in results)
        print(f"\nEngine, pgbench with {args.clients} clients")
        print(f"{'scenario':<{width}}  {'jobs/s':>10}  note")
        for r in results:
            print(f"{r.scenario:<{width}}  {r.jobs_per_second:>10,.0f}  {r.note}")
        if not args.no_explain:
            print("\nclaim on 100k finished + 100k available jobs:")
            print(explain_claim(server_dsn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
