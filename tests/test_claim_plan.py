"""The plan ``pgq.claim`` runs at 100k available jobs: its pick of jobs is an ordered range
scan of ``jobs_claim_idx`` on the queue, not a Seq Scan or a Sort of the available rows.

The plans come from auto_explain with ``log_nested_statements``, so they are the plans of
the statements inside the function as PL/pgSQL runs them, not of a copy of their text.
PL/pgSQL plans its first calls with the call's values and may switch to a generic plan
after five, so several calls in one session are checked, each plan on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

JOBS = 100_000
CALLS = 7  # past the five custom plans after which PL/pgSQL may go generic
BATCH = 50

Plan = dict[str, Any]


def load_available_jobs(dsn: str) -> None:
    """``JOBS`` available jobs in queue 'plan', then ANALYZE as autovacuum would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "select pgq.enqueue_many(array_fill('plan_job'::text, array[%(n)s]),"
            " array_fill('{}'::jsonb, array[%(n)s]), array_fill('plan'::text, array[%(n)s]))",
            {"n": JOBS},
        )
        conn.execute("analyze pgq.jobs")


def claim_plans(dsn: str) -> list[list[Plan]]:
    """Per call of ``pgq.claim('plan-test', '{plan}', BATCH)``, the JSON plan of every
    statement it ran, in a session of its own (PL/pgSQL caches plans per session)."""
    per_call: list[list[Plan]] = []
    notices: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("load 'auto_explain'")
        for setting in ("auto_explain.log_min_duration = 0",
                        "auto_explain.log_nested_statements = on",
                        "auto_explain.log_format = json",
                        "auto_explain.log_level = notice"):
            conn.execute(f"set {setting}")
        for _ in range(CALLS):
            notices.clear()
            claimed = conn.execute("select count(*) from pgq.claim('plan-test', '{plan}', %s)",
                                   (BATCH,)).fetchone()
            assert claimed == (BATCH,)
            per_call.append([json.loads(n.split("plan:", 1)[1])["Plan"] for n in notices
                             if "plan:" in n])
    return per_call


def nodes(plan: Plan) -> Iterator[Plan]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def scans_jobs(node: Plan) -> bool:
    return node.get("Relation Name") == "jobs" and node.get("Schema", "pgq") == "pgq"


def pick_problems(statements: list[Plan]) -> list[str]:
    """What is wrong with one call's plans; empty when the pick is an ordered range scan
    of jobs_claim_idx on the queue with nothing sorting the rows it reads."""
    problems: list[str] = []
    picks = 0
    for statement in statements:
        for node in nodes(statement):
            if scans_jobs(node) and node["Node Type"] == "Seq Scan":
                problems.append(f"Seq Scan on pgq.jobs (filter {node.get('Filter')})")
        picks += len(claim_index_scans(statement, problems))
    if not picks:
        problems.append("no Index Scan of jobs_claim_idx with the queue as an index condition")
    return problems


def claim_index_scans(plan: Plan, problems: list[str],
                      sorted_above: bool = False) -> list[Plan]:
    """The scans of jobs_claim_idx on the queue in ``plan``; a Sort between one of them
    and the Limit above it (the batch) is a problem: the index did not give the order."""
    found: list[Plan] = []
    kind = plan["Node Type"]
    if kind == "Limit":
        sorted_above = False
    elif kind in ("Sort", "Incremental Sort"):
        sorted_above = True
    if (scans_jobs(plan) and plan.get("Index Name") == "jobs_claim_idx"
            and kind in ("Index Scan", "Index Only Scan")
            and "queue" in plan.get("Index Cond", "")):
        found.append(plan)
        if sorted_above:
            problems.append(f"a Sort above the {kind} of jobs_claim_idx, below its Limit")
    for child in plan.get("Plans", []):
        # A subplan (InitPlan, SubPlan, CTE) is a statement of its own: nothing above it
        # sorts its rows.
        outer = child.get("Parent Relationship") not in ("InitPlan", "SubPlan")
        found += claim_index_scans(child, problems, sorted_above and outer)
    return found


@pytest.fixture
def loaded_dsn(dsn: str) -> str:
    load_available_jobs(dsn)
    return dsn


def test_claim_picks_by_an_ordered_range_scan_of_the_claim_index(loaded_dsn: str) -> None:
    calls = claim_plans(loaded_dsn)
    assert len(calls) == CALLS
    for number, statements in enumerate(calls, start=1):
        assert statements, f"call {number}: auto_explain logged no plan"
        assert pick_problems(statements) == [], (
            f"call {number}:\n" + json.dumps(statements, indent=1))


def test_a_pick_without_the_claim_index_is_reported(loaded_dsn: str) -> None:
    # The check itself must be able to fail: without the claim index the planner reads the
    # queue by another index or a Seq Scan and sorts, and every call is flagged. (Turning
    # index scans off in the session no longer does it: the pgq functions turn sequential
    # scans off, and between two disabled paths the planner takes the cheaper.)
    with psycopg.connect(loaded_dsn, autocommit=True) as conn:
        conn.execute("drop index pgq.jobs_claim_idx")
    calls = claim_plans(loaded_dsn)
    for statements in calls:
        problems = pick_problems(statements)
        assert "no Index Scan of jobs_claim_idx with the queue as an index condition" in problems
