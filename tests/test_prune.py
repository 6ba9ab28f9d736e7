"""Prune in batches against a real database: each batch is its own transaction, locked
rows are skipped rather than waited for, and the CLI and psql loops prune everything."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from click.testing import CliRunner

from pgqueue_py.cli import main
from pgqueue_py.cli.progress import run_batches
from pgqueue_py.client import Queue

# The psql recipe of the README: one transaction per batch, until a batch deletes nothing.
PSQL_LOOP = """
do $$
begin
    while pgq.prune(interval '1 hour', batch => 4) > 0 loop
        commit;
    end loop;
end
$$
"""


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=2) as q:
        yield q


def old_succeeded_jobs(dsn: str, count: int, queue: str = "old") -> list[int]:
    """``count`` jobs that succeeded two hours ago, their ids ascending."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "insert into pgq.jobs (queue, job_name, max_retries, state, finished_at)"
            " select %s, 'noop', 0, 'succeeded', now() - interval '2 hours'"
            " from generate_series(1, %s) returning id",
            (queue, count),
        ).fetchall()
    return sorted(r[0] for r in rows)


def remaining(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("select id from pgq.jobs order by id")]


def record_delete_transactions(dsn: str) -> None:
    """From now on, every deleted job leaves its id and its transaction's id."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "create table deleted_jobs (job_id bigint, xid xid8 default pg_current_xact_id())"
        )
        conn.execute(
            "create function record_deleted_job() returns trigger language plpgsql as"
            " $$ begin insert into public.deleted_jobs (job_id) values (old.id); return old; end $$"
        )
        conn.execute(
            "create trigger jobs_record_delete after delete on pgq.jobs"
            " for each row execute function record_deleted_job()"
        )


def deletes_per_transaction(dsn: str) -> list[list[int]]:
    """The deleted job ids, grouped by the transaction that deleted them, in order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select array_agg(job_id order by job_id) from deleted_jobs"
            " group by xid order by xid"
        ).fetchall()
    return [r[0] for r in rows]


def test_the_cli_prunes_everything_one_transaction_per_batch_lowest_ids_first(dsn: str) -> None:
    ids = old_succeeded_jobs(dsn, 12)
    record_delete_transactions(dsn)

    result = CliRunner().invoke(main, ["prune", "--older-than", "1h", "--batch-size", "5",
                                       "--dsn", dsn])  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout == "pruned 12 jobs\n"
    assert result.stderr == ""  # not a terminal: no bar, only the total
    assert deletes_per_transaction(dsn) == [ids[0:5], ids[5:10], ids[10:12]]
    assert remaining(dsn) == []


def test_the_psql_loop_of_the_readme_prunes_everything_in_batches(dsn: str) -> None:
    ids = old_succeeded_jobs(dsn, 10)
    record_delete_transactions(dsn)

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PSQL_LOOP)

    assert deletes_per_transaction(dsn) == [ids[0:4], ids[4:8], ids[8:10]]
    assert remaining(dsn) == []


def test_prune_skips_a_job_another_transaction_holds_instead_of_waiting(
    dsn: str, queue: Queue
) -> None:
    ids = old_succeeded_jobs(dsn, 3)
    with psycopg.connect(dsn) as holder:
        holder.execute("select 1 from pgq.jobs where id = %s for update", (ids[0],))
        # Were prune to wait for the held row, lock_timeout would fail this call.
        with psycopg.connect(dsn, autocommit=True, options="-c lock_timeout=5s") as conn:
            first = queue.prune(timedelta(hours=1), batch=10, conn=conn)
            again = queue.prune(timedelta(hours=1), batch=10, conn=conn)
        assert remaining(dsn) == [ids[0]]
    after_release = queue.prune(timedelta(hours=1), batch=10)

    assert (first, again, after_release) == (2, 0, 1)
    assert remaining(dsn) == []


def test_prune_keeps_unfinished_and_recent_jobs_whatever_the_batches(
    dsn: str, queue: Queue
) -> None:
    old_succeeded_jobs(dsn, 6)
    recent = old_succeeded_jobs(dsn, 2, queue="recent")
    with psycopg.connect(dsn) as conn:
        conn.execute("update pgq.jobs set finished_at = now() - interval '5 minutes'"
                     " where id = any(%s)", (recent,))  # fmt: skip
        waiting = conn.execute(
            "insert into pgq.jobs (queue, job_name, max_retries) values ('old', 'noop', 0)"
            " returning id"
        ).fetchone()
    assert waiting is not None

    counts = []
    while count := queue.prune(timedelta(hours=1), batch=4):
        counts.append(count)

    assert counts == [4, 2]
    assert remaining(dsn) == sorted([*recent, waiting[0]])


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr is in an operator's shell."""

    def isatty(self) -> bool:
        return True


def test_a_long_run_on_a_terminal_shows_a_bar_with_rows_per_second(
    dsn: str, queue: Queue
) -> None:
    old_succeeded_jobs(dsn, 30)
    terminal = Terminal()

    run = run_batches(lambda: queue.prune(timedelta(hours=1), batch=7), label="pruning",
                      stream=terminal, bar_after=0)  # fmt: skip

    assert (run.total, run.interrupted) == (30, False)
    shown = terminal.getvalue()
    assert "pruning" in shown
    assert "rows/s" in shown
    assert "30" in shown


def test_a_known_total_shows_a_share_and_a_run_off_a_terminal_shows_nothing(
    dsn: str, queue: Queue
) -> None:
    old_succeeded_jobs(dsn, 20)
    terminal, pipe = Terminal(), io.StringIO()

    shown = run_batches(lambda: queue.prune(timedelta(hours=1), batch=5), label="pruning",
                        expected=10, stream=terminal, bar_after=0)  # fmt: skip
    old_succeeded_jobs(dsn, 5)
    hidden = run_batches(lambda: queue.prune(timedelta(hours=1), batch=2), label="pruning",
                         stream=pipe, bar_after=0)  # fmt: skip

    assert (shown.total, hidden.total) == (20, 5)
    assert "20/20" in terminal.getvalue()  # more than expected arrived: the bar grew to fit
    assert "100%" in terminal.getvalue()
    assert pipe.getvalue() == ""


def test_a_run_that_is_over_before_bar_after_shows_no_bar(dsn: str, queue: Queue) -> None:
    old_succeeded_jobs(dsn, 3)
    terminal = Terminal()

    run = run_batches(lambda: queue.prune(timedelta(hours=1)), label="pruning",
                      stream=terminal, bar_after=3600)  # fmt: skip

    assert run.total == 3
    assert terminal.getvalue() == ""
