"""Job types and handlers for the subprocess worker tests.

Handlers talk to the test through files in a folder named by the payload: they leave
``started-<job>-<attempt>`` when they start, wait for ``go-<job>`` when told to block,
and append ``<job id>`` lines to ``ledger`` inside ``ctx.run_once``, so that a line
written twice would show an effect that ran twice.
"""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from typing import Any, TypedDict

from pgqueue_py import Handler, JobType
from pgqueue_py.worker import JobContext


class Gated(TypedDict):
    dir: str
    block_attempts: list[int]
    """Attempts that wait for the go file before their effect (others go on at once)."""
    effect: bool
    """Whether the handler appends to the ledger (in run_once) after the wait."""


class Work(TypedDict):
    dir: str
    work_ms: int


gated = JobType("gated", Gated)
work = JobType("work", Work)


def append_line(folder: str, line: str) -> None:
    # One short write to a file opened for appending lands whole, whoever else appends.
    with open(Path(folder) / "ledger", "a", encoding="utf-8") as ledger:
        ledger.write(line + "\n")


def handle_gated(ctx: JobContext, payload: Gated) -> None:
    folder = Path(payload["dir"])
    (folder / f"started-{ctx.job_id}-{ctx.attempt}").touch()
    if ctx.attempt in payload["block_attempts"]:
        go = folder / f"go-{ctx.job_id}"
        pause = threading.Event()
        while not go.exists():
            pause.wait(0.02)
    if payload["effect"]:
        ctx.run_once("ledger", lambda: append_line(payload["dir"], str(ctx.job_id)))
    (folder / f"finished-{ctx.job_id}-{ctx.attempt}").touch()


def handle_work(ctx: JobContext, payload: Work) -> None:
    pause = threading.Event()
    pause.wait(random.uniform(0, payload["work_ms"]) / 1000)

    def effect() -> int:
        # Some time inside the effect, so that kills land between its begin and finish.
        pause.wait(random.uniform(0, payload["work_ms"]) / 1000)
        append_line(payload["dir"], str(ctx.job_id))
        return ctx.attempt

    ctx.run_once("ledger", effect)
    pause.wait(random.uniform(0, payload["work_ms"]) / 1000)


async def handle_gated_async(ctx: JobContext, payload: Gated) -> None:
    """``handle_gated`` as an ``async def``: the same files, waits on the event loop."""
    folder = Path(payload["dir"])
    (folder / f"started-{ctx.job_id}-{ctx.attempt}").touch()
    if ctx.attempt in payload["block_attempts"]:
        go = folder / f"go-{ctx.job_id}"
        while not go.exists():
            await asyncio.sleep(0.02)
    if payload["effect"]:
        await ctx.run_once_async("ledger", lambda: append_line(payload["dir"], str(ctx.job_id)))
    (folder / f"finished-{ctx.job_id}-{ctx.attempt}").touch()


async def handle_work_async(ctx: JobContext, payload: Work) -> None:
    """``handle_work`` as an ``async def``."""
    await asyncio.sleep(random.uniform(0, payload["work_ms"]) / 1000)

    async def effect() -> int:
        await asyncio.sleep(random.uniform(0, payload["work_ms"]) / 1000)
        append_line(payload["dir"], str(ctx.job_id))
        return ctx.attempt

    await ctx.run_once_async("ledger", effect)
    await asyncio.sleep(random.uniform(0, payload["work_ms"]) / 1000)


handlers: dict[JobType[Any], Handler[Any]] = {
    gated: handle_gated,
    work: handle_work,
}

async_handlers: dict[JobType[Any], Handler[Any]] = {
    gated: handle_gated_async,
    work: handle_work_async,
}
