"""Engine benchmark: the pgq functions under pgbench, beside a bare SKIP LOCKED queue.

    python bench/engine.py [--dsn DSN] [--clients 2] [--seconds 5]
                           [--flow-only] [--flow-rounds 3] [--flow-transactions 300]
                           [--baseline GIT_REF]

Uses DATABASE_URL (or --dsn) when given, else a throwaway local cluster with durable
settings (fsync on), so the figures are those of a real server. Each scenario runs in a
fresh database built by ``migrate``. Prints one table, and the plan of a claim on a table
holding 100k finished and 100k available jobs.

Then the cost of flow control: claim + complete_many at batch 100 with no limit, with a queue
``concurrency`` of 1,000 and with ``key_concurrency`` 1 over 10,000 distinct keys, in rounds
that interleave the scenarios (medians printed). ``--baseline REF`` adds the same no-limit
drain on the engine of a git ref (its ``sql/`` directory, e.g. ``main``), side by side.

Last, plans made on a small table: a worker's session claims and completes on a nearly
empty pgq.jobs, so that PL/pgSQL caches its plans, then 200k jobs arrive with no ANALYZE
(autovacuum off for the table); that session drains a share of them beside a fresh one.
``--plans-only`` runs only this; with ``--baseline REF`` that engine runs it too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from pgqueue_py.migrate import migrate
from pgqueue_py.testing import create_database, drop_database, libpq_env, unique_name
from pgqueue_py.testing.throwaway import ThrowawayPostgres

if TYPE_CHECKING:
    from typing_extensions import LiteralString

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
def fresh_database(server_dsn: str, sql_path: Path | None = None) -> Iterator[str]:
    name = unique_name("pgq_bench")
    create_database(server_dsn, name)
    try:
        db_dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
        migrate(db_dsn, sql_path=sql_path)
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute((PGBENCH_DIR / "bare_setup.sql").read_text())
        yield db_dsn
    finally:
        drop_database(server_dsn, name)


def preload(dsn: str, jobs: int, *, keys: int | None = None) -> None:
    """``jobs`` available jobs in queue 'bench' and as many bare rows, then vacuum. With
    ``keys``, the jobs take concurrency keys round-robin from that many distinct keys."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, jobs, 50_000):
            n = min(50_000, jobs - start)
            if keys is None:
                conn.execute(
                    "select pgq.enqueue_many(array_fill('bench_job'::text, array[%(n)s]),"
                    " array_fill('{\"n\": 1}'::jsonb, array[%(n)s]),"
                    " array_fill('bench'::text, array[%(n)s]))",
                    {"n": n},
                )
            else:
                conn.execute(
                    "select pgq.enqueue_many(array_fill('bench_job'::text, array[%(n)s]),"
                    " array_fill('{\"n\": 1}'::jsonb, array[%(n)s]),"
                    " array_fill('bench'::text, array[%(n)s]),"
                    " concurrency_keys => array(select 'key-' || ((%(start)s + g) %% %(keys)s)"
                    " from generate_series(1, %(n)s) as g))",
                    {"n": n, "start": start, "keys": keys},
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


@dataclass(frozen=True)
class FlowScenario:
    name: str
    configure: LiteralString | None = None
    keys: int | None = None
    baseline: bool = False


FLOW_SCENARIOS = (
    FlowScenario("before: no limit (baseline engine)", baseline=True),
    FlowScenario("no limit"),
    FlowScenario("queue concurrency 1,000",
                 configure="select pgq.configure_queue('bench', concurrency => 1000)"),
    FlowScenario("key_concurrency 1, 10,000 distinct keys", keys=10_000,
                 configure="select pgq.configure_queue('bench', key_concurrency => 1)"),
)


@contextlib.contextmanager
def baseline_sql(ref: str | None) -> Iterator[Path | None]:
    """The ``sql/`` directory of git ref ``ref``, extracted into a temporary directory."""
    if ref is None:
        yield None
        return
    archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", "--format=tar", ref,
                              "sql"], capture_output=True, check=True)
    with tempfile.TemporaryDirectory(prefix="pgq-baseline-") as tmp:
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp) / "sql"


def run_flow(server_dsn: str, clients: int, transactions: int, rounds: int,
             baseline: Path | None) -> list[tuple[FlowScenario, list[float]]]:
    """claim + complete_many at batch 100 per scenario, ``rounds`` times, interleaved."""
    scenarios = [s for s in FLOW_SCENARIOS if baseline is not None or not s.baseline]
    figures: dict[str, list[float]] = {s.name: [] for s in scenarios}
    batch = 100
    for _ in range(rounds):
        for scenario in scenarios:
            sql_path = baseline if scenario.baseline else None
            with fresh_database(server_dsn, sql_path) as dsn:
                preload(dsn, clients * transactions * batch, keys=scenario.keys)
                if scenario.configure is not None:
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        conn.execute(scenario.configure)
                tps = pgbench(dsn, "pgq_claim_complete.pgbench", clients=clients,
                              transactions=transactions, batch=batch)
                figures[scenario.name].append(tps * batch)
    return [(s, figures[s.name]) for s in scenarios]


def print_flow(results: list[tuple[FlowScenario, list[float]]], clients: int,
               rounds: int) -> None:
    medians = {s.name: statistics.median(v) for s, v in results}
    reference = medians["no limit"]
    before = medians.get(FLOW_SCENARIOS[0].name)
    width = max(len(s.name) for s, _ in results)
    print(f"\nFlow control: pgq.claim + pgq.complete_many, batch 100, {clients} clients,"
          f" median of {rounds} interleaved rounds")
    print(f"{'scenario':<{width}}  {'jobs/s':>10}  {'vs no limit':>11}  {'vs before':>9}"
          "  rounds")
    for scenario, values in results:
        median = medians[scenario.name]
        vs_before = f"{median / before:>9.1%}" if before else f"{'-':>9}"
        rounds_text = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{scenario.name:<{width}}  {median:>10,.0f}  {median / reference:>11.1%}"
              f"  {vs_before}  {rounds_text}")


STALE_BACKLOG = 200_000
STALE_BATCHES = 30


def drain_batches(conn: psycopg.Connection[tuple[object, ...]], batches: int) -> float:
    """Seconds for ``batches`` worker cycles of claim 100 + complete_many on ``conn``."""
    started = time.perf_counter()
    for _ in range(batches):
        claim = "select id, lease_token from pgq.claim('bench-w', '{bench}', 100)"
        rows = conn.execute(claim).fetchall()
        conn.execute("select count(*) from pgq.complete_many(%s, %s)",
                     ([r[0] for r in rows], [r[1] for r in rows]))
    return time.perf_counter() - started


def run_stale_plans(server_dsn: str, sql_path: Path | None) -> tuple[float, float]:
    """Jobs/s of claim + complete_many at batch 100 (one connection) from a session that
    planned on a nearly empty pgq.jobs, and from a fresh session, after a backlog came."""
    with fresh_database(server_dsn, sql_path) as dsn, \
            psycopg.connect(dsn, autocommit=True) as planned_small:
        planned_small.execute("alter table pgq.jobs set (autovacuum_enabled = off)")
        for _ in range(12):  # past PL/pgSQL's five custom plans: generic ones are kept
            planned_small.execute("select pgq.enqueue_many(array['a', 'b'], "
                                  "queues => array['bench', 'bench'])")
            drain_batches(planned_small, 1)
        planned_small.execute(
            "select pgq.enqueue_many(array_fill('bench_job'::text, array[%(n)s]), null,"
            " array_fill('bench'::text, array[%(n)s]))", {"n": STALE_BACKLOG})
        with psycopg.connect(dsn, autocommit=True) as fresh:
            stale_s = drain_batches(planned_small, STALE_BATCHES)
            fresh_s = drain_batches(fresh, STALE_BATCHES)
    jobs = STALE_BATCHES * 100
    return jobs / stale_s, jobs / fresh_s


def run_stale_plans_on(server_dsn: str, ref: str | None,
                       baseline: Path | None) -> list[tuple[str, tuple[float, float]]]:
    results = [("this engine", run_stale_plans(server_dsn, None))]
    if baseline is not None:
        results.append((f"{ref} (baseline)", run_stale_plans(server_dsn, baseline)))
    return results


def print_stale_plans(results: list[tuple[str, tuple[float, float]]]) -> None:
    width = max(len(name) for name, _ in results)
    print(f"\nPlans made on a small table: claim 100 + complete_many, one connection, after"
          f" {STALE_BACKLOG:,} jobs arrive unanalyzed")
    print(f"{'engine':<{width}}  {'planned small, jobs/s':>21}  {'fresh session, jobs/s':>21}"
          f"  {'ratio':>6}")
    for name, (stale, fresh) in results:
        print(f"{name:<{width}}  {stale:>21,.0f}  {fresh:>21,.0f}  {stale / fresh:>6.2f}")


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
    parser.add_argument("--flow-only", action="store_true",
                        help="run only the flow-control figures")
    parser.add_argument("--flow-rounds", type=int, default=3)
    parser.add_argument("--flow-transactions", type=int, default=300,
                        help="pgbench transactions per client in each flow scenario")
    parser.add_argument("--plans-only", action="store_true",
                        help="run only the plans-made-on-a-small-table figures")
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="also drain on the engine of this git ref (e.g. main)")
    args = parser.parse_args()
    with server(args.dsn) as server_dsn, baseline_sql(args.baseline) as baseline:
        if args.plans_only:
            print_stale_plans(run_stale_plans_on(server_dsn, args.baseline, baseline))
            return 0
        flow = run_flow(server_dsn, args.clients, args.flow_transactions, args.flow_rounds,
                        baseline)
        print_flow(flow, args.clients, args.flow_rounds)
        if args.flow_only:
            return 0
        results = run(server_dsn, args.clients, args.seconds)
        width = max(len(r.scenario) for r in results)
        print(f"\nEngine, pgbench with {args.clients} clients")
        print(f"{'scenario':<{width}}  {'jobs/s':>10}  note")
        for r in results:
            print(f"{r.scenario:<{width}}  {r.jobs_per_second:>10,.0f}  {r.note}")
        if not args.no_explain:
            print("\nclaim on 100k finished + 100k available jobs:")
            print(explain_claim(server_dsn))
        print_stale_plans(run_stale_plans_on(server_dsn, args.baseline, baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
