"""Enqueue from a trigger on a user's table: the job is part of the user's transaction,
and membership of pgq_producer is all the inserting role needs."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import psycopg
import pytest
from helpers import scalar
from psycopg import sql

ORDERS_SCHEMA = """
create table orders (
    id          bigint generated always as identity primary key,
    customer    text not null,
    total_cents integer not null
);

create function orders_enqueue_created() returns trigger
language plpgsql as $$
begin
    perform pgq.enqueue('order_created',
                        jsonb_build_object('order_id', new.id,
                                           'customer', new.customer,
                                           'total_cents', new.total_cents),
                        queue => 'orders');
    return null;
end;
$$;

create trigger orders_after_insert
    after insert on orders
    for each row execute function orders_enqueue_created();
"""


@pytest.fixture
def shop_dsn(dsn: str) -> str:
    """The test database with an ``orders`` table whose inserts enqueue a job."""
    with psycopg.connect(dsn) as conn:
        conn.execute(ORDERS_SCHEMA)
    return dsn


@pytest.fixture
def login_less_role(shop_dsn: str) -> Iterator[str]:
    """A role of no pgq group that may insert orders; dropped afterwards (roles are
    cluster-wide)."""
    name = f"pgq_test_shop_{uuid4().hex[:10]}"
    role = sql.Identifier(name)
    with psycopg.connect(shop_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} nologin").format(role))
        conn.execute(sql.SQL("grant insert, select on orders to {}").format(role))
    try:
        yield name
    finally:
        with psycopg.connect(shop_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("drop owned by {}").format(role))
            conn.execute(sql.SQL("drop role {}").format(role))


def order_jobs(dsn: str) -> list[tuple[str, str, dict[str, object]]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select job_name, queue, payload from pgq.jobs order by id").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_insert_that_commits_enqueues_the_job_with_its_payload(shop_dsn: str) -> None:
    with psycopg.connect(shop_dsn) as conn:
        row = conn.execute(
            "insert into orders (customer, total_cents) values ('ada', 4200) returning id"
        ).fetchone()
        conn.commit()
    assert row is not None

    assert order_jobs(shop_dsn) == [
        ("order_created", "orders", {"order_id": row[0], "customer": "ada", "total_cents": 4200})
    ]


def test_insert_that_rolls_back_enqueues_nothing(shop_dsn: str) -> None:
    with psycopg.connect(shop_dsn) as conn:
        conn.execute("insert into orders (customer, total_cents) values ('ada', 4200)")
        assert scalar(shop_dsn, "select count(*) from pgq.jobs") == 0  # not yet visible
        conn.rollback()

    assert order_jobs(shop_dsn) == []
    assert scalar(shop_dsn, "select count(*) from orders") == 0


def test_a_member_of_pgq_producer_can_enqueue_through_the_trigger(
    shop_dsn: str, login_less_role: str
) -> None:
    role = sql.Identifier(login_less_role)
    with psycopg.connect(shop_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("grant pgq_producer to {}").format(role))

    with psycopg.connect(shop_dsn) as conn:
        conn.execute(sql.SQL("set role {}").format(role))
        conn.execute("insert into orders (customer, total_cents) values ('grace', 99)")
        conn.commit()

    assert [(j[0], j[2]["customer"]) for j in order_jobs(shop_dsn)] == [("order_created", "grace")]


def test_a_role_outside_pgq_producer_cannot_enqueue_through_the_trigger(
    shop_dsn: str, login_less_role: str
) -> None:
    with psycopg.connect(shop_dsn) as conn:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(login_less_role)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into orders (customer, total_cents) values ('eve', 1)")
        conn.rollback()

    assert order_jobs(shop_dsn) == []
    assert scalar(shop_dsn, "select count(*) from orders") == 0
