"""Soak and scale: the ways a Postgres queue breaks in production, measured on the engine.

    python bench/soak.py [--dsn DSN] [--only held-xmin|growth|backlog] [--quick]
                         [--baseline GIT_REF] [--consumers 4] [--batch 50] [--rate JOBS_S]

Three benchmarks, each on a fresh throwaway cluster (fsync on, autovacuum on at its
defaults, sized for a 24 GiB machine: bench/soak_load.py's CLUSTER_SETTINGS; pgq.jobs
keeps the autovacuum settings of its migration),
or on DATABASE_URL / --dsn. The load is this process's threads calling the engine
through ``Queue`` (bench/soak_load.py), not the Worker: K consumers looping claim(batch=B)
+ complete_many, and a producer offering a fixed rate.

- held-xmin: the consumers' peak draining a backlog, then half of it offered through a
  clean phase, a hold (a transaction with an xid stays open, so vacuum removes nothing)
  and a recovery. ``--baseline REF`` runs it again on the engine of a git ref.
- growth: half the peak for 30 minutes, pruning finished jobs every minute; do the table,
  its indexes, dead tuples and claim p99 level off?
- backlog: claim p50/p99 with 1,000 and with 1,000,000 jobs waiting, and the claim's plan.

Writes bench/results/soak/: soak.md (rebuilt from every result file there, so a run of
one benchmark keeps the others' last results), one JSON file per run and PNG plots; prints
the tables. ``--quick`` is a smoke run of a few minutes.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import soak_report
from engine import baseline_sql, fresh_database
from soak_load import (
    BIN_SECONDS,
    Counters,
    Threads,
    cluster,
    jobs_reloptions,
    measure_peak,
    produce,
    sample_bins,
    server_settings,
    start_consumers,
)
from soak_scale import backlog_markdown, growth_markdown, plot_growth, run_backlog

from pgqueue_py import Queue

OUT_DIR = Path(__file__).resolve().parent / "results" / "soak"
BENCHMARKS = ("held-xmin", "growth", "backlog")
# Full length; --quick swaps in the second value.
DEFAULTS: dict[str, tuple[float, float]] = {
    "clean": (120, 20), "hold": (600, 60), "recovery": (120, 30),
    "growth_minutes": (30, 3), "prune_age": (120, 30), "prune_every": (60, 30),
    "peak_seconds": (20, 10), "peak_backlog": (400_000, 150_000),
    "backlog_max": (1_000_000, 100_000), "backlog_seconds": (20, 10),
}
HELD_XMIN_FILES = ("held_xmin_pgqueue.json", "held_xmin_pgqueue_baseline.json",
                   "held_xmin_pgqueuer.json")


def harness_settings(args: argparse.Namespace, engine: str) -> dict[str, str]:
    return {
        "engine": engine, "consumers": str(args.consumers), "claim batch": str(args.batch),
        "producer": "enqueue_many every 100 ms", "bin": f"{BIN_SECONDS:.0f} s",
        "command": " ".join(["bench/soak.py", *sys.argv[1:]]),
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def print_settings(title: str, settings: dict[str, str]) -> None:
    print(f"\n{title}", flush=True)
    for name, value in settings.items():
        print(f"  {name} = {value}")


def peak(server_dsn: str, args: argparse.Namespace, sql_path: Path | None) -> tuple[float, str]:
    with fresh_database(server_dsn, sql_path) as dsn:
        rate, note = measure_peak(dsn, args.consumers, args.batch, args.peak_seconds,
                                  int(args.peak_backlog))
    print(f"  consumers' peak: {rate:,.0f} jobs/s ({note})", flush=True)
    return rate, note


def run_load(dsn: str, args: argparse.Namespace, rate: float, seconds: float,
             phase_of: Callable[[float], str],
             side_threads: list[Callable[[Queue, Threads, float], None]],
             extra: Callable[[], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Consumers, the producer at ``rate`` and ``side_threads``, sampled in bins."""
    threads = Threads(Counters())
    with Queue(dsn, min_connections=1, max_connections=2) as queue:
        try:
            start_consumers(queue, threads, args.consumers, args.batch)
            threads.counters.take()
            started = time.perf_counter()
            threads.spawn("producer", functools.partial(produce, queue, threads, rate, started))
            for number, side in enumerate(side_threads):
                threads.spawn(f"side-{number}", functools.partial(side, queue, threads, started))
            bins = sample_bins(dsn, threads, started, seconds, phase_of, extra)
        finally:
            threads.stop()
        threads.counters.check()
    return bins


def hold_xmin(begin: float, end: float, queue: Queue, threads: Threads,
              started: float) -> None:
    """From ``begin`` to ``end`` s after ``started``: an open transaction holding an xid."""
    if threads.stopping.wait(max(0.0, started + begin - time.perf_counter())):
        return
    with psycopg.connect(queue.dsn) as conn:
        xid = conn.execute("select txid_current()").fetchone()
        print(f"  hold: transaction {xid[0] if xid else '?'} open", flush=True)
        threads.stopping.wait(max(0.0, started + end - time.perf_counter()))
        conn.commit()
        print("  hold: committed", flush=True)


def held_xmin(server_dsn: str, args: argparse.Namespace, sql_path: Path | None,
              contestant: str, engine: str, rate: float | None,
              rate_source: str = "--rate") -> soak_report.HeldXminRun:
    clean, hold, recovery = args.clean, args.hold, args.recovery
    phases = {"clean": [0.0, clean], "hold": [clean, clean + hold],
              "recovery": [clean + hold, clean + hold + recovery]}

    def phase_of(t: float) -> str:
        return next((name for name, (t0, t1) in phases.items() if t0 <= t < t1), "recovery")

    settings = {**server_settings(server_dsn), **harness_settings(args, engine)}
    print_settings(f"held-xmin soak, {contestant}", settings)
    peak_rate, peak_note = peak(server_dsn, args, sql_path)
    offered = rate if rate is not None else peak_rate / 2
    settings.update({"peak": peak_note, "offered": f"{offered:,.0f} jobs/s" + (
        " (half the peak)" if rate is None else f" ({rate_source})"),
        "phases": f"clean {clean:.0f} s, hold {hold:.0f} s, recovery {recovery:.0f} s",
        "hold": "another connection runs begin; select txid_current(); and commits at its end",
        "backlog": "jobs enqueued and not yet claimed (the harness's counts)"})
    print(f"  offering {offered:,.0f} jobs/s for {clean + hold + recovery:.0f} s", flush=True)
    with fresh_database(server_dsn, sql_path) as dsn:
        settings["pgq.jobs reloptions"] = jobs_reloptions(dsn)
        bins = run_load(dsn, args, offered, clean + hold + recovery, phase_of,
                        [functools.partial(hold_xmin, clean, clean + hold)])
    shape_keys = soak_report.BIN_FIELDS
    return {
        "contestant": contestant, "settings": settings, "peak_jobs_per_s": peak_rate,
        "offered_jobs_per_s": offered, "phases": phases,
        "bins": [{k: v for k, v in b.items() if k in shape_keys} for b in bins],  # type: ignore[misc]
    }


def prune_every(every: float, age: float, pruned: list[int], queue: Queue, threads: Threads,
                started: float) -> None:
    """Every ``every`` s, prune finished jobs older than ``age`` s, a batch a transaction."""
    with psycopg.connect(queue.dsn, autocommit=True) as conn:
        rounds = 1
        while not threads.stopping.wait(max(0.0, started + rounds * every
                                              - time.perf_counter())):
            while done := queue.prune(datetime.timedelta(seconds=age), batch=5000, conn=conn):
                pruned[0] += done
            rounds += 1


def growth(server_dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = {**server_settings(server_dsn), **harness_settings(args, "working tree")}
    print_settings("growth soak", settings)
    peak_rate, peak_note = peak(server_dsn, args, None)
    offered = args.rate if args.rate is not None else peak_rate / 2
    seconds = args.growth_minutes * 60
    settings.update({
        "peak": peak_note, "offered": f"{offered:,.0f} jobs/s",
        "duration": f"{seconds:.0f} s",
        "prune": f"pgq.prune(older_than => {args.prune_age:.0f} s, batch => 5000) until it"
                 f" returns 0, every {args.prune_every:.0f} s"})
    print(f"  offering {offered:,.0f} jobs/s for {seconds:.0f} s", flush=True)
    pruned = [0]

    def pruned_since() -> dict[str, Any]:
        taken, pruned[0] = pruned[0], 0
        return {"pruned": taken}

    with fresh_database(server_dsn) as dsn:
        settings["pgq.jobs reloptions"] = jobs_reloptions(dsn)
        bins = run_load(dsn, args, offered, seconds, lambda t: "steady",
                        [functools.partial(prune_every, args.prune_every, args.prune_age,
                                           pruned)], pruned_since)
    return {"settings": settings, "peak_jobs_per_s": peak_rate, "offered_jobs_per_s": offered,
            "bins": bins}


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")


def held_xmin_files(out_dir: Path) -> list[Path]:
    others = sorted(p for p in out_dir.glob("held_xmin_*.json") if p.name not in HELD_XMIN_FILES)
    return [*(out_dir / name for name in HELD_XMIN_FILES), *others]


def write_report(out_dir: Path) -> str:
    """soak.md from every result file in ``out_dir``; the plots of each."""
    sections = ["# Soak and scale\n\nWritten by `make soak` (bench/soak.py) from the result"
                " files beside it; each section says when and how its run was made. The"
                " machine is shared and its speed drifts: compare within a section."]
    runs = soak_report.load_runs(held_xmin_files(out_dir))
    plots: list[Path] = []
    if runs:
        plots += soak_report.plot_held_xmin(runs, out_dir)
    sections.append("## Held-xmin soak\n\n" + soak_report.held_xmin_markdown(runs)
                    + "".join(f"\n![{p.stem}]({p.name})\n" for p in plots))
    growth_file = out_dir / "growth_pgqueue.json"
    if growth_file.is_file():
        data = json.loads(growth_file.read_text())
        plot = plot_growth(data, out_dir)
        sections.append("## Growth soak\n\n" + growth_markdown(data)
                        + f"\n![growth]({plot.name})\n")
    backlog_file = out_dir / "backlog_pgqueue.json"
    if backlog_file.is_file():
        sections.append("## Million-job backlog\n\n"
                        + backlog_markdown(json.loads(backlog_file.read_text())))
    text = "\n\n".join(sections)
    (out_dir / "soak.md").write_text(text)
    return text


def resolve(args: argparse.Namespace) -> None:
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--only", choices=BENCHMARKS, action="append",
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: clean 20 s, hold 60 s, recovery 30 s, growth 3 min,"
                             " backlog 100k")
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="also run the held-xmin soak on the engine (sql/) of this ref")
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rate", type=float, help="jobs/s to offer (default: half the peak)")
    for name in DEFAULTS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=float)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    resolve(args)
    chosen = args.only or list(BENCHMARKS)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    if "held-xmin" in chosen:
        with cluster(args.dsn) as server_dsn:
            run = held_xmin(server_dsn, args, None, "pgqueue", "working tree", args.rate)
        write_json(out_dir / HELD_XMIN_FILES[0], run)
        baseline_file = out_dir / HELD_XMIN_FILES[1]
        baseline_file.unlink(missing_ok=True)  # a before/after only from one run
        if args.baseline:
            # The same offered rate, so that the two runs differ only in the engine.
            with baseline_sql(args.baseline) as sql_path, cluster(args.dsn) as server_dsn:
                before = held_xmin(server_dsn, args, sql_path, f"pgqueue ({args.baseline})",
                                   f"sql/ of git {args.baseline}", run["offered_jobs_per_s"],
                                   "the rate of the working tree's run")
            write_json(baseline_file, before)
    if "growth" in chosen:
        with cluster(args.dsn) as server_dsn:
            write_json(out_dir / "growth_pgqueue.json", growth(server_dsn, args))
    if "backlog" in chosen:
        with cluster(args.dsn) as server_dsn:
            settings = {**server_settings(server_dsn), **harness_settings(args, "working tree")}
            print_settings("backlog", settings)
            sizes = [1000, int(args.backlog_max)]
            write_json(out_dir / "backlog_pgqueue.json",
                       run_backlog(server_dsn, args.consumers, args.batch, sizes,
                                   args.backlog_seconds, settings))
    print()
    print(write_report(out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
