"""The ``pgqueue`` command line against a real migrated database: output and exit codes
(0 success, 1 the engine refused or the database failed, 2 usage or configuration)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from helpers import backdate_finished, greet, job_row, running_job, scalar
from worker_apps.procs import wait_for

from pgqueue_py.cli import main
from pgqueue_py.client import Queue

COMMANDS = ["migrate", "worker", "enqueue", "stats", "dead", "errors", "job", "retry",
            "cancel", "pause", "resume", "prune", "demo", "schedule add", "schedule list",
            "schedule remove"]  # fmt: skip


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=2) as q:
        yield q


def cli(*args: str, dsn: str | None = None) -> Result:
    """Run the command line in this process, ``DATABASE_URL`` set to ``dsn`` (or unset)."""
    return CliRunner().invoke(main, list(args), env={"DATABASE_URL": dsn})


def assert_one_line_error(result: Result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pgqueue: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def dead_job(queue: Queue, error: str = "boom\n\nTraceback: line 2") -> int:
    job = running_job(queue, queue_name="mail")
    assert queue.fail(job.id, job.lease_token, error, retry=False) == "dead"
    return job.id


def make_due(dsn: str, job_id: int) -> None:
    """A job backing off before its retry, made due now."""
    with psycopg.connect(dsn) as conn:
        conn.execute("update pgq.jobs set run_at = now() where id = %s", (job_id,))


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- help and usage --------------------------------------------------------------------------


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = cli("--help")

    assert result.exit_code == 0
    for command in COMMANDS:
        assert command.split()[0] in result.stdout
    assert "Exit codes" in result.stdout
    assert "pgqueue: error:" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_a_dsn_option(command: str) -> None:
    result = cli(*command.split(), "--help")

    assert result.exit_code == 0, result.output
    assert "--dsn" in result.stdout
    assert "DATABASE_URL" in result.stdout


def test_a_command_without_a_dsn_is_a_configuration_error() -> None:
    result = cli("stats")

    assert_one_line_error(result, 2, "DATABASE_URL")


def test_an_unreadable_dsn_is_a_configuration_error() -> None:
    result = cli("stats", "--dsn", "this is not a dsn")

    assert_one_line_error(result, 2, "invalid DSN")


def test_an_unreachable_database_is_a_one_line_error() -> None:
    result = cli("stats", "--dsn", f"postgresql://postgres@127.0.0.1:{unused_port()}/postgres")

    assert_one_line_error(result, 1, "connection")


def test_an_unknown_option_is_a_usage_error(dsn: str) -> None:
    result = cli("stats", "--no-such-option", dsn=dsn)

    assert result.exit_code == 2
    assert "No such option" in result.stderr


# -- enqueue -------------------------------------------------------------------------------


def test_enqueue_prints_the_new_jobs_id(dsn: str, queue: Queue) -> None:
    result = cli("enqueue", "send_email", '{"to": "ada@example.com"}', "--queue", "mail",
                 "--priority", "5", "--max-retries", "2", dsn=dsn)  # fmt: skip

    assert result.exit_code == 0, result.output
    job = queue.job(int(result.stdout))
    assert job is not None
    assert (job.job_name, job.queue) == ("send_email", "mail")
    assert job.payload == {"to": "ada@example.com"}
    assert (job.priority, job.max_retries, job.state) == (5, 2, "available")


def test_enqueue_without_a_payload_adds_an_empty_object(dsn: str, queue: Queue) -> None:
    result = cli("enqueue", "tick", dsn=dsn)

    assert result.exit_code == 0, result.output
    job = queue.job(int(result.stdout))
    assert job is not None and job.payload == {}


def test_enqueue_with_a_delay_schedules_the_job(dsn: str, queue: Queue) -> None:
    result = cli("enqueue", "later", "--delay", "2h", dsn=dsn)

    assert result.exit_code == 0, result.output
    [stats] = queue.stats()
    assert (stats.available, stats.scheduled) == (0, 1)


def test_enqueue_at_a_time_with_an_offset_keeps_that_time(dsn: str, queue: Queue) -> None:
    result = cli("enqueue", "newyear", "--run-at", "2999-01-01T00:00:00+00:00", dsn=dsn)

    assert result.exit_code == 0, result.output
    job = queue.job(int(result.stdout))
    assert job is not None and job.run_at.isoformat().startswith("2999-01-01T00:00:00")


def test_enqueue_with_a_used_idempotency_key_prints_the_first_jobs_id(dsn: str) -> None:
    first = cli("enqueue", "once", "--idempotency-key", "k1", dsn=dsn)
    second = cli("enqueue", "once", '{"other": 1}', "--idempotency-key", "k1", dsn=dsn)

    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    assert scalar(dsn, "select count(*) from pgq.jobs") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["not json"],
        ["[1, 2]"],
        ["{}", "--delay", "1m", "--run-at", "2999-01-01T00:00:00+00:00"],
        ["{}", "--delay", "soon"],
        ["{}", "--run-at", "tomorrow"],
    ],
    ids=["bad-json", "not-an-object", "delay-and-run-at", "bad-delay", "bad-run-at"],
)
def test_enqueue_with_bad_input_is_a_usage_error_and_adds_nothing(
    dsn: str, args: list[str]
) -> None:
    result = cli("enqueue", "job", *args, dsn=dsn)

    assert result.exit_code == 2, result.output
    assert scalar(dsn, "select count(*) from pgq.jobs") == 0


def test_enqueue_refused_by_the_engine_exits_1_and_adds_nothing(dsn: str) -> None:
    result = cli("enqueue", "job", "--max-retries", "-1", dsn=dsn)

    assert_one_line_error(result, 1, "max_retries")
    assert scalar(dsn, "select count(*) from pgq.jobs") == 0


# -- stats, dead, errors, job --------------------------------------------------------------


def test_stats_prints_an_aligned_table_of_every_queue(dsn: str, queue: Queue) -> None:
    dead_job(queue)
    queue.add(greet, {"name": "a", "times": 1}, queue="mail")

    result = cli("stats", dsn=dsn)

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["queue", "available", "scheduled", "running", "succeeded",
                              "dead", "cancelled", "oldest", "paused", "limits"]  # fmt: skip
    [mail] = [row for row in rows if row.startswith("mail ")]
    assert mail.split()[:7] == ["mail", "1", "0", "0", "0", "1", "0"]
    # The queue name to the left, the counts to the right of their columns.
    header_cells = list(re.finditer(r"\S+", header))
    row_cells = list(re.finditer(r"\S+", mail))
    assert header_cells[0].start() == row_cells[0].start()
    assert [h.end() for h in header_cells[1:7]] == [c.end() for c in row_cells[1:7]]


def test_stats_json_has_every_column(dsn: str, queue: Queue) -> None:
    queue.add(greet, {"name": "a", "times": 1}, queue="mail")

    result = cli("stats", "--json", dsn=dsn)

    assert result.exit_code == 0, result.output
    [mail] = [row for row in json.loads(result.stdout) if row["queue"] == "mail"]
    assert mail["available"] == 1 and mail["paused"] is False
    assert isinstance(mail["oldest_runnable_age"], float)


def test_dead_shows_the_last_error_on_one_line(dsn: str, queue: Queue) -> None:
    job_id = dead_job(queue, "ValueError: bad header\n\nTraceback (most recent call last): ...")

    result = cli("dead", dsn=dsn)

    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["id", "queue", "job_name", "attempt", "died_at", "last_error"]
    assert row.split()[:4] == [str(job_id), "mail", "greet", "1"]
    assert row.endswith("ValueError: bad header")


def test_dead_json_keeps_the_whole_error(dsn: str, queue: Queue) -> None:
    job_id = dead_job(queue, "first line\nsecond line")

    result = cli("dead", "--json", "--queue", "mail", dsn=dsn)

    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert (row["id"], row["last_error"]) == (job_id, "first line\nsecond line")


def test_dead_filters_by_queue_and_limits(dsn: str, queue: Queue) -> None:
    dead_job(queue)
    dead_job(queue)

    other_queue = cli("dead", "--queue", "elsewhere", dsn=dsn)
    limited = cli("dead", "--limit", "1", "--json", dsn=dsn)

    assert other_queue.stdout.strip() == "no dead jobs"
    assert len(json.loads(limited.stdout)) == 1


def test_errors_prints_every_attempts_error(dsn: str, queue: Queue) -> None:
    first = running_job(queue)
    queue.fail(first.id, first.lease_token, "first failure")
    make_due(dsn, first.id)
    [second] = queue.claim("w2")
    queue.fail(second.id, second.lease_token, "second failure\nwith a traceback", retry=False)

    result = cli("errors", str(first.id), dsn=dsn)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "attempt 1 failed at" in out and "on test-worker" in out
    assert "attempt 2 failed at" in out and "on w2" in out
    assert out.index("first failure") < out.index("second failure") < out.index("with a traceback")


def test_errors_of_a_job_that_never_failed_says_so(dsn: str, queue: Queue) -> None:
    job_id = queue.add(greet, {"name": "a", "times": 1})

    result = cli("errors", str(job_id), dsn=dsn)

    assert result.exit_code == 0
    assert result.stdout.strip() == f"job {job_id} has no failed attempts"


def test_errors_of_an_unknown_job_exits_1(dsn: str) -> None:
    assert_one_line_error(cli("errors", "424242", dsn=dsn), 1, "424242")


def test_job_prints_its_details(dsn: str, queue: Queue) -> None:
    job_id = dead_job(queue, "it broke\nbadly")

    text = cli("job", str(job_id), dsn=dsn)
    as_json = cli("job", str(job_id), "--json", dsn=dsn)

    assert text.exit_code == as_json.exit_code == 0
    fields = dict(line.split(None, 1) for line in text.stdout.splitlines() if " " in line)
    assert fields["state"].strip() == "dead"
    assert fields["last_error"].strip() == "it broke"
    assert json.loads(as_json.stdout)["payload"] == {"name": "Ada", "times": 1}


def test_job_unknown_exits_1(dsn: str) -> None:
    assert_one_line_error(cli("job", "424242", dsn=dsn), 1, "424242")


# -- retry, cancel, pause, resume, prune ---------------------------------------------------


def test_retry_makes_a_dead_job_available(dsn: str, queue: Queue) -> None:
    job_id = dead_job(queue)

    result = cli("retry", str(job_id), dsn=dsn)

    assert result.exit_code == 0, result.output
    assert job_row(dsn, job_id)["state"] == "available"


def test_retry_of_an_unknown_job_is_a_one_line_refusal(dsn: str) -> None:
    result = cli("retry", "424242", dsn=dsn)

    assert_one_line_error(result, 1, "424242")


def test_retry_of_an_available_job_is_refused_and_changes_nothing(dsn: str, queue: Queue) -> None:
    job_id = queue.add(greet, {"name": "a", "times": 1})
    before = job_row(dsn, job_id)

    result = cli("retry", str(job_id), dsn=dsn)

    assert_one_line_error(result, 1)
    assert job_row(dsn, job_id) == before


def test_retry_all_dead_prints_how_many(dsn: str, queue: Queue) -> None:
    dead_job(queue)
    dead_job(queue)

    other = cli("retry", "--all-dead", "--queue", "elsewhere", dsn=dsn)
    mail = cli("retry", "--all-dead", "--queue", "mail", dsn=dsn)

    assert other.stdout.strip() == "retried 0 dead jobs"
    assert mail.stdout.strip() == "retried 2 dead jobs"
    assert scalar(dsn, "select count(*) from pgq.jobs where state = 'dead'") == 0


def test_retry_all_dead_goes_in_batches_of_batch_size_each_committed(
    dsn: str, queue: Queue
) -> None:
    dead = [dead_job(queue) for _ in range(7)]
    elsewhere = running_job(queue, queue_name="elsewhere")
    queue.fail(elsewhere.id, elsewhere.lease_token, "no", retry=False)
    with psycopg.connect(dsn) as conn:
        conn.execute("create table requeued (job_id bigint, xid xid8 default pg_current_xact_id())")
        conn.execute(
            "create function record_requeue() returns trigger language plpgsql as $$ begin"
            " insert into public.requeued (job_id) values (new.id); return new; end $$"
        )
        conn.execute(
            "create trigger jobs_record_requeue after update on pgq.jobs for each row"
            " when (old.state = 'dead' and new.state = 'available')"
            " execute function record_requeue()"
        )

    result = cli("retry", "--all-dead", "--queue", "mail", "--batch-size", "3", dsn=dsn)

    assert result.exit_code == 0, result.output
    assert result.stdout == "retried 7 dead jobs\n"
    assert result.stderr == ""  # not a terminal: no bar, only the total
    with psycopg.connect(dsn) as conn:
        batches = [r[0] for r in conn.execute(
            "select array_agg(job_id order by job_id) from requeued group by xid order by xid"
        )]  # fmt: skip
    assert batches == [dead[0:3], dead[3:6], dead[6:7]]
    assert job_row(dsn, elsewhere.id)["state"] == "dead"


@pytest.mark.parametrize("size", ["0", "100001", "x"])
def test_batch_size_out_of_range_is_a_usage_error(dsn: str, size: str) -> None:
    assert cli("retry", "--all-dead", "--batch-size", size, dsn=dsn).exit_code == 2
    assert cli("prune", "--older-than", "1d", "--batch-size", size, dsn=dsn).exit_code == 2


def test_worker_log_format_must_be_text_or_json(dsn: str) -> None:
    result = cli("worker", "worker_apps.apps:handlers", "--log-format", "xml", dsn=dsn)

    assert result.exit_code == 2
    assert "text" in result.stderr and "json" in result.stderr


@pytest.mark.parametrize(
    "args", [[], ["1", "--all-dead"], ["1", "--queue", "mail"]], ids=["none", "both", "queue"]
)
def test_retry_needs_a_job_id_or_all_dead(dsn: str, args: list[str]) -> None:
    assert cli("retry", *args, dsn=dsn).exit_code == 2


def test_cancel_cancels_an_available_job_and_a_second_cancel_is_refused(
    dsn: str, queue: Queue
) -> None:
    job_id = queue.add(greet, {"name": "a", "times": 1})

    first = cli("cancel", str(job_id), dsn=dsn)
    second = cli("cancel", str(job_id), dsn=dsn)

    assert first.exit_code == 0 and first.stdout.strip() == f"job {job_id} cancelled"
    assert_one_line_error(second, 1)
    assert job_row(dsn, job_id)["state"] == "cancelled"


def test_pause_and_resume_a_queue(dsn: str, queue: Queue) -> None:
    queue.add(greet, {"name": "a", "times": 1}, queue="mail")

    paused = cli("pause", "mail", dsn=dsn)
    paused_stats = queue.stats()
    resumed = cli("resume", "mail", dsn=dsn)

    assert paused.stdout.strip() == "queue mail paused"
    assert [s.paused for s in paused_stats if s.queue == "mail"] == [True]
    assert resumed.stdout.strip() == "queue mail resumed"
    assert [s.paused for s in queue.stats() if s.queue == "mail"] == [False]


def test_configure_creates_a_queue_and_changes_only_the_settings_given(dsn: str) -> None:
    created = cli("configure", "mail", "--max-retries", "8", "--lease", "2m", dsn=dsn)
    changed = cli("configure", "mail", "--backoff-base", "500ms", "--backoff-max", "1h", dsn=dsn)

    assert created.stdout.strip() == "queue mail configured"
    assert changed.exit_code == 0, changed.output
    settings = scalar(dsn, "select (max_retries, lease, backoff_base, backoff_max)::text"
                           " from pgq.queues where queue = 'mail'")  # fmt: skip
    assert settings == "(8,00:02:00,00:00:00.5,01:00:00)"


def test_configure_with_a_bad_setting_is_refused_and_changes_nothing(dsn: str) -> None:
    cli("configure", "mail", "--lease", "1m", dsn=dsn)

    assert_one_line_error(cli("configure", "mail", "--lease", "2d", dsn=dsn), 1, "invalid lease")
    assert scalar(dsn, "select lease::text from pgq.queues where queue = 'mail'") == "00:01:00"


def test_pause_of_an_unknown_queue_is_refused(dsn: str) -> None:
    assert_one_line_error(cli("pause", "nowhere", dsn=dsn), 1, "nowhere")


def test_prune_deletes_old_finished_jobs_and_dead_ones_on_request(dsn: str, queue: Queue) -> None:
    done = running_job(queue)
    queue.complete(done.id, done.lease_token)
    dead = dead_job(queue)
    backdate_finished(dsn, done.id, "3 hours")
    backdate_finished(dsn, dead, "3 hours")

    too_recent = cli("prune", "--older-than", "1d", dsn=dsn)
    without_dead = cli("prune", "--older-than", "2h", dsn=dsn)
    with_dead = cli("prune", "--older-than", "2h", "--include-dead", dsn=dsn)

    assert too_recent.stdout.strip() == "pruned 0 jobs"
    assert without_dead.stdout.strip() == "pruned 1 job"
    assert with_dead.stdout.strip() == "pruned 1 job"
    assert scalar(dsn, "select count(*) from pgq.jobs") == 0


@pytest.mark.parametrize("value", ["", "2x", "h", "-1h"])
def test_prune_with_a_bad_duration_is_a_usage_error(dsn: str, value: str) -> None:
    assert cli("prune", "--older-than", value, dsn=dsn).exit_code == 2


def test_prune_needs_older_than(dsn: str) -> None:
    assert cli("prune", dsn=dsn).exit_code == 2


# -- worker --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "fragment"),
    [
        ("no_colon", "MODULE:ATTR"),
        ("no_such_module_xyz:handlers", "cannot import 'no_such_module_xyz'"),
        ("helpers:no_such_attr", "no attribute 'no_such_attr'"),
        ("helpers:greet", "must be a non-empty mapping"),
        ("helpers:count_jobs", "takes arguments"),
    ],
)
def test_worker_with_a_bad_app_is_a_one_line_configuration_error(
    dsn: str, app: str, fragment: str
) -> None:
    result = cli("worker", app, dsn=dsn)

    assert_one_line_error(result, 2, fragment)


def test_worker_with_a_lease_under_a_second_is_a_configuration_error(dsn: str) -> None:
    result = cli("worker", "worker_apps.apps:handlers", "--lease", "0.5", dsn=dsn)

    assert_one_line_error(result, 2, "lease")


APP_MODULE = """
from typing import Any, TypedDict

from pgqueue_py import JobContext, JobType


class Note(TypedDict):
    path: str


note = JobType("note", Note, queue="notes")


def write_note(ctx: JobContext, payload: Note) -> None:
    with open(payload["path"], "a") as out:
        out.write(f"{ctx.job_id} {ctx.attempt}\\n")


def make_handlers() -> dict[Any, Any]:
    return {note: write_note}
"""


def run_cli(*args: str, cwd: Path | None = None, dsn: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if dsn is not None:
        env["DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "pgqueue_py", *args], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_worker_runs_a_handler_factory_from_the_current_folder_until_sigterm(
    dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "notes_app.py").write_text(textwrap.dedent(APP_MODULE))
    notes = tmp_path / "notes.txt"
    added = run_cli("enqueue", "note", json.dumps({"path": str(notes)}), "--queue", "notes",
                    dsn=dsn)  # fmt: skip
    assert added.returncode == 0, added.stderr
    job_id = int(added.stdout)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pgqueue_py", "worker", "notes_app:make_handlers",
             "--dsn", dsn, "--concurrency", "2", "--worker-id", "cli-test", "--no-listen"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: job_row(dsn, job_id)["state"] == "succeeded", 30,
                 "the job to succeed", detail=log.read_text)  # fmt: skip
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    assert code == 0, log.read_text()
    assert notes.read_text() == f"{job_id} 1\n"
    assert job_row(dsn, job_id)["worker_id"] == "cli-test"


# -- a real process: exit codes and one-line errors -----------------------------------------


def test_the_installed_module_exits_1_with_one_line_on_an_engine_refusal(dsn: str) -> None:
    result = run_cli("retry", "424242", dsn=dsn)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("pgqueue: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "424242" in result.stderr


def test_the_installed_module_exits_1_with_one_line_when_the_database_is_unreachable() -> None:
    result = run_cli("stats", "--dsn", f"postgresql://postgres@127.0.0.1:{unused_port()}/x")

    assert result.returncode == 1
    assert result.stderr.startswith("pgqueue: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_the_installed_module_exits_2_without_a_dsn_and_0_on_success(dsn: str) -> None:
    missing = run_cli("stats")
    fine = run_cli("stats", dsn=dsn)

    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "DATABASE_URL" in missing.stderr
    assert fine.returncode == 0, fine.stderr


# -- schedules -------------------------------------------------------------------------------


def test_schedule_add_list_and_remove(dsn: str, queue: Queue) -> None:
    added = cli("schedule", "add", "nightly", "30 2 * * *", "report", '{"kind": "daily"}',
                "--timezone", "Europe/Berlin", "--dsn", dsn)  # fmt: skip
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith("schedule nightly: next run at ")

    listed = cli("schedule", "list", "--dsn", dsn)
    assert listed.exit_code == 0, listed.output
    assert "nightly" in listed.stdout and "30 2 * * *" in listed.stdout
    assert "Europe/Berlin" in listed.stdout
    [schedule] = queue.schedules()
    assert (schedule.job_name, schedule.payload) == ("report", {"kind": "daily"})

    removed = cli("schedule", "remove", "nightly", "--dsn", dsn)
    assert removed.exit_code == 0, removed.output
    assert queue.schedules() == []


def test_schedule_with_a_bad_cron_is_refused_naming_the_field(dsn: str, queue: Queue) -> None:
    result = cli("schedule", "add", "broken", "61 * * * *", "report", "--dsn", dsn)

    assert_one_line_error(result, 1, "minute")
    assert queue.schedules() == []


def test_removing_an_unknown_schedule_exits_1(dsn: str) -> None:
    result = cli("schedule", "remove", "nope", "--dsn", dsn)

    assert_one_line_error(result, 1, "nope")


def test_configure_sets_flow_limits_and_stats_shows_them(dsn: str, queue: Queue) -> None:
    result = cli("configure", "mail", "--concurrency", "1000", "--rate-limit", "50",
                 "--rate-period", "1", "--key-concurrency", "2", "--dsn", dsn)  # fmt: skip
    assert result.exit_code == 0, result.output

    [stats] = [s for s in queue.stats() if s.queue == "mail"]
    assert (stats.concurrency, stats.rate_limit, stats.rate_period, stats.key_concurrency) == (
        1000, 50, timedelta(seconds=1), 2)
    shown = cli("stats", "--dsn", dsn)
    assert "running<=1000 starts<=50/1s per-key<=2" in shown.stdout


def test_enqueue_with_a_concurrency_key_keeps_it(dsn: str, queue: Queue) -> None:
    result = cli("enqueue", "report", "--concurrency-key", "customer-7", "--dsn", dsn)
    assert result.exit_code == 0, result.output

    assert job_row(dsn, int(result.stdout))["concurrency_key"] == "customer-7"
