"""Run every pgTAP file in pgtap_tests/ through pg_prove, each on its own fresh clone.

Files whose names start with a digit are tests; others (``_fixtures.psql``, ``_*.sql``)
are includes pulled in with ``\\ir``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue_py.testing import libpq_env

PGTAP_DIR = Path(__file__).resolve().parent.parent / "pgtap_tests"
PGTAP_FILES = sorted(PGTAP_DIR.glob("[0-9]*.sql"))


# Advisory locks that a second session holds while a file runs: a file sees their keys as
# the wake_keys of live, listening workers (pgtap_tests/25_handoff.sql).
LIVE_WAKE_KEYS = (1000001, 1000002)


@pytest.fixture
def live_wake_keys(dsn: str) -> Iterator[None]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for key in LIVE_WAKE_KEYS:
            conn.execute("select pg_advisory_lock(1885434163, %s)", (key,))
        yield


@pytest.mark.parametrize("path", PGTAP_FILES, ids=[p.name for p in PGTAP_FILES])
def test_pgtap_file_passes(path: Path, dsn: str, live_wake_keys: None) -> None:
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        pytest.fail("pg_prove not found: install pgTAP's runner (Debian/Ubuntu: apt-get "
                    "install pgtap, or cpan TAP::Parser::SourceHandler::pgTAP)")  # fmt: skip

    result = subprocess.run(
        [pg_prove, "--verbose", path.name],
        cwd=PGTAP_DIR,  # \ir resolves against the file anyway; this keeps names short
        env={**os.environ, **libpq_env(dsn)},  # psql connects from PGHOST, PGDATABASE...
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    output = result.stdout + result.stderr
    print(output)  # shown with -s or -rA, as `make pgtap` does
    assert result.returncode == 0, f"pg_prove {path.name} failed:\n{output}"
