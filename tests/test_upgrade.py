"""Upgrades are proven: a database of the last release, full of jobs, migrates to today's engine.

The release's SQL is kept in ``tests/upgrade_from/0.1.0/``: its migrations, its
``sql/functions`` files and its ``MIGRATIONS.sha256``, so that no git history is needed. A
database is brought to that release by ``migrate`` pointed at the folder, the way that
release's users got there, and filled through the released functions with jobs in every
state. Then today's ``migrate`` runs on it, as on any user's database, and:

- its schema is that of a fresh migration (a ``pg_dump --schema-only`` diff);
- every row it held keeps its values (new columns aside);
- the old jobs finish through today's functions: running jobs under their old leases,
  begun and finished run-once markers, retries, the dead letter, the paused queue,
  idempotency keys and ``queue_stats``.

Nothing here names a migration after the release: whatever ``sql/migrations`` holds is
what the upgrade applies.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgqueue_py._paths import sql_dir
from pgqueue_py.migrate import CHECKSUMS_FILE, file_sha256, migrate, read_checksums
from pgqueue_py.testing import (
    PgServer,
    cloned_database,
    create_database,
    dbname_of,
    drop_database,
    empty_database,
    libpq_env,
    unique_name,
)
from pgqueue_py.testing.throwaway import PostgresBinariesNotFound, find_bindir

if TYPE_CHECKING:
    from typing_extensions import LiteralString

RELEASE = "0.1.0"
RELEASED_SQL = Path(__file__).resolve().parent / "upgrade_from" / RELEASE

# Leases taken under the release outlast the test by far: only backdating ends them.
LONG_LEASE = "1 hour"
KEY_AVAILABLE = "release:available"
KEY_SUCCEEDED = "release:succeeded"
KEY_MAIL = "release:mail"
EFFECT = "charge"
MARKED_RESULT = {"charge_id": "ch_released"}

# The tables of the release, and the order their rows are compared in.
RELEASED_TABLES = {
    "pgq.queues": "select to_jsonb(q) from pgq.queues q order by q.queue",
    "pgq.jobs": "select to_jsonb(j) from pgq.jobs j order by j.id",
    "pgq.attempt_errors": "select to_jsonb(e) from pgq.attempt_errors e order by e.id",
    "pgq.once_markers": (
        "select to_jsonb(m) from pgq.once_markers m order by m.job_id, m.effect_key"
    ),
}

STATS_COLUMNS = ("available", "scheduled", "running", "succeeded", "dead", "cancelled", "paused")


# -- the released database -------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """A job claimed under the release, and the token its worker holds."""

    job_id: int
    lease_token: UUID


@dataclass(frozen=True)
class ReleasedJobs:
    """The jobs the release left behind, by state. Queue ``default`` was never configured;
    queue ``mail`` was configured (a long backoff) and paused."""

    available: int
    keyed: int
    """available, with idempotency key KEY_AVAILABLE"""
    scheduled: int
    """available, due in an hour"""
    running: Lease
    """running with a live lease"""
    begun: Lease
    """running, its run-once marker EFFECT begun and never finished"""
    marked: Lease
    """running, its run-once marker EFFECT finished with MARKED_RESULT"""
    succeeded: int
    """with idempotency key KEY_SUCCEEDED"""
    dead: int
    """two failed attempts (max_retries 1), both errors logged"""
    cancelled: int
    """cancelled while available"""
    cancelled_running: Lease
    """cancelled while running: the release took its token away"""
    mail: int
    mail_keyed: int
    """with idempotency key KEY_MAIL"""
    mail_retrying: int
    """failed once, its retry backing off (scheduled)"""


@dataclass(frozen=True)
class UpgradedTemplate:
    name: str
    jobs: ReleasedJobs
    rows_before: dict[str, list[dict[str, Any]]]
    """Every row of the release's tables just before today's migrate, as JSON."""
    stats_before: dict[str, dict[str, Any]]
    applied_migrations: tuple[str, ...]


def _enqueue(
    conn: psycopg.Connection[Any],
    *,
    queue: str = "default",
    key: str | None = None,
    max_retries: int | None = None,
    delay: str | None = None,
) -> int:
    row = conn.execute(
        "select pgq.enqueue(job_name => 'greet', payload => %s, queue => %s,"
        " run_at => now() + %s::interval, max_retries => %s, idempotency_key => %s)",
        (Jsonb({"name": "Ada", "times": 1}), queue, delay, max_retries, key),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _claim_only(conn: psycopg.Connection[Any], job_id: int, *, queue: str = "default") -> Lease:
    """Claim under the release, which must hand out exactly ``job_id``."""
    rows = conn.execute(
        "select c.id, c.lease_token from pgq.claim(worker_id => 'released-worker',"
        " queues => array[%s], batch => 10, lease => %s::interval) as c",
        (queue, LONG_LEASE),
    ).fetchall()
    assert [r[0] for r in rows] == [job_id], "the release's claim picked other jobs"
    return Lease(job_id=int(rows[0][0]), lease_token=rows[0][1])


def _fail(conn: psycopg.Connection[Any], lease: Lease, error: str) -> str:
    row = conn.execute(
        "select pgq.fail(job_id => %s, lease_token => %s, error => %s)",
        (lease.job_id, lease.lease_token, error),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _make_due(conn: psycopg.Connection[Any], job_id: int) -> None:
    """Time moves by backdating: the job's run_at (a backoff or a schedule) has passed."""
    conn.execute(
        "update pgq.jobs set run_at = now() - interval '1 second' where id = %s", (job_id,)
    )


def fill_with_released_functions(dsn: str) -> ReleasedJobs:
    """Leave jobs in every state, through the release's own functions (its signatures)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The claims below each find one due job: the one just added.
        dead = _enqueue(conn, max_retries=1)
        assert _fail(conn, _claim_only(conn, dead), "released error 1") == "available"
        _make_due(conn, dead)
        assert _fail(conn, _claim_only(conn, dead), "released error 2") == "dead"

        running = _claim_only(conn, _enqueue(conn))

        begun = _claim_only(conn, _enqueue(conn))
        status = conn.execute(
            "select o.status from pgq.once_begin(job_id => %s, lease_token => %s,"
            " effect_key => %s) as o",
            (begun.job_id, begun.lease_token, EFFECT),
        ).fetchone()
        assert status == ("run",)

        marked = _claim_only(conn, _enqueue(conn))
        conn.execute(
            "select pgq.once_begin(job_id => %s, lease_token => %s, effect_key => %s)",
            (marked.job_id, marked.lease_token, EFFECT),
        )
        conn.execute(
            "select pgq.once_finish(job_id => %s, lease_token => %s, effect_key => %s,"
            " result => %s)",
            (marked.job_id, marked.lease_token, EFFECT, Jsonb(MARKED_RESULT)),
        )

        succeeded = _claim_only(conn, _enqueue(conn, key=KEY_SUCCEEDED))
        # The release's complete: (job_id, lease_token), no result.
        conn.execute(
            "select pgq.complete(job_id => %s, lease_token => %s)",
            (succeeded.job_id, succeeded.lease_token),
        )

        cancelled_running = _claim_only(conn, _enqueue(conn))
        conn.execute("select pgq.cancel(job_id => %s)", (cancelled_running.job_id,))

        cancelled = _enqueue(conn)
        conn.execute("select pgq.cancel(job_id => %s)", (cancelled,))
        available = _enqueue(conn)
        keyed = _enqueue(conn, key=KEY_AVAILABLE)
        scheduled = _enqueue(conn, delay="1 hour")

        conn.execute(
            "select pgq.configure_queue(queue => 'mail', max_retries => 3,"
            " backoff_base => interval '1 hour', backoff_max => interval '2 hours',"
            " lease => interval '2 minutes')"
        )
        mail_retrying = _enqueue(conn, queue="mail")
        retry_state = _fail(conn, _claim_only(conn, mail_retrying, queue="mail"), "mail error")
        assert retry_state == "available"
        mail = _enqueue(conn, queue="mail")
        mail_keyed = _enqueue(conn, queue="mail", key=KEY_MAIL)
        conn.execute("select pgq.pause(queue => 'mail')")

    return ReleasedJobs(
        available=available,
        keyed=keyed,
        scheduled=scheduled,
        running=running,
        begun=begun,
        marked=marked,
        succeeded=succeeded.job_id,
        dead=dead,
        cancelled=cancelled,
        cancelled_running=cancelled_running,
        mail=mail,
        mail_keyed=mail_keyed,
        mail_retrying=mail_retrying,
    )


# The release's queue_stats, worked out by hand from the fill above.
EXPECTED_STATS = {
    "default": {"available": 2, "scheduled": 1, "running": 3, "succeeded": 1, "dead": 1,
                "cancelled": 2, "paused": False},
    "mail": {"available": 2, "scheduled": 1, "running": 0, "succeeded": 0, "dead": 0,
             "cancelled": 0, "paused": True},
}  # fmt: skip


def table_rows(dsn: str) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(dsn) as conn:
        return {
            table: [r[0] for r in conn.execute(query).fetchall()]
            for table, query in RELEASED_TABLES.items()
        }


def queue_stats(dsn: str) -> dict[str, dict[str, Any]]:
    """``pgq.queue_stats`` by queue, the counts the release already had (later columns aside)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.cursor(row_factory=dict_row).execute("select * from pgq.queue_stats").fetchall()
    return {row["queue"]: {c: row[c] for c in STATS_COLUMNS} for row in rows}


@pytest.fixture(scope="module")
def upgraded_template(pg_server: PgServer) -> Iterator[UpgradedTemplate]:
    """A database brought to the release, filled, then migrated by today's ``migrate``.

    Built once; each test works on a copy (``upgraded_dsn``).
    """
    name = unique_name("pgq_upgraded")
    create_database(pg_server.dsn, name)
    dsn = pg_server.dsn_for(name)
    try:
        released = migrate(dsn, sql_path=RELEASED_SQL)
        assert released.applied_migrations == released_migrations()
        assert released.functions_applied == len(list((RELEASED_SQL / "functions").glob("*.sql")))
        jobs = fill_with_released_functions(dsn)
        rows_before = table_rows(dsn)
        stats_before = queue_stats(dsn)
        applied = migrate(dsn).applied_migrations
    except BaseException:
        drop_database(pg_server.dsn, name)
        raise
    yield UpgradedTemplate(name=name, jobs=jobs, rows_before=rows_before,
                           stats_before=stats_before, applied_migrations=applied)  # fmt: skip
    drop_database(pg_server.dsn, name)


@pytest.fixture
def upgraded_dsn(pg_server: PgServer, upgraded_template: UpgradedTemplate) -> Iterator[str]:
    with cloned_database(pg_server, upgraded_template.name) as dsn:
        yield dsn


@pytest.fixture
def jobs(upgraded_template: UpgradedTemplate) -> ReleasedJobs:
    return upgraded_template.jobs


def released_migrations() -> tuple[str, ...]:
    return tuple(p.stem for p in sorted((RELEASED_SQL / "migrations").glob("*.sql")))


# -- today's calls -----------------------------------------------------------------------------


def call(dsn: str, query: LiteralString, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def claim(dsn: str, queue: str = "default") -> dict[int, Lease]:
    rows = call(
        dsn,
        "select c.id, c.lease_token from pgq.claim(worker_id => 'today-worker',"
        " queues => array[%s], batch => 100) as c",
        (queue,),
    )
    return {int(r[0]): Lease(job_id=int(r[0]), lease_token=r[1]) for r in rows}


def complete(dsn: str, lease: Lease, result: object = None) -> str:
    rows = call(
        dsn,
        "select pgq.complete(job_id => %s, lease_token => %s, result => %s)",
        (lease.job_id, lease.lease_token, Jsonb(result)),
    )
    return str(rows[0][0])


def complete_many(dsn: str, leases: list[Lease]) -> list[str]:
    rows = call(
        dsn,
        "select c.outcome from pgq.complete_many(job_ids => %s::bigint[],"
        " lease_tokens => %s::uuid[]) as c",
        ([lease.job_id for lease in leases], [lease.lease_token for lease in leases]),
    )
    return [str(r[0]) for r in rows]


def once_begin(dsn: str, lease: Lease, request_id: UUID | None = None) -> tuple[str, Any]:
    rows = call(
        dsn,
        "select o.status, o.result from pgq.once_begin(job_id => %s, lease_token => %s,"
        " effect_key => %s, request_id => coalesce(%s::uuid, gen_random_uuid())) as o",
        (lease.job_id, lease.lease_token, EFFECT, request_id),
    )
    return (str(rows[0][0]), rows[0][1])


def job_state(dsn: str, job_id: int) -> tuple[str, int]:
    rows = call(dsn, "select s.state, s.attempt from pgq.job_status(job_id => %s) as s", (job_id,))
    return (str(rows[0][0]), int(rows[0][1]))


def backdate_lease(dsn: str, job_id: int) -> None:
    call(dsn, "update pgq.jobs set lease_expires_at = now() - interval '1 second'"
              " where id = %s returning id", (job_id,))  # fmt: skip


def make_due(dsn: str, job_id: int) -> None:
    call(dsn, "update pgq.jobs set run_at = now() - interval '1 second'"
              " where id = %s returning id", (job_id,))  # fmt: skip


def sqlstate_of(dsn: str, query: LiteralString, params: tuple[object, ...]) -> str | None:
    with pytest.raises(psycopg.Error) as info:
        call(dsn, query, params)
    return info.value.sqlstate


# -- the schema ---------------------------------------------------------------------------------


def pg_dump_path() -> str:
    """pg_dump beside the server binaries the project finds (throwaway.find_bindir), else
    the one on PATH."""
    try:
        candidate = find_bindir() / "pg_dump"
        if candidate.is_file():
            return str(candidate)
    except PostgresBinariesNotFound:
        pass
    found = shutil.which("pg_dump")
    if found is None:
        pytest.fail("pg_dump not found beside initdb or on PATH: install the PostgreSQL "
                    "client (Debian/Ubuntu: apt-get install postgresql-client)")  # fmt: skip
    return found


# Lines that differ between any two dumps: versions, and the random key of \restrict
# (pg_dump 13.22, 14.19, 15.14, 16.10, 17.6 and later).
_VOLATILE_LINE = re.compile(r"^(-- Dumped (from database|by) version |\\(un)?restrict )")


def schema_dump(dsn: str) -> list[str]:
    """``pg_dump --schema-only`` of the whole database, normalized: versions and the
    database's name, which legitimately differ, are taken out. yoyo's bookkeeping rows are
    data and are not dumped; its tables are, and must match too."""
    result = subprocess.run(
        [pg_dump_path(), "--schema-only", "--no-password"],
        env={**os.environ, **libpq_env(dsn)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"pg_dump failed:\n{result.stderr}"
    dbname = dbname_of(dsn)
    return [
        line.replace(dbname, "<database>")
        for line in result.stdout.splitlines()
        if not _VOLATILE_LINE.match(line)
    ]


# -- tests -----------------------------------------------------------------------------------


def test_the_release_fixture_holds_the_merged_migrations_unchanged() -> None:
    # yoyo knows a migration by its id alone: the upgrade is only meaningful if the
    # release's files are those main still ships under the same names.
    released = read_checksums(RELEASED_SQL / CHECKSUMS_FILE)
    assert sorted(released) == [f"migrations/{m}.sql" for m in released_migrations()]
    today = read_checksums(sql_dir() / CHECKSUMS_FILE)

    for name, digest in released.items():
        assert file_sha256(RELEASED_SQL / name) == digest, f"the fixture's {name} was edited"
        assert today.get(name) == digest, f"sql/{name} is not the released file"
    assert sorted((RELEASED_SQL / "functions").glob("*.sql")), "no released function files"


def test_upgrade_applies_every_later_migration(upgraded_template: UpgradedTemplate) -> None:
    later = tuple(
        p.stem
        for p in sorted((sql_dir() / "migrations").glob("*.sql"))
        if p.stem not in released_migrations()
    )

    assert upgraded_template.applied_migrations == later


def test_upgraded_schema_is_identical_to_a_fresh_migration(
    pg_server: PgServer, upgraded_dsn: str
) -> None:
    with empty_database(pg_server) as fresh_dsn:
        migrate(fresh_dsn)
        fresh = schema_dump(fresh_dsn)

    upgraded = schema_dump(upgraded_dsn)

    if upgraded != fresh:
        diff = difflib.unified_diff(fresh, upgraded, "fresh migration",
                                    f"upgraded from {RELEASE}", lineterm="")  # fmt: skip
        pytest.fail("the upgraded schema differs from a fresh migration:\n" + "\n".join(diff))


def test_upgrade_keeps_every_row_of_the_release(
    upgraded_template: UpgradedTemplate, upgraded_dsn: str
) -> None:
    after = table_rows(upgraded_dsn)

    for table, rows_before in upgraded_template.rows_before.items():
        # Columns a later migration added are new; every value the release had stays.
        assert len(after[table]) == len(rows_before), f"{table} lost or gained rows"
        kept = [{k: row[k] for k in before if k in row}
                for before, row in zip(rows_before, after[table], strict=True)]  # fmt: skip
        assert kept == rows_before, f"{table}: the upgrade changed values of the release"


def test_queue_stats_count_the_release_jobs_before_and_after_the_upgrade(
    upgraded_template: UpgradedTemplate, upgraded_dsn: str
) -> None:
    assert upgraded_template.stats_before == EXPECTED_STATS

    assert queue_stats(upgraded_dsn) == EXPECTED_STATS


def test_running_job_of_the_release_heartbeats_and_completes_under_its_old_lease(
    upgraded_dsn: str, jobs: ReleasedJobs
) -> None:
    lease = jobs.running
    call(upgraded_dsn, "select pgq.heartbeat(job_id => %s, lease_token => %s)",
         (lease.job_id, lease.lease_token))  # fmt: skip

    assert complete(upgraded_dsn, lease, {"sent": True}) == "succeeded"

    rows = call(upgraded_dsn, "select s.state, s.result from pgq.job_status(job_id => %s) as s",
                (lease.job_id,))  # fmt: skip
    assert rows == [("succeeded", {"sent": True})]


def test_lease_of_the_release_that_expires_after_the_upgrade_may_still_complete_late(
    upgraded_dsn: str, jobs: ReleasedJobs
) -> None:
    lease = jobs.running
    backdate_lease(upgraded_dsn, lease.job_id)
    assert set(claim(upgraded_dsn)) == {jobs.available, jobs.keyed}  # reaps it
    assert job_state(upgraded_dsn, lease.job_id) == ("available", 1)

    assert complete(upgraded_dsn, lease, {"late": True}) == "succeeded"

    rows = call(upgraded_dsn, "select s.state, s.result from pgq.job_status(job_id => %s) as s",
                (lease.job_id,))  # fmt: skip
    assert rows == [("succeeded", {"late": True})]


def test_finished_marker_of_the_release_answers_done_with_its_result(
    upgraded_dsn: str, jobs: ReleasedJobs
) -> None:
    assert once_begin(upgraded_dsn, jobs.marked) == ("done", MARKED_RESULT)

    assert complete_many(upgraded_dsn, [jobs.marked]) == ["succeeded"]
    assert job_state(upgraded_dsn, jobs.marked.job_id) == ("succeeded", 1)


def test_begun_marker_of_the_release_is_unknown_to_the_next_attempt(
    upgraded_dsn: str, jobs: ReleasedJobs
) -> None:
    old = jobs.begun
    backdate_lease(upgraded_dsn, old.job_id)
    # Today's claim reaps the expired lease (a failed attempt) and takes the due jobs.
    assert set(claim(upgraded_dsn)) == {jobs.available, jobs.keyed}
    assert job_state(upgraded_dsn, old.job_id) == ("available", 1)
    make_due(upgraded_dsn, old.job_id)
    new = claim(upgraded_dsn)[old.job_id]

    assert once_begin(upgraded_dsn, new) == ("unknown", None)
    assert job_state(upgraded_dsn, old.job_id) == ("running", 2)
    assert sqlstate_of(upgraded_dsn,
                       "select pgq.once_begin(job_id => %s, lease_token => %s, effect_key => %s)",
                       (old.job_id, old.lease_token, EFFECT)) == "PQ101"  # fmt: skip

    # The operator settles it; then the attempt sees it done and completes.
    resolve = ("select pgq.once_resolve(job_id => %s, effect_key => %s, ran => true,"
               " result => %s)")  # fmt: skip
    call(upgraded_dsn, resolve, (old.job_id, EFFECT, Jsonb({"charge_id": "ch_2"})))
    assert once_begin(upgraded_dsn, new) == ("done", {"charge_id": "ch_2"})
    assert complete(upgraded_dsn, new) == "succeeded"
    errors_of = ("select e.attempt, e.error like 'lease expired%%'"
                 " from pgq.job_errors e where e.job_id = %s")  # fmt: skip
    errors = call(upgraded_dsn, errors_of, (old.job_id,))
    assert errors == [(1, True)]


def test_job_cancelled_while_running_under_the_release_stays_cancelled(
    upgraded_dsn: str, jobs: ReleasedJobs
) -> None:
    lease = jobs.cancelled_running
    # The release took the token away on cancel, so its holder is told it lost the lease.
    heartbeat = "select pgq.heartbeat(job_id => %s, lease_token => %s)"
    assert sqlstate_of(upgraded_dsn, heartbeat, (lease.job_id, lease.lease_token)) == "PQ101"
    refused = sqlstate_of(upgraded_dsn, "select pgq.complete(job_id => %s, lease_token => %s)",
                          (lease.job_id, lease.lease_token))  # fmt: skip
    assert refused == "PQ101"

    assert job_state(upgraded_dsn, lease.job_id) == ("cancelled", 1)
    assert job_state(upgraded_dsn, jobs.cancelled) == ("cancelled", 0)


def test_available_scheduled_and_dead_jobs_of_the_release_run_to_success(
    upgraded_dsn: str, jobs: ReleasedJobs
) -> None:
    dead_letter = call(upgraded_dsn, "select d.id, d.last_error from pgq.dead_letter d")
    assert dead_letter == [(jobs.dead, "released error 2")]
    call(upgraded_dsn, "select pgq.retry(job_id => %s)", (jobs.dead,))
    make_due(upgraded_dsn, jobs.scheduled)

    claimed = claim(upgraded_dsn)

    assert set(claimed) == {jobs.available, jobs.keyed, jobs.scheduled, jobs.dead}
    assert complete_many(upgraded_dsn, list(claimed.values())) == ["succeeded"] * 4
    assert job_state(upgraded_dsn, jobs.dead) == ("succeeded", 1)
    errors_of = ("select e.attempt, e.error from pgq.job_errors e"
                 " where e.job_id = %s order by e.attempt")  # fmt: skip
    errors = call(upgraded_dsn, errors_of, (jobs.dead,))
    assert errors == [(1, "released error 1"), (2, "released error 2")]


def test_paused_queue_of_the_release_stays_paused_until_resumed(
    upgraded_dsn: str, jobs: ReleasedJobs
) -> None:
    make_due(upgraded_dsn, jobs.mail_retrying)
    assert claim(upgraded_dsn, "mail") == {}

    call(upgraded_dsn, "select pgq.resume(queue => 'mail')")
    claimed = claim(upgraded_dsn, "mail")

    assert set(claimed) == {jobs.mail, jobs.mail_keyed, jobs.mail_retrying}
    assert job_state(upgraded_dsn, jobs.mail_retrying) == ("running", 2)
    rows = call(upgraded_dsn, "select q.lease, q.max_retries from pgq.queues q"
                              " where q.queue = 'mail'")  # fmt: skip
    assert [(str(lease), retries) for lease, retries in rows] == [("0:02:00", 3)]


def test_idempotency_keys_of_the_release_still_dedupe(
    upgraded_dsn: str, jobs: ReleasedJobs
) -> None:
    enqueue = "select pgq.enqueue(job_name => 'greet', queue => %s, idempotency_key => %s)"
    keys = [("default", KEY_AVAILABLE), ("default", KEY_SUCCEEDED), ("mail", KEY_MAIL)]
    count = call(upgraded_dsn, "select count(*) from pgq.jobs")

    ids = [call(upgraded_dsn, enqueue, (queue, key))[0][0] for queue, key in keys]

    assert ids == [jobs.keyed, jobs.succeeded, jobs.mail_keyed]
    assert call(upgraded_dsn, "select count(*) from pgq.jobs") == count


def test_every_job_of_the_release_finishes_and_queue_stats_count_them(
    upgraded_dsn: str, jobs: ReleasedJobs
) -> None:
    call(upgraded_dsn, "select pgq.resume(queue => 'mail')")
    call(upgraded_dsn, "select pgq.retry_dead()")
    assert complete_many(upgraded_dsn, [jobs.running, jobs.marked]) == ["succeeded"] * 2
    backdate_lease(upgraded_dsn, jobs.begun.job_id)
    for queue in ("default", "mail"):
        while True:
            # Whatever waits (a schedule, a backoff) is due now.
            call(upgraded_dsn, "update pgq.jobs set run_at = now() - interval '1 second'"
                               " where state = 'available' returning id")  # fmt: skip
            claimed = claim(upgraded_dsn, queue)
            if not claimed:
                break
            assert set(complete_many(upgraded_dsn, list(claimed.values()))) == {"succeeded"}

    assert queue_stats(upgraded_dsn) == {
        "default": {"available": 0, "scheduled": 0, "running": 0, "succeeded": 8, "dead": 0,
                    "cancelled": 2, "paused": False},
        "mail": {"available": 0, "scheduled": 0, "running": 0, "succeeded": 3, "dead": 0,
                 "cancelled": 0, "paused": False},
    }  # fmt: skip
