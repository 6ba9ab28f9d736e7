"""The growth soak's report and the backlog benchmark: does it level off, and does a
claim cost the same with a million jobs waiting as with a thousand?"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import psycopg
from engine import fresh_database
from soak_load import (
    INDEXES,
    QUEUE,
    Counters,
    Threads,
    enqueue_backlog,
    jobs_reloptions,
    refill,
    start_consumers,
)
from soak_report import (
    Bin,
    HeldXminRun,
    mb,
    minute_of,
    minutes,
    ms,
    percentile,
    settings_table,
    table,
    verdict,
)

from pgqueue_py import Queue

BACKLOG_BAR = 2.0
PLAN_CALLS = 6  # PL/pgSQL may switch to a generic plan after five calls: show the sixth
LEVEL_SHARE = 0.25
FLAT_SHARE = 0.05
LEVEL_RULE = (
    "Levels off: each metric is sampled every 10 s as the highest value of the minute ending"
    " there (the top of vacuum's sawtooth for dead tuples; for claims the minute's p99, the"
    " highest of its bins' p99). It levels off when the least-squares slope of the last third"
    f" of the run's samples is at most {LEVEL_SHARE:.0%} of the first third's, or when over"
    f" the last third it changes by less than {FLAT_SHARE:.0%} of its mean there (a series"
    " flat from the start); a falling one levels off."
)


# -- backlog -------------------------------------------------------------------------------

def claim_plan(dsn: str, batch: int) -> str:
    """The plans inside the sixth ``pgq.claim`` of a session, as auto_explain logs them
    (nested statements, actual rows and buffers)."""
    plans: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        try:
            conn.execute("load 'auto_explain'")
        except psycopg.Error as exc:
            return f"(no plan: auto_explain could not be loaded: {exc})"
        for setting in ("log_min_duration = 0", "log_nested_statements = on",
                        "log_analyze = on", "log_buffers = on", "log_timing = off",
                        "log_level = notice"):
            conn.execute(f"set auto_explain.{setting}")
        for _ in range(PLAN_CALLS):
            plans.clear()
            conn.execute("select count(*) from pgq.claim('soak-explain', %s, %s)",
                         ([QUEUE], batch))
    return "\n\n".join(plans)


def is_claim_index_range_scan(plan: str) -> bool:
    """Whether ``plan`` reads jobs by an Index (Only) Scan of jobs_claim_idx whose index
    condition names the queue, and never by a Seq Scan of jobs."""
    if re.search(r"Seq Scan on jobs\b", plan):
        return False
    lines = plan.splitlines()
    for number, line in enumerate(lines):
        if re.search(r"Index (Only )?Scan using jobs_claim_idx on jobs\b", line):
            for detail in lines[number + 1:]:
                if "->" in detail:
                    break
                if "Index Cond:" in detail and "queue" in detail:
                    return True
    return False


def run_backlog(server_dsn: str, consumers: int, batch: int, sizes: Sequence[int],
                seconds: float, settings: dict[str, str]) -> dict[str, Any]:
    """Per size: that many jobs waiting (topped up as they are claimed) while the
    consumers drain at full speed for ``seconds``; their claim times."""
    results = []
    for size in sizes:
        with fresh_database(server_dsn) as dsn:
            loading = time.perf_counter()
            enqueue_backlog(dsn, size)
            print(f"  backlog {size:,}: loaded in {time.perf_counter() - loading:.1f} s",
                  flush=True)
            settings["pgq.jobs reloptions"] = jobs_reloptions(dsn)
            counters = Counters()
            counters.enqueued_total = size
            threads = Threads(counters)
            with Queue(dsn, min_connections=1, max_connections=2) as queue:
                try:
                    start_consumers(queue, threads, consumers, batch)
                    threads.spawn("refill", functools.partial(refill, queue, threads, size))
                    counters.take()
                    started = time.perf_counter()
                    while time.perf_counter() - started < seconds:
                        counters.check()
                        time.sleep(0.2)
                    claims, _, completed = counters.take()
                    elapsed = time.perf_counter() - started
                finally:
                    threads.stop()
                counters.check()
            plan = claim_plan(dsn, batch) if size == max(sizes) else None
        result: dict[str, Any] = {
            "backlog": size, "claims": len(claims), "claim_p50_ms": percentile(claims, 50),
            "claim_p99_ms": percentile(claims, 99), "jobs_per_s": completed / elapsed,
            "plan": plan}
        print(f"  backlog {size:,}: {len(claims):,} claims, p50 {ms(result['claim_p50_ms'])} ms,"
              f" p99 {ms(result['claim_p99_ms'])} ms", flush=True)
        results.append(result)
    settings.update({"measured": f"{seconds:.0f} s at each size, the backlog topped up every"
                                 " 20 ms by enqueue_many of what was claimed",
                     "loaded by": "pgq.enqueue_many in batches of 50,000, then VACUUM ANALYZE"})
    return {"settings": settings, "results": results}


def backlog_markdown(data: dict[str, Any]) -> str:
    results = data["results"]
    small, large = results[0], results[-1]
    rows = [[f"{r['backlog']:,}", f"{r['claims']:,}", ms(r["claim_p50_ms"]),
             ms(r["claim_p99_ms"]), f"{r['jobs_per_s']:,.0f}"] for r in results]
    parts = [settings_table([("pgqueue", data["settings"])]),
             table(["jobs waiting", "claims timed", "claim p50 ms", "claim p99 ms",
                    "drained jobs/s"], rows)]
    if small["claim_p99_ms"] and large["claim_p99_ms"] is not None:
        ratio = large["claim_p99_ms"] / small["claim_p99_ms"]
        parts.append(f"p99 at {large['backlog']:,} / p99 at {small['backlog']:,}:"
                     f" {ratio:.2f}x (bar <= {BACKLOG_BAR:.0f}x) {verdict(ratio <= BACKLOG_BAR)}")
    plan = large.get("plan") or ""
    scan = is_claim_index_range_scan(plan)
    parts.append(f"The claim's pick at {large['backlog']:,} jobs "
                 + ("**is** an index range scan of jobs_claim_idx (an Index Scan whose index"
                    " condition names the queue; no Seq Scan of pgq.jobs)." if scan else
                    "is **not** an index range scan of jobs_claim_idx."))
    parts.append(f"Plans inside call {PLAN_CALLS} of `pgq.claim` in one session (auto_explain,"
                 " nested statements, actual rows and buffers):\n\n```\n" + plan.strip()
                 + "\n```")
    return "\n\n".join(parts) + "\n"


# -- growth --------------------------------------------------------------------------------

def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs = [t / 60 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def levels_off(first: float, last: float, span_minutes: float, mean_last: float) -> bool:
    growing = (last > LEVEL_SHARE * max(first, 0.0)
               and last * span_minutes > FLAT_SHARE * abs(mean_last))
    return not growing


def series(bins: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Each levelled metric's (t, value) samples."""
    out: dict[str, list[tuple[float, float]]] = {"table MB": [], "dead tuples": [],
                                                 "claim p99 ms": []}
    for b in bins:
        out["table MB"].append((b["t"], b["table_bytes"] / 1_048_576))
        out["dead tuples"].append((b["t"], b["dead_tuples"]))
        if b["claim_p99_ms"] is not None:
            out["claim p99 ms"].append((b["t"], b["claim_p99_ms"]))
        for name in INDEXES:
            out.setdefault(f"{name} MB", []).append((b["t"], b["index_bytes"][name] / 1_048_576))
    return {name: minute_maximum(points) for name, points in out.items()}


def minute_maximum(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Each sample replaced by the highest value of the minute ending at it."""
    return [(t, max(v for u, v in points if t - 60 < u <= t)) for t, _ in points]


def level_rows(bins: Sequence[dict[str, Any]]) -> list[list[str]]:
    third = len(bins) // 3
    rows: list[list[str]] = []
    if third < 2:
        return rows
    first_end, last_start = bins[third - 1]["t"], bins[len(bins) - third]["t"]
    for metric, points in series(bins).items():
        first = [p for p in points if p[0] <= first_end]
        last = [p for p in points if p[0] >= last_start]
        s1, s3 = slope_per_minute(first), slope_per_minute(last)
        mean_last = sum(v for _, v in last) / len(last) if last else 0.0
        span = (last[-1][0] - last[0][0]) / 60 if last else 0.0
        rows.append([metric, f"{s1:,.2f}", f"{s3:,.2f}",
                     "yes" if levels_off(s1, s3, span, mean_last) else "**no**"])
    return rows


def growth_markdown(data: dict[str, Any]) -> str:
    bins = data["bins"]
    per_minute = minutes(cast("list[Bin]", bins))
    pruned: dict[int, int] = {}
    for b in bins:
        pruned[minute_of(b)] = pruned.get(minute_of(b), 0) + b.get("pruned", 0)
    rows = []
    for m in per_minute:
        last = cast("dict[str, Any]", m.last)
        rows.append([str(m.minute), f"{m.offered:,}", f"{m.completed:,}", ms(m.claim_p50_ms),
                     ms(m.claim_p99_ms), f"{last['dead_tuples']:,}", mb(last["table_bytes"]),
                     *(mb(last["index_bytes"][n]) for n in INDEXES), f"{last['backlog']:,}",
                     f"{pruned.get(m.minute, 0):,}", str(last.get("autovacuum_count", "-"))])
    level = level_rows(bins)
    parts = [
        settings_table([("pgqueue", data["settings"])]),
        "Per minute (sizes, dead tuples and backlog at the minute's end):",
        table(["min", "offered", "completed", "claim p50 ms", "claim p99 ms", "dead tuples",
               "table MB", *(f"{n} MB" for n in INDEXES), "backlog", "pruned",
               "autovacuums"], rows),
        "Does it level off? (slopes per minute)",
        table(["metric", "first third", "last third", "levels off"], level) if level
        else "(too few samples to compare thirds)",
        LEVEL_RULE,
    ]
    return "\n\n".join(parts) + "\n"


def plot_growth(data: dict[str, Any], out_dir: Path) -> Path:
    from soak_plots import dead_tuples, phase_grid, sizes

    def latency(ax: Any, run: HeldXminRun) -> None:
        bins = cast("list[dict[str, Any]]", run["bins"])
        ts = [b["t"] for b in bins]
        for key, label in (("claim_p99_ms", "claim p99"), ("claim_p50_ms", "claim p50")):
            ax.plot(ts, [math.nan if b[key] is None else b[key] for b in bins], label=label)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)")

    def backlog_and_prune(ax: Any, run: HeldXminRun) -> None:
        bins = cast("list[dict[str, Any]]", run["bins"])
        ts = [b["t"] for b in bins]
        ax.plot(ts, [b["backlog"] for b in bins], label="backlog")
        ax.plot(ts, [b.get("pruned", 0) for b in bins], label="pruned in the bin")
        ax.set_ylabel("jobs")

    path = out_dir / "growth.png"
    phase_grid(path, [("pgqueue, steady rate with prune", {}, cast("HeldXminRun", data))],
               [sizes, dead_tuples, latency, backlog_and_prune],
               "Growth soak: sizes, dead tuples, claim latency, backlog and prune")
    return path
