"""Bring a database up to the engine this package ships: the one path users and tests take.

``migrate(dsn)``: under an advisory lock, check the migrations against
``MIGRATIONS.sha256``, apply the pending yoyo migrations in ``sql/migrations``, then
re-apply every file in ``sql/functions`` in name order, one transaction per file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import yoyo
from psycopg.conninfo import conninfo_to_dict

from pgqueue_py._paths import sql_dir

logger = logging.getLogger(__name__)

# Session-level advisory lock held for the whole run, so concurrent `pgqueue migrate`
# calls (say, every replica of a service at start-up) serialize instead of racing on
# yoyo's bookkeeping tables and `create or replace function`. The key is b"pgqueue" read
# as a big-endian integer: fixed, documented, and unlikely to collide with anyone else's.
MIGRATE_LOCK_KEY = 0x70_67_71_75_65_75_65

CHECKSUMS_FILE = "MIGRATIONS.sha256"


class MigrateError(RuntimeError):
    """Migrating failed; the message names the file at fault."""


class MigrationChecksumError(MigrateError):
    """A merged migration was edited: its file no longer matches MIGRATIONS.sha256."""


@dataclass(frozen=True)
class MigrateResult:
    """What one ``migrate`` run did."""

    applied_migrations: tuple[str, ...]
    """Ids (file names without ``.sql``) of the migrations this run applied, in order."""
    functions_applied: int
    """How many ``sql/functions`` files were (re-)applied."""


class PoolerRefused(MigrateError):
    """``migrate`` was asked to run through a transaction-mode pooler; it needs a session."""


def migrate(
    dsn: str, *, sql_path: Path | None = None, transaction_pooler: bool = False
) -> MigrateResult:
    """Apply pending migrations, then every function file; safe to run again and at once.

    ``transaction_pooler=True`` (the DSN goes through PgBouncer or Supavisor in
    transaction mode) is refused before connecting: the advisory lock that serializes
    concurrent runs is a session lock, and a migration file may not run in a
    transaction at all (``-- transactional: false``), so migrate needs a direct
    connection to PostgreSQL, or a session-mode pooler.
    """
    if transaction_pooler:
        raise PoolerRefused(
            "migrate cannot run through a transaction-mode pooler: it holds a session"
            " advisory lock and may run statements outside a transaction; connect it"
            " directly to PostgreSQL (or through a session-mode pool) and run it again"
        )
    root = sql_path if sql_path is not None else sql_dir()
    # Refuse before touching the database: an edited migration means this database and
    # others could end up with different schemas under the same migration id.
    verify_checksums(root)
    with psycopg.connect(dsn, autocommit=True) as conn, _advisory_lock(conn):
        applied = _apply_migrations(dsn, root / "migrations")
        count = _apply_functions(conn, root / "functions")
    return MigrateResult(applied_migrations=applied, functions_applied=count)


def read_checksums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style file into ``{relative path: hex digest}``."""
    checksums: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        digest, sep, name = line.partition(" ")
        if not sep or len(digest) != 64:
            raise MigrationChecksumError(f"{path}:{number}: expected '<sha256>  <path>'")
        # sha256sum marks binary mode with '*' before the name.
        checksums[name.strip().lstrip("*")] = digest.lower()
    return checksums


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_checksums(root: Path) -> None:
    """Raise MigrationChecksumError if a listed migration's file changed or vanished.

    A migration with no line yet is new work and passes here; the test suite insists
    that every migration has its line before it merges.
    """
    checksum_file = root / CHECKSUMS_FILE
    if not checksum_file.is_file():
        return
    problems: list[str] = []
    for name, expected in sorted(read_checksums(checksum_file).items()):
        if not name.startswith("migrations/"):
            continue
        path = root / name
        if not path.is_file():
            problems.append(f"{name} is listed but missing")
        elif file_sha256(path) != expected:
            problems.append(f"{name} differs from its recorded checksum")
    if problems:
        raise MigrationChecksumError(
            "merged migrations must never be edited; fix forward with a new migration: "
            + "; ".join(problems)
        )


def yoyo_url(dsn: str) -> str:
    """Turn any libpq DSN (URL or ``key=value`` form) into a yoyo URL for psycopg 3.

    yoyo's own URL parser neither unquotes the database name nor accepts a socket
    folder as host, so every parameter travels in the query string, which yoyo hands
    to ``psycopg.connect`` unchanged.
    """
    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    return "postgresql+psycopg://?" + urlencode(params) if params else "postgresql+psycopg://"


@contextmanager
def _advisory_lock(conn: psycopg.Connection[tuple[object, ...]]) -> Iterator[None]:
    conn.execute("select pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
    try:
        yield
    finally:
        # After an error the connection may be gone; closing it frees the lock anyway.
        if not conn.closed:
            conn.execute("select pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))


def _apply_migrations(dsn: str, folder: Path) -> tuple[str, ...]:
    migrations = yoyo.read_migrations(str(folder))
    backend = yoyo.get_backend(yoyo_url(dsn))
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return tuple(str(m.id) for m in pending)
    finally:
        backend.connection.close()


def _apply_functions(conn: psycopg.Connection[tuple[object, ...]], folder: Path) -> int:
    files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
    for path in files:
        logger.debug("applying %s", path.name)
        # One transaction per file: a broken file leaves the previous version in place.
        # Bytes, not str, and no parameters: psycopg then sends the text as one simple
        # query, so a file may hold many statements and literal '%' signs.
        try:
            with conn.transaction():
                conn.execute(path.read_bytes())
        except psycopg.Error as exc:
            raise MigrateError(f"functions/{path.name}: {exc}") from exc
    return len(files)
