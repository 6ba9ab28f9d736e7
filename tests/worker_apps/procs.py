"""Worker processes for the tests: start one, wait for what it logs, read the database."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

TESTS_DIR = Path(__file__).resolve().parent.parent
APPS = {"sync": "worker_apps.apps:handlers", "async": "worker_apps.apps:async_handlers"}
"""The same job types, handled by plain functions or by ``async def`` ones."""


class WorkerProcess:
    """A worker running ``worker_apps.run`` in a subprocess, logging to a file."""

    def __init__(self, dsn: str, log_path: Path, *options: str, app: str = APPS["sync"]) -> None:
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        )}  # fmt: skip
        self._log = open(log_path, "ab")  # noqa: SIM115  # closed in wait()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker_apps.run", app, "--dsn", dsn, *options],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        wait_for(lambda: text in self.log(), timeout, f"{text!r} in the worker's log",
                 detail=self.log)  # fmt: skip

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} did not exit within {timeout}s; log:\n{self.log()}"
            ) from None
        finally:
            if self.proc.returncode is not None:
                self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    detail: Callable[[], str] | None = None,
) -> None:
    """Block until ``predicate()`` holds; the short pause only paces the checks."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        pause.wait(0.02)


def jobs(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return (
            conn.cursor(row_factory=dict_row)
            .execute("select id, state, attempt, worker_id, last_error from pgq.jobs order by id")
            .fetchall()
        )


def job_errors(dsn: str, job_id: int) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return conn.cursor(row_factory=dict_row).execute(
            "select attempt, error, worker_id from pgq.job_errors where job_id = %s"
            " order by attempt", (job_id,),
        ).fetchall()  # fmt: skip


def all_terminal(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select count(*) from pgq.jobs where state not in ('succeeded', 'dead', 'cancelled')"
        ).fetchone()
    return row is not None and row[0] == 0


def ledger(folder: Path) -> list[int]:
    path = folder / "ledger"
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().splitlines()]
