"""What every contestant script shares: its command line, the drain and latency clocks,
and the JSON it writes. Standard library and psycopg only, so that it type-checks without
the peers' packages installed.

A contestant script runs, in one process and one fresh database, the same scenarios:

- ``enqueue``: one bulk call that enqueues ``--jobs`` no-op jobs, timed around the call;
- ``drain`` once per setting: ``--jobs`` jobs are enqueued (untimed) while no worker runs,
  then a worker starts; the drain lasts from the first handler's start to the moment the
  database shows every job finished (polled only once the last handler has returned);
- ``latency``: an idle, listening worker; one job at a time is enqueued, spaced; each
  sample lasts from just before the enqueue call (which commits) to the handler's start.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

LATENCY_WARMUP = 5
"""Samples taken and thrown away before the measured ones (connections, prepared plans)."""
LATENCY_SPACING = 0.030
"""Seconds the worker is left idle after each sample's handler started."""
LATENCY_TIMEOUT = 10.0
"""Seconds one sample may wait for its handler (beyond the peers' 5 s fallback polls);
past it the scenario fails."""


@dataclass(frozen=True)
class Args:
    dsn: str
    jobs: int
    latency_samples: int
    drain_timeout: float
    out: Path
    only_latency: bool = False
    """Run the idle latency scenario alone (``--only latency``): no bulk enqueue, no drains."""


def parse_args(description: str) -> Args:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dsn", required=True, help="a fresh, empty database")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--drain-timeout", type=float, default=180.0,
                        help="seconds one drain may take before it counts as failed")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--only", choices=["latency"], default=None,
                        help="run one scenario alone: the others are reported as not run")
    ns = parser.parse_args()
    return Args(dsn=ns.dsn, jobs=ns.jobs, latency_samples=ns.latency_samples,
                drain_timeout=ns.drain_timeout, out=ns.out,
                only_latency=ns.only == "latency")


def error_text(exc: BaseException) -> str:
    """One line for the table: the exception's type and message."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


class DrainClock:
    """Handlers call ``started()`` first and ``finished()`` last; thread-safe enough for
    threads and for an event loop (``itertools.count`` steps atomically under the GIL)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.first_start: float | None = None
        self.last_return = 0.0
        self._starts = itertools.count(1)
        self._returns = itertools.count(1)
        self.begun = 0
        self.returned = 0
        self.all_returned = threading.Event()

    def started(self) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()
        self.begun = next(self._starts)

    def finished(self) -> None:
        n = next(self._returns)
        self.returned = max(self.returned, n)
        if n >= self.jobs:
            self.last_return = time.perf_counter()
            self.all_returned.set()


def unfinished(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0


def wait_drained(clock: DrainClock, dsn: str, unfinished_sql: str, timeout: float) -> None:
    """Block until every handler returned and the database shows no unfinished job.

    While handlers run, the database is asked only once a second (to notice a worker that
    marks jobs finished without running their handlers); after the last handler returned,
    every 2 ms, so the end is the moment the outcomes are committed.
    """
    deadline = time.perf_counter() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:

        def left() -> int:
            row = conn.execute(unfinished_sql).fetchone()
            return int(row[0]) if row else 0

        while not clock.all_returned.wait(1.0):
            if time.perf_counter() > deadline:
                raise TimeoutError(
                    f"not drained within {timeout:.0f} s: {clock.returned} of {clock.jobs} "
                    f"handlers returned, {left()} jobs unfinished in the database"
                )
            if left() == 0 and not clock.all_returned.wait(1.0):
                raise RuntimeError(
                    f"the database shows all {clock.jobs} jobs finished, but only "
                    f"{clock.begun} handlers began: the worker marked jobs done "
                    "without running the handler's body"
                )
        while left() > 0:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"outcomes not committed within {timeout:.0f} s")
            time.sleep(0.002)


def drain_result(clock: DrainClock, setting: str, x: int, *, default: bool) -> dict[str, Any]:
    """The drain's figures once ``wait_drained`` returned."""
    end = time.perf_counter()
    if clock.first_start is None:
        raise RuntimeError("no handler started")
    seconds = end - clock.first_start
    return {
        "setting": setting,
        "x": x,
        "default": default,
        "jobs": clock.jobs,
        "seconds": seconds,
        "jobs_per_s": clock.jobs / seconds,
        "handler_span_s": clock.last_return - clock.first_start,
    }


def failed(setting: str, x: int, exc: BaseException, *, default: bool) -> dict[str, Any]:
    traceback.print_exception(exc, file=sys.stderr)
    return {"setting": setting, "x": x, "default": default, "error": error_text(exc)}


class LatencyClock:
    """The handler calls ``mark()``; the producer waits for it after each enqueue."""

    def __init__(self) -> None:
        self.marked_at = 0.0
        self.event = threading.Event()

    def mark(self) -> None:
        self.marked_at = time.perf_counter()
        self.event.set()


def latency_samples(clock: LatencyClock, enqueue_one: Callable[[], object],
                    samples: int) -> list[float]:
    """Milliseconds from before each ``enqueue_one()`` to its handler's start (threads)."""
    out: list[float] = []
    for i in range(LATENCY_WARMUP + samples):
        clock.event.clear()
        sent = time.perf_counter()
        enqueue_one()
        if not clock.event.wait(LATENCY_TIMEOUT):
            raise TimeoutError(f"sample {i + 1}: the handler did not start within "
                               f"{LATENCY_TIMEOUT:.0f} s of the enqueue")
        if i >= LATENCY_WARMUP:
            out.append((clock.marked_at - sent) * 1000)
        time.sleep(LATENCY_SPACING)
    return out


async def latency_samples_async(clock: LatencyClock,
                                enqueue_one: Callable[[], Awaitable[object]],
                                samples: int) -> list[float]:
    """``latency_samples`` for a worker on this event loop: the handler stamps its start
    itself, so waiting for the stamp in a thread costs the sample nothing."""
    out: list[float] = []
    for i in range(LATENCY_WARMUP + samples):
        clock.event.clear()
        sent = time.perf_counter()
        await enqueue_one()
        if not await asyncio.to_thread(clock.event.wait, LATENCY_TIMEOUT):
            raise TimeoutError(f"sample {i + 1}: the handler did not start within "
                               f"{LATENCY_TIMEOUT:.0f} s of the enqueue")
        if i >= LATENCY_WARMUP:
            out.append((clock.marked_at - sent) * 1000)
        await asyncio.sleep(LATENCY_SPACING)
    return out


NOT_RUN = "not run (--only latency)"


@dataclass
class Report:
    """What a contestant script writes: one JSON object."""

    contestant: str
    version: str
    jobs: int
    enqueue: dict[str, Any] = field(default_factory=dict)
    drains: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def timed_enqueue(self, call: Callable[[], object], what: str) -> None:
        try:
            started = time.perf_counter()
            call()
            seconds = time.perf_counter() - started
            self.enqueue = {"call": what, "seconds": seconds,
                            "jobs_per_s": self.jobs / seconds}
        except Exception as exc:
            traceback.print_exception(exc, file=sys.stderr)
            self.enqueue = {"call": what, "error": error_text(exc)}

    def skip_throughput(self, enqueue_call: str, default_setting: str) -> None:
        """``--only latency``: the bulk enqueue and drain cells say they were not run."""
        self.enqueue = {"call": enqueue_call, "error": NOT_RUN}
        self.drains = [{"setting": default_setting, "x": 0, "default": True, "error": NOT_RUN}]

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=1), encoding="utf-8")
