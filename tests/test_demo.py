"""``pgqueue demo`` runs end to end: every job terminal, retries and a dead letter, a worker
killed mid-run whose jobs come back, and a run-once ledger without duplicates."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from pgqueue_py.cli import demo
from pgqueue_py.client import Queue

if TYPE_CHECKING:
    from typing_extensions import LiteralString


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue_py", "demo", *args],
        env=env if env is not None else os.environ.copy(), capture_output=True, text=True,
        timeout=120, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def final_stats(stdout: str) -> dict[str, int]:
    """The queue's row of the final statistics table, by column."""
    lines = stdout.splitlines()
    header = lines[lines.index("Final statistics (pgqueue stats):") + 1].split()
    row = lines[lines.index("Final statistics (pgqueue stats):") + 2].split()
    return {name: int(value) for name, value in zip(header[1:7], row[1:7], strict=True)}


def query(dsn: str, sql: LiteralString) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=2) as q:
        yield q


def test_demo_against_a_database_ends_with_succeeded_and_dead_jobs_and_no_double_charge(
    dsn: str,
) -> None:
    result = run_demo("--dsn", dsn, "--jobs", "600", "--workers", "2")

    assert result.returncode == 0, result.stdout + result.stderr
    stats = final_stats(result.stdout)
    assert stats["succeeded"] > 0 and stats["dead"] > 0
    assert stats["available"] == stats["scheduled"] == stats["running"] == 0
    assert stats["succeeded"] + stats["dead"] + stats["cancelled"] == 600
    assert "duplicates: 0" in result.stdout
    [(entries, charged, charge_jobs)] = query(
        dsn,
        "select (select count(*) from pgqueue_demo.ledger),"
        " (select count(distinct job_id) from pgqueue_demo.ledger),"
        " (select count(*) from pgq.jobs where job_name = 'charge_card')",
    )
    assert entries == charged == charge_jobs


def test_demo_kills_a_worker_and_its_jobs_come_back_after_their_lease(dsn: str) -> None:
    result = run_demo("--dsn", dsn, "--jobs", "600", "--workers", "2")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIGKILLed demo-worker-1" in result.stdout
    # Each job the killed worker held ran again after its lease expired (a claim by the
    # other worker, or, for an unknown charge, the operator's retry, which resets the
    # attempt count) and ended terminal.
    reclaimed = query(
        dsn,
        "select j.id, j.state, j.started_at > e.failed_at"
        " from pgq.job_errors e join pgq.jobs j on j.id = e.job_id"
        " where e.worker_id = 'demo-worker-1' and e.error like 'lease expired%'",
    )
    assert reclaimed, result.stdout
    assert all(state in ("succeeded", "dead") and ran_again
               for _, state, ran_again in reclaimed), reclaimed  # fmt: skip
    assert "lease expired" in result.stdout


def test_demo_without_a_database_starts_a_throwaway_cluster_and_stops_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}

    result = run_demo("--jobs", "200", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "throwaway PostgreSQL cluster" in result.stdout
    assert final_stats(result.stdout)["dead"] > 0
    [cluster_dsn] = re.findall(r"PostgreSQL is up at (\S+)", result.stdout)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster_dsn, connect_timeout=5).close()


@pytest.mark.parametrize("charged", [True, False], ids=["it-happened", "it-did-not"])
def test_an_unknown_charge_is_settled_from_the_ledger_and_retried(
    dsn: str, queue: Queue, charged: bool
) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(demo.LEDGER_SETUP)
        queue.add_many(demo.charge_card, [demo.Charge(order_id=7, cents=100)], queue="q")
        [job] = queue.claim("doomed-worker", queues=["q"])
        # The attempt begins the charge and dies before recording it.
        assert queue.once_begin(job.id, job.lease_token, "charge").status == "run"
        entry_id = None
        if charged:
            row = db.execute(demo.LEDGER_INSERT, {"run": "q", "job_id": job.id, "order_id": 7,
                                                  "cents": 100}).fetchone()  # fmt: skip
            assert row is not None
            entry_id = row[0]
        assert queue.fail(job.id, job.lease_token, "worker died", retry=False) == "dead"

        settled = demo.settle_unknown_charges(queue, db, "q", demo.Progress(1))

    assert settled == 1
    [again] = queue.claim("next-worker", queues=["q"])
    status = queue.once_begin(again.id, again.lease_token, "charge")
    if charged:
        assert (status.status, status.result) == ("done", entry_id)
    else:
        assert status.status == "run"
