"""Two transactions enqueue the same idempotency key at once: one job, one id.

The race is made real and deterministic: A enqueues inside an open transaction; B
enqueues the same key and blocks on A's entry in the unique index; only once B is seen
waiting on that lock (pg_stat_activity) does A commit or roll back.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

import psycopg
import pytest
from helpers import job_row, scalar, wait_until_lock_wait

from pgqueue_py import JobType, Queue


class Signup(TypedDict):
    user: str


welcome = JobType("welcome", Signup)


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=2) as q:
        yield q


def jobs_with_key(dsn: str, key: str) -> int:
    return int(scalar(dsn, "select count(*) from pgq.jobs where idempotency_key = %s", (key,)))


def test_racing_enqueues_of_one_key_make_one_job_when_the_first_commits(
    queue: Queue, dsn: str
) -> None:
    with (
        psycopg.connect(dsn) as a,
        psycopg.connect(dsn, autocommit=True) as b,
        ThreadPoolExecutor(1) as pool,
    ):
        a_id = queue.add(welcome, {"user": "a"}, idempotency_key="signup:42", conn=a)
        b_call = pool.submit(
            lambda: queue.add(welcome, {"user": "b"}, idempotency_key="signup:42", conn=b)
        )
        wait_until_lock_wait(dsn, b.info.backend_pid)
        assert not b_call.done()

        a.commit()
        b_id = b_call.result(timeout=30)

    assert b_id == a_id
    assert jobs_with_key(dsn, "signup:42") == 1
    assert job_row(dsn, a_id)["payload"] == {"user": "a"}


def test_racing_enqueues_of_one_key_insert_the_second_when_the_first_rolls_back(
    queue: Queue, dsn: str
) -> None:
    with (
        psycopg.connect(dsn) as a,
        psycopg.connect(dsn, autocommit=True) as b,
        ThreadPoolExecutor(1) as pool,
    ):
        a_id = queue.add(welcome, {"user": "a"}, idempotency_key="signup:42", conn=a)
        b_call = pool.submit(
            lambda: queue.add(welcome, {"user": "b"}, idempotency_key="signup:42", conn=b)
        )
        wait_until_lock_wait(dsn, b.info.backend_pid)

        a.rollback()
        b_id = b_call.result(timeout=30)

    assert b_id != a_id
    assert jobs_with_key(dsn, "signup:42") == 1
    assert job_row(dsn, b_id)["payload"] == {"user": "b"}


def test_racing_add_many_with_a_shared_key_returns_the_winners_id(queue: Queue, dsn: str) -> None:
    with (
        psycopg.connect(dsn) as a,
        psycopg.connect(dsn, autocommit=True) as b,
        ThreadPoolExecutor(1) as pool,
    ):
        [a_id] = queue.add_many(welcome, [{"user": "a"}], idempotency_keys=["k"], conn=a)
        b_call = pool.submit(
            lambda: queue.add_many(
                welcome, [{"user": "b0"}, {"user": "b1"}], idempotency_keys=["other", "k"], conn=b
            )
        )
        wait_until_lock_wait(dsn, b.info.backend_pid)

        a.commit()
        b_ids = b_call.result(timeout=30)

    assert b_ids[1] == a_id
    assert b_ids[0] != a_id
    assert jobs_with_key(dsn, "k") == 1
    assert int(scalar(dsn, "select count(*) from pgq.jobs")) == 2
