"""How ``pgqueue worker`` logs: plain text lines, or one JSON object per line.

A JSON line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, then the
fields a record carries of :data:`JOB_FIELDS` (the worker logs with
``extra={"job_id": ..., "queue": ...}``) and ``worker_id``, which
:class:`WorkerIdFilter` adds to every record of the process's worker; ``exception``
holds a traceback when the record has one.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO, Literal

LogFormat = Literal["text", "json"]

JOB_FIELDS = ("job_id", "queue", "job_name", "attempt", "worker_id")
"""Record attributes copied into each JSON line when the record has them."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in JOB_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra value JSON cannot hold (a UUID, a datetime) as text.
        return json.dumps(line, ensure_ascii=False, default=str)


class WorkerIdFilter(logging.Filter):
    """Adds ``worker_id`` to every record that has none: the id of the worker this
    process runs, so that each line says whose it is."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "worker_id", None) is None:
            record.worker_id = self.worker_id
        return True


@contextmanager
def logging_to(
    level: str, log_format: LogFormat, *, stream: IO[str] | None = None
) -> Iterator[logging.Handler | None]:
    """While in the block, send the root logger's records at ``level`` and above to
    ``stream`` (stderr) in ``log_format``. Yields the handler, to which the caller adds
    a :class:`WorkerIdFilter` once the worker has its id; the handler and the former
    level are put back on exit.

    In text format, a root logger that already has handlers (the application configured
    logging when its module was imported) is left alone, as ``logging.basicConfig``
    would, and the block yields None. JSON was asked for explicitly: it is always added."""
    root = logging.getLogger()
    if log_format == "text" and root.handlers:
        yield None
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    former_level = root.level
    root.addHandler(handler)
    root.setLevel(level.upper())
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(former_level)
        handler.flush()
