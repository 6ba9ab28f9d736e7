"""NOTIFY on channel pgq_jobs: the queue name, at commit, for jobs due now, once per
statement and queue.

Absence is proven by order, not by waiting: notifications from different transactions
arrive in commit order, so once a sentinel committed after the transaction under test
has arrived, anything that transaction sent has arrived before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TypedDict

import psycopg
import pytest

from pgqueue_py import JobType, Queue

CHANNEL = "pgq_jobs"
SENTINEL = "-- sentinel --"


class Mail(TypedDict):
    to: str


mail = JobType("mail", Mail, queue="mail")


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=2) as q:
        yield q


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("listen pgq_jobs")
        yield conn


def send_sentinel(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_notify(%s, %s)", (CHANNEL, SENTINEL))


def received_until_sentinel(listener: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Payloads on pgq_jobs up to (not including) the sentinel."""
    payloads: list[str] = []
    for note in listener.notifies(timeout=30):
        assert note.channel == CHANNEL
        if note.payload == SENTINEL:
            return payloads
        payloads.append(note.payload)
    raise AssertionError(f"the sentinel never arrived; received {payloads}")


def next_payload(listener: psycopg.Connection[tuple[object, ...]]) -> str:
    notes = list(listener.notifies(timeout=30, stop_after=1))
    assert notes, "no notification arrived"
    return notes[0].payload


def test_listener_receives_the_queue_name_when_the_job_commits(
    queue: Queue, dsn: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with psycopg.connect(dsn) as producer:
        queue.add(mail, {"to": "ada@example.com"}, conn=producer)
        send_sentinel(dsn)  # commits after the add, before the producer commits
        assert received_until_sentinel(listener) == []

        producer.commit()

        assert next_payload(listener) == "mail"


def test_rolled_back_enqueue_sends_nothing(
    queue: Queue, dsn: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with psycopg.connect(dsn) as producer:
        queue.add(mail, {"to": "ada@example.com"}, conn=producer)
        producer.rollback()
    send_sentinel(dsn)

    assert received_until_sentinel(listener) == []


def test_job_scheduled_for_later_sends_nothing(
    queue: Queue, dsn: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    queue.add(mail, {"to": "ada@example.com"}, delay=timedelta(hours=1))
    send_sentinel(dsn)

    assert received_until_sentinel(listener) == []


def test_add_many_of_500_jobs_sends_one_notification(
    queue: Queue, dsn: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    ids = queue.add_many(mail, [{"to": f"u{i}@example.com"} for i in range(500)])
    send_sentinel(dsn)

    assert len(ids) == 500
    assert received_until_sentinel(listener) == ["mail"]


def test_one_transaction_with_many_adds_to_two_queues_sends_one_per_queue(
    queue: Queue, dsn: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with psycopg.connect(dsn) as producer:
        for i in range(20):
            queue.add(mail, {"to": f"u{i}@example.com"}, conn=producer)
        queue.add(mail, {"to": "ops@example.com"}, queue="urgent", conn=producer)
        producer.commit()
    send_sentinel(dsn)

    assert sorted(received_until_sentinel(listener)) == ["mail", "urgent"]
