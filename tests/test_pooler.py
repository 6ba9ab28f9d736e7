"""Transaction-pooler mode behind a real PgBouncer (transaction pool mode, two server
connections per database): every call more than five times, from two clients whose
prepared statements would collide; a worker with run-once effects; migrate's refusal; an
outage that producers notice within ``pool_timeout``; and worker processes SIGKILLed
while PgBouncer itself is restarted.

psycopg prepares a statement on its sixth run. Behind a transaction pooler the next
transaction may run on another server connection, or on one where another client
prepared the same name: without the mode, the sixth call fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict
from uuid import uuid4

import psycopg
import pytest
from helpers import count_jobs, greet, scalar
from pgbouncer import PgBouncer, PgBouncerMissing, find_pgbouncer, pgbouncer, pooler_dsn
from psycopg.conninfo import conninfo_to_dict
from worker_apps.apps import work
from worker_apps.procs import TESTS_DIR, all_terminal, job_errors, jobs, ledger, wait_for

from pgqueue_py import (
    AsyncQueue,
    ConnectionUnavailable,
    JobStateConflict,
    JobType,
    LeaseLost,
    MarkerNotFound,
    Queue,
)
from pgqueue_py.migrate import PoolerRefused, migrate
from pgqueue_py.testing import PgServer, dbname_of, empty_database
from pgqueue_py.worker import JobContext, Worker

__all__ = ["pgbouncer", "pooler_dsn"]  # the fixtures, used here by name

ROUNDS = 7
"""More than five: psycopg prepares a statement on its sixth run."""

PREPARED_STATEMENT_ERRORS = (
    psycopg.errors.DuplicatePreparedStatement,  # another client prepared the name here
    psycopg.errors.InvalidSqlStatementName,  # this server connection never saw it
)


# -- the harness ---------------------------------------------------------------------------


def test_missing_pgbouncer_is_an_error_naming_the_package() -> None:
    with pytest.raises(PgBouncerMissing, match="apt-get install pgbouncer"):
        find_pgbouncer(["/nonexistent/pgbouncer", None])


def test_pooler_dsn_reaches_the_tests_database_through_pgbouncer(
    pooler_dsn: str, dsn: str, pgbouncer: PgBouncer
) -> None:
    with psycopg.connect(pooler_dsn) as conn:
        row = conn.execute("select current_database(), inet_server_port()").fetchone()

    assert row is not None
    assert row[0] == conninfo_to_dict(dsn)["dbname"]
    assert str(row[1]) == str(conninfo_to_dict(dsn)["port"])
    assert f"port={pgbouncer.port}" in pooler_dsn


# -- prepared statements -------------------------------------------------------------------


def test_without_the_mode_a_second_client_fails_on_its_sixth_add(pooler_dsn: str) -> None:
    with (
        Queue(pooler_dsn, max_connections=1) as first,
        Queue(pooler_dsn, max_connections=1) as second,
    ):
        for n in range(6):
            first.add(greet, {"name": "first", "times": n})  # prepared on its sixth run
        for n in range(5):
            second.add(greet, {"name": "second", "times": n})

        with pytest.raises(PREPARED_STATEMENT_ERRORS):
            second.add(greet, {"name": "second", "times": 5})


def test_with_the_mode_two_clients_add_again_and_again(pooler_dsn: str, dsn: str) -> None:
    with (
        Queue(pooler_dsn, max_connections=1, transaction_pooler=True) as first,
        Queue(pooler_dsn, max_connections=1, transaction_pooler=True) as second,
    ):
        for n in range(3 * ROUNDS):
            first.add(greet, {"name": "first", "times": n})
            second.add(greet, {"name": "second", "times": n})

    assert count_jobs(dsn) == 6 * ROUNDS
    # Nothing was left behind on the server connections they shared.
    with psycopg.connect(pooler_dsn, autocommit=True, prepare_threshold=None) as probe:
        for _ in range(4):
            row = probe.execute("select count(*) from pg_prepared_statements").fetchone()
            assert row == (0,)


def test_with_the_mode_many_threads_share_two_server_connections(pooler_dsn: str, dsn: str) -> None:
    errors: list[BaseException] = []
    with Queue(pooler_dsn, max_connections=8, transaction_pooler=True) as queue:

        def produce(n: int) -> None:
            try:
                for i in range(20):
                    queue.add(greet, {"name": f"t{n}", "times": i})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    assert errors == []
    assert count_jobs(dsn) == 160


def producer_and_operator_round(queue: Queue, n: int) -> None:
    job_id = queue.add(greet, {"name": "op", "times": n}, queue="pooled")
    ids = queue.add_many(greet, [{"name": "many", "times": n}] * 2, queue="pooled")
    queue.configure_queue("pooled", max_retries=2)
    queue.pause("pooled")
    queue.resume("pooled")
    assert queue.cancel(job_id) == "cancelled"
    queue.retry(job_id)
    assert queue.retry_dead("pooled") == 0
    assert queue.prune(timedelta(days=1)) == 0
    assert [s.queue for s in queue.stats()] == ["pooled"]
    assert queue.dead_letter(queue="pooled") == []
    assert queue.job_errors(job_id) == []
    details = queue.job(job_id)
    assert details is not None and details.state == "available"
    with pytest.raises(MarkerNotFound):
        queue.once_resolve(job_id, "nothing", ran=True)
    with pytest.raises(JobStateConflict):
        queue.retry(ids[0])


def worker_round(queue: Queue, n: int) -> None:
    queue.add_many(greet, [{"name": "w", "times": n}] * 3, queue="work")
    first, second, third = queue.claim("pooled-worker", queues=["work"], batch=3)
    queue.heartbeat(first.id, first.lease_token)
    beats = queue.heartbeat_many([first.id, second.id], [first.lease_token, uuid4()])
    assert [b.outcome for b in beats] == ["extended", "lease_lost"]
    assert queue.once_begin(first.id, first.lease_token, "effect").status == "run"
    queue.once_finish(first.id, first.lease_token, "effect", {"n": n})
    assert queue.once_begin(second.id, second.lease_token, "effect").status == "run"
    queue.once_abort(second.id, second.lease_token, "effect")
    with pytest.raises(LeaseLost):
        queue.complete(first.id, uuid4())
    queue.complete(first.id, first.lease_token)
    done = queue.complete_many([second.id], [second.lease_token])
    assert [d.outcome for d in done] == ["succeeded"]
    assert queue.fail(third.id, third.lease_token, "boom", retry=False) == "dead"
    queue.add(greet, {"name": "lost", "times": n}, queue="work")
    queue.claim("pooled-worker", queues=["work"])
    assert queue.release_lost_claims("pooled-worker", []) == 1


def test_every_producer_and_operator_call_works_again_and_again_through_pgbouncer(
    pooler_dsn: str, dsn: str
) -> None:
    with (
        Queue(pooler_dsn, max_connections=1, transaction_pooler=True) as first,
        Queue(pooler_dsn, max_connections=1, transaction_pooler=True) as second,
    ):
        for n in range(ROUNDS):
            producer_and_operator_round(first, n)
            producer_and_operator_round(second, n)

    assert count_jobs(dsn) == 2 * ROUNDS * 3


def test_every_worker_call_works_again_and_again_through_pgbouncer(
    pooler_dsn: str, dsn: str
) -> None:
    with (
        Queue(pooler_dsn, max_connections=1, transaction_pooler=True) as first,
        Queue(pooler_dsn, max_connections=1, transaction_pooler=True) as second,
    ):
        for n in range(ROUNDS):
            worker_round(first, n)
            worker_round(second, n)

    states = scalar(dsn, "select array_agg(state order by state) from"
                         " (select distinct state from pgq.jobs) s")  # fmt: skip
    assert states == ["available", "dead", "succeeded"]


def test_a_callers_transaction_through_pgbouncer_commits_or_rolls_back_as_one(
    pooler_dsn: str, dsn: str
) -> None:
    with (
        Queue(pooler_dsn, transaction_pooler=True) as queue,
        psycopg.connect(pooler_dsn, prepare_threshold=None) as conn,
    ):
        for n in range(ROUNDS):
            queue.add(greet, {"name": "gone", "times": n}, conn=conn)
        conn.rollback()
        for n in range(ROUNDS):
            queue.add(greet, {"name": "kept", "times": n}, conn=conn)
        conn.commit()

    assert count_jobs(dsn) == ROUNDS


# -- AsyncQueue ----------------------------------------------------------------------------


async def async_round(queue: AsyncQueue, n: int) -> None:
    job_id = await queue.add(greet, {"name": "op", "times": n}, queue="pooled")
    await queue.add_many(greet, [{"name": "many", "times": n}] * 2, queue="pooled")
    await queue.configure_queue("pooled", max_retries=2)
    await queue.pause("pooled")
    await queue.resume("pooled")
    assert await queue.cancel(job_id) == "cancelled"
    await queue.retry(job_id)
    assert await queue.retry_dead("pooled") == 0
    assert await queue.prune(timedelta(days=1)) == 0
    assert "pooled" in [s.queue for s in await queue.stats()]
    assert await queue.dead_letter(queue="pooled") == []
    assert await queue.job_errors(job_id) == []
    assert await queue.job(job_id) is not None
    with pytest.raises(MarkerNotFound):
        await queue.once_resolve(job_id, "nothing", ran=True)

    await queue.add_many(greet, [{"name": "w", "times": n}] * 3, queue="work")
    first, second, third = await queue.claim("async-worker", queues=["work"], batch=3)
    await queue.heartbeat(first.id, first.lease_token)
    await queue.heartbeat_many([first.id], [first.lease_token])
    assert (await queue.once_begin(first.id, first.lease_token, "effect")).status == "run"
    await queue.once_finish(first.id, first.lease_token, "effect", n)
    await queue.once_begin(second.id, second.lease_token, "effect")
    await queue.once_abort(second.id, second.lease_token, "effect")
    await queue.complete(first.id, first.lease_token)
    await queue.complete_many([second.id], [second.lease_token])
    assert await queue.fail(third.id, third.lease_token, "boom", retry=False) == "dead"
    assert await queue.release_lost_claims("async-worker", []) == 0


def test_async_queue_without_the_mode_fails_on_a_second_clients_sixth_add(
    pooler_dsn: str,
) -> None:
    async def main() -> None:
        async with (
            AsyncQueue(pooler_dsn, max_connections=1) as first,
            AsyncQueue(pooler_dsn, max_connections=1) as second,
        ):
            for n in range(6):
                await first.add(greet, {"name": "first", "times": n})
            for n in range(5):
                await second.add(greet, {"name": "second", "times": n})
            await second.add(greet, {"name": "second", "times": 5})

    with pytest.raises(PREPARED_STATEMENT_ERRORS):
        asyncio.run(main())


def test_async_queue_calls_work_again_and_again_through_pgbouncer(
    pooler_dsn: str, dsn: str
) -> None:
    async def main() -> None:
        async with (
            AsyncQueue(pooler_dsn, max_connections=1, transaction_pooler=True) as first,
            AsyncQueue(pooler_dsn, max_connections=1, transaction_pooler=True) as second,
        ):
            for n in range(ROUNDS):
                await async_round(first, n)
                await async_round(second, n)
            # And concurrently, many tasks over a pool of four client connections.
            async with AsyncQueue(pooler_dsn, max_connections=4, transaction_pooler=True) as many:
                await asyncio.gather(*(many.add(greet, {"name": "gathered", "times": i})
                                       for i in range(50)))  # fmt: skip

    asyncio.run(main())

    assert scalar(dsn, "select count(*) from pgq.jobs where payload->>'name' = 'gathered'") == 50
    assert scalar(dsn, "select count(*) from pgq.jobs where state = 'dead'") == 2 * ROUNDS


# -- migrate -------------------------------------------------------------------------------


def test_migrate_in_pooler_mode_refuses_before_touching_the_database(
    pg_server: PgServer, pgbouncer: PgBouncer
) -> None:
    with empty_database(pg_server) as direct:
        through = pgbouncer.dsn_for(dbname_of(direct))

        with pytest.raises(PoolerRefused, match="directly to PostgreSQL"):
            migrate(through, transaction_pooler=True)
        with (
            Queue(through, transaction_pooler=True, min_connections=0) as queue,
            pytest.raises(PoolerRefused),
        ):
            queue.migrate()

        assert scalar(direct, "select count(*) from pg_namespace where nspname = 'pgq'") == 0


# -- outages -------------------------------------------------------------------------------


def test_calls_fail_within_pool_timeout_while_pgbouncer_is_down_and_work_when_it_is_back(
    pooler_dsn: str, pgbouncer: PgBouncer, dsn: str
) -> None:
    with Queue(pooler_dsn, transaction_pooler=True, pool_timeout=timedelta(seconds=1)) as queue:
        queue.add(greet, {"name": "before", "times": 0})
        pgbouncer.stop()
        try:
            # The pooled connection was cut: the first call finds it broken; the next
            # ones wait for a new connection, at most pool_timeout each.
            failures: list[type[BaseException]] = []
            for _ in range(3):
                with pytest.raises(psycopg.OperationalError) as caught:
                    queue.add(greet, {"name": "during", "times": 0})
                failures.append(type(caught.value))
            assert failures[-1] is ConnectionUnavailable
        finally:
            pgbouncer.start()

        def added() -> bool:
            try:
                queue.add(greet, {"name": "after", "times": 0})
            except psycopg.OperationalError:
                return False
            return True

        wait_for(added, 30, "a call to succeed once PgBouncer is back")

    assert scalar(dsn, "select count(*) from pgq.jobs where payload->>'name' = 'during'") == 0
    assert scalar(dsn, "select count(*) from pgq.jobs where payload->>'name' = 'after'") == 1


# -- a worker behind the pooler ------------------------------------------------------------


class Item(TypedDict):
    n: int


item = JobType("item", Item)


def test_worker_with_run_once_drains_jobs_behind_pgbouncer(pooler_dsn: str, dsn: str) -> None:
    effects: Counter[int] = Counter()
    lock = threading.Lock()

    def handle(ctx: JobContext, payload: Item) -> None:
        def effect() -> int:
            with lock:
                effects[ctx.job_id] += 1
            return payload["n"]

        assert ctx.run_once("effect", effect) == payload["n"]
        # A second run_once of the same key within the attempt replays the result.
        assert ctx.run_once("effect", effect) == payload["n"]

    with Queue(pooler_dsn, max_connections=8, transaction_pooler=True) as queue:
        ids = queue.add_many(item, [{"n": n} for n in range(60)])
        worker = Worker(queue, {item: handle}, concurrency=4,
                        poll_interval=timedelta(milliseconds=100))  # fmt: skip
        thread = threading.Thread(target=worker.run, name="pooled-worker")
        thread.start()
        try:
            wait_for(lambda: all_terminal(dsn), 60, "the worker to drain the queue")
        finally:
            worker.stop()
            thread.join(30)
        assert not thread.is_alive()

    assert {j["state"] for j in jobs(dsn)} == {"succeeded"}
    assert effects == Counter({job_id: 1 for job_id in ids})
    assert scalar(dsn, "select count(*) from pgq.once_markers where finished_at is not null") == 60


# -- crashes: SIGKILLed workers and a restarted PgBouncer ----------------------------------


class CliWorker:
    """``pgqueue worker --transaction-pooler`` in a subprocess, logging to a file."""

    def __init__(self, dsn: str, log_path: Path, name: str) -> None:
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        )}  # fmt: skip
        self._log = open(log_path, "ab")  # noqa: SIM115  # closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgqueue_py", "worker", "worker_apps.apps:handlers",
             "--dsn", dsn, "--transaction-pooler", "--concurrency", "4", "--lease", "2",
             "--worker-id", name],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def crash_queue(dsn: str) -> Iterator[Queue]:
    # Set up directly, not through the pooler the test restarts.
    with Queue(dsn, max_connections=2) as queue:
        queue.configure_queue("default", max_retries=3, backoff_base=timedelta(milliseconds=20),
                              backoff_max=timedelta(milliseconds=100))  # fmt: skip
        yield queue


def test_killed_workers_and_a_restarted_pgbouncer_lose_no_job_and_repeat_no_effect(
    crash_queue: Queue, pooler_dsn: str, pgbouncer: PgBouncer, dsn: str, tmp_path: Path
) -> None:
    ids = crash_queue.add_many(work, [{"dir": str(tmp_path), "work_ms": 100}] * 300)
    started: list[CliWorker] = []

    def start(name: str) -> CliWorker:
        worker = CliWorker(pooler_dsn, tmp_path / f"{name}.log", name)
        started.append(worker)
        return worker

    def logs() -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()[-3000:]}" for w in started)

    def progress(at_least: int) -> None:
        wait_for(lambda: len(ledger(tmp_path)) >= at_least, 60, f"{at_least} effects",
                 detail=logs)  # fmt: skip

    rng = random.Random()
    try:
        alive = [start(f"w{n}") for n in range(3)]
        progress(10)

        victim = alive.pop(rng.randrange(len(alive)))
        victim.kill()  # SIGKILL, mid-job: four jobs hold leases nobody heartbeats
        alive.append(start("after-kill"))
        progress(len(ledger(tmp_path)) + 10)

        unfinished = sum(1 for j in jobs(dsn) if j["state"] not in ("succeeded", "dead"))
        pgbouncer.restart(mode="kill")  # every client and server connection cut
        progress(len(ledger(tmp_path)) + 10)

        victim = alive.pop(rng.randrange(len(alive)))
        victim.kill()
        alive.append(start("after-restart"))

        wait_for(lambda: all_terminal(dsn), 120, "every job to finish", detail=logs)
    finally:
        for worker in started:
            worker.kill()

    assert unfinished > 0, "PgBouncer restarted after the work was done"
    lines = Counter(ledger(tmp_path))
    assert [job_id for job_id, count in lines.items() if count > 1] == []
    final = {job["id"]: job for job in jobs(dsn)}
    assert sorted(final) == sorted(ids)  # none lost
    for job_id, job in final.items():
        if job["state"] == "succeeded":
            assert lines[job_id] == 1, job
        else:
            assert job["state"] == "dead", job
            assert job_errors(dsn, job_id) != [], job
    assert sum(1 for job in final.values() if job["state"] == "succeeded") > len(ids) // 2
    # The kills landed on running jobs, which other workers reclaimed.
    assert any(job["attempt"] > 1 for job in final.values())
    dead_errors = Counter(
        e["error"].split(":")[0]
        for job_id, job in final.items()
        if job["state"] == "dead"
        for e in job_errors(dsn, job_id)
    )
    print(
        f"pooler crash: {Counter(j['state'] for j in final.values())}, attempts "
        f"{Counter(j['attempt'] for j in final.values())}, ledger {len(lines)},"
        f" errors of dead jobs {dict(dead_errors)}"
    )


def test_pgqueue_commands_take_transaction_pooler(pooler_dsn: str, dsn: str) -> None:
    env = {**os.environ, "PGQUEUE_TRANSACTION_POOLER": "1"}

    def pgqueue(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pgqueue_py", *args, "--dsn", pooler_dsn],
                              capture_output=True, text=True, timeout=60, check=False,
                              **options)  # fmt: skip

    for n in range(ROUNDS):
        added = pgqueue("enqueue", "ping", f'{{"n": {n}}}', "--transaction-pooler")
        assert added.returncode == 0, added.stderr
    stats = pgqueue("stats", "--json", env=env)
    refused = pgqueue("migrate", "--transaction-pooler")

    assert stats.returncode == 0, stats.stderr
    assert [(s["queue"], s["available"]) for s in json.loads(stats.stdout)] == [("default", 7)]
    assert refused.returncode == 1
    assert "transaction-mode pooler" in refused.stderr
    assert count_jobs(dsn) == ROUNDS
