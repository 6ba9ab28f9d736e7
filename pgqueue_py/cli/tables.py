"""What the CLI and the demo print: aligned tables, one-line errors, ages, JSON rows."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

import click

from pgqueue_py.client.rows import AttemptError, DeadJob, JobDetails, QueueStats, Schedule


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Aligned columns; numbers to the right."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(headers))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        aligned = zip(row, widths, numeric, strict=True)
        parts = [c.rjust(w) if n else c.ljust(w) for c, w, n in aligned]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def stats_table(rows: Sequence[QueueStats]) -> str:
    headers = ("queue", "available", "scheduled", "running", "succeeded", "dead",
               "cancelled", "oldest", "paused")  # fmt: skip
    return table(headers, [
        (r.queue, r.available, r.scheduled, r.running, r.succeeded, r.dead, r.cancelled,
         age(r.oldest_runnable_age), "yes" if r.paused else "")
        for r in rows
    ])  # fmt: skip


def schedules_table(rows: Sequence[Schedule]) -> str:
    headers = ("schedule", "cron", "timezone", "job_name", "queue", "next_run_at",
               "last_run_at", "last_job")  # fmt: skip
    return table(headers, [
        (r.schedule_name, r.cron, r.timezone, r.job_name, r.queue, r.next_run_at,
         r.last_run_at, f"{r.last_job_id} ({r.last_job_state})" if r.last_job_id else "")
        for r in rows
    ])  # fmt: skip


def dead_table(rows: Sequence[DeadJob]) -> str:
    headers = ("id", "queue", "job_name", "attempt", "died_at", "last_error")
    return table(headers, [
        (r.id, r.queue, r.job_name, r.attempt, r.died_at, one_line(r.last_error))
        for r in rows
    ])  # fmt: skip


def attempt_text(error: AttemptError) -> str:
    head = f"attempt {error.attempt} failed at {_cell(error.failed_at)}"
    if error.worker_id:
        head += f" on {error.worker_id}"
    body = "\n".join("    " + line for line in error.error.rstrip().splitlines())
    return f"{head}:\n{body}"


def job_text(job: JobDetails) -> str:
    fields = [
        ("id", job.id), ("job_name", job.job_name), ("queue", job.queue),
        ("state", job.state), ("attempt", f"{job.attempt} of {job.max_retries + 1}"),
        ("priority", job.priority), ("payload", json.dumps(job.payload, sort_keys=True)),
        ("run_at", job.run_at), ("created_at", job.created_at),
        ("started_at", job.started_at), ("finished_at", job.finished_at),
        ("worker_id", job.worker_id), ("lease_expires_at", job.lease_expires_at),
        ("idempotency_key", job.idempotency_key), ("last_error", one_line(job.last_error)),
    ]  # fmt: skip
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name.ljust(width)}  {_cell(value)}".rstrip() for name, value in fields)


def one_line(text: str | None, width: int = 100) -> str:
    """The first line of ``text``, cut to ``width``."""
    first = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
    return first if len(first) <= width else first[: width - 3] + "..."


def age(value: timedelta | None) -> str:
    """A short age: 42s, 3m07s, 2h05m, 4d03h."""
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def echo_json(value: object) -> None:
    """A dataclass row, or a list of them, as indented JSON."""
    rows = value if isinstance(value, list) else [value]
    data = [dataclasses.asdict(row) for row in rows
            if dataclasses.is_dataclass(row) and not isinstance(row, type)]  # fmt: skip
    click.echo(
        json.dumps(data if isinstance(value, list) else data[0], indent=2, default=_jsonable)
    )
