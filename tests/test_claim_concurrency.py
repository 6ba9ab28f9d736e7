"""Concurrent claims: never the same job twice, all jobs in the end, and never waiting
for a job another connection holds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

import psycopg
import pytest
from helpers import scalar

from pgqueue_py import JobType, Queue

CLAIMERS = 8


class Work(TypedDict):
    n: int


work = JobType("work", Work)


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=2) as q:
        yield q


def no_waiting(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Make any lock wait on ``conn`` an error (55P03) instead of a wait."""
    conn.execute("set lock_timeout = '2s'")


def test_concurrent_claimers_share_all_jobs_without_duplicates(queue: Queue, dsn: str) -> None:
    ids = queue.add_many(work, [{"n": i} for i in range(1000)])
    start = threading.Barrier(CLAIMERS)

    def claim_until_empty(worker: int) -> list[int]:
        seen: list[int] = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            no_waiting(conn)
            start.wait()
            while batch := queue.claim(f"claimer-{worker}", batch=7, conn=conn):
                seen.extend(job.id for job in batch)
                outcomes = queue.complete_many(
                    [job.id for job in batch], [job.lease_token for job in batch], conn=conn
                )
                assert {o.outcome for o in outcomes} == {"succeeded"}
        return seen

    with ThreadPoolExecutor(CLAIMERS) as pool:
        per_claimer = list(pool.map(claim_until_empty, range(CLAIMERS)))

    claimed = [job_id for seen in per_claimer for job_id in seen]
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert sorted(claimed) == sorted(ids)
    assert sum(1 for seen in per_claimer if seen) > 1, "one claimer took every job"
    assert scalar(dsn, "select count(*) from pgq.jobs where state = 'succeeded'") == 1000
    assert scalar(dsn, "select sum(attempt) from pgq.jobs") == 1000


def test_claim_skips_jobs_locked_by_an_open_claim_instead_of_waiting(
    queue: Queue, dsn: str
) -> None:
    ids = queue.add_many(work, [{"n": i} for i in range(20)])

    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as other:
        held = queue.claim("holder", batch=5, conn=holder)  # rows locked, not committed
        assert holder.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        no_waiting(other)

        # A wait on the holder's row locks would raise LockNotAvailable after 2 s.
        taken = queue.claim("other", batch=20, conn=other)

        assert {j.id for j in held}.isdisjoint(j.id for j in taken)
        assert sorted(j.id for j in held + taken) == sorted(ids)
        holder.commit()

    assert scalar(dsn, "select count(*) from pgq.jobs where state = 'running'") == 20
    assert scalar(dsn, "select count(distinct worker_id) from pgq.jobs") == 2


def test_claim_while_another_claim_is_open_and_the_queue_is_drained_returns_nothing(
    queue: Queue, dsn: str
) -> None:
    queue.add_many(work, [{"n": i} for i in range(3)])

    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as other:
        held = queue.claim("holder", batch=3, conn=holder)
        no_waiting(other)

        taken = queue.claim("other", batch=3, conn=other)

        holder.rollback()

    assert len(held) == 3
    assert taken == []
    # The holder rolled back: its jobs are available again, as if never claimed.
    assert scalar(dsn, "select count(*) from pgq.jobs where state = 'available'") == 3
