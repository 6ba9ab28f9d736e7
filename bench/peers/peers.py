"""Peers benchmark: pgqueue beside PgQueuer and Procrastinate, on one server, one run.

    make bench-peers                      # 20k jobs, three rounds
    make bench-peers ARGS=--quick         # or BENCH_PEERS_QUICK=1: 2k jobs, one round
    bench/peers/.venv/bin/python bench/peers/peers.py [--rounds N] [--jobs N] ...

Starts a throwaway PostgreSQL cluster with durable settings (printed with the results).
Each round runs every contestant once, in that order, each in a process of its own
against a fresh database (the contestant_*.py scripts: their docstrings and
peer_common.py say what they measure), then the baselines: pgbench running
``pgq.claim`` + ``pgq.complete_many`` at batch 100, pgbench one-row insert commits
(the floor of two commits is twice one commit's latency), and, spaced as the idle
samples are, each in a pass of its own, the wake-up floor (a one-row insert that sends a
NOTIFY, timed until a listening psycopg connection has it), the hand-over beside it
(``pgq.enqueue``, timed until that connection, waiting in ``pgq.claim_and_wait``, has the
job handed over) and the same hand-over enqueued by ``Queue.add``. Every cell reports
the median over the rounds and their range. Writes results/peers.md (the table it
prints), results/peers.json (every raw number) and two PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import psycopg
from peer_common import LATENCY_SPACING, LATENCY_WARMUP
from peer_plots import plot_latency_cdf, plot_throughput

from pgqueue_py import JobType, Queue
from pgqueue_py.migrate import migrate
from pgqueue_py.testing import create_database, drop_database, libpq_env, unique_name
from pgqueue_py.testing.throwaway import DEFAULT_SETTINGS, ThrowawayPostgres

if TYPE_CHECKING:
    from typing_extensions import LiteralString

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PGBENCH_DIR = REPO / "bench" / "pgbench"
RESULTS = HERE / "results"


class NoPayload(TypedDict):
    pass


FLOOR_JOB = JobType("noop", NoPayload, queue="floor")
"""The job the ``Queue.add`` floor enqueues: the hand-over floor's job, through the client."""

SERVER_SETTINGS = {
    **DEFAULT_SETTINGS,
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "autovacuum": "on",
}
X = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"
CONTESTANT_TIMEOUT = 900.0
"""Seconds one contestant's whole run may take before it is killed and reported."""


@dataclass(frozen=True)
class Contestant:
    name: str
    script: str
    extra: tuple[str, ...] = ()
    source: Path | None = None
    """A checkout of pgqueue whose package and SQL this contestant runs (PYTHONPATH)."""


@dataclass(frozen=True)
class Plan:
    rounds: int
    jobs: int
    latency_samples: int
    procrastinate_drain_jobs: int
    floor_seconds: int
    quick: bool
    only_latency: bool = False
    baseline: str | None = None
    """The checkout the baseline contestant runs (a str, so that the plan dumps as JSON)."""


BASELINE = "pgqueue baseline"


def contestants(plan: Plan) -> list[Contestant]:
    baseline = ([Contestant(BASELINE, "contestant_pgqueue.py", source=Path(plan.baseline))]
                if plan.baseline is not None else [])
    return [
        Contestant("pgqueue", "contestant_pgqueue.py"),
        *baseline,
        Contestant("pgqueue async", "contestant_pgqueue.py", ("--handlers", "async")),
        Contestant("PgQueuer", "contestant_pgqueuer.py"),
        Contestant("Procrastinate", "contestant_procrastinate.py",
                   ("--drain-jobs", str(plan.procrastinate_drain_jobs))),
    ]


# -- running ---------------------------------------------------------------------------------


@contextmanager
def fresh_database(pg: ThrowawayPostgres) -> Iterator[str]:
    name = unique_name("peers")
    create_database(pg.dsn, name)
    try:
        yield pg.dsn_for(name)  # a URL: asyncpg takes no key=value DSN
    finally:
        drop_database(pg.dsn, name)


def run_contestant(pg: ThrowawayPostgres, who: Contestant, plan: Plan,
                   logs: Path, round_no: int) -> dict[str, Any]:
    """One contestant's scenarios in a process of its own; its JSON report, or a report
    whose every cell carries the process's failure."""
    log = logs / f"round{round_no}-{who.name.replace(' ', '_')}.log"
    out = logs / f"round{round_no}-{who.name.replace(' ', '_')}.json"
    with fresh_database(pg) as dsn, log.open("w", encoding="utf-8") as log_file:
        argv = [sys.executable, str(HERE / who.script), *who.extra, "--dsn", dsn,
                "--jobs", str(plan.jobs), "--latency-samples", str(plan.latency_samples),
                "--out", str(out), *(["--only", "latency"] if plan.only_latency else [])]
        env = dict(os.environ)
        if who.source is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(who.source), *filter(None, [env.get("PYTHONPATH")])])
        try:
            proc = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                  stdout=log_file, stderr=subprocess.STDOUT,
                                  timeout=CONTESTANT_TIMEOUT, check=False)
            problem = None if proc.returncode == 0 else f"exited with code {proc.returncode}"
        except subprocess.TimeoutExpired:
            problem = f"killed after {CONTESTANT_TIMEOUT:.0f} s"
    if problem is None and out.is_file():
        report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return report
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
    error = f"the {who.name} process {problem or 'wrote no report'}: {' '.join(tail)}"
    print(f"  {error} (log: {log})", file=sys.stderr)
    return {"contestant": who.name, "version": "?", "jobs": plan.jobs,
            "enqueue": {"error": error}, "drains": [{"setting": "any", "x": 0,
                                                     "default": True, "error": error}],
            "latency": {"error": error}, "notes": []}


def cpu_ticks() -> tuple[int, int] | None:
    """All CPU time so far and the part a virtual machine's host took (steal), in ticks;
    None where ``/proc/stat`` has no steal column."""
    try:
        fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()
    except OSError:
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(f) for f in fields[1:]]
    return sum(ticks[:8]), ticks[7]  # guest time is already counted in user time


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The host's share of the CPU time between two readings, in percent."""
    if before is None or after is None or after[0] == before[0]:
        return None
    return 100 * (after[1] - before[1]) / (after[0] - before[0])


def pgbench(dsn: str, script: Path, *args: str) -> str:
    argv = ["pgbench", "-n", "-f", str(script), *args]
    out = subprocess.run(argv, env={**os.environ, **libpq_env(dsn)}, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0 or "error" in out.stderr.lower():
        raise RuntimeError(f"pgbench {script.name} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def claim_complete_baseline(pg: ThrowawayPostgres, jobs: int) -> dict[str, Any]:
    """pgq.claim + pgq.complete_many at batch 100, 2 clients, over ``jobs`` jobs."""
    clients, batch = 2, 100
    transactions = max(1, jobs // (clients * batch))
    with fresh_database(pg) as dsn:
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "select pgq.enqueue_many(array_fill('bench_job'::text, array[%(n)s]),"
                " array_fill('{}'::jsonb, array[%(n)s]),"
                " array_fill('bench'::text, array[%(n)s]))",
                {"n": clients * transactions * batch},
            )
            conn.execute("vacuum analyze pgq.jobs")
        text = pgbench(dsn, PGBENCH_DIR / "pgq_claim_complete.pgbench", "-c", str(clients),
                       "-j", str(clients), "-t", str(transactions), "-D", f"batch={batch}")
    tps = float(_match(r"tps = ([0-9.]+)", text))
    return {"clients": clients, "batch": batch, "jobs": clients * transactions * batch,
            "jobs_per_s": tps * batch}


def commit_floor(pg: ThrowawayPostgres, seconds: int) -> dict[str, Any]:
    """One client's one-row insert commits under pgbench; the floor is two of them.

    Back to back (the floor), and also spaced as the idle-latency samples are
    (``pgbench -R``, one commit per LATENCY_SPACING on average): the median time a commit
    takes on a server, and a client, that had nothing to do before it."""
    with fresh_database(pg) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create table floor_rows (id bigserial primary key, n int not null)")
        text = pgbench(dsn, HERE / "floor_insert.pgbench", "-c", "1", "-j", "1",
                       "-T", str(seconds))
        with tempfile.TemporaryDirectory() as logs:
            pgbench(dsn, HERE / "floor_insert.pgbench", "-c", "1", "-j", "1",
                    "-T", str(max(seconds, 6)), "-R", f"{1 / LATENCY_SPACING:.1f}",
                    "-l", "--log-prefix", str(Path(logs) / "floor"))
            spaced_ms = spaced_commit_ms(Path(logs))
    commit_ms = float(_match(r"latency average = ([0-9.]+) ms", text))
    return {"commit_ms": commit_ms, "floor_ms": 2 * commit_ms,
            "spaced_commit_ms": spaced_ms, "spaced_floor_ms": 2 * spaced_ms}


def wake_floors(pg: ThrowawayPostgres, samples: int) -> dict[str, Any]:
    """The wake-up floor, and the hand-over and ``Queue.add`` beside it, each in a pass of
    its own, spaced as the idle samples are; each the median time from before the
    producer's call to the notification's arrival at one listening psycopg connection.
    (Not sample by sample in turn: a sample after another statement's, rather than after
    its own, finds the server's and the client's caches colder, and takes longer, as a
    contestant's idle samples do not.)

    - The wake-up floor: a one-row insert commit that sends a NOTIFY in the same
      statement. An idle worker that a NOTIFY wakes cannot start a job sooner; one that
      claims then adds a round trip and a second commit.
    - The hand-over: ``pgq.enqueue`` of a due job while that connection waits in
      ``pgq.claim_and_wait``, until it has the job handed over, leased. Its ratio to the
      wake-up floor is what the engine's hand-over adds to a bare NOTIFY; its absolute
      figure is this listener's, not a worker's (a worker's idle p50 can be lower).
    - ``Queue.add``: the same hand-over, enqueued through the Python client (its pool,
      parameters and decoding) instead of a bare statement; its ratio to the hand-over is
      the client's share of a producer's call.
    - ``pgq.enqueue`` alone: the producer's round trip of a due job on a queue that no
      worker waits on. Not a notification's arrival: the call's own time, with no hand-over
      in it, which an idle sample of any worker of this engine pays before its job is due.
    - The table's insert: the same job inserted into ``pgq.jobs`` by a bare statement (no
      function, no checks, no wake-up), the round trip likewise; what is left of
      ``pgq.enqueue`` alone is the engine's function.
    """
    arrived: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
    with fresh_database(pg) as dsn, \
            psycopg.connect(dsn, autocommit=True) as listener, \
            psycopg.connect(dsn, autocommit=True) as producer:
        migrate(dsn)
        producer.execute("create table wake_rows (id bigserial primary key, n int not null)")
        listener.execute("listen wake_floor")
        wake_key, channel = listener.execute(
            "select wake_key, channel from pgq.listen_for_handoffs()").fetchone() or (0, "")
        listener.execute("select from pgq.claim_and_wait('bench-floor', array['floor'], 1,"
                         " '1 hour', %s, %s, 10000)", (wake_key, channel))

        def listen() -> None:
            for note in listener.notifies():
                arrived.put((note.channel, time.perf_counter()))
                if note.payload == "stop":
                    break

        def sample(enqueue: Callable[[], object], expect: str) -> float:
            sent = time.perf_counter()
            enqueue()
            try:
                channel_seen, received = arrived.get(timeout=10)
            except queue.Empty:
                raise RuntimeError(f"no notification on {expect} within 10 s") from None
            if channel_seen != expect:
                raise RuntimeError(f"a notification on {channel_seen} where {expect} was due")
            time.sleep(LATENCY_SPACING)
            return (received - sent) * 1000

        thread = threading.Thread(target=listen, name="floor-listener", daemon=True)
        thread.start()
        def insert_and_notify() -> object:
            return producer.execute("with added as (insert into wake_rows (n) values (1))"
                                    " select pg_notify('wake_floor', 'job')")

        def enqueue_by_sql() -> object:
            return producer.execute("select pgq.enqueue('noop', '{}', 'floor')")

        def passes(name: str, enqueue: Callable[[], object], expect: str) -> list[float]:
            try:
                return [sample(enqueue, expect)
                        for _ in range(LATENCY_WARMUP + samples)][LATENCY_WARMUP:]
            except RuntimeError as exc:
                raise RuntimeError(f"{name}: {exc}") from None

        def round_trip(statement: LiteralString) -> float:
            sent = time.perf_counter()
            producer.execute(statement)
            took = (time.perf_counter() - sent) * 1000
            time.sleep(LATENCY_SPACING)
            return took

        def round_trips(statement: LiteralString) -> list[float]:
            return [round_trip(statement)
                    for _ in range(LATENCY_WARMUP + samples)][LATENCY_WARMUP:]

        wake = passes("wake-up floor", insert_and_notify, "wake_floor")
        alone = round_trips("select pgq.enqueue('noop', '{}', 'nobody-waits')")
        inserted = round_trips(
            "insert into pgq.jobs (id, queue, job_name, payload, run_at, max_retries)"
            " values (nextval('pgq.jobs_id_seq'), 'nobody-waits', 'noop', '{}', now(), 3)")
        handoff = passes("hand-over", enqueue_by_sql, channel)
        with Queue(dsn) as client:
            added = passes("Queue.add hand-over", lambda: client.add(FLOOR_JOB, {}), channel)
        producer.execute("select pg_notify('wake_floor', 'stop')")
        thread.join(10)
    return {"wake_ms": statistics.median(wake), "handoff_ms": statistics.median(handoff),
            "add_ms": statistics.median(added), "enqueue_alone_ms": statistics.median(alone),
            "table_insert_ms": statistics.median(inserted), "samples": len(wake)}


def spaced_commit_ms(logs: Path) -> float:
    """The median commit in pgbench's per-transaction logs of a ``-R`` run: each line's
    time less its schedule lag (``client tx time script epoch us lag``, microseconds)."""
    took = [(int(f[2]) - int(f[6])) / 1000
            for path in logs.iterdir() for f in (line.split() for line in path.open())
            if len(f) >= 7]
    if not took:
        raise RuntimeError(f"pgbench -R -l wrote no transactions in {logs}")
    return statistics.median(took)


def _match(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"no {pattern!r} in pgbench output:\n{text}")
    return found.group(1)


def baselines(pg: ThrowawayPostgres, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        if plan.only_latency:
            out["claim_complete"] = {"error": "not run (--only latency)"}
        else:
            out["claim_complete"] = claim_complete_baseline(pg, max(plan.jobs, 10_000))
    except Exception as exc:
        out["claim_complete"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        out["floor"] = commit_floor(pg, plan.floor_seconds)
    except Exception as exc:
        out["floor"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        out["wake"] = wake_floors(pg, plan.latency_samples)
    except Exception as exc:
        out["wake"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# -- summarising -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Cell:
    """One figure over the rounds: the values that came out, and the errors."""

    values: list[float]
    errors: list[str]
    label: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def show(self, fmt: str, unit: str = "") -> str:
        med = self.median
        failed = (f"error: {self.errors[0]}" if self.errors else "")
        if med is None:
            return failed.replace("|", "/") or "n/a"
        text = f"{med:{fmt}}{unit}"
        if len(self.values) > 1:
            text += f" ({min(self.values):{fmt}}{DASH}{max(self.values):{fmt}})"
        if self.errors:
            text += f"; {len(self.errors)} round(s) failed: {failed}"
        return text.replace("|", "/")


def cell(items: list[dict[str, Any]], key: str, label: str = "") -> Cell:
    return Cell([float(i[key]) for i in items if "error" not in i],
                [str(i["error"]) for i in items if "error" in i], label)


def summarise(rounds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Medians and ranges per contestant and scenario, as plain data (for JSON too)."""
    summary: dict[str, Any] = {}
    for name in names:
        reports = [r["contestants"][name] for r in rounds]
        settings: dict[str, list[dict[str, Any]]] = {}
        defaults = ""
        for report in reports:
            for drain in report["drains"]:
                settings.setdefault(drain["setting"], []).append(drain)
                if drain.get("default"):
                    defaults = drain["setting"]
        sweep = {s: cell(d, "jobs_per_s") for s, d in settings.items()}
        xs = {s: int(d[0]["x"]) for s, d in settings.items()}
        jobs = {s: int(next((i["jobs"] for i in d if "jobs" in i), 0))
                for s, d in settings.items()}
        ok = {s: c for s, c in sweep.items() if c.median is not None}
        best = max(ok, key=lambda s: ok[s].median or 0.0) if ok else defaults
        latency: dict[str, Cell] = {}
        samples: list[float] = []
        for q in (50, 95, 99):
            per_round = []
            for report in reports:
                lat = report["latency"]
                if "error" in lat:
                    per_round.append({"error": lat["error"]})
                elif lat.get("samples_ms"):
                    per_round.append({"v": percentile(lat["samples_ms"], q)})
            latency[f"p{q}"] = cell(per_round, "v")
        for report in reports:
            samples.extend(report["latency"].get("samples_ms", []))
        summary[name] = {
            "version": reports[0].get("version", "?"),
            "notes": reports[0].get("notes", []),
            "enqueue": cell([r["enqueue"] for r in reports], "jobs_per_s",
                            str(reports[0]["enqueue"].get("call", ""))),
            "defaults": defaults,
            "best": best,
            "sweep": sweep,
            "x": xs,
            "drain_jobs": jobs,
            "latency": latency,
            "latency_samples": samples,
        }
    return summary


def baseline_cells(rounds: list[dict[str, Any]]
                   ) -> tuple[Cell, Cell, Cell, Cell, Cell, Cell, Cell, Cell]:
    """pgbench claim + complete_many, the floor of two commits, the spaced floor, the
    wake-up floor, the hand-over and ``Queue.add`` beside it, ``pgq.enqueue`` alone and
    the table's bare insert (each absent from rounds run before it was measured)."""
    floors = [r["baselines"]["floor"] for r in rounds]
    wakes = [r["baselines"]["wake"] for r in rounds if "wake" in r["baselines"]]
    return (cell([r["baselines"]["claim_complete"] for r in rounds], "jobs_per_s"),
            cell(floors, "floor_ms"),
            cell([f for f in floors if "error" in f or "spaced_floor_ms" in f],
                 "spaced_floor_ms"),
            cell(wakes, "wake_ms"),
            cell([w for w in wakes if "error" in w or "handoff_ms" in w], "handoff_ms"),
            cell([w for w in wakes if "error" in w or "add_ms" in w], "add_ms"),
            cell([w for w in wakes if "error" in w or "enqueue_alone_ms" in w],
                 "enqueue_alone_ms"),
            cell([w for w in wakes if "error" in w or "table_insert_ms" in w],
                 "table_insert_ms"))


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a (a side has no figure)"
    return f"{a / b:.2f}{X}"


def render(summary: dict[str, Any], rounds: list[dict[str, Any]], plan: Plan,
           server: str, names: list[str]) -> str:
    (claim_complete, floor, spaced_floor, wake, handoff, added, alone,
     table_insert) = baseline_cells(rounds)
    lines = [
        "# Peers benchmark",
        "",
        f"{plan.jobs:,} no-op jobs, {plan.rounds} round(s) interleaved, median (range) over "
        f"the rounds{'; QUICK smoke run: do not quote' if plan.quick else ''}.",
        f"Server: {server}; settings: "
        + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items()) + ".",
        f"Machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}. Each contestant runs in its own process, "
        "sharing the cores with the server.",
        "Versions: " + ", ".join(f"{n} {summary[n]['version']}" for n in names
                                 if n not in ("pgqueue async", BASELINE)) + ".",
        "",
        "| scenario | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def row(title: str, cells: list[str]) -> None:
        lines.append(f"| {title} | " + " | ".join(cells) + " |")

    def drain_cell(name: str, setting: str) -> str:
        s = summary[name]
        c: Cell | None = s["sweep"].get(setting)
        if c is None:
            return "n/a"
        jobs = s["drain_jobs"].get(setting, 0)
        note = f" [{setting}" + (f", {jobs:,} jobs" if jobs and jobs != plan.jobs else "")
        return c.show(",.0f") + note + "]"

    row("drain at defaults, jobs/s", [drain_cell(n, summary[n]["defaults"]) for n in names])
    row("drain at best setting, jobs/s", [drain_cell(n, summary[n]["best"]) for n in names])
    row("bulk enqueue, one call, jobs/s",
        [summary[n]["enqueue"].show(",.0f") + f" [{summary[n]['enqueue'].label}]"
         for n in names])
    for q in ("p50", "p95", "p99"):
        row(f"idle enqueue-to-start {q}, ms",
            [summary[n]["latency"][q].show(".1f") for n in names])
    lines += [
        "",
        "Baselines on the same server, same rounds:",
        "",
        "| baseline | value |",
        "|---|---|",
        f"| pgbench `pgq.claim` + `pgq.complete_many`, batch 100, 2 clients, jobs/s | "
        f"{claim_complete.show(',.0f')} |",
        f"| floor of two commits (2 {X} one-row insert commit, pgbench, 1 client), ms | "
        f"{floor.show('.2f')} |",
        f"| the same, spaced as the idle samples are (pgbench -R {1 / LATENCY_SPACING:.0f}/s,"
        f" median commit), ms | {spaced_floor.show('.2f')} |",
        "| wake-up floor: a one-row insert commit sending a NOTIFY, until a listening psycopg"
        f" connection has it, spaced the same, median, ms | {wake.show('.2f')} |",
        "| hand-over beside it: `pgq.enqueue` of a due job, until the same listener, waiting"
        " in `pgq.claim_and_wait`, has it handed over, spaced the same, median, ms |"
        f" {handoff.show('.2f')} |",
        "| `Queue.add` beside it: the same hand-over, enqueued through the Python client,"
        f" spaced the same, median, ms | {added.show('.2f')} |",
        "| `pgq.enqueue` alone: the producer's round trip of a due job on a queue no worker"
        f" waits on, spaced the same, median, ms | {alone.show('.2f')} |",
        "| the table's insert beside it: the same job inserted into `pgq.jobs` by a bare"
        f" statement, no function, spaced the same, median, ms | {table_insert.show('.2f')} |",
        f"| pgqueue idle p50 beside it, ms | {summary['pgqueue']['latency']['p50'].show('.1f')}"
        " |",
        "",
    ]

    def med_drain(name: str, which: str) -> float | None:
        if name not in summary:
            return None
        c: Cell | None = summary[name]["sweep"].get(summary[name][which])
        return c.median if c is not None else None

    def med_lat(name: str, q: str) -> float | None:
        return summary[name]["latency"][q].median if name in summary else None

    pgq = "pgqueue"
    ratios = [
        ("drain at defaults, pgqueue ÷ PgQueuer", ratio(med_drain(pgq, "defaults"),
                                                       med_drain("PgQueuer", "defaults")),
         f"≥ 2{X}"),
        ("drain at best setting, pgqueue ÷ PgQueuer", ratio(med_drain(pgq, "best"),
                                                           med_drain("PgQueuer", "best")),
         f"≥ 1.5{X}"),
        ("drain at best setting, pgqueue async ÷ PgQueuer",
         ratio(med_drain("pgqueue async", "best"), med_drain("PgQueuer", "best")), f"≥ 1.5{X}"),
        ("drain at defaults, pgqueue ÷ Procrastinate",
         ratio(med_drain(pgq, "defaults"), med_drain("Procrastinate", "defaults")), ""),
        ("drain at best setting, pgqueue ÷ Procrastinate",
         ratio(med_drain(pgq, "best"), med_drain("Procrastinate", "best")), ""),
        ("drain, pgqueue best ÷ pgbench claim + complete_many",
         ratio(med_drain(pgq, "best"), claim_complete.median), f"≥ 0.50{X}"),
        ("drain, pgqueue async best ÷ pgbench claim + complete_many",
         ratio(med_drain("pgqueue async", "best"), claim_complete.median), f"≥ 0.50{X}"),
        ("drain at defaults, async ÷ sync handlers",
         ratio(med_drain("pgqueue async", "defaults"), med_drain(pgq, "defaults")), f"≥ 1{X}"),
        ("drain at best setting, async ÷ sync handlers",
         ratio(med_drain("pgqueue async", "best"), med_drain(pgq, "best")), f"≥ 1{X}"),
        ("bulk enqueue, pgqueue ÷ PgQueuer",
         ratio(summary[pgq]["enqueue"].median, summary["PgQueuer"]["enqueue"].median), ""),
        ("bulk enqueue, pgqueue ÷ Procrastinate",
         ratio(summary[pgq]["enqueue"].median, summary["Procrastinate"]["enqueue"].median),
         ""),
        ("idle p50, pgqueue ÷ PgQueuer", ratio(med_lat(pgq, "p50"), med_lat("PgQueuer", "p50")),
         f"≤ 0.5{X}"),
        ("idle p99, pgqueue ÷ PgQueuer", ratio(med_lat(pgq, "p99"), med_lat("PgQueuer", "p99")),
         ""),
        ("idle p50, pgqueue ÷ Procrastinate",
         ratio(med_lat(pgq, "p50"), med_lat("Procrastinate", "p50")), ""),
        ("idle p50, pgqueue ÷ floor of two commits", ratio(med_lat(pgq, "p50"), floor.median),
         f"≤ 3{X}"),
        ("idle p50, pgqueue ÷ floor of two spaced commits",
         ratio(med_lat(pgq, "p50"), spaced_floor.median), ""),
        ("idle p50, PgQueuer ÷ floor of two spaced commits",
         ratio(med_lat("PgQueuer", "p50"), spaced_floor.median), ""),
        ("idle p50, pgqueue ÷ wake-up floor", ratio(med_lat(pgq, "p50"), wake.median), ""),
        ("idle p50, PgQueuer ÷ wake-up floor",
         ratio(med_lat("PgQueuer", "p50"), wake.median), ""),
        ("hand-over ÷ wake-up floor, the same listener", ratio(handoff.median, wake.median),
         ""),
        ("`Queue.add` ÷ `pgq.enqueue`, the same hand-over", ratio(added.median, handoff.median),
         ""),
        ("idle p50, pgqueue ÷ `Queue.add`'s hand-over", ratio(med_lat(pgq, "p50"), added.median),
         ""),
        ("wake-up floor ÷ PgQueuer idle p50", ratio(wake.median, med_lat("PgQueuer", "p50")),
         ""),
        ("`pgq.enqueue` alone ÷ PgQueuer idle p50",
         ratio(alone.median, med_lat("PgQueuer", "p50")), ""),
        ("`pgq.enqueue` alone ÷ the table's bare insert", ratio(alone.median,
                                                              table_insert.median), ""),
        (f"3 {X} floor of two commits ÷ wake-up floor",
         ratio(3 * floor.median if floor.median is not None else None, wake.median), ""),
    ]
    if BASELINE in summary:
        ratios += [
            ("idle p50, pgqueue ÷ pgqueue baseline",
             ratio(med_lat(pgq, "p50"), med_lat(BASELINE, "p50")), ""),
            ("idle p50, pgqueue baseline ÷ PgQueuer",
             ratio(med_lat(BASELINE, "p50"), med_lat("PgQueuer", "p50")), f"≤ 0.5{X}"),
            ("idle p50, pgqueue baseline ÷ floor of two commits",
             ratio(med_lat(BASELINE, "p50"), floor.median), f"≤ 3{X}"),
        ]
    lines += steal_lines(rounds)
    lines += ["Ratios of the medians:", "", "| ratio | value | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in ratios]
    lines += ["", "Every drain setting (jobs/s):", "",
              "| contestant | setting | jobs/s |", "|---|---|---|"]
    for name in names:
        for setting in summary[name]["sweep"]:
            lines.append(f"| {name} | {setting} | {drain_cell(name, setting)} |")
    lines += [
        "",
        "How it is measured: each contestant's process gets a fresh database. Bulk enqueue "
        "times one call that enqueues all the jobs. Each drain enqueues its jobs first, with "
        "no worker running, then starts a worker; it lasts from the first handler's start "
        "to the moment the database shows every job finished. Idle latency: a listening, "
        "idle worker at its defaults; one job is enqueued at a time, "
        "30 ms apart, and each sample runs from just before the enqueue call (which "
        "commits) to the handler's first line; the first 5 samples are not counted. "
        f"Procrastinate fetches one job per transaction, so its drains run "
        f"{plan.procrastinate_drain_jobs:,} jobs to stay within the time bound.",
        "",
        "Notes: " + "; ".join(f"{n}: {', '.join(summary[n]['notes'])}" for n in names) + ".",
        "",
        *([] if plan.only_latency else ["![throughput by setting](throughput.png)", ""]),
        "![idle latency CDF](latency_cdf.png)",
        "",
    ]
    return "\n".join(lines)


def steal_lines(rounds: list[dict[str, Any]]) -> list[str]:
    """The host's share of this machine's CPU time while each part ran, round by round: a
    virtual machine whose host takes much of it runs slower and less evenly, so a round
    with a high share says why its figures stray."""
    parts = list(rounds[0].get("steal_percent", {})) if rounds else []
    if not parts or all(r["steal_percent"].get(p) is None for r in rounds for p in parts):
        return []

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    return ["CPU time the virtual machine's host took (steal), percent, round by round:", "",
            "| part | " + " | ".join(f"round {r['round']}" for r in rounds) + " |",
            "|---|" + "---|" * len(rounds),
            *(f"| {p} | " + " | ".join(shown(r["steal_percent"].get(p)) for r in rounds)
              + " |" for p in parts),
            ""]


def plain(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with its Cells as dicts, for JSON."""

    def conv(v: Any) -> Any:
        if isinstance(v, Cell):
            return {"median": v.median, "values": v.values, "errors": v.errors}
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {name: conv({k: v for k, v in s.items() if k != "latency_samples"})
            for name, s in summary.items()}


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("BENCH_PEERS_QUICK", "") not in ("", "0"),
                        help="a smoke run: 2,000 jobs, one round, 50 latency samples")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--latency-samples", type=int)
    parser.add_argument("--procrastinate-drain-jobs", type=int)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=["latency"], default=None,
                        help="the idle latency scenario alone, with the floor of two commits")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of another pgqueue revision, run as one more "
                             f"contestant ({BASELINE!r}) beside this tree's")
    args = parser.parse_args()
    quick: bool = args.quick
    plan = Plan(
        rounds=args.rounds or (1 if quick else 3),
        jobs=args.jobs or (2_000 if quick else 20_000),
        latency_samples=args.latency_samples or (50 if quick else 200),
        procrastinate_drain_jobs=args.procrastinate_drain_jobs or (200 if quick else 500),
        floor_seconds=2 if quick else 5,
        quick=quick,
        only_latency=args.only == "latency",
        baseline=str(args.baseline.resolve()) if args.baseline is not None else None,
    )
    who = contestants(plan)
    names = [c.name for c in who]
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    rounds: list[dict[str, Any]] = []
    with ThrowawayPostgres(settings=SERVER_SETTINGS) as pg, \
            tempfile.TemporaryDirectory(prefix="pgq-peers-") as tmp:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            row = conn.execute("show server_version").fetchone()
            server = f"PostgreSQL {row[0] if row else '?'}"
        print(f"{server}, {plan.jobs:,} jobs, {plan.rounds} round(s)", flush=True)
        for n in range(1, plan.rounds + 1):
            this: dict[str, Any] = {"round": n, "contestants": {}, "steal_percent": {}}
            for c in who:
                t0, ticks = time.monotonic(), cpu_ticks()
                this["contestants"][c.name] = run_contestant(pg, c, plan, Path(tmp), n)
                this["steal_percent"][c.name] = steal_share(ticks, cpu_ticks())
                print(f"round {n}/{plan.rounds}: {c.name} done in "
                      f"{time.monotonic() - t0:.0f} s", flush=True)
            t0, ticks = time.monotonic(), cpu_ticks()
            this["baselines"] = baselines(pg, plan)
            this["steal_percent"]["baselines"] = steal_share(ticks, cpu_ticks())
            print(f"round {n}/{plan.rounds}: baselines done in {time.monotonic() - t0:.0f} s",
                  flush=True)
            rounds.append(this)
    summary = summarise(rounds, names)
    table = render(summary, rounds, plan, server, names)
    print()
    print(table)
    (out_dir / "peers.md").write_text(table, encoding="utf-8")
    raw = {"plan": plan.__dict__, "server": server, "settings": SERVER_SETTINGS,
           "versions": {"pgqueuer": version("pgqueuer"),
                        "procrastinate": version("procrastinate"),
                        "pgqueue": version("pgqueue")},
           "rounds": rounds, "summary": plain(summary),
           "seconds": time.monotonic() - began}
    (out_dir / "peers.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    if not plan.only_latency:
        plot_throughput(out_dir / "throughput.png", {
            n: [(s, summary[n]["x"][s], summary[n]["sweep"][s].values,
                 s == summary[n]["defaults"])
                for s in summary[n]["sweep"]] for n in names})
    floor = baseline_cells(rounds)[1].median
    plot_latency_cdf(out_dir / "latency_cdf.png",
                     {n: summary[n]["latency_samples"] for n in names}, floor)
    print(f"\nwrote {out_dir}/peers.md, peers.json, throughput.png, latency_cdf.png "
          f"in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
