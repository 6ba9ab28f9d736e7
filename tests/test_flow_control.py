"""Flow control inside ``pgq.claim``, fleet-wide: queue concurrency, the sliding-window rate
limit and per-key concurrency hold under concurrent claims; overlapping keyed enqueue
batches never deadlock.

The claimers are plain psycopg connections calling the SQL functions, as any client would.
A trigger installed by the test on ``pgq.jobs`` records, on every claim of a job, the
running counts that the claiming transaction sees (its own batch included) and the job's
start time; a sampler thread also reads the committed counts while the claimers run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from helpers import backend_pid, scalar, wait_until_lock_wait

THREADS = 8
BATCH = 50
HOLD_SECONDS = 0.02

INSTALL_RECORDER = """
create table public.flow_claims (
    queue           text not null,
    concurrency_key text,
    queue_running   bigint not null,
    key_running     bigint,
    started_at      timestamptz not null
);
create function public.record_claim() returns trigger language plpgsql as $$
begin
    insert into public.flow_claims
    select new.queue, new.concurrency_key,
           (select count(*) from pgq.jobs j where j.queue = new.queue and j.state = 'running'),
           (select count(*) from pgq.jobs j
             where j.queue = new.queue and j.state = 'running'
               and j.concurrency_key = new.concurrency_key),
           new.started_at;
    return null;
end;
$$;
create trigger jobs_record_claim after update of state on pgq.jobs
for each row when (new.state = 'running' and old.state <> 'running')
execute function public.record_claim();
"""


def install_recorder(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSTALL_RECORDER)


def enqueue(dsn: str, queue: str, count: int, keys: list[str] | None = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "select pgq.enqueue_many(job_names => array_fill('flow'::text, array[%(n)s]),"
            " queues => array_fill(%(queue)s::text, array[%(n)s]),"
            " concurrency_keys => %(keys)s::text[])",
            {"n": count, "queue": queue, "keys": keys},
        )


def configure(dsn: str, queue: str, **limits: object) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "select pgq.configure_queue(queue => %(queue)s, concurrency => %(concurrency)s,"
            " rate_limit => %(rate_limit)s, rate_period => %(rate_period)s::interval,"
            " key_concurrency => %(key_concurrency)s)",
            {"queue": queue, "concurrency": None, "rate_limit": None, "rate_period": None,
             "key_concurrency": None, **limits},
        )


def run_claimers(dsn: str, queue: str, *, total: int, until: Callable[[], bool] | None = None,
                 sample: str | None = None) -> list[int]:
    """THREADS connections claim (batch BATCH), hold, complete, until ``total`` jobs are done
    (or ``until()``). Returns the committed counts that ``sample`` read meanwhile."""
    done = 0
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    samples: list[int] = []

    def claimer(n: int) -> None:
        nonlocal done
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.is_set():
                    rows = conn.execute(
                        "select id, lease_token from pgq.claim(%s, array[%s], %s)",
                        (f"flow-{n}", queue, BATCH),
                    ).fetchall()
                    if rows:
                        time.sleep(HOLD_SECONDS)
                        conn.execute(
                            "select count(*) from pgq.complete_many(%s::bigint[], %s::uuid[])",
                            ([r[0] for r in rows], [r[1] for r in rows]),
                        )
                    with lock:
                        done += len(rows)
                        if done >= total or (until is not None and until()):
                            stop.set()
                    if not rows:
                        time.sleep(0.002)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            stop.set()

    def sampler() -> None:
        assert sample is not None
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(sample).fetchone()
                assert row is not None
                samples.append(int(row[0]))

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(THREADS)]
    if sample is not None:
        threads.append(threading.Thread(target=sampler))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    assert not errors, errors
    return samples


def test_queue_concurrency_is_never_exceeded_under_concurrent_claims(dsn: str) -> None:
    install_recorder(dsn)
    configure(dsn, "flow", concurrency=20)
    enqueue(dsn, "flow", 600)

    samples = run_claimers(
        dsn, "flow", total=600,
        sample="select count(*) from pgq.jobs where queue = 'flow' and state = 'running'")

    assert scalar(dsn, "select count(*) from pgq.jobs where state = 'succeeded'") == 600
    assert scalar(dsn, "select count(*) from public.flow_claims") == 600
    assert scalar(dsn, "select max(queue_running) from public.flow_claims") == 20
    assert max(samples) <= 20


def test_key_concurrency_is_never_exceeded_under_concurrent_claims(dsn: str) -> None:
    install_recorder(dsn)
    configure(dsn, "flow", key_concurrency=2)
    keys = [f"customer-{i % 30}" for i in range(600)]
    enqueue(dsn, "flow", 600, keys)

    samples = run_claimers(
        dsn, "flow", total=600,
        sample="select coalesce(max(n), 0) from (select count(*) as n from pgq.jobs"
               " where queue = 'flow' and state = 'running' group by concurrency_key) c")

    assert scalar(dsn, "select count(*) from pgq.jobs where state = 'succeeded'") == 600
    assert scalar(dsn, "select max(key_running) from public.flow_claims") == 2
    assert max(samples) <= 2
    # The limit held the keys back, not the queue: many keys ran at once.
    assert scalar(dsn, "select max(queue_running) from public.flow_claims") > 2


def test_rate_limit_holds_in_every_sliding_window_under_concurrent_claims(dsn: str) -> None:
    install_recorder(dsn)
    configure(dsn, "flow", rate_limit=40, rate_period="500 milliseconds")
    enqueue(dsn, "flow", 5000)
    deadline = time.monotonic() + 2.5

    run_claimers(dsn, "flow", total=5000, until=lambda: time.monotonic() > deadline)

    # Every window (t - rate_period, t] ending at a start t holds at most rate_limit starts.
    worst = scalar(
        dsn,
        "select max((select count(*) from public.flow_claims o"
        "            where o.started_at > c.started_at - interval '500 milliseconds'"
        "              and o.started_at <= c.started_at))"
        "  from public.flow_claims c")
    starts = scalar(dsn, "select count(*) from public.flow_claims")
    assert worst == 40
    # The window slides: about 2.5 s of claiming started more than one window's worth.
    assert starts >= 3 * 40


def test_a_key_at_its_limit_does_not_hold_back_other_keys(dsn: str) -> None:
    configure(dsn, "flow", key_concurrency=1)
    enqueue(dsn, "flow", 300, ["busy"] * 300)
    enqueue(dsn, "flow", 5, ["idle-1", "idle-2", "idle-3", "idle-4", "idle-5"])
    enqueue(dsn, "flow", 2)

    with psycopg.connect(dsn, autocommit=True) as conn:
        first = conn.execute("select id from pgq.claim('w', '{flow}', 1)").fetchall()
        rows = conn.execute(
            "select j.concurrency_key from pgq.claim('w', '{flow}', 10) c"
            " join pgq.jobs j on j.id = c.id order by c.id").fetchall()

    assert len(first) == 1
    assert [r[0] for r in rows] == ["idle-1", "idle-2", "idle-3", "idle-4", "idle-5", None, None]


def test_a_limited_claim_waits_for_the_one_before_it_and_counts_what_it_took(dsn: str) -> None:
    configure(dsn, "flow", concurrency=10)
    enqueue(dsn, "flow", 30)
    result: list[int] = []

    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        assert len(first.execute("select id from pgq.claim('w1', '{flow}', 7)").fetchall()) == 7
        pid = backend_pid(second)

        def claim_second() -> None:
            result.append(len(second.execute(
                "select id from pgq.claim('w2', '{flow}', 7)").fetchall()))
            second.commit()

        t = threading.Thread(target=claim_second)
        t.start()
        wait_until_lock_wait(dsn, pid)
        first.commit()
        t.join(timeout=30)

    assert result == [3]
    assert scalar(dsn, "select count(*) from pgq.jobs where state = 'running'") == 10


def test_overlapping_keyed_enqueue_batches_never_deadlock(dsn: str) -> None:
    connections = 6
    rounds = 25
    barrier = threading.Barrier(connections)
    failures: list[BaseException] = []
    calls: list[tuple[list[str], list[int]]] = []
    lock = threading.Lock()

    def producer(n: int) -> None:
        rng = random.Random(n)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for r in range(rounds):
                    keys = [f"round-{r}-key-{k}" for k in rng.sample(range(40), 20)]
                    barrier.wait(timeout=30)
                    row = conn.execute(
                        "select pgq.enqueue_many(array_fill('flow'::text, array[20]),"
                        " idempotency_keys => %s::text[])", (keys,)).fetchone()
                    assert row is not None
                    with lock:
                        calls.append((keys, list(row[0])))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    deadlocks = [f for f in failures if isinstance(f, psycopg.errors.DeadlockDetected)]
    assert deadlocks == []
    assert failures == []
    assert len(calls) == connections * rounds
    # One job per key, and each call's ids in its input order.
    with psycopg.connect(dsn) as conn:
        by_key: dict[str, Any] = dict(conn.execute(
            "select idempotency_key, id from pgq.jobs where idempotency_key is not null"
        ).fetchall())
    for keys, ids in calls:
        assert ids == [by_key[k] for k in keys]


@pytest.mark.parametrize("limit", ["concurrency", "rate_limit", "key_concurrency"])
def test_removing_a_limit_lets_the_held_back_jobs_run(dsn: str, limit: str) -> None:
    configure(dsn, "flow", **{limit: 1, "rate_period": "1 hour"})
    enqueue(dsn, "flow", 4, ["same"] * 4)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert len(conn.execute("select id from pgq.claim('w', '{flow}', 4)").fetchall()) == 1
        assert conn.execute("select id from pgq.claim('w', '{flow}', 4)").fetchall() == []
        configure(dsn, "flow", **{limit: 0})
        assert len(conn.execute("select id from pgq.claim('w', '{flow}', 4)").fetchall()) == 3


@pytest.mark.parametrize(("limits", "locked"), [({}, False), ({"concurrency": 5}, True)])
def test_only_a_limited_claim_locks_the_queue_row(dsn: str, limits: dict[str, object],
                                                  locked: bool) -> None:
    configure(dsn, "flow", **limits)
    enqueue(dsn, "flow", 3)

    with psycopg.connect(dsn) as claimer, psycopg.connect(dsn) as probe:
        assert len(claimer.execute("select id from pgq.claim('w', '{flow}', 3)").fetchall()) == 3
        try:
            probe.execute("select 1 from pgq.queues where queue = 'flow' for update nowait")
            probe_locked = False
        except psycopg.errors.LockNotAvailable:
            probe_locked = True
        claimer.commit()

    assert probe_locked is locked
