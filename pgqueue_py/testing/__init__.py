"""Throwaway PostgreSQL servers and migrated databases, for pgqueue's tests and yours.

The machinery here imports no pytest; ``pgqueue_py.testing.plugin`` is the pytest plugin
(registered by the ``pytest11`` entry point ``pgqueue``) that turns it into fixtures.
"""

from __future__ import annotations

from pgqueue_py.testing.databases import (
    CloneSupply,
    ExtensionMissing,
    NoTestServer,
    PgServer,
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
from pgqueue_py.testing.throwaway import ThrowawayPostgres

__all__ = [
    "CloneSupply",
    "ExtensionMissing",
    "NoTestServer",
    "PgServer",
    "ThrowawayPostgres",
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
