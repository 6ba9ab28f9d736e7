"""The harness itself: each test gets its own migrated database, cloned from the template."""

from __future__ import annotations

import psycopg
import pytest

from pgqueue_py.testing import PgServer
from pgqueue_py.testing.throwaway import ThrowawayPostgres

_seen: list[str] = []


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_its_own_migrated_database(dsn: str, round_: int) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select current_database(), to_regclass('pgq.jobs') is not null,"
            " exists (select from pg_extension where extname = 'pgtap')"
        ).fetchone()
        # Fails in round 2 if the first round's database leaked into this one.
        conn.execute("create table harness_marker ()")

    assert row is not None
    name, has_jobs, has_pgtap = row
    assert (has_jobs, has_pgtap) == (True, True)
    assert name not in _seen
    _seen.append(name)


def test_a_finished_tests_database_is_dropped(pg_server: PgServer) -> None:
    # Runs after the two rounds above (pytest keeps file order): their clones are gone.
    assert len(_seen) == 2
    with psycopg.connect(pg_server.dsn) as conn:
        rows = conn.execute(
            "select datname from pg_database where datname = any(%s)", (_seen,)
        ).fetchall()

    assert rows == []


def test_a_restarted_throwaway_server_keeps_its_address_and_data(
    throwaway_pg: ThrowawayPostgres, dsn: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table survivor (x int)")
        conn.execute("insert into survivor values (1)")

    throwaway_pg.restart()

    with psycopg.connect(dsn) as conn:
        assert conn.execute("select x from survivor").fetchall() == [(1,)]
