"""Helpers shared by the client tests: raw rows, backdating, and waiting on lock waits."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypedDict

import psycopg
from psycopg.rows import dict_row

from pgqueue_py.client import ClaimedJob, Queue
from pgqueue_py.client.jobs import JobType

if TYPE_CHECKING:
    from typing_extensions import LiteralString


class Greeting(TypedDict):
    name: str
    times: int


greet = JobType("greet", Greeting)


def job_row(dsn: str, job_id: int) -> dict[str, Any]:
    """The raw ``pgq.jobs`` row, lease token included (``pgq.job_details`` hides it)."""
    with psycopg.connect(dsn) as conn:
        row = (
            conn.cursor(row_factory=dict_row)
            .execute("select * from pgq.jobs where id = %s", (job_id,))
            .fetchone()
        )
    assert row is not None, f"job {job_id} not found"
    return row


def scalar(dsn: str, query: LiteralString, params: tuple[object, ...] = ()) -> Any:
    """The first column of the first row of ``query``."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def count_jobs(dsn: str) -> int:
    return int(scalar(dsn, "select count(*) from pgq.jobs"))


def running_job(queue: Queue, *, name: str = "Ada", queue_name: str = "default") -> ClaimedJob:
    """A job added and then claimed: the worker's view of a running job."""
    job_id = queue.add(greet, {"name": name, "times": 1}, queue=queue_name)
    claimed = queue.claim("test-worker", queues=[queue_name], batch=1)
    assert [c.id for c in claimed] == [job_id]
    return claimed[0]


def backdate_lease(dsn: str, job_id: int) -> None:
    """Make a running job's lease expired, as if its worker stopped heartbeating."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "update pgq.jobs set lease_expires_at = now() - interval '1 second' where id = %s",
            (job_id,),
        )


def backdate_finished(dsn: str, job_id: int, age: str = "2 days") -> None:
    """Make a finished job look like it finished ``age`` ago."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "update pgq.jobs set finished_at = now() - %s::interval where id = %s", (age, job_id)
        )


def backend_pid(conn: psycopg.Connection[Any]) -> int:
    return conn.info.backend_pid


def wait_until_lock_wait(dsn: str, pid: int, timeout: float = 30.0) -> None:
    """Block until backend ``pid`` waits on a heavyweight lock (pg_stat_activity).

    The short poll only paces the check; it stands in for no synchronisation.
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited on a lock")
