"""pytest plugin: a throwaway, migrated pgqueue database for each test of your handlers.

Installing pgqueue registers this module with pytest (entry point ``pytest11``, name
``pgqueue``; ``-p no:pgqueue`` turns it off). Its fixtures:

- ``pgqueue_dsn`` (function): DSN of a fresh database, cloned from a template that
  ``migrate`` built once per session; dropped after the test.
- ``pgqueue_queue`` (function): a :class:`~pgqueue_py.Queue` on ``pgqueue_dsn``, closed
  after the test.
- ``pgqueue_server`` (session): the :class:`~pgqueue_py.testing.PgServer` in use. It is
  ``PGQ_TEST_DSN`` when set (a server where the tests may create databases); else a
  testcontainers PostgreSQL where Docker runs; else a throwaway cluster from the local
  PostgreSQL binaries; else the session stops with a message saying what to install.
- ``pgqueue_template`` (session): the template's name.
- ``pgqueue_clone_supply`` (session): the :class:`~pgqueue_py.testing.CloneSupply` that
  ``pgqueue_dsn`` takes its databases from, each copied while the test before runs.

Two fixtures are there to be overridden in your ``conftest.py``, both session-scoped:

- ``pgqueue_template_extensions``: extensions to create in the template (none by default);
- ``pgqueue_template_setup``: a callable run once with the template's DSN after
  ``migrate``, e.g. to create your application's tables (none by default). It must close
  its connections, since a template with a session connected cannot be copied.

This is the only module of the package that imports pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

import pytest

from pgqueue_py.client.queue import Queue
from pgqueue_py.testing.databases import (
    CloneSupply,
    ExtensionMissing,
    NoTestServer,
    PgServer,
    build_template,
    drop_database,
    find_server,
)
from pgqueue_py.testing.throwaway import ThrowawayPostgresError

TemplateSetup = Callable[[str], None]


def _cannot_run(exc: Exception) -> NoReturn:
    # One clear message and exit code 3, rather than the same error in every test.
    pytest.exit(f"pgqueue fixtures cannot run: {exc}", returncode=3)


@pytest.fixture(scope="session")
def pgqueue_template_extensions() -> Sequence[str]:
    """Extensions to create in the template database; override to add some."""
    return ()


@pytest.fixture(scope="session")
def pgqueue_template_setup() -> TemplateSetup | None:
    """Run once on the migrated template (given its DSN); override to add your tables."""
    return None


@pytest.fixture(scope="session")
def pgqueue_server(pgqueue_template_extensions: Sequence[str]) -> Iterator[PgServer]:
    """The server the session's databases live on, found or started once."""
    try:
        with find_server(pgtap="pgtap" in pgqueue_template_extensions) as server:
            yield server
    except (NoTestServer, ThrowawayPostgresError) as exc:
        _cannot_run(exc)


@pytest.fixture(scope="session")
def pgqueue_template(
    pgqueue_server: PgServer,
    pgqueue_template_extensions: Sequence[str],
    pgqueue_template_setup: TemplateSetup | None,
) -> Iterator[str]:
    """Name of the template database: migrated, then extended and set up as asked."""
    try:
        name = build_template(
            pgqueue_server, extensions=pgqueue_template_extensions, setup=pgqueue_template_setup
        )
    except ExtensionMissing as exc:
        _cannot_run(exc)
    yield name
    drop_database(pgqueue_server.dsn, name)


@pytest.fixture(scope="session")
def pgqueue_clone_supply(
    pgqueue_server: PgServer, pgqueue_template: str
) -> Iterator[CloneSupply]:
    """Copies of the template, the next one made while a test runs."""
    supply = CloneSupply(pgqueue_server, pgqueue_template)
    yield supply
    supply.close()


@pytest.fixture
def pgqueue_dsn(pgqueue_clone_supply: CloneSupply) -> Iterator[str]:
    """DSN of a fresh copy of the template, for this test alone; dropped afterwards."""
    with pgqueue_clone_supply.clone() as dsn:
        yield dsn


@pytest.fixture
def pgqueue_queue(pgqueue_dsn: str) -> Iterator[Queue]:
    """A ``Queue`` on this test's database, closed after the test."""
    with Queue(pgqueue_dsn) as queue:
        yield queue
