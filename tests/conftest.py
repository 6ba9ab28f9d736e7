"""Fixtures: one server per session, one template built by ``migrate``, a clone per test.

- ``pg_server`` (session): the :class:`PgServer` in use (where it came from, admin DSN).
- ``server_dsn`` (session): the admin DSN, for tests that create roles or databases.
- ``template_db`` (session): name of the migrated template (with pgTAP installed).
- ``dsn`` (function): DSN of a fresh clone of the template, dropped after the test.
- ``empty_dsn`` (function): DSN of a fresh database with nothing in it (migrate tests).
- ``throwaway_pg`` (function): the local :class:`ThrowawayPostgres`, for tests that stop or
  restart the server; the test is skipped when the server is not ours to restart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgqueue_py.testing import (
    NoTestServer,
    PgServer,
    PgTapMissing,
    build_template,
    cloned_database,
    drop_database,
    empty_database,
    find_server,
)
from pgqueue_py.testing.throwaway import ThrowawayPostgres, ThrowawayPostgresError


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        with find_server() as server:
            yield server
    except (NoTestServer, ThrowawayPostgresError) as exc:
        pytest.exit(f"pgqueue tests cannot run: {exc}", returncode=3)


@pytest.fixture(scope="session")
def server_dsn(pg_server: PgServer) -> str:
    return pg_server.dsn


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> Iterator[str]:
    try:
        name = build_template(pg_server)
    except PgTapMissing as exc:
        pytest.exit(f"pgqueue tests cannot run: {exc}", returncode=3)
    yield name
    drop_database(pg_server.dsn, name)


@pytest.fixture
def dsn(pg_server: PgServer, template_db: str) -> Iterator[str]:
    with cloned_database(pg_server, template_db) as clone_dsn:
        yield clone_dsn


@pytest.fixture
def empty_dsn(pg_server: PgServer) -> Iterator[str]:
    with empty_database(pg_server) as db_dsn:
        yield db_dsn


@pytest.fixture
def throwaway_pg(pg_server: PgServer) -> Iterator[ThrowawayPostgres]:
    pg = pg_server.throwaway
    if pg is None:
        pytest.skip(f"the test server comes from {pg_server.source}; only a local "
                    "throwaway cluster may be stopped and restarted by tests")  # fmt: skip
    yield pg
    # A test that stopped the server and failed before starting it again must not take
    # every later test down with it.
    pg.start()
