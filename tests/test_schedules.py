"""Schedules: the PL/pgSQL cron against a reference implementation, and ticking races.

The next-time computation is cross-checked against cronsim, which follows Debian cron
(DST included), over seeded random (expression, time zone, instant) pairs, many of them
within hours of a DST change, all computed by the database in one statement.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TypedDict
from zoneinfo import ZoneInfo

import psycopg
import pytest
from cronsim import CronSim, CronSimError
from test_worker import running, wait_for_state

from pgqueue_py import JobContext, JobType, Queue
from pgqueue_py.client import _sql
from pgqueue_py.client.errors import ScheduleNotFound, translate

SEED = 20261201
PAIRS = 12_000
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]
DST_ZONES = ["Europe/Berlin", "America/New_York"]

# The shorthands, as pgq expands them (cronsim has none).
SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (low, high, names) per field: minute, hour, day-of-month, month, day-of-week.
FIELDS: list[tuple[int, int, list[str] | None]] = [
    (0, 59, None),
    (0, 23, None),
    (1, 31, None),
    (1, 12, MONTHS),
    (0, 7, DAYS),
]

CRON_NEXT = (
    "select pgq._cron_next(t.cron, t.timezone, t.after)"
    " from unnest(%(crons)s::text[], %(zones)s::text[], %(afters)s::timestamptz[])"
    " with ordinality as t(cron, timezone, after, ord)"
    " order by t.ord"
)
CRON_VALID_FUNCTION = (
    "create function pg_temp.cron_valid(cron text) returns boolean language plpgsql as $$"
    " begin perform pgq._cron_parse(cron); return true;"
    " exception when sqlstate 'PQ001' then return false; end $$"
)
CRON_VALID = (
    "select pg_temp.cron_valid(t.cron)"
    " from unnest(%(crons)s::text[]) with ordinality as t(cron, ord) order by t.ord"
)


# -- random expressions and instants -------------------------------------------------------


def _value(rng: random.Random, lo: int, hi: int, names: list[str] | None) -> tuple[int, str]:
    value = rng.randint(lo, hi)
    if names is not None and rng.random() < 0.3 and value - lo < len(names):
        name = names[value - lo]
        return value, rng.choice([name, name.upper(), name.capitalize()])
    return value, str(value)


def _term(rng: random.Random, lo: int, hi: int, names: list[str] | None) -> str:
    kind = rng.choices(["star", "value", "range", "star_step", "range_step", "value_step"],
                       weights=[3, 4, 3, 3, 2, 1])[0]  # fmt: skip
    if kind == "star":
        return "*"
    if kind == "star_step":
        return f"*/{rng.randint(1, hi - lo + 1)}"
    start, start_text = _value(rng, lo, hi, names)
    if kind == "value":
        return start_text
    if kind == "value_step":
        return f"{start_text}/{rng.randint(1, hi - lo + 1)}"
    end, end_text = _value(rng, start, hi, names)
    if kind == "range":
        return f"{start_text}-{end_text}"
    return f"{start_text}-{end_text}/{rng.randint(1, max(1, end - start + 1))}"


def _field(rng: random.Random, lo: int, hi: int, names: list[str] | None) -> str:
    return ",".join(_term(rng, lo, hi, names) for _ in range(rng.choice([1, 1, 1, 2, 3])))


def random_expression(rng: random.Random) -> str:
    if rng.random() < 0.04:
        return rng.choice(sorted(SHORTHANDS))
    return " ".join(_field(rng, lo, hi, names) for lo, hi, names in FIELDS)


def dst_expression(rng: random.Random) -> str:
    """An expression likely to have slots in the hours around a DST change."""
    minute = rng.choice(["*", "0", "30", "*/15", "*/7", "15,45", "0-10", "59", "5/20"])
    hour = rng.choice(["*", "2", "1", "3", "1-3", "*/2", "2,3", "0-4/2", "1/3", "0,2,4"])
    day = rng.choice(["*", "*", "*", "*/2", "1-15"])
    month = rng.choice(["*", "*", "3,10,11", "mar-nov"])
    weekday = rng.choice(["*", "*", "*", "sun", "0", "7", "mon-fri", "sat,sun"])
    return f"{minute} {hour} {day} {month} {weekday}"


def dst_changes(zone: str, first_year: int, last_year: int) -> list[datetime]:
    """Every instant (UTC) where the zone's UTC offset changes, to the minute."""
    tz = ZoneInfo(zone)
    changes = []
    at = datetime(first_year, 1, 1, tzinfo=timezone.utc)
    end = datetime(last_year + 1, 1, 1, tzinfo=timezone.utc)
    step = timedelta(days=1)  # changes are months apart
    while at < end:
        if at.astimezone(tz).utcoffset() != (at + step).astimezone(tz).utcoffset():
            lo, hi = at, at + step
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset():
                    lo = mid
                else:
                    hi = mid
            changes.append(hi.replace(second=0, microsecond=0))
        at += step
    return changes


def random_instant(rng: random.Random) -> datetime:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    at = start + timedelta(seconds=rng.randint(0, 8 * 365 * 86400))
    if rng.random() < 0.5:
        return at  # on a whole second, often on a slot
    return at + timedelta(microseconds=rng.randint(0, 999_999))


def near(rng: random.Random, change: datetime) -> datetime:
    """An instant within 3 hours of a DST change, often on a whole minute."""
    at = change + timedelta(minutes=rng.randint(-180, 180))
    if rng.random() < 0.5:
        at += timedelta(seconds=rng.randint(0, 59), microseconds=rng.randint(0, 999_999))
    return at


def cronsim_next(expr: str, zone: str, after: datetime) -> datetime:
    tz: timezone | ZoneInfo = timezone.utc if zone == "UTC" else ZoneInfo(zone)
    result = next(CronSim(SHORTHANDS.get(expr, expr), after.astimezone(tz)))
    return result.astimezone(timezone.utc)


def random_pairs(count: int, seed: int) -> list[tuple[str, str, datetime, bool]]:
    """(expression, zone, instant, near a DST change): half uniform (any zone, any
    expression), half within 3 hours of a DST change in Europe/Berlin or
    America/New_York (mostly with expressions that have slots then)."""
    rng = random.Random(seed)
    changes = {zone: dst_changes(zone, 2024, 2031) for zone in DST_ZONES}
    pairs = []
    for _ in range(count // 2):
        pairs.append((random_expression(rng), rng.choice(ZONES), random_instant(rng), False))
    for _ in range(count - count // 2):
        zone = rng.choice(DST_ZONES)
        expr = dst_expression(rng) if rng.random() < 0.8 else random_expression(rng)
        pairs.append((expr, zone, near(rng, rng.choice(changes[zone])), True))
    return pairs


def valid_for_cronsim(expr: str) -> bool:
    try:
        CronSim(SHORTHANDS.get(expr, expr), datetime(2026, 1, 1, tzinfo=timezone.utc))
    except CronSimError:
        return False
    return True


# -- the cross-check ---------------------------------------------------------------------


def test_dst_changes_are_found_in_both_zones() -> None:
    changes = {zone: dst_changes(zone, 2024, 2031) for zone in DST_ZONES}

    assert [len(c) for c in changes.values()] == [16, 16]
    assert datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc) in changes["Europe/Berlin"]
    assert datetime(2026, 11, 1, 6, 0, tzinfo=timezone.utc) in changes["America/New_York"]


def test_cron_next_matches_cronsim_on_random_pairs_around_dst(dsn: str) -> None:
    pairs = []  # (expression, zone, instant, cronsim's next time)
    near_dst = 0
    for expr, zone, after, near_change in random_pairs(PAIRS, SEED):
        try:
            expected = cronsim_next(expr, zone, after)
        except CronSimError:
            continue  # test_cron_validity_matches_cronsim covers refusals
        pairs.append((expr, zone, after, expected))
        near_dst += near_change
    assert len(pairs) >= 10_000
    assert near_dst >= 5_000
    assert {p[1] for p in pairs} == set(ZONES)

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(CRON_NEXT, {"crons": [p[0] for p in pairs],
                                        "zones": [p[1] for p in pairs],
                                        "afters": [p[2] for p in pairs]}).fetchall()  # fmt: skip

    got = [row[0] for row in rows]
    mismatches = [(expr, zone, after.isoformat(), ours, expected)
                  for (expr, zone, after, expected), ours in zip(pairs, got, strict=True)
                  if ours != expected]  # fmt: skip
    assert mismatches[:10] == []
    assert len(got) == len(pairs)


def test_cron_validity_matches_cronsim(dsn: str) -> None:
    rng = random.Random(SEED + 1)
    junk = ["60", "24", "32", "0", "13", "8", "5-3", "*/0", "1,", ",1", "x", "jan", "mon",
            "-1", "1-", "1/", "/2", "**", "1--2", "1-2-3", "*/", "1/2/3", "sun-mon", "7-0",
            "0/0", "3-3", "3/30", "mon-sun", "dec-jan"]  # fmt: skip
    crons = []
    for _ in range(600):
        fields = random_expression(rng).split()
        if len(fields) == 5:
            fields[rng.randrange(5)] = rng.choice(junk)
        crons.append(" ".join(fields))
    crons += ["0 0 30 2 *", "0 0 31 4,6 *", "0 0 30 2 mon", "0 0 29 2 *", "0 0 31 2,4 *",
              "* * * *", "* * * * * * *", "@sometimes", "@DAILY", "  */5   * * * *  "]  # fmt: skip

    with psycopg.connect(dsn) as conn:
        conn.execute(CRON_VALID_FUNCTION)
        ours = [row[0] for row in conn.execute(CRON_VALID, {"crons": crons}).fetchall()]

    theirs = [valid_for_cronsim(c.lower() if c.startswith("@") else c) for c in crons]
    assert [(c, o, t) for c, o, t in zip(crons, ours, theirs, strict=True) if o != t] == []
    assert sum(ours) > 50 and sum(not o for o in ours) > 300


# -- ticking -------------------------------------------------------------------------------

TICKERS = 8
SLOTS = 200


def _tick_together(
    dsn: str, rounds: int, between: Callable[[int], None] | None = None
) -> list[list[int]]:
    """TICKERS threads, each on its own connection, call pgq.tick() at the same moment,
    `rounds` times; `between(round)` runs alone before each round. Returns, per round,
    what each ticker's call returned."""
    results: list[list[int]] = [[0] * TICKERS for _ in range(rounds)]
    errors: list[BaseException] = []
    start = threading.Barrier(TICKERS + 1)
    done = threading.Barrier(TICKERS + 1)

    def ticker(index: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for round_ in range(rounds):
                start.wait()
                try:
                    row = conn.execute("select pgq.tick()").fetchone()
                    assert row is not None
                    results[round_][index] = int(row[0])
                except BaseException as exc:
                    errors.append(exc)
                done.wait()

    threads = [threading.Thread(target=ticker, args=(i,)) for i in range(TICKERS)]
    for thread in threads:
        thread.start()
    for round_ in range(rounds):
        if between is not None:
            between(round_)
        start.wait()
        done.wait()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


def test_eight_concurrent_tickers_enqueue_each_of_200_slots_of_one_schedule_once(dsn: str) -> None:
    # Time moves by rewriting the schedule row: before round k its cron names one
    # minute of a day two days ago and its next slot is that minute, so each round
    # has one due slot of its own (the next is a year away), and 8 tickers race for it.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pgq.schedule('race', '0 0 1 1 *', 'report', queue => 'race')")
        row = conn.execute("select (now() at time zone 'UTC')::date - 2").fetchone()
        assert row is not None
        day = row[0]

        def make_slot_due(round_: int) -> None:
            hour, minute = divmod(round_, 60)
            conn.execute(
                "update pgq.job_schedules set cron = %(cron)s, next_run_at = %(slot)s::timestamptz"
                " where schedule_name = 'race'",
                {"cron": f"{minute} {hour} {day.day} {day.month} *",
                 "slot": f"{day.isoformat()} {hour:02d}:{minute:02d}:00+00"},
            )  # fmt: skip

        results = _tick_together(dsn, SLOTS, make_slot_due)
        keys = [row[0] for row in conn.execute(
            "select idempotency_key from pgq.jobs where queue = 'race' order by id")]  # fmt: skip

    assert [sum(r) for r in results] == [1] * SLOTS
    assert keys == [f"pgq:schedule:race:{day.isoformat()}T{k // 60:02d}:{k % 60:02d}:00Z"
                    for k in range(SLOTS)]  # fmt: skip


def test_eight_concurrent_tickers_enqueue_200_due_schedules_once_each(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "select pgq.schedule('s' || i, '@yearly', 'report', queue => 'many')"
            " from generate_series(1, %s) as i", (SLOTS,))  # fmt: skip
        conn.execute("update pgq.job_schedules set next_run_at = now() - interval '3 years'")

        first = _tick_together(dsn, 1)
        # The idempotency key is the final guarantee: rewound, no slot runs twice.
        conn.execute("update pgq.job_schedules set next_run_at = now() - interval '1 year'")
        again = _tick_together(dsn, 1)
        counts = conn.execute(
            "select count(*), count(distinct idempotency_key) from pgq.jobs where queue = 'many'"
        ).fetchone()
        due = conn.execute(
            "select count(*) from pgq.job_schedules where next_run_at <= now()"
        ).fetchone()

    assert sum(first[0]) == SLOTS
    assert sum(again[0]) == 0
    assert counts == (SLOTS, SLOTS)
    assert due == (0,)


def test_tick_skips_a_schedule_another_tick_holds_without_waiting(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("select pgq.schedule('held', '* * * * *', 'report', queue => 'new')")
        setup.execute("update pgq.job_schedules set next_run_at = now() - interval '1 minute'")
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as other:
        assert holder.execute("select pgq.tick()").fetchone() == (1,)  # open: the row stays locked
        with psycopg.connect(dsn, autocommit=True) as setup:
            setup.execute("select pgq.schedule('free', '* * * * *', 'report', queue => 'new')")
            setup.execute("update pgq.job_schedules set next_run_at = now() - interval '1 minute'"
                          " where schedule_name = 'free'")  # fmt: skip
        # A tick that waited for the held row (or for the first job of the schedules'
        # queue) would fail on the lock timeout.
        other.execute("set lock_timeout = '5s'")
        assert other.execute("select pgq.tick()").fetchone() == (1,)
        holder.commit()
        assert other.execute("select pgq.tick()").fetchone() == (0,)
        jobs = other.execute("select count(*) from pgq.jobs").fetchone()

    assert jobs == (2,)


def test_tick_with_nothing_due_reads_the_index_not_the_table(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "insert into pgq.job_schedules (schedule_name, cron, timezone, job_name, queue,"
            " next_run_at)"
            " select 's' || i, '@daily', 'UTC', 'report', 'default',"
            " now() + interval '1 hour'"
            " from generate_series(1, 5000) as i")  # fmt: skip
        conn.commit()
        conn.execute("analyze pgq.job_schedules")
        ticked = conn.execute("select pgq.tick()").fetchone()
        scans = conn.execute(
            "select seq_scan, idx_scan from pg_stat_xact_user_tables"
            " where relid = 'pgq.job_schedules'::regclass").fetchone()  # fmt: skip

    assert ticked == (0,)
    assert scans is not None and scans[0] == 0 and scans[1] >= 1


# -- the statements the client sends -------------------------------------------------------


def test_schedule_statements_run_as_the_client_sends_them(dsn: str) -> None:
    params: dict[str, object] = {
        "schedule_name": "nightly", "cron": "0 3 * * *", "job_name": "report",
        "payload": None, "queue": None, "timezone": "Europe/Berlin", "priority": None,
        "max_retries": None,
    }  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        next_run = conn.execute(_sql.SCHEDULE, params).fetchone()
        listed = conn.execute(_sql.SCHEDULES).fetchall()
        ticked = conn.execute(_sql.TICK).fetchone()
        conn.execute(_sql.UNSCHEDULE, {"schedule_name": "nightly"})
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(_sql.UNSCHEDULE, {"schedule_name": "nightly"})
        remaining = conn.execute(_sql.SCHEDULES).fetchall()

    assert next_run is not None and next_run[0] > datetime.now(timezone.utc)
    assert [row[:9] for row in listed] == [
        ("nightly", "0 3 * * *", "Europe/Berlin", "report", "default", {}, 0, None, next_run[0])
    ]
    assert ticked == (0,)
    assert isinstance(translate(raised.value), ScheduleNotFound)
    assert remaining == []


# -- from Python, and ticked by workers ------------------------------------------------------


class Report(TypedDict):
    kind: str


def test_queue_schedule_is_typed_by_job_type_and_ticked_by_a_running_worker(dsn: str) -> None:
    report = JobType("report", Report, queue="reports")
    seen: list[str] = []

    def handle(ctx: JobContext, payload: Report) -> None:
        seen.append(payload["kind"])

    with Queue(dsn) as queue:
        next_run_at = queue.schedule("every-minute", report, "* * * * *", {"kind": "minutely"})
        [schedule] = queue.schedules()
        assert (schedule.queue, schedule.next_run_at) == ("reports", next_run_at)
        # The slot is due: as if a minute had passed.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("update pgq.job_schedules set next_run_at = now() - interval '1 second'")
        with running(queue, {report: handle}, poll_interval=timedelta(milliseconds=100)):
            def enqueued() -> list[int]:
                return [s.last_job_id for s in queue.schedules() if s.last_job_id is not None]

            deadline = time.monotonic() + 20
            while not enqueued() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert enqueued(), "no worker ticked the due schedule"
            wait_for_state(queue, enqueued(), "succeeded")
        queue.unschedule("every-minute")
        assert queue.schedules() == []

    assert seen == ["minutely"]
