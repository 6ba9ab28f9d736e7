"""Procrastinate in the peers benchmark: batch defer, worker drains, idle latency.

    python bench/peers/contestant_procrastinate.py --dsn DSN --out FILE

Runs only in the peers' own venv, where procrastinate is installed.
"""

# procrastinate lives in the peers' venv, not in the project's: its import carries
# an ignore that holds whether the package is installed or not, so that `make lint`
# passes from either venv.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from importlib.metadata import version
from typing import Any

import psycopg
from peer_common import (
    Args,
    DrainClock,
    LatencyClock,
    Report,
    drain_result,
    error_text,
    failed,
    latency_samples_async,
    parse_args,
    wait_drained,
)
from procrastinate import App, PsycopgConnector  # type: ignore[import-not-found,unused-ignore]

UNFINISHED = "select count(*) from procrastinate_jobs where status in ('todo', 'doing')"
QUEUE = "bench"
DEFAULT_CONCURRENCY = 1
"""Procrastinate's own default (``procrastinate.worker.WORKER_CONCURRENCY``)."""


class Bench:
    """One App and its no-op task; the task reports to whichever clock is current."""

    def __init__(self, dsn: str) -> None:
        self.app = App(connector=PsycopgConnector(conninfo=dsn))
        self.drain_clock: DrainClock | None = None
        self.latency_clock: LatencyClock | None = None

        async def noop() -> None:
            if self.drain_clock is not None:
                self.drain_clock.started()
                self.drain_clock.finished()
            elif self.latency_clock is not None:
                self.latency_clock.mark()

        self.noop = self.app.task(name="noop", queue=QUEUE)(noop)

    async def enqueue_backlog(self, jobs: int) -> None:
        await self.noop.batch_defer_async(*({} for _ in range(jobs)))


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("truncate procrastinate_jobs cascade")


def vacuum(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("vacuum analyze procrastinate_jobs")


async def stop(task: asyncio.Task[None]) -> None:
    """Cancelling run_worker_async stops the worker gracefully (it waits for its jobs)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def drain(args: Args, bench: Bench, concurrency: int | None,
                jobs: int) -> dict[str, Any]:
    default = concurrency is None
    setting = "run_worker_async() defaults" if default else f"concurrency={concurrency}"
    x = concurrency or DEFAULT_CONCURRENCY
    try:
        await asyncio.to_thread(reset, args.dsn)
        await bench.enqueue_backlog(jobs)
        await asyncio.to_thread(vacuum, args.dsn)
        clock = DrainClock(jobs)
        bench.drain_clock = clock
        options: dict[str, Any] = {"queues": [QUEUE], "install_signal_handlers": False}
        if concurrency is not None:
            options["concurrency"] = concurrency
        task = asyncio.create_task(bench.app.run_worker_async(**options))
        try:
            await asyncio.to_thread(wait_drained, clock, args.dsn, UNFINISHED,
                                    args.drain_timeout)
            result = drain_result(clock, setting, x, default=default)
        finally:
            await stop(task)
            bench.drain_clock = None
        return result
    except Exception as exc:
        return failed(setting, x, exc, default=default)


async def latency(args: Args, bench: Bench) -> dict[str, Any]:
    setting = "run_worker_async() defaults"
    try:
        await asyncio.to_thread(reset, args.dsn)
        clock = LatencyClock()
        bench.latency_clock = clock
        task = asyncio.create_task(
            bench.app.run_worker_async(queues=[QUEUE], install_signal_handlers=False)
        )
        try:
            await asyncio.sleep(0.5)  # let it subscribe before the first job

            async def one() -> object:
                return await bench.noop.defer_async()

            samples = await latency_samples_async(clock, one, args.latency_samples)
        finally:
            await stop(task)
            bench.latency_clock = None
        return {"setting": setting, "samples_ms": samples}
    except Exception as exc:
        return {"setting": setting, "error": error_text(exc)}


async def throughput(args: Args, bench: Bench, sweep: list[int], drain_jobs: int,
                     report: Report) -> None:
    started = asyncio.get_running_loop().time()
    try:
        await bench.enqueue_backlog(args.jobs)
        seconds = asyncio.get_running_loop().time() - started
        report.enqueue = {"call": "Task.batch_defer_async", "seconds": seconds,
                          "jobs_per_s": args.jobs / seconds}
    except Exception as exc:
        report.enqueue = {"call": "Task.batch_defer_async", "error": error_text(exc)}
    report.drains.append(await drain(args, bench, None, drain_jobs))
    for concurrency in sweep:
        report.drains.append(await drain(args, bench, concurrency, drain_jobs))


async def amain(args: Args, sweep: list[int], drain_jobs: int) -> Report:
    report = Report(contestant="Procrastinate", version=version("procrastinate"),
                    jobs=args.jobs)
    report.notes.append("async def no-op task; PsycopgConnector with its default pool")
    bench = Bench(args.dsn)
    async with bench.app.open_async():
        await bench.app.schema_manager.apply_schema_async()
        await asyncio.to_thread(vacuum, args.dsn)
        if args.only_latency:
            report.skip_throughput("Task.batch_defer_async", "run_worker_async() defaults")
        else:
            await throughput(args, bench, sweep, drain_jobs, report)
        report.latency = await latency(args, bench)
    return report


def main() -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--sweep", default="10,50")
    extra.add_argument("--drain-jobs", type=int, default=None,
                       help="jobs per drain (default --jobs): it fetches one job a "
                            "transaction, so a 20k drain at its defaults takes minutes")
    known, rest = extra.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = parse_args(__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.WARNING)
    sweep = [int(c) for c in known.sweep.split(",")]
    report = asyncio.run(amain(args, sweep, known.drain_jobs or args.jobs))
    report.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
