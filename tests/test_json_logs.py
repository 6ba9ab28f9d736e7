"""``pgqueue worker --log-format json``: one JSON object per line on stderr, with the job's
fields where a record has them and the worker's id on every line."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from helpers import job_row
from worker_apps.procs import wait_for

from pgqueue_py.cli.logs import JsonFormatter, WorkerIdFilter, logging_to

FLAKY_APP = """
from typing import Any, TypedDict

from pgqueue_py import JobContext, JobType


class Flaky(TypedDict):
    pass


flaky = JobType("flaky", Flaky, queue="json-logs")


def run_flaky(ctx: JobContext, payload: Flaky) -> None:
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails\\nwith a second line")


def handlers() -> dict[Any, Any]:
    return {flaky: run_flaky}
"""


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Every line as a JSON object; fails on the first line that is not one."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"stderr line {number} is not JSON: {line!r}") from exc
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_worker_json_logs_are_one_object_per_line_with_the_job_and_worker_fields(
    dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "flaky_app.py").write_text(textwrap.dedent(FLAKY_APP))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    added = subprocess.run(
        [sys.executable, "-m", "pgqueue_py", "enqueue", "flaky", "--queue", "json-logs",
         "--dsn", dsn],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    job_id = int(added.stdout)
    stderr_path, stdout_path = tmp_path / "stderr", tmp_path / "stdout"
    with stderr_path.open("wb") as err, stdout_path.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pgqueue_py", "worker", "flaky_app:handlers", "--dsn", dsn,
             "--worker-id", "json-worker", "--log-format", "json", "--concurrency", "2"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )  # fmt: skip
    try:
        wait_for(lambda: job_row(dsn, job_id)["state"] == "succeeded", 30,
                 "the flaky job to succeed on its second attempt",
                 detail=stderr_path.read_text)  # fmt: skip
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    assert code == 0, stderr_path.read_text()
    assert stdout_path.read_text() == ""
    records = parse_lines(stderr_path.read_text())
    assert records, "the worker logged nothing"
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert datetime.fromisoformat(record["time"].replace("Z", "+00:00")).utcoffset() is not None
        assert record["level"] in {"debug", "info", "warning", "error", "critical"}
        assert record["worker_id"] == "json-worker", record
    messages = [r["message"] for r in records]
    assert any("json-worker started" in m for m in messages), messages
    assert any("json-worker stopped" in m for m in messages), messages
    failures = [r for r in records if r["level"] == "warning" and "failed" in r["message"]]
    assert len(failures) == 1, records
    failure = failures[0]
    assert failure["job_id"] == job_id
    assert failure["queue"] == "json-logs"
    assert failure["logger"].startswith("pgqueue_py.worker")
    assert "first attempt fails\nwith a second line" in failure["message"]
    assert failure["job_name"] == "flaky"
    assert failure["attempt"] == 1


def test_json_formatter_copies_every_job_field_and_keeps_a_traceback_on_one_line() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("pgqueue_py.test_json_logs")
    with logging_to("info", "json", stream=stream) as handler:
        assert handler is not None
        handler.addFilter(WorkerIdFilter("w-1"))
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logger.exception("job %s failed", 7, extra={
                "job_id": 7, "queue": "mail", "job_name": "send", "attempt": 2,
            })  # fmt: skip
        logger.info("no job here")
        logger.debug("below the level")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "job 7 failed"
    assert first["level"] == "error"
    assert first["logger"] == "pgqueue_py.test_json_logs"
    assert (first["job_id"], first["queue"], first["job_name"], first["attempt"]) == (
        7, "mail", "send", 2,
    )  # fmt: skip
    assert first["worker_id"] == "w-1"
    assert "ValueError: bad\nvalue" in first["exception"]
    assert second == {"time": second["time"], "level": "info", "logger": first["logger"],
                      "message": "no job here", "worker_id": "w-1"}  # fmt: skip


def test_a_record_with_its_own_worker_id_keeps_it_and_odd_values_become_text() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.worker_id = "other"
    record.job_id = UUID(int=1)

    assert WorkerIdFilter("w-1").filter(record)
    line = json.loads(JsonFormatter().format(record))

    assert line["worker_id"] == "other"
    assert line["job_id"] == "00000000-0000-0000-0000-000000000001"


def test_logging_to_puts_the_root_logger_back_as_it_was() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    with logging_to("debug", "json", stream=io.StringIO()) as handler:
        assert handler in root.handlers
        assert root.level == logging.DEBUG

    assert root.handlers == handlers
    assert root.level == level


def test_text_logs_leave_a_root_logger_the_application_configured_alone() -> None:
    root = logging.getLogger()
    own = logging.StreamHandler(io.StringIO())
    root.addHandler(own)
    try:
        handlers = list(root.handlers)
        with logging_to("debug", "text", stream=io.StringIO()) as handler:
            assert handler is None
            assert root.handlers == handlers
    finally:
        root.removeHandler(own)
