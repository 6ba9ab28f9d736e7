"""``Queue`` against a real database: each method's happy path, and each SQLSTATE the
engine raises arriving as its own exception class with nothing changed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypedDict
from uuid import uuid4

import psycopg
import pytest
from helpers import (
    Greeting,
    backdate_finished,
    backdate_lease,
    count_jobs,
    greet,
    job_row,
    running_job,
    scalar,
)

from pgqueue_py import (
    ConfigurationError,
    InvalidArgument,
    JobNotFound,
    JobStateConflict,
    JobType,
    LeaseLost,
    MarkerNotBegun,
    MarkerNotFound,
    PgqError,
    Queue,
    QueueNotFound,
)
from pgqueue_py.client import ClaimedJob
from pgqueue_py.client.errors import translate

if TYPE_CHECKING:
    from typing_extensions import LiteralString


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=4) as q:
        yield q


@pytest.fixture
def job(queue: Queue) -> ClaimedJob:
    return running_job(queue)


@dataclass(frozen=True)
class Invoice:
    number: str
    amount_cents: int
    lines: list[str]


class Ping(TypedDict):
    host: str


invoice = JobType("invoice", Invoice, queue="billing", max_retries=7, priority=3)
ping = JobType("ping", Ping)


# -- configuration -------------------------------------------------------------------------


def test_queue_without_dsn_or_database_url_raises_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        Queue()


def test_queue_without_dsn_connects_to_database_url(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", dsn)

    with Queue() as q:
        job_id = q.add(ping, {"host": "db"})

        assert q.dsn == dsn
    assert job_row(dsn, job_id)["job_name"] == "ping"


def prepared_statements(conn: psycopg.Connection[Any]) -> int:
    return int(scalar_on(conn, "select count(*) from pg_prepared_statements"))


def scalar_on(conn: psycopg.Connection[Any], query: LiteralString) -> Any:
    row = conn.execute(query, prepare=False).fetchone()
    assert row is not None
    return row[0]


def test_queue_prepares_a_statement_after_a_few_calls(queue: Queue, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(8):
            queue.add(ping, {"host": "a"}, conn=conn)

        assert prepared_statements(conn) == 1


def test_queue_in_transaction_pooler_mode_prepares_no_statement(dsn: str) -> None:
    with Queue(dsn, transaction_pooler=True) as pooled:
        assert (pooled.dsn, pooled.transaction_pooler) == (dsn, True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(8):
                pooled.add(ping, {"host": "a"}, conn=conn)
                pooled.stats(conn=conn)

            assert prepared_statements(conn) == 0
        # The pool's own connections are opened with prepare_threshold=None.
        for _ in range(8):
            pooled.add(ping, {"host": "b"})
        assert count_jobs(dsn) == 16


def test_queue_defaults_to_a_short_pool_timeout_and_no_pooler_mode(queue: Queue) -> None:
    assert (queue.transaction_pooler, queue.pool_timeout) == (False, timedelta(seconds=5))


def test_migrate_on_a_migrated_database_applies_no_migration(queue: Queue) -> None:
    result = queue.migrate()

    assert result.applied_migrations == ()
    assert result.functions_applied > 0


# -- errors --------------------------------------------------------------------------------


def test_every_engine_sqlstate_has_one_error_class(queue: Queue) -> None:
    with psycopg.connect(queue.dsn) as conn:
        codes = {row[0] for row in conn.execute("select sqlstate from pgq.error_codes")}

    def subclasses(cls: type[PgqError]) -> list[type[PgqError]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    classes = {c.sqlstate for c in subclasses(PgqError) if c.sqlstate is not None}

    assert classes == codes


def test_translate_leaves_other_database_errors_alone() -> None:
    exc = psycopg.errors.DivisionByZero("division by zero")

    assert translate(exc) is exc


def test_translated_error_keeps_the_database_message_and_error(
    queue: Queue, job: ClaimedJob
) -> None:
    with pytest.raises(LeaseLost) as info:
        queue.heartbeat(job.id, uuid4())

    assert f"job {job.id}: lease lost" in str(info.value)
    assert isinstance(info.value.__cause__, psycopg.Error)
    assert info.value.__cause__.sqlstate == "PQ101"


# -- add -----------------------------------------------------------------------------------


def test_add_stores_the_payload_and_the_job_types_defaults(queue: Queue, dsn: str) -> None:
    job_id = queue.add(invoice, Invoice("INV-1", 1250, ["tea", "cake"]))

    details = queue.job(job_id)
    assert details is not None
    assert (details.job_name, details.queue, details.state) == ("invoice", "billing", "available")
    assert details.payload == {"number": "INV-1", "amount_cents": 1250, "lines": ["tea", "cake"]}
    assert (details.priority, details.max_retries) == (3, 7)
    assert job_row(dsn, job_id)["idempotency_key"] is None


def test_add_options_override_the_job_type(queue: Queue) -> None:
    job_id = queue.add(invoice, Invoice("INV-2", 1, []), queue="urgent", priority=-5,
                       max_retries=0)  # fmt: skip

    details = queue.job(job_id)
    assert details is not None
    assert (details.queue, details.priority, details.max_retries) == ("urgent", -5, 0)


def test_add_without_max_retries_takes_the_queues_default(queue: Queue) -> None:
    queue.configure_queue("default", max_retries=2)

    job_id = queue.add(ping, {"host": "a"})

    details = queue.job(job_id)
    assert details is not None
    assert details.max_retries == 2


def test_add_with_delay_schedules_the_job_by_the_database_clock(queue: Queue, dsn: str) -> None:
    job_id = queue.add(ping, {"host": "a"}, delay=timedelta(hours=1))

    assert scalar(dsn, "select run_at - created_at from pgq.jobs where id = %s",
                  (job_id,)) == timedelta(hours=1)  # fmt: skip
    assert [s.scheduled for s in queue.stats()] == [1]
    assert queue.claim("w") == []


def test_add_with_run_at_schedules_the_job_then(queue: Queue) -> None:
    when = datetime(2100, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    job_id = queue.add(ping, {"host": "a"}, run_at=when)

    details = queue.job(job_id)
    assert details is not None
    assert details.run_at == when


def test_add_with_run_at_and_delay_raises_invalid_argument(queue: Queue, dsn: str) -> None:
    with pytest.raises(InvalidArgument, match="exclusive"):
        queue.add(ping, {"host": "a"}, run_at=datetime.now(timezone.utc),
                  delay=timedelta(seconds=1))  # fmt: skip

    assert count_jobs(dsn) == 0


def test_add_with_naive_run_at_raises_invalid_argument(queue: Queue, dsn: str) -> None:
    with pytest.raises(InvalidArgument, match="timezone"):
        queue.add(ping, {"host": "a"}, run_at=datetime(2100, 1, 1))

    assert count_jobs(dsn) == 0


@pytest.mark.parametrize(
    ("job_type", "options", "message"),
    [
        (JobType("", Ping), {}, "invalid job_name"),
        (JobType("x" * 201, Ping), {}, "invalid job_name"),
        (ping, {"max_retries": -1}, "invalid max_retries"),
        (ping, {"queue": ""}, "invalid queue"),
        (ping, {"idempotency_key": ""}, "invalid idempotency_key"),
    ],
)
def test_add_with_bad_input_raises_invalid_argument_and_inserts_nothing(
    queue: Queue, dsn: str, job_type: JobType[Ping], options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        queue.add(job_type, {"host": "a"}, **options)  # type: ignore[arg-type]  # mixed kwargs

    assert count_jobs(dsn) == 0


def test_add_with_oversized_payload_raises_invalid_argument(queue: Queue, dsn: str) -> None:
    # Random-looking text, so that TOAST compression cannot bring it under the limit.
    big = "".join(f"{i * 7919 % 1000003:x}" for i in range(300_000))

    with pytest.raises(InvalidArgument, match="invalid payload"):
        queue.add(ping, {"host": big})

    assert count_jobs(dsn) == 0


def test_add_with_an_existing_idempotency_key_returns_the_first_job(queue: Queue, dsn: str) -> None:
    first = queue.add(ping, {"host": "a"}, idempotency_key="ping-a")

    second = queue.add(ping, {"host": "other"}, idempotency_key="ping-a")

    assert second == first
    assert count_jobs(dsn) == 1
    assert job_row(dsn, first)["payload"] == {"host": "a"}


def test_add_in_a_callers_transaction_that_rolls_back_leaves_no_job(queue: Queue, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        job_id = queue.add(ping, {"host": "a"}, conn=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert queue.job(job_id) is None  # not committed: invisible to others
        conn.rollback()

    assert queue.job(job_id) is None
    assert count_jobs(dsn) == 0


def test_add_in_a_callers_transaction_appears_when_it_commits(queue: Queue, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        job_id = queue.add(ping, {"host": "a"}, conn=conn)
        conn.commit()

    details = queue.job(job_id)
    assert details is not None
    assert details.state == "available"


# -- add_many ------------------------------------------------------------------------------


def test_add_many_returns_ids_in_input_order(queue: Queue, dsn: str) -> None:
    payloads: list[Greeting] = [{"name": f"n{i}", "times": i} for i in range(50)]

    ids = queue.add_many(greet, payloads)

    assert len(set(ids)) == 50
    for i, job_id in enumerate(ids):
        assert job_row(dsn, job_id)["payload"] == {"name": f"n{i}", "times": i}


def test_add_many_keeps_payloads_with_quotes_braces_and_unicode_intact(
    queue: Queue, dsn: str
) -> None:
    hosts = ['a"b', "back\\slash", "{x,y}", "NULL", "", "naïve ☃", "line\nbreak", "'quoted'"]

    ids = queue.add_many(ping, [{"host": h} for h in hosts])

    assert [job_row(dsn, i)["payload"] for i in ids] == [{"host": h} for h in hosts]


def test_add_many_of_twenty_thousand_jobs_inserts_them_all(queue: Queue, dsn: str) -> None:
    ids = queue.add_many(ping, [{"host": f"h{i}"} for i in range(20_000)])

    assert len(set(ids)) == 20_000
    assert count_jobs(dsn) == 20_000
    assert job_row(dsn, ids[12_345])["payload"] == {"host": "h12345"}


def test_add_many_honours_idempotency_keys(queue: Queue, dsn: str) -> None:
    existing = queue.add(ping, {"host": "old"}, idempotency_key="k1")

    ids = queue.add_many(
        ping,
        [{"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}],
        idempotency_keys=["k0", "k1", None, "k0"],
    )

    assert ids[1] == existing
    assert ids[3] == ids[0]  # the same key twice in one batch: one job
    assert len({ids[0], ids[1], ids[2]}) == 3
    assert count_jobs(dsn) == 3
    assert job_row(dsn, existing)["payload"] == {"host": "old"}
    assert job_row(dsn, ids[0])["payload"] == {"host": "a"}


def test_add_many_takes_the_options_for_every_job(queue: Queue) -> None:
    ids = queue.add_many(ping, [{"host": "a"}, {"host": "b"}], queue="q2", priority=9,
                         max_retries=1, delay=timedelta(minutes=5))  # fmt: skip

    for job_id in ids:
        details = queue.job(job_id)
        assert details is not None
        assert (details.queue, details.priority, details.max_retries) == ("q2", 9, 1)
        assert details.run_at > details.created_at
    assert queue.claim("w", queues=["q2"]) == []


def test_add_many_with_one_bad_job_raises_invalid_argument_and_inserts_nothing(
    queue: Queue, dsn: str
) -> None:
    with pytest.raises(InvalidArgument, match=r"invalid idempotency_key.*job 2 of 3"):
        queue.add_many(ping, [{"host": "a"}] * 3, idempotency_keys=["a", "", "c"])

    assert count_jobs(dsn) == 0


def test_add_many_with_too_few_idempotency_keys_raises_invalid_argument(
    queue: Queue, dsn: str
) -> None:
    with pytest.raises(InvalidArgument, match="idempotency_keys"):
        queue.add_many(ping, [{"host": "a"}] * 3, idempotency_keys=["a"])

    assert count_jobs(dsn) == 0


def test_add_many_of_nothing_returns_no_ids(queue: Queue, dsn: str) -> None:
    assert queue.add_many(ping, []) == []
    assert count_jobs(dsn) == 0


def test_add_many_in_a_callers_transaction_that_rolls_back_leaves_no_job(
    queue: Queue, dsn: str
) -> None:
    with psycopg.connect(dsn) as conn:
        queue.add_many(ping, [{"host": "a"}, {"host": "b"}], conn=conn)
        conn.rollback()

    assert count_jobs(dsn) == 0


# -- payload types -------------------------------------------------------------------------


def test_dataclass_payload_round_trips_through_the_database(queue: Queue) -> None:
    sent = Invoice("INV-9", 999, ["a", "b"])
    queue.add(invoice, sent)

    [claimed] = queue.claim("w", queues=["billing"])

    assert invoice.decode(claimed.payload) == sent


def test_typeddict_payload_round_trips_through_the_database(queue: Queue) -> None:
    sent: Greeting = {"name": "Grace", "times": 3}
    queue.add(greet, sent)

    [claimed] = queue.claim("w")

    assert greet.decode(claimed.payload) == sent


def test_encode_turns_a_dataclass_into_a_dict_and_a_typeddict_into_a_copy() -> None:
    payload: Greeting = {"name": "x", "times": 1}

    assert invoice.encode(Invoice("n", 1, [])) == {"number": "n", "amount_cents": 1, "lines": []}
    encoded = greet.encode(payload)
    assert encoded == {"name": "x", "times": 1}
    assert encoded is not payload


# -- claim ---------------------------------------------------------------------------------


def test_claim_returns_the_job_leased_with_its_columns(queue: Queue) -> None:
    job_id = queue.add(greet, {"name": "Ada", "times": 2}, priority=4)

    [claimed] = queue.claim("worker-1", lease=timedelta(minutes=2))

    assert (claimed.id, claimed.job_name, claimed.queue) == (job_id, "greet", "default")
    assert claimed.payload == {"name": "Ada", "times": 2}
    assert (claimed.attempt, claimed.max_retries, claimed.priority) == (1, 5, 4)
    assert claimed.lease_expires_at - claimed.run_at >= timedelta(minutes=2) - timedelta(seconds=1)
    details = queue.job(job_id)
    assert details is not None
    assert (details.state, details.worker_id) == ("running", "worker-1")


def test_claim_takes_at_most_batch_jobs_in_priority_order(queue: Queue) -> None:
    low = queue.add(ping, {"host": "low"}, priority=5)
    high = queue.add(ping, {"host": "high"}, priority=-5)
    queue.add(ping, {"host": "mid"})

    claimed = [c.id for c in queue.claim("w", batch=2)]

    assert len(claimed) == 2
    assert claimed[0] == high
    assert low not in claimed


def test_release_lost_claims_gives_back_the_jobs_the_worker_does_not_hold(
    queue: Queue,
) -> None:
    held, lost = (queue.add(ping, {"host": h}) for h in ("held", "lost"))
    claimed = {c.id for c in queue.claim("w", batch=2)}
    assert claimed == {held, lost}

    assert queue.release_lost_claims("w", [held]) == 1

    lost_job, held_job = queue.job(lost), queue.job(held)
    assert lost_job is not None and held_job is not None
    assert (lost_job.state, lost_job.attempt) == ("available", 0)
    assert held_job.state == "running"
    with pytest.raises(InvalidArgument, match="invalid worker_id"):
        queue.release_lost_claims("", [])


def test_claim_from_an_empty_queue_returns_nothing(queue: Queue) -> None:
    assert queue.claim("w", queues=["default", "other"], batch=10) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch": 0}, "invalid batch"),
        ({"queues": []}, "invalid queues"),
        ({"lease": timedelta(days=2)}, "invalid lease"),
    ],
)
def test_claim_with_bad_input_raises_invalid_argument_and_claims_nothing(
    queue: Queue, options: dict[str, object], message: str
) -> None:
    job_id = queue.add(ping, {"host": "a"})

    with pytest.raises(InvalidArgument, match=message):
        queue.claim("w", **options)  # type: ignore[arg-type]  # mixed kwargs

    details = queue.job(job_id)
    assert details is not None
    assert details.state == "available"


# -- heartbeat -----------------------------------------------------------------------------


def test_heartbeat_extends_the_lease(queue: Queue, job: ClaimedJob) -> None:
    expires = queue.heartbeat(job.id, job.lease_token, lease=timedelta(hours=1))

    assert expires > job.lease_expires_at
    details = queue.job(job.id)
    assert details is not None
    assert details.lease_expires_at == expires


def test_heartbeat_with_stale_token_raises_lease_lost(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    with pytest.raises(LeaseLost):
        queue.heartbeat(job.id, uuid4())

    row = job_row(dsn, job.id)
    assert (row["lease_token"], row["lease_expires_at"]) == (job.lease_token,
                                                             job.lease_expires_at)  # fmt: skip


def test_heartbeat_after_the_lease_expired_raises_lease_lost(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    backdate_lease(dsn, job.id)
    before = job_row(dsn, job.id)

    with pytest.raises(LeaseLost):
        queue.heartbeat(job.id, job.lease_token)

    assert job_row(dsn, job.id) == before


def test_heartbeat_many_extends_held_leases_and_reports_lost_ones(queue: Queue, dsn: str) -> None:
    a = running_job(queue, name="a")
    b = running_job(queue, name="b")

    outcomes = queue.heartbeat_many([a.id, b.id], [a.lease_token, uuid4()])

    assert [(o.job_id, o.outcome) for o in outcomes] == [(a.id, "extended"),
                                                         (b.id, "lease_lost")]  # fmt: skip
    assert outcomes[0].lease_expires_at is not None
    assert outcomes[1].lease_expires_at is None
    assert job_row(dsn, b.id)["lease_expires_at"] == b.lease_expires_at


def test_heartbeat_many_with_mismatched_arrays_raises_invalid_argument(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    with pytest.raises(InvalidArgument):
        queue.heartbeat_many([job.id], [])

    assert job_row(dsn, job.id)["lease_expires_at"] == job.lease_expires_at


# -- complete ------------------------------------------------------------------------------


def test_complete_marks_the_job_succeeded(queue: Queue, job: ClaimedJob) -> None:
    queue.complete(job.id, job.lease_token)

    details = queue.job(job.id)
    assert details is not None
    assert details.state == "succeeded"
    assert details.finished_at is not None


def test_complete_repeated_with_the_same_token_is_accepted(queue: Queue, job: ClaimedJob) -> None:
    queue.complete(job.id, job.lease_token)

    queue.complete(job.id, job.lease_token)

    details = queue.job(job.id)
    assert details is not None
    assert details.state == "succeeded"


def test_complete_with_stale_token_raises_lease_lost(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    before = job_row(dsn, job.id)

    with pytest.raises(LeaseLost):
        queue.complete(job.id, uuid4())

    assert job_row(dsn, job.id) == before


def test_complete_many_completes_held_jobs_and_reports_lost_ones(queue: Queue, dsn: str) -> None:
    a = running_job(queue, name="a")
    b = running_job(queue, name="b")

    outcomes = queue.complete_many([a.id, b.id], [a.lease_token, uuid4()])

    assert [(o.job_id, o.outcome) for o in outcomes] == [(a.id, "succeeded"),
                                                         (b.id, "lease_lost")]  # fmt: skip
    assert job_row(dsn, a.id)["state"] == "succeeded"
    assert job_row(dsn, b.id)["state"] == "running"


def test_complete_many_with_mismatched_arrays_raises_invalid_argument(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    with pytest.raises(InvalidArgument):
        queue.complete_many([job.id], [job.lease_token, uuid4()])

    assert job_row(dsn, job.id)["state"] == "running"


# -- fail ----------------------------------------------------------------------------------


def test_fail_schedules_a_retry_and_keeps_the_error(queue: Queue, job: ClaimedJob) -> None:
    state = queue.fail(job.id, job.lease_token, "smtp timeout")

    assert state == "available"
    details = queue.job(job.id)
    assert details is not None
    assert (details.state, details.last_error, details.attempt) == ("available", "smtp timeout", 1)
    assert [(e.attempt, e.error) for e in queue.job_errors(job.id)] == [(1, "smtp timeout")]


def test_fail_without_retry_dead_letters_the_job(queue: Queue, job: ClaimedJob) -> None:
    state = queue.fail(job.id, job.lease_token, "bad address", retry=False)

    assert state == "dead"
    [dead] = queue.dead_letter()
    assert (dead.id, dead.last_error, dead.payload) == (job.id, "bad address", job.payload)


def test_fail_with_stale_token_raises_lease_lost(queue: Queue, job: ClaimedJob, dsn: str) -> None:
    before = job_row(dsn, job.id)

    with pytest.raises(LeaseLost):
        queue.fail(job.id, uuid4(), "late")

    assert job_row(dsn, job.id) == before
    assert queue.job_errors(job.id) == []


# -- run-once markers ----------------------------------------------------------------------


def test_once_begin_then_finish_then_replay_returns_the_stored_result(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    first = queue.once_begin(job.id, job.lease_token, "charge")
    queue.once_finish(job.id, job.lease_token, "charge", {"charge_id": "ch_1"})
    queue.fail(job.id, job.lease_token, "later step failed")
    scalar(dsn, "update pgq.jobs set run_at = now() where id = %s returning id", (job.id,))
    [again] = queue.claim("w")

    replay = queue.once_begin(again.id, again.lease_token, "charge")

    assert (first.status, first.result) == ("run", None)
    assert (replay.status, replay.result) == ("done", {"charge_id": "ch_1"})


def test_once_begin_of_an_unfinished_marker_reports_unknown(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    queue.once_begin(job.id, job.lease_token, "charge")
    backdate_lease(dsn, job.id)  # the worker died during the effect
    assert queue.claim("w") == []  # fails the expired attempt; its retry is backing off
    scalar(dsn, "update pgq.jobs set run_at = now() where id = %s returning id", (job.id,))
    [again] = queue.claim("w")

    status = queue.once_begin(again.id, again.lease_token, "charge")

    assert status.status == "unknown"


def test_once_begin_with_stale_token_raises_lease_lost(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    with pytest.raises(LeaseLost):
        queue.once_begin(job.id, uuid4(), "charge")

    assert scalar(dsn, "select count(*) from pgq.once_markers") == 0


def test_once_finish_without_begin_raises_marker_not_begun(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    with pytest.raises(MarkerNotBegun):
        queue.once_finish(job.id, job.lease_token, "charge", {"x": 1})

    assert scalar(dsn, "select count(*) from pgq.once_markers") == 0


def test_once_abort_withdraws_the_marker_so_the_effect_runs_again(
    queue: Queue, job: ClaimedJob
) -> None:
    queue.once_begin(job.id, job.lease_token, "charge")

    queue.once_abort(job.id, job.lease_token, "charge")

    assert queue.once_begin(job.id, job.lease_token, "charge").status == "run"


def test_once_abort_of_a_finished_marker_raises_marker_not_begun(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    queue.once_begin(job.id, job.lease_token, "charge")
    queue.once_finish(job.id, job.lease_token, "charge", 42)

    with pytest.raises(MarkerNotBegun):
        queue.once_abort(job.id, job.lease_token, "charge")

    assert scalar(dsn, "select status from pgq.once_markers") == "done"


def test_once_resolve_records_an_unknown_outcome_as_done(queue: Queue, job: ClaimedJob) -> None:
    queue.once_begin(job.id, job.lease_token, "charge")

    queue.once_resolve(job.id, "charge", ran=True, result={"checked": True})

    status = queue.once_begin(job.id, job.lease_token, "charge")
    assert (status.status, status.result) == ("done", {"checked": True})


def test_once_resolve_without_an_unfinished_marker_raises_marker_not_found(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    with pytest.raises(MarkerNotFound):
        queue.once_resolve(job.id, "charge", ran=False)

    assert scalar(dsn, "select count(*) from pgq.once_markers") == 0


# -- operator calls ------------------------------------------------------------------------


def test_configure_queue_with_bad_backoff_raises_invalid_argument(queue: Queue, dsn: str) -> None:
    queue.configure_queue("mail", backoff_base=timedelta(seconds=2))

    with pytest.raises(InvalidArgument, match="invalid backoff"):
        queue.configure_queue("mail", backoff_max=timedelta(seconds=1), max_retries=9)

    assert scalar(dsn, "select max_retries from pgq.queues where queue = 'mail'") == 5


def test_pause_stops_claims_and_resume_restarts_them(queue: Queue) -> None:
    job_id = queue.add(ping, {"host": "a"})

    queue.pause("default")
    assert queue.claim("w") == []
    assert [s.paused for s in queue.stats()] == [True]
    queue.resume("default")

    assert [c.id for c in queue.claim("w")] == [job_id]


def test_pause_of_an_unknown_queue_raises_queue_not_found(queue: Queue, dsn: str) -> None:
    with pytest.raises(QueueNotFound):
        queue.pause("nowhere")

    with pytest.raises(QueueNotFound):
        queue.resume("nowhere")
    assert scalar(dsn, "select count(*) from pgq.queues where queue = 'nowhere'") == 0


def test_cancel_of_a_running_job_takes_its_lease(queue: Queue, job: ClaimedJob) -> None:
    assert queue.cancel(job.id) == "cancelled"

    with pytest.raises(LeaseLost):
        queue.complete(job.id, job.lease_token)


def test_cancel_of_an_unknown_job_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        queue.cancel(999_999)


def test_cancel_of_a_finished_job_raises_job_state_conflict(queue: Queue, job: ClaimedJob) -> None:
    queue.complete(job.id, job.lease_token)

    with pytest.raises(JobStateConflict):
        queue.cancel(job.id)

    details = queue.job(job.id)
    assert details is not None
    assert details.state == "succeeded"


def test_retry_brings_a_dead_job_back_with_fresh_attempts(queue: Queue, job: ClaimedJob) -> None:
    queue.fail(job.id, job.lease_token, "nope", retry=False)

    queue.retry(job.id)

    [again] = queue.claim("w")
    assert (again.id, again.attempt) == (job.id, 1)


def test_retry_of_an_available_job_raises_job_state_conflict(queue: Queue, dsn: str) -> None:
    job_id = queue.add(ping, {"host": "a"})
    before = job_row(dsn, job_id)

    with pytest.raises(JobStateConflict):
        queue.retry(job_id)

    assert job_row(dsn, job_id) == before


def test_retry_of_an_unknown_job_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        queue.retry(999_999)


def test_retry_dead_requeues_the_dead_jobs_of_one_queue(queue: Queue) -> None:
    a = running_job(queue, name="a", queue_name="q1")
    b = running_job(queue, name="b", queue_name="q2")
    queue.fail(a.id, a.lease_token, "x", retry=False)
    queue.fail(b.id, b.lease_token, "x", retry=False)

    assert queue.retry_dead("q1") == 1

    assert [d.id for d in queue.dead_letter()] == [b.id]
    assert [d.id for d in queue.dead_letter(queue="q2")] == [b.id]
    assert queue.dead_letter(queue="q1") == []


def test_prune_deletes_jobs_finished_long_ago(queue: Queue, dsn: str) -> None:
    old = running_job(queue, name="old")
    new = running_job(queue, name="new")
    queue.complete(old.id, old.lease_token)
    queue.complete(new.id, new.lease_token)
    backdate_finished(dsn, old.id)

    assert queue.prune(timedelta(days=1)) == 1

    assert queue.job(old.id) is None
    assert queue.job(new.id) is not None


def test_prune_with_a_negative_age_raises_invalid_argument(
    queue: Queue, job: ClaimedJob, dsn: str
) -> None:
    queue.complete(job.id, job.lease_token)

    with pytest.raises(InvalidArgument):
        queue.prune(timedelta(days=-1))

    assert count_jobs(dsn) == 1


def test_stats_counts_jobs_by_state_per_queue(queue: Queue, job: ClaimedJob) -> None:
    queue.add(ping, {"host": "a"})
    queue.add(ping, {"host": "b"}, queue="other", delay=timedelta(hours=1))

    stats = {s.queue: s for s in queue.stats()}

    assert (stats["default"].available, stats["default"].running) == (1, 1)
    assert (stats["other"].available, stats["other"].scheduled) == (0, 1)
    assert stats["default"].oldest_runnable_age is not None


def test_job_of_an_unknown_id_is_none(queue: Queue) -> None:
    assert queue.job(123_456) is None
