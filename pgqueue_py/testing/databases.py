"""Test databases for pgqueue: where the server comes from, and one database per test.

The server, in order (the project's contract, DESIGN.md "Tests"):

1. ``PGQ_TEST_DSN``: an existing server where the tests may create databases;
2. a throwaway container through testcontainers, when a Docker engine answers
   (``PGQ_TEST_IMAGE`` picks the image, ``PGQ_TEST_DOCKER=0`` skips this step);
3. a throwaway cluster from the local PostgreSQL binaries (:class:`ThrowawayPostgres`);
4. else :class:`NoTestServer`, whose message says what to install.

Each test then gets a clone of a template database built once by ``migrate``, the same
path users take. Nothing here imports pytest; the pytest plugin
(``pgqueue_py.testing.plugin``) wraps it in fixtures, for pgqueue's own tests and yours.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue_py.migrate import migrate
from pgqueue_py.testing.throwaway import PostgresBinariesNotFound, ThrowawayPostgres

DSN_ENV = "PGQ_TEST_DSN"
IMAGE_ENV = "PGQ_TEST_IMAGE"
DOCKER_ENV = "PGQ_TEST_DOCKER"
DEFAULT_IMAGE = "postgres:15"

# The throwaway cluster's settings (see throwaway.DEFAULT_SETTINGS for why not more).
_CONTAINER_COMMAND = "postgres -c fsync=off -c full_page_writes=off -c max_connections=200"


class NoTestServer(RuntimeError):
    """No PostgreSQL server could be found or started for the tests."""


class ExtensionMissing(RuntimeError):
    """An extension the template needs is not available on the test server."""


@dataclass(frozen=True)
class PgServer:
    """A server the tests may create and drop databases on."""

    dsn: str
    """Admin DSN (a role with CREATEDB, usually a superuser)."""
    source: Literal["PGQ_TEST_DSN", "testcontainers", "throwaway"]
    throwaway: ThrowawayPostgres | None
    """The local cluster, when we started one: tests may stop and restart it."""

    def dsn_for(self, dbname: str) -> str:
        """The admin DSN pointed at another database."""
        return make_conninfo(self.dsn, dbname=dbname)


@contextlib.contextmanager
def find_server(*, pgtap: bool = False) -> Iterator[PgServer]:
    """Find or start the tests' server, by the order in the module docstring.

    ``pgtap``: a container gets the pgTAP package installed (a local cluster has what the
    machine has; a ``PGQ_TEST_DSN`` server what its owner installed).
    """
    if dsn := os.environ.get(DSN_ENV):
        try:
            psycopg.connect(dsn, connect_timeout=10).close()
        except psycopg.Error as exc:
            raise NoTestServer(
                f"{DSN_ENV} is set, but its server cannot be reached: {exc}"
            ) from exc
        yield PgServer(dsn=dsn, source="PGQ_TEST_DSN", throwaway=None)
        return
    with ExitStack() as stack:
        server = _container_server(stack, pgtap=pgtap) if _docker_usable() else None
        if server is None:
            try:
                pg = stack.enter_context(ThrowawayPostgres())
            except PostgresBinariesNotFound as exc:
                packages = "postgresql postgresql-NN-pgtap pgtap" if pgtap else "postgresql"
                raise NoTestServer(
                    f"no PostgreSQL for the tests: {exc}. Either set {DSN_ENV} to a server "
                    "where the tests may create databases, start a Docker engine (with "
                    "testcontainers[postgres] installed), or install the PostgreSQL server "
                    f"(Debian/Ubuntu: apt-get install {packages})"
                ) from exc
            server = PgServer(dsn=pg.dsn, source="throwaway", throwaway=pg)
        yield server


def _docker_usable() -> bool:
    if os.environ.get(DOCKER_ENV, "1") == "0" or shutil.which("docker") is None:
        return False
    try:
        import testcontainers  # noqa: F401  # only a dev dependency
    except ImportError:
        return False
    try:
        # A client without a running engine fails at once; a hung engine must not hang us.
        probe = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=5, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _container_server(stack: ExitStack, *, pgtap: bool) -> PgServer | None:
    """Start a PostgreSQL container (with pgTAP if asked); None (and a note) if that fails."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # older testcontainers releases
        from testcontainers.postgres import PostgresContainer
    image = os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
    attempt = ExitStack()  # stops the container at once if it turns out unusable
    try:
        container = PostgresContainer(image, driver=None).with_command(_CONTAINER_COMMAND)
        attempt.enter_context(container)
        if pgtap:
            # The official images carry PostgreSQL's apt repository, where pgTAP lives.
            result = container.exec(
                ["sh", "-c", "apt-get update -qq && apt-get install -y -qq "
                 "postgresql-$PG_MAJOR-pgtap >/dev/null"]
            )  # fmt: skip
            if result.exit_code != 0:
                raise RuntimeError(f"installing pgTAP in {image} failed: {result.output!r}")
        url: str = container.get_connection_url(driver=None)
    except Exception as exc:  # any Docker trouble: fall back to local binaries
        attempt.close()
        print(f"pgqueue tests: container {image} unusable ({exc}); trying local binaries",
              file=sys.stderr)  # fmt: skip
        return None
    stack.enter_context(attempt.pop_all())  # the session now owns the container
    return PgServer(dsn=url, source="testcontainers", throwaway=None)


# -- databases -------------------------------------------------------------------------------


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def create_database(server_dsn: str, name: str, *, template: str = "template0") -> None:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )


def drop_database(server_dsn: str, name: str) -> None:
    """Drop a database, cutting off whoever is still connected (a test's leaked worker)."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


def build_template(
    server: PgServer,
    *,
    extensions: Sequence[str] = (),
    setup: Callable[[str], None] | None = None,
) -> str:
    """Create a database, migrate it the way users do, and return its name.

    Then ``create extension`` for each of ``extensions`` (ExtensionMissing, naming what to
    install, when the server lacks one), then ``setup(dsn)`` for whatever else every test
    should find (an application's own tables). ``setup`` must close its connections: a
    template with a session still connected cannot be copied.
    """
    name = unique_name("pgq_template")
    create_database(server.dsn, name)
    try:
        migrate(server.dsn_for(name))
        with psycopg.connect(server.dsn_for(name), autocommit=True) as conn:
            for extension in extensions:
                _create_extension(conn, extension)
        if setup is not None:
            setup(server.dsn_for(name))
    except BaseException:
        drop_database(server.dsn, name)
        raise
    return name


def _create_extension(conn: psycopg.Connection[Any], extension: str) -> None:
    try:
        conn.execute(sql.SQL("create extension if not exists {}").format(sql.Identifier(extension)))
    # No control file: 0A000 (feature_not_supported), 58P01 on older servers.
    except (psycopg.errors.UndefinedFile, psycopg.errors.FeatureNotSupported) as exc:
        if extension == "pgtap":
            raise ExtensionMissing(pgtap_install_hint(conn.info.server_version)) from exc
        major = conn.info.server_version // 10000
        raise ExtensionMissing(
            f"the extension {extension!r} is not available on the test server (PostgreSQL "
            f"{major}); install the package that provides it or point {DSN_ENV} at a "
            "server that has it"
        ) from exc


def pgtap_install_hint(server_version: int) -> str:
    major = server_version // 10000
    return (
        f"the pgTAP extension is not installed on the test server (PostgreSQL {major}); "
        f"install it (Debian/Ubuntu: apt-get install postgresql-{major}-pgtap pgtap) "
        f"or point {DSN_ENV} at a server that has it"
    )


@contextlib.contextmanager
def cloned_database(server: PgServer, template: str) -> Iterator[str]:
    """A fresh database copied from ``template``; yields its DSN, drops it afterwards."""
    name = unique_name("pgq_test")
    create_database(server.dsn, name, template=template)
    try:
        yield server.dsn_for(name)
    finally:
        drop_database(server.dsn, name)


class CloneSupply:
    """Clones of one template, each made while the test before it runs.

    ``clone()`` hands out a clone made in the background since the previous call (or
    makes one now, the first time or when that failed, e.g. because a test restarted the
    server meanwhile) and starts on the next. A test waits for its database only as long
    as a copy takes beyond the previous test's own run time. Clones are still dropped in
    the foreground, so a finished test's database is gone before the next test starts.
    ``close()`` drops the clone made for nobody; call it before dropping the template.
    """

    def __init__(self, server: PgServer, template: str) -> None:
        self.server = server
        self.template = template
        self._maker = ThreadPoolExecutor(1, thread_name_prefix="pgq-clone")
        self._lock = threading.Lock()
        self._next: Future[str] | None = None
        self._closed = False

    def _make(self) -> str:
        name = unique_name("pgq_test")
        create_database(self.server.dsn, name, template=self.template)
        return name

    def _made_ahead(self) -> str | None:
        with self._lock:
            ahead, self._next = self._next, None
        if ahead is None:
            return None
        try:
            return ahead.result()
        except psycopg.Error:
            return None  # made while the server was down or restarting: make it again

    @contextlib.contextmanager
    def clone(self) -> Iterator[str]:
        """A fresh copy of the template; yields its DSN, drops it afterwards."""
        name = self._made_ahead() or self._make()
        with self._lock:
            if not self._closed:
                self._next = self._maker.submit(self._make)
        try:
            yield self.server.dsn_for(name)
        finally:
            drop_database(self.server.dsn, name)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        if (spare := self._made_ahead()) is not None:
            drop_database(self.server.dsn, spare)
        self._maker.shutdown()


@contextlib.contextmanager
def empty_database(server: PgServer) -> Iterator[str]:
    """A fresh database with nothing of pgqueue in it; yields its DSN."""
    name = unique_name("pgq_empty")
    create_database(server.dsn, name)
    try:
        yield server.dsn_for(name)
    finally:
        drop_database(server.dsn, name)


def dbname_of(dsn: str) -> str:
    return str(conninfo_to_dict(dsn).get("dbname", ""))


# libpq connection keywords and the environment variables psql reads for them.
_LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "channel_binding": "PGCHANNELBINDING",
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "gssencmode": "PGGSSENCMODE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}


def libpq_env(dsn: str) -> dict[str, str]:
    """The DSN as PG* environment variables, for psql-based tools such as pg_prove.

    pg_prove's own ``--dbname`` cannot take a ``key=value`` DSN (its option parser reads
    the '=' as a hash), and the environment also keeps a password out of ``ps``.
    """
    env: dict[str, str] = {}
    for key, value in conninfo_to_dict(dsn).items():
        if key not in _LIBPQ_ENV:
            raise ValueError(f"DSN parameter {key!r} has no PG* environment variable")
        env[_LIBPQ_ENV[key]] = str(value)
    return env
