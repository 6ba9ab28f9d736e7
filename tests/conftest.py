"""Fixtures: the pgqueue pytest plugin (``pgqueue_py.testing.plugin``), as these tests name it.

The plugin comes with the installed package (entry point ``pytest11``). It finds one server
per session, builds one template with ``migrate`` and clones it for each test; here the
template also gets pgTAP, which the pgTAP suite runs on.

- ``pg_server`` (session): the :class:`PgServer` in use (where it came from, admin DSN).
- ``server_dsn`` (session): the admin DSN, for tests that create roles or databases.
- ``template_db`` (session): name of the migrated template (with pgTAP installed).
- ``dsn`` (function): DSN of a fresh clone of the template, dropped after the test.
- ``empty_dsn`` (function): DSN of a fresh database with nothing in it (migrate tests).
- ``throwaway_pg`` (function): the local :class:`ThrowawayPostgres`, for tests that stop or
  restart the server; the test is skipped when the server is not ours to restart.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from pgqueue_py.testing import PgServer, empty_database
from pgqueue_py.testing.throwaway import ThrowawayPostgres


@pytest.fixture(scope="session")
def pgqueue_template_extensions() -> Sequence[str]:
    return ("pgtap",)


@pytest.fixture(scope="session")
def pg_server(pgqueue_server: PgServer) -> PgServer:
    return pgqueue_server


@pytest.fixture(scope="session")
def server_dsn(pgqueue_server: PgServer) -> str:
    return pgqueue_server.dsn


@pytest.fixture(scope="session")
def template_db(pgqueue_template: str) -> str:
    return pgqueue_template


@pytest.fixture
def dsn(pgqueue_dsn: str) -> str:
    return pgqueue_dsn


@pytest.fixture
def empty_dsn(pgqueue_server: PgServer) -> Iterator[str]:
    with empty_database(pgqueue_server) as db_dsn:
        yield db_dsn


@pytest.fixture
def throwaway_pg(pgqueue_server: PgServer) -> Iterator[ThrowawayPostgres]:
    pg = pgqueue_server.throwaway
    if pg is None:
        pytest.skip(f"the test server comes from {pgqueue_server.source}; only a local "
                    "throwaway cluster may be stopped and restarted by tests")  # fmt: skip
    yield pg
    # A test that stopped the server and failed before starting it again must not take
    # every later test down with it.
    pg.start()
