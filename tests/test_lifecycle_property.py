"""The whole job lifecycle as a Hypothesis state machine, against the real engine.

Every rule is a plain SQL call (producer, worker or operator); a model in Python says what
each call must answer and what the tables must hold afterwards. After every step the
invariants are read back from the database:

- every state change is one the lifecycle allows (a trigger records each change);
- at most one valid lease per job, and ``attempt`` counted as documented;
- every failed attempt has its row in ``pgq.attempt_errors``;
- a run-once effect ran at most once per job and key;
- ``pgq.queue_stats`` agrees with the rows (and with the model).

Time moves only by backdating rows: queues back off for an hour and lease for an hour, so
nothing becomes due or expires unless a rule says so. A failing example shrinks and its
failure message lists the SQL statements it ran, in order.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

if TYPE_CHECKING:
    from typing_extensions import LiteralString

# Examples x steps: at least 10,000 steps a run; PGQ_PROPERTY_EXAMPLES runs more (or fewer).
DEFAULT_EXAMPLES = 200
MAX_EXAMPLES = int(os.environ.get("PGQ_PROPERTY_EXAMPLES", str(DEFAULT_EXAMPLES)))
STEPS_PER_EXAMPLE = 65
MIN_TOTAL_STEPS = 10_000

QUEUES = ("q1", "q2")
WORKERS = ("w1", "w2", "w3")
KEYS = tuple(f"k{n}" for n in range(6))
EFFECTS = ("charge", "email")

# Every state change the lifecycle allows, from DESIGN.md's diagram plus the late-completion
# rule (40_complete.sql): None is "no row" (insert, prune).
ALLOWED_TRANSITIONS = {
    (None, "available"),  # enqueue
    ("available", "running"),  # claim
    ("running", "succeeded"),  # complete
    ("running", "available"),  # fail with retry, lease expired (claim), release_lost_claims
    ("running", "dead"),  # fail without retry or attempts used up, lease expired
    ("available", "cancelled"),  # cancel
    ("running", "cancelled"),  # cancel
    ("dead", "available"),  # retry, retry_dead
    ("cancelled", "available"),  # retry
    ("available", "succeeded"),  # late completion of a reaped lease, not claimed since
    ("dead", "succeeded"),  # late completion of a reaped lease that dead-lettered the job
    ("available", "dead"),  # late fail (retry false) of a reaped lease
    ("succeeded", None),  # prune
    ("cancelled", None),  # prune
    ("dead", None),  # prune include_dead
}

SETUP_SQL: LiteralString = """
create schema if not exists pgq_test;
create table if not exists pgq_test.transitions (
    seq bigint generated always as identity primary key,
    job_id bigint not null,
    old_state text,
    new_state text,
    old_attempt integer,
    new_attempt integer
);
create or replace function pgq_test.record_transition()
returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into pgq_test.transitions (job_id, old_state, new_state, old_attempt, new_attempt)
        values (new.id, null, new.state, null, new.attempt);
    elsif tg_op = 'DELETE' then
        insert into pgq_test.transitions (job_id, old_state, new_state, old_attempt, new_attempt)
        values (old.id, old.state, null, old.attempt, null);
    elsif old.state is distinct from new.state or old.attempt is distinct from new.attempt then
        insert into pgq_test.transitions (job_id, old_state, new_state, old_attempt, new_attempt)
        values (new.id, old.state, new.state, old.attempt, new.attempt);
    end if;
    return null;
end;
$$;
drop trigger if exists jobs_record_transition on pgq.jobs;
create trigger jobs_record_transition after insert or update or delete on pgq.jobs
    for each row execute function pgq_test.record_transition();
-- Every pgq table but the queues' settings, emptied between examples.
create or replace function pgq_test.reset()
returns void language plpgsql as $$
begin
    execute (select 'truncate ' || string_agg(format('%I.%I', t.schemaname, t.tablename), ', ')
                    || ', pgq_test.transitions restart identity'
               from pg_tables t
              where t.schemaname = 'pgq' and t.tablename <> 'queues');
    update pgq.queues set paused = false where paused;
end;
$$;
"""

LOCK_WAIT_SQL: LiteralString = "select wait_event_type from pg_stat_activity where pid = %s"
CONFIGURE_SQL: LiteralString = (
    "select pgq.configure_queue(queue => %s, max_retries => 2, backoff_base => '1 hour',"
    " backoff_max => '2 hours', lease => '1 hour')"
)

# One round trip after every step: what the invariants read, and the transitions recorded
# since the last step (taken out of the side table).
SNAPSHOT_FUNCTION_SQL: LiteralString = """
create or replace function pgq_test.snapshot()
returns json language plpgsql as $$
declare
    v_snapshot json;
begin
    with taken as (delete from pgq_test.transitions returning *)
select json_build_object(
    'jobs', (select coalesce(json_agg(json_build_object(
                'id', j.id, 'queue', j.queue, 'state', j.state, 'attempt', j.attempt,
                'max_retries', j.max_retries, 'token', j.lease_token,
                'lapsed', j.lapsed_lease_token, 'key', j.idempotency_key,
                'live', coalesce(j.lease_expires_at > now(), false),
                'has_expiry', j.lease_expires_at is not null,
                'due', j.run_at <= now(), 'result', j.result,
                'finished', j.finished_at is not null) order by j.id), '[]')
             from pgq.jobs j),
    'errors', (select coalesce(json_agg(json_build_array(e.job_id, e.attempt)
                                        order by e.job_id, e.attempt), '[]')
               from pgq.attempt_errors e),
    'markers', (select coalesce(json_agg(json_build_object(
                    'job_id', m.job_id, 'key', m.effect_key, 'status', m.status,
                    'token', m.lease_token, 'result', m.result)), '[]')
                from pgq.once_markers m),
    'stats', (select coalesce(json_agg(json_build_object(
                  'queue', s.queue, 'available', s.available, 'scheduled', s.scheduled,
                  'running', s.running, 'succeeded', s.succeeded, 'dead', s.dead,
                  'cancelled', s.cancelled, 'paused', s.paused)), '[]')
              from pgq.queue_stats s),
    'rows', (select coalesce(json_agg(json_build_object(
                 'queue', q.queue,
                 'available', (select count(*) from pgq.jobs j where j.queue = q.queue
                                  and j.state = 'available' and j.run_at <= now()),
                 'scheduled', (select count(*) from pgq.jobs j where j.queue = q.queue
                                  and j.state = 'available' and j.run_at > now()),
                 'running', (select count(*) from pgq.jobs j where j.queue = q.queue
                                and j.state = 'running'),
                 'succeeded', (select count(*) from pgq.jobs j where j.queue = q.queue
                                  and j.state = 'succeeded'),
                 'dead', (select count(*) from pgq.jobs j where j.queue = q.queue
                             and j.state = 'dead'),
                 'cancelled', (select count(*) from pgq.jobs j where j.queue = q.queue
                                  and j.state = 'cancelled'),
                 'paused', q.paused)), '[]')
             from pgq.queues q),
    'transitions', (select coalesce(json_agg(json_build_array(t.job_id, t.old_state,
                        t.new_state, t.old_attempt, t.new_attempt) order by t.seq), '[]')
                    from taken t)) into v_snapshot;
    return v_snapshot;
end;
$$;
"""
SNAPSHOT_SQL: LiteralString = "select pgq_test.snapshot()"

ENQUEUE_SQL: LiteralString = (
    "select pgq.enqueue(job_name => 'prop', payload => %s, queue => %s,"
    " run_at => case when %s then now() + interval '1 hour' end, priority => %s,"
    " max_retries => %s, idempotency_key => %s)"
)
ENQUEUE_MANY_SQL: LiteralString = (
    "select pgq.enqueue_many(job_names => %s, queues => %s,"
    " run_ats => array(select case when d then now() + interval '1 hour' end"
    " from unnest(%s::boolean[]) with ordinality as u(d, o) order by o),"
    " priorities => %s, max_retries => %s, idempotency_keys => %s)"
)
CLAIM_SQL: LiteralString = (
    "select id, attempt, lease_token, lease_expires_at > now() as live"
    " from pgq.claim(worker_id => %s, queues => %s, batch => %s)"
)
HEARTBEAT_SQL: LiteralString = "select pgq.heartbeat(job_id => %s, lease_token => %s)"
HEARTBEAT_MANY_SQL: LiteralString = (
    "select job_id, outcome from pgq.heartbeat_many(job_ids => %s, lease_tokens => %s)"
)
COMPLETE_SQL: LiteralString = "select pgq.complete(job_id => %s, lease_token => %s, result => %s)"
COMPLETE_MANY_SQL: LiteralString = (
    "select job_id, outcome from pgq.complete_many(job_ids => %s, lease_tokens => %s,"
    " results => %s::jsonb[])"
)
FAIL_SQL: LiteralString = (
    "select pgq.fail(job_id => %s, lease_token => %s, error => %s, retry => %s)"
)
EXPIRE_SQL: LiteralString = (
    "update pgq.jobs set lease_expires_at = now() - interval '1 second' where id = %s"
)
MAKE_DUE_SQL: LiteralString = (
    "update pgq.jobs set run_at = now() - interval '1 second' where id = %s"
)
AGE_FINISHED_SQL: LiteralString = (
    "update pgq.jobs set finished_at = now() - interval '2 hours' where id = %s"
)
CANCEL_SQL: LiteralString = "select pgq.cancel(job_id => %s)"
RETRY_SQL: LiteralString = "select pgq.retry(job_id => %s)"
RETRY_DEAD_SQL: LiteralString = "select pgq.retry_dead(queue => %s)"
PRUNE_SQL: LiteralString = "select pgq.prune(older_than => %s::interval, include_dead => %s)"
PAUSE_SQL: LiteralString = "select pgq.pause(queue => %s)"
RESUME_SQL: LiteralString = "select pgq.resume(queue => %s)"
ONCE_BEGIN_SQL: LiteralString = (
    "select status, result from pgq.once_begin(job_id => %s, lease_token => %s,"
    " effect_key => %s, request_id => %s)"
)
ONCE_FINISH_SQL: LiteralString = (
    "select pgq.once_finish(job_id => %s, lease_token => %s, effect_key => %s, result => %s)"
)
ONCE_ABORT_SQL: LiteralString = (
    "select pgq.once_abort(job_id => %s, lease_token => %s, effect_key => %s)"
)
ONCE_RESOLVE_SQL: LiteralString = (
    "select pgq.once_resolve(job_id => %s, effect_key => %s, ran => %s, result => %s)"
)


def key_attributes(key: str) -> tuple[str, int]:
    """A keyed job's queue and max_retries follow from its key, so that jobs racing on
    one key are the same job whichever wins."""
    n = int(key[1:])
    return QUEUES[n % 2], n % 3


@dataclass
class Job:
    id: int
    queue: str
    max_retries: int
    key: str | None
    state: str = "available"
    attempt: int = 0
    token: str | None = None
    lapsed: str | None = None
    live: bool = False  # running with an unexpired lease
    due: bool = True
    result: Any = None
    aged: bool = False  # finished_at backdated two hours
    errors: Counter[int] = field(default_factory=Counter)  # attempt -> error rows


@dataclass
class Marker:
    status: str  # started / done
    token: str
    request_id: str | None
    happened: bool  # the effect took place (the test "ran" it)
    result: Any = None


class RefusedError(Exception):
    """A call the engine refused with a project SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class Harness:
    """The connections one test's state machine uses across all examples."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor)
        self.conn.execute(SETUP_SQL)
        self.conn.execute(SNAPSHOT_FUNCTION_SQL)
        for queue in QUEUES:
            self.conn.execute(CONFIGURE_SQL, (queue,))
        # Two producers racing on one idempotency key: A holds its insert open, B waits.
        self.racer_a = psycopg.connect(dsn, cursor_factory=psycopg.ClientCursor)
        self.racer_b = psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor)
        self.racer_b_pid = self.racer_b.info.backend_pid
        self.pool = ThreadPoolExecutor(1)
        self.steps = 0
        self.examples = 0
        self.calls: Counter[str] = Counter()  # "pgq.function outcome" -> count
        self.seconds: dict[str, float] = {}

    def close(self) -> None:
        self.pool.shutdown()
        for conn in (self.conn, self.racer_a, self.racer_b):
            conn.close()


HARNESS: Harness | None = None


def call_name(query: str) -> str:
    """The pgq function a statement calls (or its first words), for the tally."""
    start = query.find("pgq.")
    paren = query.find("(", start)
    if start < 0 or paren < 0 or not query.startswith("select"):
        return " ".join(query.split()[:3])
    return query[start:paren]


def refused_sqlstate(exc: psycopg.Error) -> str | None:
    state = exc.sqlstate
    return state if state is not None and state.startswith("PQ") else None


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert HARNESS is not None
        self.h = HARNESS
        self.h.examples += 1
        self.h.conn.execute("select pgq_test.reset()")
        self.log: list[str] = []
        self.jobs: dict[int, Job] = {}
        self.keys: dict[str, int] = {}
        self.paused: set[str] = set()
        self.held: dict[str, dict[int, str]] = {w: {} for w in WORKERS}
        self.issued: list[tuple[int, str]] = []  # every (job, token) claim returned
        self.markers: dict[tuple[int, str], Marker] = {}
        self.effects: Counter[tuple[int, str]] = Counter()
        self.max_id = 0

    # -- plumbing -------------------------------------------------------------------------

    def die(self, message: str) -> None:
        raise AssertionError(
            message + "\n\nSQL run by this example, in order:\n" + ";\n".join(self.log) + ";"
        )

    def sql(
        self,
        query: LiteralString,
        params: tuple[Any, ...] = (),
        conn: psycopg.Connection[Any] | None = None,
        label: str = "",
    ) -> list[Any]:
        """Run one statement, logged; a project SQLSTATE raises RefusedError."""
        conn = conn or self.h.conn
        cur = conn.cursor()
        assert isinstance(cur, psycopg.ClientCursor)
        text = cur.mogrify(query, params)
        self.log.append(label + text)
        name = call_name(query)
        started = time.perf_counter()
        try:
            cur.execute(query, params)
        except psycopg.Error as exc:
            state = refused_sqlstate(exc)
            if state is None:
                self.die(f"unexpected error {exc.sqlstate}: {exc}\nin: {text}")
            self.log.append(f"-- refused: {state}")
            self.h.calls[f"{name} {state}"] += 1
            raise RefusedError(state or "") from exc
        finally:
            elapsed = time.perf_counter() - started
            self.h.seconds[name] = self.h.seconds.get(name, 0.0) + elapsed
        self.h.calls[f"{name} ok"] += 1
        return cur.fetchall() if cur.description else []

    def expect_refused(self, sqlstate: str, query: LiteralString, params: tuple[Any, ...]) -> None:
        try:
            rows = self.sql(query, params)
        except RefusedError as exc:
            if exc.sqlstate != sqlstate:
                self.die(f"expected {sqlstate}, got {exc.sqlstate}")
            return
        self.die(f"expected {sqlstate}, got {rows!r}")

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.die(message)

    def pick(self, items: list[Any], index: int) -> Any:
        return items[index % len(items)]

    def new_job(
        self, job_id: int, queue: str, max_retries: int, key: str | None, delayed: bool
    ) -> None:
        self.check(
            job_id not in self.jobs and job_id > self.max_id,
            f"enqueue returned id {job_id}, not a new job",
        )
        self.max_id = job_id
        self.jobs[job_id] = Job(job_id, queue, max_retries, key, due=not delayed)
        if key is not None:
            self.keys[key] = job_id

    def record_failure(self, job: Job, retry: bool) -> None:
        """The attempt under way failed in time (or its lease expired): its error row, then
        the retry (not due for an hour) or the dead letter."""
        job.errors[job.attempt] += 1
        job.live = False
        if not retry or job.attempt > job.max_retries:
            job.state = "dead"
        else:
            job.state = "available"
            job.due = False

    def reap_expired(self) -> None:
        """What claim does first: fail every running job whose lease expired."""
        for job in self.jobs.values():
            if job.state == "running" and not job.live:
                self.h.calls["path: lease expired, reaped by claim"] += 1
                self.record_failure(job, retry=True)
                job.lapsed, job.token = job.token, None

    # -- what the engine must answer, from the model --------------------------------------

    def complete_outcome(self, job_id: int, token: str) -> str:
        job = self.jobs.get(job_id)
        if job is None:
            return "lease_lost"
        if job.state == "running" and job.token == token:
            return "succeeded"
        if job.state in ("available", "dead") and job.token is None and job.lapsed == token:
            return "succeeded"
        if job.state == "succeeded" and job.token == token:
            return "resent"
        return "lease_lost"

    def apply_complete(self, job_id: int, token: str, result: Any) -> str:
        outcome = self.complete_outcome(job_id, token)
        if outcome == "succeeded":
            job = self.jobs[job_id]
            if job.state != "running":
                self.h.calls[f"path: late completion of a reaped lease, job {job.state}"] += 1
                job.token, job.lapsed = job.lapsed, None
            elif not job.live:
                self.h.calls["path: late completion of an expired lease, not reaped"] += 1
            job.state, job.live, job.result, job.aged = "succeeded", False, result, False
        return "succeeded" if outcome == "resent" else outcome

    def heartbeat_outcome(self, job_id: int, token: str) -> str:
        job = self.jobs.get(job_id)
        if job is not None and job.token == token:
            if job.state == "running" and job.live:
                return "extended"
            if job.state == "cancelled":
                return "cancelled"
        return "lease_lost"

    def holds_lease(self, job_id: int, token: str) -> bool:
        job = self.jobs.get(job_id)
        return job is not None and job.state == "running" and job.live and job.token == token

    def drop_belief(self, job_id: int, token: str) -> None:
        for held in self.held.values():
            if held.get(job_id) == token:
                del held[job_id]

    def stale_tokens(self) -> list[tuple[int, str]]:
        """Issued tokens that no longer speak for their job: another attempt claimed it, it
        was retried or pruned."""
        stale = []
        for job_id, token in self.issued:
            job = self.jobs.get(job_id)
            current = job is not None and (
                job.token == token or (job.token is None and job.lapsed == token)
            )
            if not current:
                stale.append((job_id, token))
        return stale

    def beliefs(self) -> list[tuple[str, int, str]]:
        return [(w, j, t) for w in WORKERS for j, t in sorted(self.held[w].items())]

    # -- producer rules -------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.log.append(
            "-- fresh tables; queues q1, q2: max_retries 2, backoff 1 hour, lease 1 hour"
        )

    @rule(
        queue=st.sampled_from(QUEUES),
        key=st.none() | st.sampled_from(KEYS),
        priority=st.integers(0, 1),
        max_retries=st.integers(0, 2),
        delayed=st.booleans(),
    )
    def enqueue(
        self, queue: str, key: str | None, priority: int, max_retries: int, delayed: bool
    ) -> None:
        if key is not None:
            queue, max_retries = key_attributes(key)
        [(job_id,)] = self.sql(
            ENQUEUE_SQL, ('{"n": 1}', queue, delayed, priority, max_retries, key)
        )
        if key is not None and key in self.keys:
            self.check(
                job_id == self.keys[key],
                f"key {key} belongs to job {self.keys[key]}, enqueue returned {job_id}",
            )
            return
        self.new_job(job_id, queue, max_retries, key, delayed)

    @rule(
        batch=st.lists(
            st.tuples(
                st.sampled_from(QUEUES),
                st.none() | st.sampled_from(KEYS),
                st.integers(0, 1),
                st.integers(0, 2),
                st.booleans(),
            ),
            min_size=1,
            max_size=6,
        ),
        keyed=st.booleans(),
    )
    def enqueue_many(
        self, batch: list[tuple[str, str | None, int, int, bool]], keyed: bool
    ) -> None:
        jobs = []
        for queue, key, priority, max_retries, delayed in batch:
            if keyed and key is not None:
                queue, max_retries = key_attributes(key)
            jobs.append((queue, key if keyed else None, priority, max_retries, delayed))
        keys = [k for _, k, _, _, _ in jobs] if keyed else None
        [(ids,)] = self.sql(
            ENQUEUE_MANY_SQL,
            (
                ["prop"] * len(jobs),
                [j[0] for j in jobs],
                [j[4] for j in jobs],
                [j[2] for j in jobs],
                [j[3] for j in jobs],
                keys,
            ),
        )
        self.check(len(ids) == len(jobs), f"enqueue_many returned {ids}")
        for job_id, (queue, key, _, max_retries, delayed) in zip(ids, jobs, strict=True):
            if key is not None and key in self.keys:
                self.check(
                    job_id == self.keys[key],
                    f"key {key} belongs to job {self.keys[key]}, got {job_id}",
                )
                continue
            # The keyed job that was inserted is one of the batch's; its run_at may be any
            # of theirs, so it is read back.
            self.new_job(job_id, queue, max_retries, key, delayed)
            if key is not None:
                [(due,)] = self.sql("select run_at <= now() from pgq.jobs where id = %s", (job_id,))
                self.jobs[job_id].due = due

    @rule(key=st.sampled_from(KEYS), commit=st.booleans())
    def enqueue_race(self, key: str, commit: bool) -> None:
        """Two producers enqueue one key at once: B waits for A, then takes A's job (A
        committed) or inserts its own (A rolled back)."""
        queue, max_retries = key_attributes(key)
        params = ('{"n": 2}', queue, False, 0, max_retries, key)
        existing = self.keys.get(key)
        [(a_id,)] = self.sql(ENQUEUE_SQL, params, self.h.racer_a, "-- session A: ")
        b_result: Future[list[Any]]
        if existing is not None:
            self.check(a_id == existing, f"key {key}: A got {a_id}, not job {existing}")
            [(b_id,)] = self.sql(ENQUEUE_SQL, params, self.h.racer_b, "-- session B: ")
            self.h.racer_a.commit()
            self.check(b_id == existing, f"key {key}: B got {b_id}, not job {existing}")
            return
        b_result = self.h.pool.submit(
            self.sql, ENQUEUE_SQL, params, self.h.racer_b, "-- session B (waits for A): "
        )
        self.wait_for_lock_wait(self.h.racer_b_pid)
        if commit:
            self.log.append("-- session A: commit")
            self.h.racer_a.commit()
        else:
            self.log.append("-- session A: rollback")
            self.h.racer_a.rollback()
        [(b_id,)] = b_result.result(timeout=30)
        self.h.calls[f"path: key race, A {'committed' if commit else 'rolled back'}"] += 1
        if commit:
            self.check(b_id == a_id, f"key {key}: A inserted job {a_id}, B got {b_id}")
            self.new_job(a_id, queue, max_retries, key, False)
        else:
            self.check(b_id != a_id, f"key {key}: A rolled back, B still got job {a_id}")
            self.new_job(b_id, queue, max_retries, key, False)

    def wait_for_lock_wait(self, pid: int) -> None:
        """Block until backend ``pid`` waits on a heavyweight lock (pg_stat_activity)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = self.h.conn.execute(LOCK_WAIT_SQL, (pid,)).fetchone()
            if row is not None and row[0] == "Lock":
                return
        self.die(f"backend {pid} never waited on a lock")

    # -- worker rules ---------------------------------------------------------------------

    @rule(
        worker=st.sampled_from(WORKERS),
        queues=st.sampled_from([["q1"], ["q2"], ["q1", "q2"]]),
        batch=st.integers(1, 4),
    )
    def claim(self, worker: str, queues: list[str], batch: int) -> None:
        self.reap_expired()
        eligible = {
            j.id
            for j in self.jobs.values()
            if j.state == "available" and j.due and j.queue in queues and j.queue not in self.paused
        }
        rows = self.sql(CLAIM_SQL, (worker, queues, batch))
        got = [r[0] for r in rows]
        self.check(
            len(got) == min(batch, len(eligible)) and set(got) <= eligible,
            f"claim({worker}, {queues}, {batch}) took {got}; runnable: {sorted(eligible)}",
        )
        issued_tokens = {t for _, t in self.issued}
        for job_id, attempt, token, live in rows:
            job = self.jobs[job_id]
            token = str(token)
            self.check(token not in issued_tokens, f"claim reused lease token {token}")
            self.check(
                attempt == job.attempt + 1 and live,
                f"job {job_id}: claimed as attempt {attempt}, model says {job.attempt + 1}",
            )
            job.state, job.attempt, job.token, job.live = "running", attempt, token, True
            self.held[worker][job_id] = token
            self.issued.append((job_id, token))

    @precondition(lambda self: self.beliefs())
    @rule(index=st.integers(0, 63))
    def heartbeat(self, index: int) -> None:
        worker, job_id, token = self.pick(self.beliefs(), index)
        expected = self.heartbeat_outcome(job_id, token)
        if expected == "extended":
            self.sql(HEARTBEAT_SQL, (job_id, token))
            return
        self.expect_refused(
            "PQ103" if expected == "cancelled" else "PQ101", HEARTBEAT_SQL, (job_id, token)
        )
        del self.held[worker][job_id]

    @precondition(lambda self: self.beliefs())
    @rule(worker=st.sampled_from(WORKERS))
    def heartbeat_many(self, worker: str) -> None:
        held = sorted(self.held[worker].items())
        rows = self.sql(HEARTBEAT_MANY_SQL, ([j for j, _ in held], [t for _, t in held]))
        expected = [(j, self.heartbeat_outcome(j, t)) for j, t in held]
        self.check(rows == expected, f"heartbeat_many answered {rows}, model {expected}")
        for job_id, outcome in expected:
            if outcome != "extended":
                del self.held[worker][job_id]

    @precondition(lambda self: self.beliefs())
    @rule(index=st.integers(0, 63), result=st.none() | st.integers(0, 9))
    def complete(self, index: int, result: int | None) -> None:
        """The holder completes; also late, after its lease expired (or claim reaped it)."""
        worker, job_id, token = self.pick(self.beliefs(), index)
        value = None if result is None else {"r": result}
        expected = self.complete_outcome(job_id, token)
        params = (job_id, token, None if value is None else json.dumps(value))
        if expected == "lease_lost":
            self.expect_refused("PQ101", COMPLETE_SQL, params)
        else:
            [(outcome,)] = self.sql(COMPLETE_SQL, params)
            self.check(outcome == "succeeded", f"complete answered {outcome}")
            self.apply_complete(job_id, token, value)
        del self.held[worker][job_id]

    @precondition(lambda self: self.beliefs())
    @rule(worker=st.sampled_from(WORKERS), with_results=st.booleans())
    def complete_many(self, worker: str, with_results: bool) -> None:
        held = sorted(self.held[worker].items())
        results = [{"job": j} for j, _ in held] if with_results else None
        rows = self.sql(
            COMPLETE_MANY_SQL,
            (
                [j for j, _ in held],
                [t for _, t in held],
                None if results is None else [json.dumps(r) for r in results],
            ),
        )
        expected = [(j, self.complete_outcome(j, t)) for j, t in held]
        expected = [(j, "succeeded" if o == "resent" else o) for j, o in expected]
        self.check(rows == expected, f"complete_many answered {rows}, model {expected}")
        for n, (job_id, token) in enumerate(held):
            self.apply_complete(job_id, token, None if results is None else results[n])
        self.held[worker].clear()

    @precondition(lambda self: self.beliefs())
    @rule(index=st.integers(0, 63), retry=st.booleans())
    def fail(self, index: int, retry: bool) -> None:
        """The holder fails its attempt; also late, after its lease expired."""
        worker, job_id, token = self.pick(self.beliefs(), index)
        self.fail_call(job_id, token, retry)
        del self.held[worker][job_id]

    def fail_call(self, job_id: int, token: str, retry: bool) -> None:
        params = (job_id, token, "handler raised", retry)
        job = self.jobs.get(job_id)
        if job is not None and job.token == token and job.state in ("available", "dead"):
            [(state,)] = self.sql(FAIL_SQL, params)  # a resend: recorded already
            self.check(state == job.state, f"resent fail answered {state}, job is {job.state}")
        elif job is not None and job.token == token and job.state == "running":
            [(state,)] = self.sql(FAIL_SQL, params)
            self.record_failure(job, retry)
            self.check(state == job.state, f"fail answered {state}, model {job.state}")
        elif (
            job is not None
            and job.token is None
            and job.lapsed == token
            and job.state in ("available", "dead")
        ):
            [(state,)] = self.sql(FAIL_SQL, params)
            self.h.calls["path: late fail of a reaped lease"] += 1
            job.errors[job.attempt] += 1  # a second row for the reaped attempt
            if not retry:
                job.state = "dead"
            job.token, job.lapsed = job.lapsed, None
            self.check(state == job.state, f"late fail answered {state}, model {job.state}")
        else:
            self.expect_refused("PQ101", FAIL_SQL, params)

    @precondition(lambda self: self.beliefs())
    @rule(
        index=st.integers(0, 63),
        key=st.sampled_from(EFFECTS),
        then=st.sampled_from(["finish", "abort", "crash_after", "crash_before"]),
        request=st.booleans(),
    )
    def once_begin(self, index: int, key: str, then: str, request: bool) -> None:
        """A handler asks to run an effect, then finishes it, aborts it (the effect raised),
        or dies after or before the effect took place."""
        _, job_id, token = self.pick(self.beliefs(), index)
        request_id = str(uuid.uuid4()) if request else None
        params = (job_id, token, key, request_id)
        if not self.holds_lease(job_id, token):
            self.expect_refused("PQ101", ONCE_BEGIN_SQL, params)
            return
        [(status, result)] = self.sql(ONCE_BEGIN_SQL, params)
        marker = self.markers.get((job_id, key))
        expected = "run" if marker is None else "done" if marker.status == "done" else "unknown"
        self.check(status == expected, f"once_begin answered {status}, model {expected}")
        if marker is not None:
            self.check(
                result == (marker.result if marker.status == "done" else None),
                f"once_begin returned result {result!r}, stored {marker.result!r}",
            )
            return
        happened = then in ("finish", "crash_after")
        self.markers[(job_id, key)] = Marker("started", token, request_id, happened)
        if happened:
            self.effects[(job_id, key)] += 1
        if then == "finish":
            self.once_finish_call(job_id, token, key)
        elif then == "abort":
            self.sql(ONCE_ABORT_SQL, (job_id, token, key))
            del self.markers[(job_id, key)]

    def once_finish_call(self, job_id: int, token: str, key: str) -> None:
        marker = self.markers.get((job_id, key))
        value = {"effect": key, "job": job_id}
        params = (job_id, token, key, json.dumps(value))
        if marker is not None and marker.token == token and marker.status == "started":
            self.sql(ONCE_FINISH_SQL, params)
            marker.status, marker.result = "done", value
        elif marker is not None and marker.token == token:
            self.sql(ONCE_FINISH_SQL, params)  # a resend: recorded already
        else:
            self.expect_refused("PQ102", ONCE_FINISH_SQL, params)

    @precondition(lambda self: any(m.status == "started" for m in self.markers.values()))
    @rule(index=st.integers(0, 63))
    def once_resend(self, index: int) -> None:
        """The attempt that began an effect resends once_begin (same request) or records it
        late, after its lease was lost, when the effect took place."""
        started = sorted((k, m) for k, m in self.markers.items() if m.status == "started")
        (job_id, key), marker = self.pick(started, index)
        if marker.happened:
            self.once_finish_call(job_id, marker.token, key)
            return
        params = (job_id, marker.token, key, marker.request_id)
        if not self.holds_lease(job_id, marker.token):
            self.expect_refused("PQ101", ONCE_BEGIN_SQL, params)
            return
        [(status, _)] = self.sql(ONCE_BEGIN_SQL, params)
        expected = "run" if marker.request_id is not None else "unknown"
        self.check(status == expected, f"resent once_begin answered {status}, model {expected}")
        if status == "run":  # the answer was lost before the effect: it runs now
            marker.happened = True
            self.effects[(job_id, key)] += 1

    @precondition(lambda self: self.markers)
    @rule(index=st.integers(0, 63), ran=st.booleans())
    def once_resolve(self, index: int, ran: bool) -> None:
        """The operator settles an unknown outcome, truthfully (the model knows whether
        the effect took place); a marker not unknown is refused."""
        (job_id, key), marker = self.pick(sorted(self.markers.items()), index)
        if marker.status != "started":
            self.expect_refused("PQ204", ONCE_RESOLVE_SQL, (job_id, key, ran, None))
            return
        self.sql(ONCE_RESOLVE_SQL, (job_id, key, marker.happened, '{"resolved": true}'))
        if marker.happened:
            marker.status, marker.result = "done", {"resolved": True}
        else:
            del self.markers[(job_id, key)]

    @precondition(lambda self: self.issued)
    @rule(
        index=st.integers(0, 63),
        call=st.sampled_from(["complete", "heartbeat", "fail", "once_begin", "random"]),
    )
    def stale_token(self, index: int, call: str) -> None:
        """A worker whose lease another attempt took (or any made-up token) is refused."""
        stale = self.stale_tokens()
        if call == "random" or not stale:
            job_id, token = self.pick(self.issued, index)[0], str(uuid.uuid4())
        else:
            job_id, token = self.pick(stale, index)
        if call == "complete":
            self.expect_refused("PQ101", COMPLETE_SQL, (job_id, token, None))
        elif call == "fail":
            self.expect_refused("PQ101", FAIL_SQL, (job_id, token, "stale", True))
        elif call == "once_begin":
            self.expect_refused("PQ101", ONCE_BEGIN_SQL, (job_id, token, "charge", None))
        else:
            self.expect_refused("PQ101", HEARTBEAT_SQL, (job_id, token))

    # -- time -----------------------------------------------------------------------------

    @precondition(lambda self: any(j.state == "running" and j.live for j in self.jobs.values()))
    @rule(index=st.integers(0, 63))
    def expire_lease(self, index: int) -> None:
        """The holder stopped heartbeating: its lease expired a second ago."""
        running = sorted(j.id for j in self.jobs.values() if j.state == "running" and j.live)
        job_id = self.pick(running, index)
        self.sql(EXPIRE_SQL, (job_id,))
        self.jobs[job_id].live = False

    @precondition(
        lambda self: any(j.state == "available" and not j.due for j in self.jobs.values())
    )
    @rule(index=st.integers(0, 63))
    def make_due(self, index: int) -> None:
        """A scheduled or backing-off job's run_at arrives."""
        waiting = sorted(j.id for j in self.jobs.values() if j.state == "available" and not j.due)
        job_id = self.pick(waiting, index)
        self.sql(MAKE_DUE_SQL, (job_id,))
        self.jobs[job_id].due = True

    @precondition(
        lambda self: any(j.state in ("succeeded", "cancelled", "dead") for j in self.jobs.values())
    )
    @rule(index=st.integers(0, 63))
    def age_finished(self, index: int) -> None:
        done = sorted(
            j.id for j in self.jobs.values() if j.state in ("succeeded", "cancelled", "dead")
        )
        job_id = self.pick(done, index)
        self.sql(AGE_FINISHED_SQL, (job_id,))
        self.jobs[job_id].aged = True

    # -- operator rules -------------------------------------------------------------------

    def operator_target(self, index: int) -> int | None:
        """A job for an operator call, or (one time in as many as there are jobs plus one)
        an id no job has: never made, or pruned."""
        ids = sorted(self.jobs)
        n = index % (len(ids) + 1)
        return ids[n] if n < len(ids) else None

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 63))
    def cancel(self, index: int) -> None:
        job_id = self.operator_target(index)
        if job_id is None:
            self.expect_refused("PQ201", CANCEL_SQL, (self.max_id + 1,))
            return
        job = self.jobs[job_id]
        if job.state not in ("available", "running"):
            self.expect_refused("PQ202", CANCEL_SQL, (job_id,))
            return
        [(state,)] = self.sql(CANCEL_SQL, (job_id,))
        self.check(state == "cancelled", f"cancel answered {state}")
        if job.state != "running":
            job.token = None
        job.state, job.lapsed, job.live, job.aged = "cancelled", None, False, False

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 63))
    def retry(self, index: int) -> None:
        job_id = self.operator_target(index)
        if job_id is None:
            self.expect_refused("PQ201", RETRY_SQL, (self.max_id + 1,))
            return
        job = self.jobs[job_id]
        if job.state not in ("dead", "cancelled"):
            self.expect_refused("PQ202", RETRY_SQL, (job_id,))
            return
        self.sql(RETRY_SQL, (job_id,))
        self.requeue(job)

    def requeue(self, job: Job) -> None:
        job.state, job.attempt, job.due, job.aged, job.result = "available", 0, True, False, None
        job.token = job.lapsed = None

    @rule(queue=st.none() | st.sampled_from(QUEUES))
    def retry_dead(self, queue: str | None) -> None:
        dead = [
            j
            for j in self.jobs.values()
            if j.state == "dead" and (queue is None or j.queue == queue)
        ]
        [(count,)] = self.sql(RETRY_DEAD_SQL, (queue,))
        self.check(count == len(dead), f"retry_dead({queue}) retried {count}, model {len(dead)}")
        for job in dead:
            self.requeue(job)

    @rule(older=st.sampled_from(["0 seconds", "1 hour"]), include_dead=st.booleans())
    def prune(self, older: str, include_dead: bool) -> None:
        states = {"succeeded", "cancelled"} | ({"dead"} if include_dead else set())
        gone = [
            j for j in self.jobs.values() if j.state in states and (older == "0 seconds" or j.aged)
        ]
        [(count,)] = self.sql(PRUNE_SQL, (older, include_dead))
        self.check(count == len(gone), f"prune({older}) removed {count}, model {len(gone)}")
        for job in gone:
            del self.jobs[job.id]
            if job.key is not None:
                del self.keys[job.key]
            for marker_key in [k for k in self.markers if k[0] == job.id]:
                del self.markers[marker_key]

    @rule(queue=st.sampled_from((*QUEUES, "nowhere")), pause=st.booleans())
    def pause_resume(self, queue: str, pause: bool) -> None:
        if queue not in QUEUES:
            self.expect_refused("PQ203", PAUSE_SQL if pause else RESUME_SQL, (queue,))
            return
        self.sql(PAUSE_SQL if pause else RESUME_SQL, (queue,))
        if pause:
            self.paused.add(queue)
        else:
            self.paused.discard(queue)

    # -- invariants, read from the database -----------------------------------------------

    @invariant()
    def database_agrees(self) -> None:
        self.h.steps += 1
        [(snap,)] = self.sql(SNAPSHOT_SQL)
        self.log.pop()  # the snapshot is not part of the sequence
        self.check_transitions(snap["transitions"])
        self.check_jobs(snap["jobs"])
        self.check_errors(snap["errors"])
        self.check_markers(snap["markers"])
        self.check_stats(snap["stats"], snap["rows"])

    def check_transitions(self, transitions: list[list[Any]]) -> None:
        for job_id, old, new, old_attempt, new_attempt in transitions:
            self.check(
                (old, new) in ALLOWED_TRANSITIONS,
                f"job {job_id} went {old} -> {new}: not a lifecycle transition",
            )
            if (old, new) == ("available", "running"):
                ok = new_attempt == old_attempt + 1
            elif old in ("dead", "cancelled") and new == "available":
                ok = new_attempt == 0
            elif (old, new) == ("running", "available"):
                ok = new_attempt in (old_attempt, old_attempt - 1)  # release_lost_claims: -1
            else:
                ok = old is None or new is None or new_attempt == old_attempt
            self.check(ok, f"job {job_id} {old} -> {new}: attempt {old_attempt} -> {new_attempt}")

    def check_jobs(self, rows: list[dict[str, Any]]) -> None:
        self.check(
            [r["id"] for r in rows] == sorted(self.jobs),
            f"jobs in the table {[r['id'] for r in rows]}, model {sorted(self.jobs)}",
        )
        for row in rows:
            job = self.jobs[row["id"]]
            actual = (row["state"], row["attempt"], row["token"], row["live"], row["result"])
            expected = (
                job.state,
                job.attempt,
                job.token,
                job.state == "running" and job.live,
                job.result,
            )
            self.check(
                actual == expected,
                f"job {job.id}: (state, attempt, token, live lease, result) {actual}, "
                f"model {expected}",
            )
            if row["token"] is None:
                self.check(
                    row["lapsed"] == job.lapsed,
                    f"job {job.id}: lapsed token {row['lapsed']}, model {job.lapsed}",
                )
            self.check(
                row["attempt"] <= row["max_retries"] + 1,
                f"job {job.id}: attempt {row['attempt']} beyond max_retries "
                f"{row['max_retries']} + 1",
            )
            self.check(
                row["has_expiry"] == (row["state"] == "running"),
                f"job {job.id}: {row['state']} with lease_expires_at "
                f"{'set' if row['has_expiry'] else 'null'}",
            )
            self.check(
                row["finished"] == (row["state"] in ("succeeded", "dead", "cancelled")),
                f"job {job.id}: {row['state']} with finished_at "
                f"{'set' if row['finished'] else 'null'}",
            )
            if row["state"] == "available":
                self.check(
                    row["due"] == job.due, f"job {job.id}: due {row['due']}, model {job.due}"
                )
            self.check(row["key"] == job.key, f"job {job.id}: key {row['key']}, model {job.key}")
            # At most one valid lease per job: of the tokens the workers believe they hold
            # for it, at most one is the row's current, unexpired one.
            if row["state"] == "running" and row["live"]:
                holders = [w for w, j, t in self.beliefs() if j == job.id and t == row["token"]]
                self.check(
                    len(holders) <= 1, f"job {job.id}: workers {holders} all hold its valid lease"
                )

    def check_errors(self, rows: list[list[int]]) -> None:
        actual: dict[int, Counter[int]] = {}
        for job_id, attempt in rows:
            actual.setdefault(job_id, Counter())[attempt] += 1
        expected = {j.id: j.errors for j in self.jobs.values() if j.errors}
        self.check(
            actual == expected, f"attempt_errors (job: attempt counts) {actual}, model {expected}"
        )

    def check_markers(self, rows: list[dict[str, Any]]) -> None:
        actual = {(r["job_id"], r["key"]): (r["status"], r["token"], r["result"]) for r in rows}
        expected = {k: (m.status, m.token, m.result) for k, m in self.markers.items()}
        self.check(actual == expected, f"once_markers {actual}, model {expected}")
        for key, count in self.effects.items():
            self.check(count <= 1, f"effect {key} ran {count} times")

    def check_stats(self, stats: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
        by_queue = {s["queue"]: s for s in stats}
        self.check(
            by_queue == {r["queue"]: r for r in rows},
            f"queue_stats {stats} disagrees with the rows {rows}",
        )
        for queue in QUEUES:
            jobs = [j for j in self.jobs.values() if j.queue == queue]
            model = {
                "queue": queue,
                "available": sum(j.state == "available" and j.due for j in jobs),
                "scheduled": sum(j.state == "available" and not j.due for j in jobs),
                "running": sum(j.state == "running" for j in jobs),
                "succeeded": sum(j.state == "succeeded" for j in jobs),
                "dead": sum(j.state == "dead" for j in jobs),
                "cancelled": sum(j.state == "cancelled" for j in jobs),
                "paused": queue in self.paused,
            }
            self.check(
                by_queue.get(queue) == model, f"queue_stats {by_queue.get(queue)}, model {model}"
            )

    def teardown(self) -> None:
        if self.h.racer_a.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.h.racer_a.rollback()


@pytest.fixture
def harness(dsn: str) -> Iterator[Harness]:
    global HARNESS
    HARNESS = Harness(dsn)
    try:
        yield HARNESS
    finally:
        HARNESS.close()
        HARNESS = None


def test_lifecycle_state_machine_keeps_every_invariant(harness: Harness) -> None:
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=STEPS_PER_EXAMPLE,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            print_blob=False,
        ),
    )
    print(f"lifecycle property: {harness.steps} steps in {harness.examples} examples")
    for name, count in sorted(harness.calls.items()):
        print(f"  {name:40} {count:6}")
    for name, secs in sorted(harness.seconds.items(), key=lambda item: -item[1]):
        print(f"  {name:40} {secs:8.2f}s")
    # The run is as large as promised, not cut short.
    wanted = MIN_TOTAL_STEPS * MAX_EXAMPLES // DEFAULT_EXAMPLES
    assert harness.steps >= wanted, (
        f"{harness.steps} steps in {harness.examples} examples, fewer than {wanted}"
    )
