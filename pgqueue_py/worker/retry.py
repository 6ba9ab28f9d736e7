"""Riding out a database that went away: capped exponential backoff with jitter, and the
retry of idempotent calls until the worker halts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

log = logging.getLogger("pgqueue_py.worker")

T = TypeVar("T")

_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 5.0


class Backoff:
    """Exponential backoff, capped, with equal jitter: delays in [d/2, d]."""

    def __init__(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** min(self.failures, 20))
        self.failures += 1
        return delay / 2 + random.uniform(0, delay / 2)


class Retrier:
    """Makes an idempotent call again while the database is away, until the worker halts."""

    def __init__(self, worker_id: str, halt: asyncio.Event) -> None:
        self._worker_id = worker_id
        self._halt = halt

    async def retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        backoff = Backoff()
        while True:
            try:
                return await call()
            except psycopg.OperationalError as exc:
                if self._halt.is_set():
                    raise
                await self.wait(exc, backoff, what)

    async def wait(self, exc: BaseException, backoff: Backoff, what: str) -> None:
        """Log a lost connection and sleep before the next try (less if the worker halts)."""
        delay = backoff.next_delay()
        level = logging.WARNING if backoff.failures <= 1 else logging.INFO
        log.log(level, "worker %s: %s: database unavailable (%s); retrying in %.2fs",
                self._worker_id, what, one_line(exc), delay)  # fmt: skip
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._halt.wait(), delay)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
