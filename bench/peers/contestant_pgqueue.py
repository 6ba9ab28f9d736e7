"""pgqueue in the peers benchmark: ``Queue.add_many``, ``Worker`` drains, idle latency.

    python bench/peers/contestant_pgqueue.py --dsn DSN --out FILE [--handlers sync|async]

``--handlers async`` registers ``async def`` no-op handlers instead of plain functions;
a worker that does not await them fails the scenario, and the error is reported.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from importlib.metadata import version
from typing import Any, TypedDict

import psycopg
from peer_common import (
    Args,
    DrainClock,
    LatencyClock,
    Report,
    drain_result,
    error_text,
    failed,
    latency_samples,
    parse_args,
    wait_drained,
)

from pgqueue_py import Handler, JobContext, JobType, Queue, Worker
from pgqueue_py.migrate import migrate

UNFINISHED = "select count(*) from pgq.jobs where state in ('available', 'running')"


class NoPayload(TypedDict):
    pass


noop = JobType("noop", NoPayload, queue="bench")


def drain_handler(clock: DrainClock, kind: str) -> Handler[NoPayload]:
    if kind == "async":

        async def run_async(ctx: JobContext, payload: NoPayload) -> None:
            clock.started()
            clock.finished()

        return run_async

    def run(ctx: JobContext, payload: NoPayload) -> None:
        clock.started()
        clock.finished()

    return run


def latency_handler(clock: LatencyClock, kind: str) -> Handler[NoPayload]:
    if kind == "async":

        async def run_async(ctx: JobContext, payload: NoPayload) -> None:
            clock.mark()

        return run_async

    def run(ctx: JobContext, payload: NoPayload) -> None:
        clock.mark()

    return run


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("truncate pgq.jobs cascade")


def vacuum(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("vacuum analyze pgq.jobs")


def make_worker(queue: Queue, handler: Handler[NoPayload], concurrency: int | None) -> Worker:
    if concurrency is None:
        return Worker(queue, {noop: handler})  # every option at its default
    return Worker(queue, {noop: handler}, concurrency=concurrency)


def drain(args: Args, queue: Queue, kind: str, concurrency: int | None) -> dict[str, Any]:
    setting = "Worker() defaults" if concurrency is None else f"concurrency={concurrency}"
    x = concurrency if concurrency is not None else 8
    try:
        reset(args.dsn)
        queue.add_many(noop, [{} for _ in range(args.jobs)])
        vacuum(args.dsn)
        clock = DrainClock(args.jobs)
        worker = make_worker(queue, drain_handler(clock, kind), concurrency)
        thread = threading.Thread(target=worker.run, name="bench-worker")
        thread.start()
        try:
            wait_drained(clock, args.dsn, UNFINISHED, args.drain_timeout)
            result = drain_result(clock, setting, x, default=concurrency is None)
        finally:
            worker.stop()
            thread.join()
        return result
    except Exception as exc:
        return failed(setting, x, exc, default=concurrency is None)


def latency(args: Args, queue: Queue, kind: str) -> dict[str, Any]:
    try:
        reset(args.dsn)
        clock = LatencyClock()
        worker = make_worker(queue, latency_handler(clock, kind), None)
        thread = threading.Thread(target=worker.run, name="bench-worker")
        thread.start()
        try:
            samples = latency_samples(clock, lambda: queue.add(noop, {}), args.latency_samples)
        finally:
            worker.stop()
            thread.join()
        return {"setting": "Worker() defaults", "samples_ms": samples}
    except Exception as exc:
        return {"setting": "Worker() defaults", "error": error_text(exc)}


def main() -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--handlers", choices=["sync", "async"], default="sync")
    extra.add_argument("--sweep", default="32,100,256,512,1024")
    known, rest = extra.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = parse_args(__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.WARNING)
    kind: str = known.handlers
    name = "pgqueue" if kind == "sync" else "pgqueue async"
    report = Report(contestant=name, version=version("pgqueue"), jobs=args.jobs)
    report.notes.append(f"{kind} no-op handlers; Queue(dsn) with its default pool")
    migrate(args.dsn)
    with Queue(args.dsn) as queue:
        vacuum(args.dsn)
        if args.only_latency:
            report.skip_throughput("Queue.add_many", "Worker() defaults")
        else:
            report.timed_enqueue(lambda: queue.add_many(noop, [{} for _ in range(args.jobs)]),
                                 "Queue.add_many")
            report.drains.append(drain(args, queue, kind, None))
            for concurrency in (int(c) for c in known.sweep.split(",")):
                report.drains.append(drain(args, queue, kind, concurrency))
        report.latency = latency(args, queue, kind)
    report.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
