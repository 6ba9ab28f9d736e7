"""PgQueuer (with asyncpg) in the peers benchmark: batch enqueue, QueueManager drains,
idle latency.

    python bench/peers/contestant_pgqueuer.py --dsn DSN --out FILE

Runs only in the peers' own venv, where pgqueuer and asyncpg are installed.
"""

# pgqueuer and asyncpg live in the peers' venv, not in the project's: their imports carry
# an ignore that holds whether the packages are installed or not, so that `make lint`
# passes from either venv.

from __future__ import annotations

import asyncio
import logging
import sys
from importlib.metadata import version
from typing import Any

import asyncpg  # type: ignore[import-not-found,import-untyped,unused-ignore]
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
from pgqueuer.db import AsyncpgDriver  # type: ignore[import-not-found,unused-ignore]
from pgqueuer.models import Job  # type: ignore[import-not-found,unused-ignore]
from pgqueuer.qm import QueueManager  # type: ignore[import-not-found,unused-ignore]
from pgqueuer.queries import Queries  # type: ignore[import-not-found,unused-ignore]

# Finished jobs leave the queue table (their statuses go to pgqueuer_log).
UNFINISHED = "select count(*) from pgqueuer"
ENTRYPOINT = "noop"

# (batch_size, max_concurrent_tasks) beside the defaults run (batch 10, no cap on
# concurrent tasks); the cap must be at least twice the batch.
SWEEP: list[tuple[int, int | None]] = [(100, None), (100, 200), (500, None), (1000, None)]


async def enqueue_backlog(queries: Queries, jobs: int) -> None:
    await queries.enqueue([ENTRYPOINT] * jobs, [None] * jobs, [0] * jobs)


async def reset(conn: Any) -> None:
    await conn.execute("truncate pgqueuer, pgqueuer_log")
    await conn.execute("vacuum analyze pgqueuer")


async def drain(args: Args, setup: Any, batch: int | None,
                cap: int | None) -> dict[str, Any]:
    default = batch is None
    setting = ("QueueManager.run() defaults" if default
               else f"batch_size={batch}" + (f", max_concurrent_tasks={cap}" if cap else ""))
    x = cap if cap is not None else (batch or 10)
    try:
        await reset(setup)
        await enqueue_backlog(Queries(AsyncpgDriver(setup)), args.jobs)
        await setup.execute("vacuum analyze pgqueuer")
        clock = DrainClock(args.jobs)
        conn = await asyncpg.connect(args.dsn)
        try:
            qm = QueueManager(Queries(AsyncpgDriver(conn)))

            async def noop(job: Job) -> None:
                clock.started()
                clock.finished()

            qm.entrypoint(ENTRYPOINT)(noop)

            if batch is None:
                task = asyncio.create_task(qm.run())
            else:
                task = asyncio.create_task(qm.run(batch_size=batch,
                                                  max_concurrent_tasks=cap))
            try:
                await asyncio.to_thread(wait_drained, clock, args.dsn, UNFINISHED,
                                        args.drain_timeout)
                result = drain_result(clock, setting, x, default=default)
            finally:
                qm.shutdown.set()
                await task
        finally:
            await conn.close()
        return result
    except Exception as exc:
        return failed(setting, x, exc, default=default)


async def latency(args: Args, setup: Any) -> dict[str, Any]:
    setting = "QueueManager.run() defaults"
    try:
        await reset(setup)
        producer = Queries(AsyncpgDriver(setup))
        clock = LatencyClock()
        conn = await asyncpg.connect(args.dsn)
        try:
            qm = QueueManager(Queries(AsyncpgDriver(conn)))

            async def noop(job: Job) -> None:
                clock.mark()

            qm.entrypoint(ENTRYPOINT)(noop)

            task = asyncio.create_task(qm.run())
            try:
                await asyncio.sleep(0.5)  # let it subscribe before the first job

                async def one() -> object:
                    return await producer.enqueue(ENTRYPOINT, None)

                samples = await latency_samples_async(clock, one, args.latency_samples)
            finally:
                qm.shutdown.set()
                await task
        finally:
            await conn.close()
        return {"setting": setting, "samples_ms": samples}
    except Exception as exc:
        return {"setting": setting, "error": error_text(exc)}


async def throughput(args: Args, setup: Any, queries: Queries, report: Report) -> None:
    started = asyncio.get_running_loop().time()
    try:
        await enqueue_backlog(queries, args.jobs)
        seconds = asyncio.get_running_loop().time() - started
        report.enqueue = {"call": "Queries.enqueue(lists)", "seconds": seconds,
                          "jobs_per_s": args.jobs / seconds}
    except Exception as exc:
        report.enqueue = {"call": "Queries.enqueue(lists)", "error": error_text(exc)}
    report.drains.append(await drain(args, setup, None, None))
    for batch, cap in SWEEP:
        report.drains.append(await drain(args, setup, batch, cap))


async def amain(args: Args) -> Report:
    report = Report(contestant="PgQueuer", version=version("pgqueuer"), jobs=args.jobs)
    report.notes.append(f"asyncpg {version('asyncpg')}; async def no-op entrypoint; "
                        "QueueManager on one asyncpg connection, producer on another")
    setup = await asyncpg.connect(args.dsn)
    try:
        await Queries(AsyncpgDriver(setup)).install()
        await setup.execute("vacuum analyze pgqueuer")
        queries = Queries(AsyncpgDriver(setup))
        if args.only_latency:
            report.skip_throughput("Queries.enqueue(lists)", "QueueManager.run() defaults")
        else:
            await throughput(args, setup, queries, report)
        report.latency = await latency(args, setup)
    finally:
        await setup.close()
    return report


def main() -> int:
    args = parse_args(__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.WARNING)
    report = asyncio.run(amain(args))
    report.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
