"""Merged migrations are never edited: each one's checksum is pinned in MIGRATIONS.sha256."""

from __future__ import annotations

import pytest

from pgqueue_py._paths import sql_dir
from pgqueue_py.migrate import CHECKSUMS_FILE, file_sha256, read_checksums

SQL_DIR = sql_dir()
FIX = f"(cd sql && sha256sum migrations/NNNN.slug.sql >> {CHECKSUMS_FILE}) for a new file"


def test_every_migration_has_a_matching_checksum_line() -> None:
    checksum_file = SQL_DIR / CHECKSUMS_FILE
    assert checksum_file.is_file(), f"sql/{CHECKSUMS_FILE} is missing; create it: {FIX}"
    recorded = read_checksums(checksum_file)

    actual = {
        f"migrations/{path.name}": file_sha256(path)
        for path in sorted((SQL_DIR / "migrations").glob("*.sql"))
    }

    unlisted = sorted(set(actual) - set(recorded))
    assert not unlisted, f"migrations without a checksum line: {unlisted}; add: {FIX}"
    edited = sorted(name for name in actual if recorded[name] != actual[name])
    assert not edited, f"merged migrations were edited: {edited}; revert, and fix forward"


def test_every_checksum_line_names_an_existing_migration() -> None:
    checksum_file = SQL_DIR / CHECKSUMS_FILE
    if not checksum_file.is_file():
        pytest.skip(f"no sql/{CHECKSUMS_FILE} yet (the test above reports it)")

    missing = sorted(name for name in read_checksums(checksum_file)
                     if not (SQL_DIR / name).is_file())  # fmt: skip

    assert not missing, f"listed migrations were deleted: {missing}; never delete one"
