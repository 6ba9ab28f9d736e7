"""The engine's worker calls under real concurrency, through plain SQL: one lock order
for the multi-row calls, late completion racing claim, and the pgq_finished channel.

Races wait on ``pg_stat_activity`` lock waits, never on sleeps. Absence of a
notification is proven by order: a sentinel sent after the transaction under test
arrives after anything that transaction sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
from helpers import backdate_lease, backend_pid, scalar, wait_until_lock_wait

FINISHED = "pgq_finished"
SENTINEL = "-- sentinel --"


def running_jobs(dsn: str, count: int, *, queue: str = "fencing",
                 max_retries: int = 5) -> list[tuple[int, UUID]]:  # fmt: skip
    """``count`` jobs added and claimed in one queue: (id, lease token), ascending ids."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "select pgq.enqueue('work', '{}', %s, max_retries => %s) from generate_series(1, %s)",
            (queue, max_retries, count),
        )
        rows = conn.execute(
            "select c.id, c.lease_token from pgq.claim('w1', array[%s], %s) c order by c.id",
            (queue, count),
        ).fetchall()
    assert len(rows) == count
    return [(int(r[0]), r[1]) for r in rows]


class Blocked:
    """Run one statement on its own connection in a thread, expected to wait on a lock."""

    def __init__(self, dsn: str, query: Any, params: tuple[object, ...]) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = backend_pid(self.conn)
        self.rows: list[tuple[Any, ...]] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(query, params), daemon=True)
        self._thread.start()

    def _run(self, query: Any, params: tuple[object, ...]) -> None:
        try:
            self.rows = self.conn.execute(query, params).fetchall()
        except BaseException as exc:  # handed to the test in result()
            self.error = exc

    def result(self) -> list[tuple[Any, ...]]:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the blocked statement never finished"
        self.conn.close()
        if self.error is not None:
            raise self.error
        return self.rows


def holds_lock(dsn: str, job_id: int) -> bool:
    """True when another transaction holds a row lock on the job (NOWAIT fails)."""
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute("select 1 from pgq.jobs where id = %s for update nowait", (job_id,))
        except psycopg.errors.LockNotAvailable:
            return True
        return False


# -- one lock order ------------------------------------------------------------------------

MANY_CALLS: dict[str, str] = {
    "complete_many": "select c.job_id, c.outcome from pgq.complete_many(%s, %s) c",
    "heartbeat_many": "select h.job_id, h.outcome from pgq.heartbeat_many(%s, %s) h",
}


@pytest.mark.parametrize("call", sorted(MANY_CALLS))
def test_many_calls_lock_rows_in_ascending_id_order_whatever_the_input_order(
    dsn: str, call: str
) -> None:
    (low, low_token), (high, high_token) = running_jobs(dsn, 2)
    with psycopg.connect(dsn) as holder:
        holder.execute("select 1 from pgq.jobs where id = %s for update", (high,))
        # Input order high, low: locking in input order would wait on `high` holding
        # nothing; ascending order holds `low` while it waits on `high`.
        blocked = Blocked(dsn, MANY_CALLS[call], ([high, low], [high_token, low_token]))
        wait_until_lock_wait(dsn, blocked.pid)

        assert holds_lock(dsn, low), f"{call} waits on job {high} without holding job {low}"
        holder.rollback()
    outcomes = dict(blocked.result())

    expected = "succeeded" if call == "complete_many" else "extended"
    assert outcomes == {high: expected, low: expected}


def test_heartbeat_many_and_complete_many_of_one_worker_do_not_deadlock(dsn: str) -> None:
    jobs = running_jobs(dsn, 40)
    ids = [j for j, _ in jobs]
    tokens = [t for _, t in jobs]
    with psycopg.connect(dsn) as holder:
        # Both calls queue up behind the first job, then race over the rest in
        # opposite input orders.
        holder.execute("select 1 from pgq.jobs where id = %s for update", (ids[0],))
        beat = Blocked(dsn, MANY_CALLS["heartbeat_many"], (ids, tokens))
        wait_until_lock_wait(dsn, beat.pid)
        done = Blocked(dsn, MANY_CALLS["complete_many"], (ids[::-1], tokens[::-1]))
        wait_until_lock_wait(dsn, done.pid)
        holder.rollback()

    beats = dict(beat.result())
    completions = dict(done.result())

    assert completions == dict.fromkeys(ids, "succeeded")
    assert set(beats.values()) <= {"extended", "lease_lost"}
    assert scalar(dsn, "select count(*) from pgq.jobs where state = 'succeeded'") == 40


# -- late completion against claim ---------------------------------------------------------


def test_late_complete_waiting_on_a_reaping_claim_is_accepted_after_it(dsn: str) -> None:
    [(job_id, token)] = running_jobs(dsn, 1)
    backdate_lease(dsn, job_id)
    with psycopg.connect(dsn) as reaper:
        reaper.execute("select * from pgq.claim('w2', array['fencing'])")  # reaps, uncommitted
        assert scalar(dsn, "select state from pgq.jobs where id = %s", (job_id,)) == "running"
        late = Blocked(dsn, "select pgq.complete(%s, %s)", (job_id, token))
        wait_until_lock_wait(dsn, late.pid)
        reaper.commit()

    assert late.result() == [("succeeded",)]
    row = scalar(dsn, "select array[state, attempt::text] from pgq.jobs where id = %s", (job_id,))
    assert row == ["succeeded", "1"]
    errors = scalar(dsn, "select count(*) from pgq.attempt_errors where job_id = %s", (job_id,))
    assert errors == 1  # the reaped attempt's "lease expired" row stays


def test_late_complete_waiting_on_a_new_claim_is_refused_after_it(dsn: str) -> None:
    [(job_id, token)] = running_jobs(dsn, 1)
    backdate_lease(dsn, job_id)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select * from pgq.claim('w2', array['fencing'])")  # reaps
        conn.execute("update pgq.jobs set run_at = now() where id = %s", (job_id,))
    with psycopg.connect(dsn) as claimer:
        claimed = claimer.execute("select c.id from pgq.claim('w3', array['fencing']) c").fetchall()
        assert claimed == [(job_id,)]
        late = Blocked(dsn, "select pgq.complete(%s, %s)", (job_id, token))
        wait_until_lock_wait(dsn, late.pid)
        claimer.commit()

    with pytest.raises(psycopg.Error) as info:
        late.result()
    assert info.value.sqlstate == "PQ101"
    row = scalar(dsn, "select array[state, attempt::text, worker_id] from pgq.jobs where id = %s",
                 (job_id,))  # fmt: skip
    assert row == ["running", "2", "w3"]


# -- pgq_finished --------------------------------------------------------------------------


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("listen pgq_finished")
        yield conn


def finished_until_sentinel(dsn: str, listener: psycopg.Connection[tuple[Any, ...]]) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_notify(%s, %s)", (FINISHED, SENTINEL))
    payloads: list[str] = []
    for note in listener.notifies(timeout=30):
        if note.payload == SENTINEL:
            return payloads
        payloads.append(note.payload)
    raise AssertionError(f"the sentinel never arrived; received {payloads}")


def in_transaction(dsn: str, action: Callable[[psycopg.Connection[Any]], object]) -> None:
    with psycopg.connect(dsn) as conn:
        action(conn)


def test_complete_many_announces_the_finished_jobs_once_at_commit(
    dsn: str, listener: psycopg.Connection[tuple[Any, ...]]
) -> None:
    jobs = running_jobs(dsn, 3)
    ids, tokens = [j for j, _ in jobs], [t for _, t in jobs]
    with_unknown = ([*ids, -1], [*tokens, tokens[0]])
    in_transaction(dsn, lambda c: c.execute(MANY_CALLS["complete_many"], with_unknown))

    assert finished_until_sentinel(dsn, listener) == [",".join(map(str, ids))]

    # A resend finishes nothing new, so it announces nothing.
    in_transaction(dsn, lambda c: c.execute(MANY_CALLS["complete_many"], (ids, tokens)))
    assert finished_until_sentinel(dsn, listener) == []


def test_dead_and_cancelled_jobs_are_announced_and_retries_are_not(
    dsn: str, listener: psycopg.Connection[tuple[Any, ...]]
) -> None:
    [(retried, retried_token)] = running_jobs(dsn, 1, queue="a")
    [(dead, dead_token)] = running_jobs(dsn, 1, queue="b", max_retries=0)
    [(cancelled, _)] = running_jobs(dsn, 1, queue="c")
    [(expired, _)] = running_jobs(dsn, 1, queue="d", max_retries=0)
    backdate_lease(dsn, expired)

    fail = "select pgq.fail(%s, %s, 'x')"
    in_transaction(dsn, lambda c: c.execute(fail, (retried, retried_token)))
    in_transaction(dsn, lambda c: c.execute(fail, (dead, dead_token)))
    in_transaction(dsn, lambda c: c.execute("select pgq.cancel(%s)", (cancelled,)))
    in_transaction(dsn, lambda c: c.execute("select * from pgq.claim('w', array['e'])"))

    assert finished_until_sentinel(dsn, listener) == [str(dead), str(cancelled), str(expired)]


def test_a_large_batch_is_announced_in_payloads_within_the_notify_limit(
    dsn: str, listener: psycopg.Connection[tuple[Any, ...]]
) -> None:
    jobs = running_jobs(dsn, 1000)
    ids, tokens = [j for j, _ in jobs], [t for _, t in jobs]
    in_transaction(dsn, lambda c: c.execute(MANY_CALLS["complete_many"], (ids, tokens)))

    payloads = finished_until_sentinel(dsn, listener)

    assert len(payloads) == 3  # 390 ids per notification
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert [int(i) for p in payloads for i in p.split(",")] == ids
