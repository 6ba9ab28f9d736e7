"""Throwaway PostgreSQL servers and migrated databases, for pgqueue's tests and yours."""

from __future__ import annotations

from pgqueue_py.testing.databases import (
    NoTestServer,
    PgServer,
    PgTapMissing,
    build_template,
    cloned_database,
    create_database,
    dbname_of,
    drop_database,
    empty_database,
    find_server,
    libpq_env,
    unique_name,
)

__all__ = [
    "NoTestServer",
    "PgServer",
    "PgTapMissing",
    "build_template",
    "cloned_database",
    "create_database",
    "dbname_of",
    "drop_database",
    "empty_database",
    "find_server",
    "libpq_env",
    "unique_name",
]
