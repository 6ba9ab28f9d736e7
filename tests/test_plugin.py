"""The pytest plugin as a user meets it: installed with the package, fixtures in their tests.

The user's test files run in a separate pytest process (``pytester``), on this session's
server (``PGQ_TEST_DSN``), so no second cluster is started.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import psycopg
import pytest

from pgqueue_py.testing import PgServer

# A user's conftest.py: their own table in every test's database.
USER_CONFTEST = """
    import psycopg
    import pytest


    @pytest.fixture(scope="session")
    def pgqueue_template_setup():
        def setup(dsn):
            with psycopg.connect(dsn) as conn:
                conn.execute("create table sent_emails (address text primary key)")

        return setup
"""

# A user's handler and its tests.
USER_TESTS = """
    from pathlib import Path
    from typing import TypedDict

    import psycopg
    import psycopg_pool
    import pytest

    from pgqueue_py import JobType

    class Email(TypedDict):
        to: str

    send_email = JobType("send_email", Email)

    def handle_send_email(dsn, payload):
        with psycopg.connect(dsn) as conn:
            conn.execute("insert into sent_emails values (%s)", (payload["to"],))

    def record(name):
        with Path("databases.txt").open("a") as f:
            f.write(name + "\\n")

    opened = []

    @pytest.fixture
    def queue_closed_afterwards(pgqueue_dsn):
        # Torn down after pgqueue_queue and before pgqueue_dsn: the database is still
        # there, so only a closed queue refuses the call.
        yield
        with pytest.raises(psycopg_pool.PoolClosed):
            opened[-1].stats()

    def test_a_handler_runs_a_job_in_its_own_database(
        queue_closed_afterwards, pgqueue_queue, pgqueue_dsn, pgqueue_template
    ):
        opened.append(pgqueue_queue)
        job_id = pgqueue_queue.add(send_email, {"to": "a@example.com"})
        [job] = pgqueue_queue.claim("test-worker", batch=1)
        handle_send_email(pgqueue_dsn, job.payload)
        pgqueue_queue.complete(job.id, job.lease_token)

        assert job.id == job_id
        assert pgqueue_queue.job(job_id).state == "succeeded"
        with psycopg.connect(pgqueue_dsn) as conn:
            db, pgtap = conn.execute(
                "select current_database(),"
                " exists (select from pg_extension where extname = 'pgtap')"
            ).fetchone()
            sent = conn.execute("select address from sent_emails").fetchall()
        assert sent == [("a@example.com",)]
        assert not pgtap  # the plugin installs no pgTAP for users
        record(db)
        record(pgqueue_template)

    def test_the_next_test_starts_from_an_empty_queue(pgqueue_queue, pgqueue_dsn):
        with psycopg.connect(pgqueue_dsn) as conn:
            db = conn.execute("select current_database()").fetchone()[0]
            sent = conn.execute("select count(*) from sent_emails").fetchone()[0]
            jobs = conn.execute("select count(*) from pgq.jobs").fetchone()[0]
        assert (sent, jobs) == (0, 0)
        record(db)
"""


def test_the_plugin_is_registered_with_pytest_by_the_package() -> None:
    [entry] = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "pgqueue"]

    assert entry.value == "pgqueue_py.testing.plugin"


def test_a_users_handler_tests_pass_each_in_a_fresh_database_that_is_dropped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, pgqueue_server: PgServer
) -> None:
    monkeypatch.setenv("PGQ_TEST_DSN", pgqueue_server.dsn)  # this session's server
    pytester.makeconftest(textwrap.dedent(USER_CONFTEST))
    pytester.makepyfile(test_handlers=textwrap.dedent(USER_TESTS))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)
    first_db, template, second_db = (pytester.path / "databases.txt").read_text().split()
    assert first_db != second_db
    with psycopg.connect(pgqueue_server.dsn) as conn:
        left = conn.execute(
            "select datname from pg_database where datname = any(%s)",
            ([first_db, template, second_db],),
        ).fetchall()
    assert left == []


def test_an_unreachable_server_stops_the_session_with_a_clear_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 1 on localhost: nothing listens there.
    monkeypatch.setenv("PGQ_TEST_DSN", "postgresql://nobody@127.0.0.1:1/postgres")
    pytester.makepyfile(test_it="def test_it(pgqueue_dsn):\n    pass\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    assert result.ret == 3
    result.stdout.fnmatch_lines(["*pgqueue fixtures cannot run: PGQ_TEST_DSN*127.0.0.1*port 1*"])


def test_importing_the_package_and_its_testing_machinery_imports_no_pytest() -> None:
    code = (
        "import sys, pgqueue_py, pgqueue_py.testing, pgqueue_py.cli, pgqueue_py.migrate;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert out.strip() == "[]"
