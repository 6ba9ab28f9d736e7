"""Held-xmin soak for PgQueuer: steady load through a long-open transaction, in 10 s bins.

    bench/peers/.venv/bin/python bench/peers/soak_pgqueuer.py            # 120/600/120 s
    bench/peers/.venv/bin/python bench/peers/soak_pgqueuer.py --quick    # 20/60/30 s
    ... [--clean S --hold S --recovery S --consumers K --batch B --out FILE]

A throwaway cluster with the pgqueue soak's settings (bench/soak_load.py: durable,
autovacuum on at its defaults, sized for a 24 GiB machine; they are printed and stored),
PgQueuer's schema installed by ``Queries.install``.
K consumers, each on its own asyncpg connection, run PgQueuer's own SQL: ``Queries.dequeue``
(batch B, the plan QueueManager uses with no concurrency limits), a no-op entrypoint per
job, then ``Queries.log_jobs`` marking the batch successful, as QueueManager's status
buffer does. Each dequeue call is timed. After an empty dequeue a consumer waits, like
QueueManager, for a NOTIFY from PgQueuer's table trigger (at most IDLE_WAIT_S).

First the peak: the consumers drain a pre-made backlog for PEAK_S seconds. Then the queue
is emptied and a producer enqueues at half that rate (``Queries.enqueue`` with lists,
every TICK_S on a schedule that does not drift) through three phases: clean, hold (another
connection runs ``begin; select txid_current();`` and stays open until the hold ends,
then commits) and recovery. Every BIN_S seconds: jobs offered and completed, dequeue p50
and p99, n_dead_tup of the job table, its table and index sizes, and the backlog.

Writes bench/results/soak/held_xmin_pgqueuer.json, the same shape as the pgqueue soak's
held_xmin_pgqueue.json, and prints a summary: the share of offered jobs completed during
the hold, the worst hold minute's dequeue p99 over the clean p99, and the recovery time.
"""

# pgqueuer and asyncpg live in the peers' venv, not in the project's: their imports carry
# an ignore that holds whether the packages are installed or not, so that `make lint`
# passes from either venv.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-not-found,import-untyped,unused-ignore]
from pgqueuer.db import AsyncpgDriver  # type: ignore[import-not-found,unused-ignore]
from pgqueuer.models import Job  # type: ignore[import-not-found,unused-ignore]
from pgqueuer.queries import (  # type: ignore[import-not-found,unused-ignore]
    EntrypointExecutionParameter,
    Queries,
)

from pgqueue_py.testing import create_database
from pgqueue_py.testing.throwaway import DEFAULT_SETTINGS, ThrowawayPostgres

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "bench"))
import soak_load  # noqa: E402  # bench/, not a package

DEFAULT_OUT = REPO / "bench" / "results" / "soak" / "held_xmin_pgqueuer.json"

REPORTED_SETTINGS = (
    *soak_load.REPORTED_SETTINGS, "autovacuum_vacuum_insert_threshold",
    "autovacuum_vacuum_insert_scale_factor", "wal_level",
)  # fmt: skip

BIN_S = 10.0
TICK_S = 0.100
"""The producer enqueues one batch per tick."""
PEAK_S = 20.0
PEAK_BACKLOG = 300_000
"""Jobs enqueued before the peak drain; enough that it does not run dry within PEAK_S."""
ENQUEUE_CHUNK = 10_000
IDLE_WAIT_S = 1.0
"""Longest wait for a NOTIFY after an empty dequeue (QueueManager waits up to 30 s)."""
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
"""QueueManager.run's default: picked jobs older than this are re-picked."""
ENTRYPOINT = "noop"
QUICK = (20, 60, 30)
FULL = (120, 600, 120)

STATS_SQL = """
select coalesce(s.n_dead_tup, 0) as dead, coalesce(s.n_live_tup, 0) as live,
       coalesce(s.autovacuum_count, 0) as autovacuums, pg_table_size(c.oid) as table_bytes
  from pg_class c left join pg_stat_user_tables s on s.relid = c.oid
 where c.oid = 'pgqueuer'::regclass
"""
INDEX_SQL = """
select i.indexrelid::regclass::text as name, pg_relation_size(i.indexrelid) as bytes
  from pg_index i where i.indrelid = 'pgqueuer'::regclass order by 1
"""


@dataclass(frozen=True)
class Plan:
    clean: int
    hold: int
    recovery: int
    consumers: int
    batch: int
    peak_backlog: int
    out: Path

    @property
    def total(self) -> int:
        return self.clean + self.hold + self.recovery

    def phase_at(self, t: float) -> str:
        """The phase a bin starting ``t`` seconds after the clean start belongs to."""
        if t < self.clean:
            return "clean"
        return "hold" if t < self.clean + self.hold else "recovery"


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"phases of {QUICK[0]}/{QUICK[1]}/{QUICK[2]} s")
    parser.add_argument("--clean", type=int, help=f"seconds (default {FULL[0]})")
    parser.add_argument("--hold", type=int, help=f"seconds (default {FULL[1]})")
    parser.add_argument("--recovery", type=int, help=f"seconds (default {FULL[2]})")
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--peak-backlog", type=int, default=PEAK_BACKLOG,
                        help="jobs enqueued before the peak drain")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ns = parser.parse_args(argv)
    base = QUICK if ns.quick else FULL
    phases = [v if v is not None else d
              for v, d in zip((ns.clean, ns.hold, ns.recovery), base, strict=True)]
    for name, seconds in zip(("--clean", "--hold", "--recovery"), phases, strict=True):
        if seconds <= 0 or seconds % BIN_S:
            parser.error(f"{name} {seconds}: must be a positive multiple of {BIN_S:.0f} "
                         "seconds, so that every bin lies in one phase")
    for name, value in (("--consumers", ns.consumers), ("--batch", ns.batch),
                        ("--peak-backlog", ns.peak_backlog)):
        if value < 1:
            parser.error(f"{name} {value}: must be at least 1")
    return Plan(clean=phases[0], hold=phases[1], recovery=phases[2], consumers=ns.consumers,
                batch=ns.batch, peak_backlog=ns.peak_backlog, out=ns.out)


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Bins:
    """What happened, by ``width``-second bin since ``origin`` (perf_counter seconds);
    events outside the bins are not counted."""

    origin: float
    width: float
    count: int
    offered: list[int] = field(init=False)
    completed: list[int] = field(init=False)
    dequeue_ms: list[list[float]] = field(init=False)

    def __post_init__(self) -> None:
        self.offered = [0] * self.count
        self.completed = [0] * self.count
        self.dequeue_ms = [[] for _ in range(self.count)]

    def index(self, at: float) -> int | None:
        i = int((at - self.origin) // self.width)
        return i if 0 <= i < self.count else None

    def offer(self, at: float, jobs: int) -> None:
        if (i := self.index(at)) is not None:
            self.offered[i] += jobs

    def complete(self, at: float, jobs: int) -> None:
        if (i := self.index(at)) is not None:
            self.completed[i] += jobs

    def dequeue(self, at: float, ms: float) -> None:
        if (i := self.index(at)) is not None:
            self.dequeue_ms[i].append(ms)


@dataclass
class Totals:
    """Running counts over the whole run, for the backlog and the final check."""

    enqueued: int = 0
    picked: int = 0
    completed: int = 0
    dequeues: int = 0
    empty_dequeues: int = 0
    producer_lag_s: float = 0.0
    last_completion: float = 0.0


@dataclass
class Consumers:
    """K consumers on their own connections; ``stop()`` ends them after their batch."""

    conns: list[Any]
    batch: int
    channel: str
    stopping: bool = False
    wakes: list[asyncio.Event] = field(default_factory=list)
    in_flight: dict[int, float] = field(default_factory=dict)
    """perf_counter start of each consumer's dequeue call now running."""

    def start(self, bins: Bins, totals: Totals) -> list[asyncio.Task[None]]:
        self.stopping = False
        self.wakes = [asyncio.Event() for _ in self.conns]
        return [asyncio.create_task(self._run(n, conn, bins, totals))
                for n, conn in enumerate(self.conns)]

    def stop(self) -> None:
        self.stopping = True
        for wake in self.wakes:
            wake.set()

    async def _run(self, n: int, conn: Any, bins: Bins, totals: Totals) -> None:
        queries = Queries(AsyncpgDriver(conn))
        queue_manager_id = uuid.uuid4()
        entrypoints = {ENTRYPOINT: EntrypointExecutionParameter(concurrency_limit=0)}
        wake = self.wakes[n]

        def on_notify(*_: object) -> None:
            wake.set()

        await conn.add_listener(self.channel, on_notify)
        try:
            while not self.stopping:
                wake.clear()  # before the dequeue: a NOTIFY during it is not lost
                started = time.perf_counter()
                self.in_flight[n] = started
                jobs = await queries.dequeue(
                    batch_size=self.batch, entrypoints=entrypoints,
                    queue_manager_id=queue_manager_id, global_concurrency_limit=None,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT)
                ended = time.perf_counter()
                del self.in_flight[n]
                bins.dequeue(ended, (ended - started) * 1000)
                totals.dequeues += 1
                if not jobs:
                    totals.empty_dequeues += 1
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(wake.wait(), IDLE_WAIT_S)
                    continue
                totals.picked += len(jobs)
                for job in jobs:
                    await noop(job)
                await queries.log_jobs([(job, "successful", None) for job in jobs])
                done = time.perf_counter()
                bins.complete(done, len(jobs))
                totals.completed += len(jobs)
                totals.last_completion = done
        finally:
            await conn.remove_listener(self.channel, on_notify)


async def noop(job: Job) -> None:
    """The entrypoint: does nothing."""


async def sleep_until(at: float) -> None:
    delay = at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def produce(queries: Any, rate: float, start: float, seconds: float, bins: Bins,
                  totals: Totals) -> None:
    """Enqueue ``rate`` jobs/s in one batch per tick from ``start`` for ``seconds``. The
    schedule is absolute: a late tick sends every job due by then, so lag does not
    accumulate into a lower rate."""
    ticks = round(seconds / TICK_S)
    sent = 0
    tick = 0
    while tick < ticks:
        due_at = start + tick * TICK_S
        await sleep_until(due_at)
        now = time.perf_counter()
        totals.producer_lag_s = max(totals.producer_lag_s, now - due_at)
        tick = min(ticks, int((now - start) // TICK_S) + 1)
        jobs = round(rate * TICK_S * tick) - sent
        if jobs > 0:
            await queries.enqueue([ENTRYPOINT] * jobs, [None] * jobs, [0] * jobs)
            bins.offer(time.perf_counter(), jobs)
            sent += jobs
            totals.enqueued += jobs


@dataclass
class Sample:
    dead_tuples: int
    live_tuples: int
    autovacuums: int
    table_bytes: int
    index_bytes: dict[str, int]
    backlog: int


async def server_io(conn: Any) -> dict[str, float]:
    """soak_load.server_io over asyncpg: checkpoints begun, and WAL flush ms where timed."""
    figures: dict[str, float] = {
        "checkpoints": int(await conn.fetchval(soak_load.CHECKPOINTS_SQL))}
    if conn.get_server_version().major * 10000 >= soak_load.WAL_TIMING_SINCE:
        wal = await conn.fetchval(soak_load.WAL_FLUSH_SQL)
        if wal is not None:
            figures["wal_sync_ms"] = float(wal)
    return figures


async def sample_db(conn: Any, backlog: int) -> Sample:
    row = await conn.fetchrow(STATS_SQL)
    indexes = await conn.fetch(INDEX_SQL)
    return Sample(dead_tuples=int(row["dead"]), live_tuples=int(row["live"]),
                  autovacuums=int(row["autovacuums"]), table_bytes=int(row["table_bytes"]),
                  index_bytes={str(r["name"]): int(r["bytes"]) for r in indexes},
                  backlog=backlog)


async def sampler(conn: Any, bins: Bins, totals: Totals, plan: Plan,
                  consumers: Consumers, out: list[dict[str, Any]]) -> None:
    """At each bin's end: the database's figures and the bin's line, printed as it goes."""
    for i in range(bins.count):
        end = bins.origin + (i + 1) * bins.width
        await sleep_until(end)
        backlog = totals.enqueued - totals.picked
        s = await sample_db(conn, backlog)
        samples = bins.dequeue_ms[i]
        if not samples:
            # No dequeue call ended within the bin: the longest one still running is a
            # lower bound of what the bin's calls took.
            stuck = max((end - t for t in consumers.in_flight.values()), default=0.0) * 1000
            samples = [stuck]
            print(f"  bin {i}: no dequeue ended; counting the longest running "
                  f"({stuck:.0f} ms so far)", flush=True)
        t = (i + 1) * bins.width
        phase = plan.phase_at(t - bins.width)
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        out.append({
            "t": t, "phase": phase, "offered": bins.offered[i],
            "completed": bins.completed[i], "claim_p50_ms": p50, "claim_p99_ms": p99,
            "dead_tuples": s.dead_tuples, "table_bytes": s.table_bytes,
            "index_bytes": s.index_bytes, "backlog": s.backlog,
            **await server_io(conn),
        })
        print(f"  t={t:4.0f}s {phase:8s} offered {bins.offered[i]:6d} completed "
              f"{bins.completed[i]:6d} dequeue p50 {p50:7.2f} p99 {p99:8.2f} ms "
              f"({len(bins.dequeue_ms[i])} calls) dead {s.dead_tuples:8d} "
              f"live {s.live_tuples:6d} table {s.table_bytes / 2**20:6.1f} MiB "
              f"indexes {sum(s.index_bytes.values()) / 2**20:6.1f} MiB "
              f"backlog {s.backlog:6d} autovacuums {s.autovacuums}", flush=True)


def percentile(values: Sequence[float], q: int) -> float:
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- the run ---------------------------------------------------------------------------------


async def server_settings(conn: Any) -> dict[str, str]:
    # missing_ok: a setting this server version does not have reads as ''.
    settings = {name: str(await conn.fetchval("select current_setting($1, true)", name) or "")
                for name in REPORTED_SETTINGS}
    reloptions = await conn.fetchval(
        "select coalesce(array_to_string(reloptions, ','), '') from pg_class"
        " where oid = 'pgqueuer'::regclass")
    settings["pgqueuer_table_reloptions"] = str(reloptions) or "(none)"
    return settings


async def enqueue_backlog(queries: Any, jobs: int) -> None:
    left = jobs
    while left > 0:
        n = min(left, ENQUEUE_CHUNK)
        await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
        left -= n


async def measure_peak(setup: Any, consumers: Consumers, plan: Plan) -> float:
    """Jobs/s the consumers complete while draining a pre-made backlog for PEAK_S."""
    print(f"peak: enqueueing {plan.peak_backlog:,} jobs", flush=True)
    await enqueue_backlog(Queries(AsyncpgDriver(setup)), plan.peak_backlog)
    await setup.execute("vacuum analyze pgqueuer")
    origin = time.perf_counter()
    bins = Bins(origin=origin, width=PEAK_S, count=1)
    totals = Totals(enqueued=plan.peak_backlog)
    tasks = consumers.start(bins, totals)
    try:
        while time.perf_counter() < origin + PEAK_S and totals.completed < plan.peak_backlog:
            await asyncio.sleep(0.05)
    finally:
        consumers.stop()
        await asyncio.gather(*tasks)
    if totals.completed >= plan.peak_backlog:
        seconds = totals.last_completion - origin
        print(f"peak: the backlog ran dry after {seconds:.1f} s; raise --peak-backlog "
              "for a full window", flush=True)
        return totals.completed / seconds
    return bins.completed[0] / PEAK_S


@dataclass
class Outcome:
    report: dict[str, Any]
    """What the JSON file holds."""
    bins: Bins
    """Every dequeue time, by bin."""
    problems: list[str]
    """Where the database disagrees with what the consumers counted."""


async def run(dsn: str, plan: Plan) -> Outcome:
    setup = await asyncpg.connect(dsn)
    hold_conn = await asyncpg.connect(dsn)
    probe = await asyncpg.connect(dsn)
    conns = [await asyncpg.connect(dsn) for _ in range(plan.consumers)]
    try:
        queries = Queries(AsyncpgDriver(setup))
        await queries.install()
        settings = await server_settings(setup)
        settings.update({
            "pgqueuer": version("pgqueuer"), "asyncpg": version("asyncpg"),
            "durability": str(queries.qbe.settings.durability.value),
            "consumers": str(plan.consumers), "batch_size": str(plan.batch),
            "producer_tick_s": str(TICK_S), "bin_s": str(BIN_S), "peak_s": str(PEAK_S),
            "peak_backlog": str(plan.peak_backlog),
        })
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
        consumers = Consumers(conns=conns, batch=plan.batch,
                              channel=str(queries.qbq.settings.channel))

        peak = await measure_peak(setup, consumers, plan)
        rate = peak / 2
        print(f"peak {peak:,.0f} jobs/s; offering {rate:,.0f} jobs/s", flush=True)
        await setup.execute("truncate pgqueuer, pgqueuer_log, pgqueuer_statistics")
        await setup.execute("vacuum analyze pgqueuer")
        await setup.execute("checkpoint")

        origin = time.perf_counter() + 0.5
        bins = Bins(origin=origin, width=BIN_S, count=round(plan.total / BIN_S))
        totals = Totals()
        out_bins: list[dict[str, Any]] = []
        hold_at: list[float] = []
        print(f"phases: clean {plan.clean} s, hold {plan.hold} s, recovery "
              f"{plan.recovery} s", flush=True)

        async def hold() -> None:
            await sleep_until(origin + plan.clean)
            await hold_conn.execute("begin")
            xid = await hold_conn.fetchval("select txid_current()")
            hold_at.append(time.perf_counter() - origin)
            print(f"  hold: transaction {xid} open", flush=True)
            await sleep_until(origin + plan.clean + plan.hold)
            await hold_conn.execute("commit")
            hold_at.append(time.perf_counter() - origin)
            print("  hold: committed", flush=True)

        tasks = consumers.start(bins, totals)
        try:
            await asyncio.gather(
                produce(Queries(AsyncpgDriver(setup)), rate, origin, plan.total, bins,
                        totals),
                hold(),
                sampler(probe, bins, totals, plan, consumers, out_bins),
            )
        finally:
            consumers.stop()
            await asyncio.gather(*tasks)
        ended = time.perf_counter() - origin

        queued = int(await probe.fetchval(
            "select count(*) from pgqueuer where status = 'queued'"))
        other = int(await probe.fetchval(
            "select count(*) from pgqueuer where status <> 'queued'"))
        print(f"dequeue calls {totals.dequeues:,} ({totals.empty_dequeues:,} empty); "
              f"enqueued {totals.enqueued:,}, completed {totals.completed:,}; "
              f"producer lag at most {totals.producer_lag_s * 1000:.0f} ms", flush=True)
        problems = []
        if queued != totals.enqueued - totals.picked:
            problems.append(f"the database holds {queued} queued jobs, the consumers "
                            f"leave {totals.enqueued - totals.picked}")
        if other or totals.picked != totals.completed:
            problems.append(f"{other} jobs not queued remain; {totals.picked} picked, "
                            f"{totals.completed} completed")
        report = {
            "contestant": f"PgQueuer {version('pgqueuer')}",
            "settings": settings,
            "peak_jobs_per_s": peak,
            "offered_jobs_per_s": rate,
            "phases": {"clean": [0.0, hold_at[0]], "hold": [hold_at[0], hold_at[1]],
                       "recovery": [hold_at[1], ended]},
            "bins": out_bins,
        }
        return Outcome(report=report, bins=bins, problems=problems)
    finally:
        for conn in [setup, hold_conn, probe, *conns]:
            await conn.close()


# -- the summary -----------------------------------------------------------------------------


def summary(report: dict[str, Any], raw: Bins) -> list[str]:
    """The three figures. The clean p99 and each hold minute's p99 pool the minute's raw
    dequeue times; recovery compares each bin's own p99 with 1.5x the clean p99."""
    bins: list[dict[str, Any]] = report["bins"]
    hold = [b for b in bins if b["phase"] == "hold"]
    clean_idx = [i for i, b in enumerate(bins) if b["phase"] == "clean"]
    hold_idx = [i for i, b in enumerate(bins) if b["phase"] == "hold"]
    offered = sum(b["offered"] for b in hold)
    completed = sum(b["completed"] for b in hold)
    lines = [f"hold: completed {completed:,} of {offered:,} offered "
             f"({completed / offered:.1%})" if offered else "hold: nothing offered"]
    clean_p99 = percentile([ms for i in clean_idx for ms in raw.dequeue_ms[i]], 99)
    per_minute = round(60 / BIN_S)
    minutes = [hold_idx[k:k + per_minute] for k in range(0, len(hold_idx), per_minute)]
    p99s = [percentile([ms for i in m for ms in raw.dequeue_ms[i]] or [0.0], 99)
            for m in minutes]
    worst = max(range(len(p99s)), key=lambda k: p99s[k])
    lines.append(f"dequeue p99: clean {clean_p99:.2f} ms, worst hold minute (minute "
                 f"{worst + 1} of {len(p99s)}) {p99s[worst]:.2f} ms = "
                 f"{p99s[worst] / clean_p99:.1f}x clean")
    hold_end = report["phases"]["hold"][1]
    limit = 1.5 * clean_p99
    after = next((b for b in bins if b["phase"] == "recovery" and b["claim_p99_ms"] <= limit),
                 None)
    lines.append(f"recovery: {after['t'] - hold_end:.0f} s after the hold until the end of "
                 f"the first bin with dequeue p99 <= {limit:.2f} ms (1.5x clean)"
                 if after else f"recovery: no recovery bin has dequeue p99 <= {limit:.2f} ms")
    # The p99 can be back while the jobs held up during the hold still wait.
    lines.append(f"backlog: {hold[-1]['backlog']:,} jobs at the hold's end, "
                 f"{bins[-1]['backlog']:,} at the run's end" if hold else "backlog: no hold")
    return lines


async def amain(plan: Plan) -> int:
    with ThrowawayPostgres(settings={**DEFAULT_SETTINGS, **soak_load.cluster_settings()}) as pg:
        create_database(pg.dsn, "soak")
        outcome = await run(pg.dsn_for("soak"), plan)
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    plan.out.write_text(json.dumps(outcome.report, indent=1) + "\n", encoding="utf-8")
    print(f"\nPgQueuer {version('pgqueuer')}, {plan.consumers} consumers, batch "
          f"{plan.batch}: peak {outcome.report['peak_jobs_per_s']:,.0f} jobs/s, offered "
          f"{outcome.report['offered_jobs_per_s']:,.0f} jobs/s")
    for line in summary(outcome.report, outcome.bins):
        print(line)
    print(f"wrote {plan.out}")
    for problem in outcome.problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if outcome.problems else 0


def main() -> int:
    return asyncio.run(amain(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
