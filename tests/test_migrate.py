"""``migrate``: idempotent, safe to run concurrently, refuses edited migrations; the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from pgqueue_py._paths import sql_dir
from pgqueue_py.migrate import (
    CHECKSUMS_FILE,
    MIGRATE_LOCK_KEY,
    MigrateResult,
    MigrationChecksumError,
    file_sha256,
    migrate,
)

ALL_MIGRATIONS = tuple(p.stem for p in sorted((sql_dir() / "migrations").glob("*.sql")))
FUNCTION_FILES = len(list((sql_dir() / "functions").glob("*.sql")))


def engine_installed(dsn: str) -> bool:
    """The schema's table and the worker's entry point are there."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select to_regclass('pgq.jobs') is not null"
            " and to_regprocedure('pgq.claim(text,text[],integer,interval)') is not null"
        ).fetchone()
    return row == (True,)


def has_pgq_schema(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select to_regnamespace('pgq') is not null").fetchone()
    return row == (True,)


def wait_for_advisory_lock_waiters(dsn: str, count: int, timeout: float = 30.0) -> None:
    """Block until ``count`` sessions wait on the migrate lock (pg_stat_activity, no sleeps
    standing in for synchronisation: the short poll only paces the check)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select count(*) from pg_stat_activity"
                " where datname = current_database()"
                " and wait_event_type = 'Lock' and wait_event = 'advisory'"
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            time.sleep(0.02)
    raise AssertionError(f"{count} migrate runs never queued on the advisory lock")


def test_migrate_on_an_empty_database_installs_the_engine(empty_dsn: str) -> None:
    result = migrate(empty_dsn)

    assert result == MigrateResult(applied_migrations=ALL_MIGRATIONS,
                                   functions_applied=FUNCTION_FILES)  # fmt: skip
    assert engine_installed(empty_dsn)


def test_migrate_twice_applies_nothing_new_and_keeps_the_functions(empty_dsn: str) -> None:
    migrate(empty_dsn)

    second = migrate(empty_dsn)

    assert second.applied_migrations == ()
    assert second.functions_applied == FUNCTION_FILES
    assert engine_installed(empty_dsn)


def test_concurrent_migrations_serialize_and_both_succeed(empty_dsn: str) -> None:
    results: list[MigrateResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, name=f"migrate-{i}") for i in range(2)]
    # Hold the lock ourselves so both runs are provably queued behind it at once.
    with psycopg.connect(empty_dsn, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        for thread in threads:
            thread.start()
        wait_for_advisory_lock_waiters(empty_dsn, 2)
        holder.execute("select pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sorted(r.applied_migrations for r in results) == [(), ALL_MIGRATIONS]
    assert engine_installed(empty_dsn)


def test_an_edited_migration_is_refused_before_anything_is_applied(
    empty_dsn: str, tmp_path: Path
) -> None:
    sql_copy = tmp_path / "sql"
    shutil.copytree(sql_dir(), sql_copy)
    migrations = sorted((sql_copy / "migrations").glob("*.sql"))
    (sql_copy / CHECKSUMS_FILE).write_text(
        "".join(f"{file_sha256(p)}  migrations/{p.name}\n" for p in migrations)
    )
    with migrations[0].open("a") as edited:
        edited.write("\n-- an edit after merging\n")

    with pytest.raises(MigrationChecksumError, match=migrations[0].name):
        migrate(empty_dsn, sql_path=sql_copy)

    assert not has_pgq_schema(empty_dsn)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue_py", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**env, **extra}


def test_cli_migrate_with_dsn_option_installs_the_engine(empty_dsn: str) -> None:
    result = run_cli("migrate", "--dsn", empty_dsn, env=cli_env())

    assert result.returncode == 0, result.stderr
    assert ALL_MIGRATIONS[-1] in result.stdout
    assert engine_installed(empty_dsn)


def test_cli_migrate_takes_database_url_from_the_environment(empty_dsn: str) -> None:
    result = run_cli("migrate", env=cli_env(DATABASE_URL=empty_dsn))

    assert result.returncode == 0, result.stderr
    assert engine_installed(empty_dsn)


def test_cli_migrate_without_a_dsn_is_a_one_line_error() -> None:
    result = run_cli("migrate", env=cli_env())

    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "DATABASE_URL" in result.stderr
