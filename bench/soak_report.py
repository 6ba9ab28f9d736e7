"""Held-xmin soak results: the JSON shape, its loader, the summary, the tables and plots.

Any queue can be measured into this shape; nothing here knows which one wrote a file.
A file holds one contestant's run::

    {"contestant": str, "settings": {str: str}, "peak_jobs_per_s": float,
     "offered_jobs_per_s": float,
     "phases": {"clean": [t0, t1], "hold": [t0, t1], "recovery": [t0, t1]},
     "bins": [{"t": float, "phase": str, "offered": int, "completed": int,
               "claim_p50_ms": float, "claim_p99_ms": float, "dead_tuples": int,
               "table_bytes": int, "index_bytes": {name: int}, "backlog": int}]}

``t`` is a bin's end in seconds since the clean phase began; bins are 10 s. A claim
percentile may be null for a bin in which no claim call returned. A run saved as
``bench/results/soak/held_xmin_<name>.json`` is in soak.md's tables and plots at the next
``make soak``; or call ``load_run``, ``held_xmin_markdown`` and ``plot_held_xmin`` (with
``bench/`` on ``sys.path``).

The summary's rules (also written under the tables):

- completed share: jobs completed during the hold's bins / jobs offered in them (bar >= 95%);
- clean p99: the median of the clean bins' claim p99;
- a minute's p99: the highest p99 of its bins, an upper bound of the minute's true p99;
  worst hold minute / clean p99 uses only the hold's bins of each minute (bar <= 10x);
- recovery: seconds from the hold's end to the end of the first bin after it whose p99 is
  at most 1.5 x the clean p99 (so 10 s at the least; bar <= 30 s).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

PHASES = ("clean", "hold", "recovery")
SHARE_BAR = 0.95
RATIO_BAR = 10.0
RECOVERY_BAR_S = 30.0
RECOVERED_WITHIN = 1.5
"""A bin has recovered when its claim p99 is at most this many times the clean p99."""


class _BinFigures(TypedDict):
    t: float
    phase: str
    offered: int
    completed: int
    claim_p50_ms: float | None
    claim_p99_ms: float | None
    dead_tuples: int
    table_bytes: int
    index_bytes: dict[str, int]
    backlog: int


class Bin(_BinFigures, total=False):
    checkpoints: int
    """Checkpoints the server had begun by the bin's end (not in runs made before it was
    recorded)."""
    wal_sync_ms: float
    """Milliseconds the server had spent flushing WAL by the bin's end (likewise)."""


class HeldXminRun(TypedDict):
    contestant: str
    settings: dict[str, str]
    peak_jobs_per_s: float
    offered_jobs_per_s: float
    phases: dict[str, list[float]]
    bins: list[Bin]


BIN_KEYS = Bin.__required_keys__
BIN_FIELDS = frozenset(Bin.__annotations__)
RUN_KEYS = frozenset(HeldXminRun.__annotations__)


def load_run(path: Path) -> HeldXminRun:
    """One run from its JSON file; ValueError naming the file when the shape is wrong."""
    data = json.loads(path.read_text())
    missing = RUN_KEYS - set(data) if isinstance(data, dict) else RUN_KEYS
    if missing:
        raise ValueError(f"{path}: not a held-xmin run, missing {sorted(missing)}")
    if set(data["phases"]) != set(PHASES):
        raise ValueError(f"{path}: phases must be {PHASES}, not {sorted(data['phases'])}")
    for number, item in enumerate(data["bins"]):
        if missing := BIN_KEYS - set(item):
            raise ValueError(f"{path}: bin {number} lacks {sorted(missing)}")
    run: HeldXminRun = data
    return run


def load_runs(paths: Iterable[Path]) -> list[HeldXminRun]:
    """The runs of the files that exist, in the order given."""
    return [load_run(p) for p in paths if p.is_file()]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (inclusive method); None when there are no values."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def minute_of(item: Bin) -> int:
    """1 for the bins ending in (0, 60] s, 2 for (60, 120] s, ..."""
    return max(1, math.ceil(item["t"] / 60 - 1e-9))


@dataclass(frozen=True)
class Minute:
    minute: int
    phases: str
    offered: int
    completed: int
    claim_p50_ms: float | None
    """Median of its bins' p50."""
    claim_p99_ms: float | None
    """Highest of its bins' p99."""
    last: Bin
    """The minute's last bin: sizes, dead tuples and backlog at the minute's end."""
    wal_sync_ms: float | None = None
    """The most WAL flush time in one of its bins (None where the run did not record it)."""


def minutes(bins: Sequence[Bin], keep: Callable[[Bin], bool] = lambda b: True) -> list[Minute]:
    """The bins (those ``keep`` accepts) grouped by minute."""
    grouped: dict[int, list[tuple[Bin, float | None]]] = {}
    previous: float | None = None
    for item in bins:
        total = item.get("wal_sync_ms")
        flushed = total - previous if total is not None and previous is not None else None
        previous = total
        if keep(item):
            grouped.setdefault(minute_of(item), []).append((item, flushed))
    rows = []
    for minute, pairs in sorted(grouped.items()):
        group = [b for b, _ in pairs]
        p50s = [b["claim_p50_ms"] for b in group if b["claim_p50_ms"] is not None]
        p99s = [b["claim_p99_ms"] for b in group if b["claim_p99_ms"] is not None]
        flushes = [f for _, f in pairs if f is not None]
        phases = "/".join(dict.fromkeys(b["phase"] for b in group))
        rows.append(Minute(minute, phases, sum(b["offered"] for b in group),
                           sum(b["completed"] for b in group),
                           statistics.median(p50s) if p50s else None,
                           max(p99s) if p99s else None, group[-1],
                           max(flushes) if flushes else None))
    return rows


@dataclass(frozen=True)
class Summary:
    contestant: str
    peak: float
    offered_rate: float
    hold_offered: int
    hold_completed: int
    clean_p99_ms: float | None
    worst_hold_minute_p99_ms: float | None
    recovery_s: float | None
    """None: no bin after the hold came back within RECOVERED_WITHIN x clean p99."""

    @property
    def hold_share(self) -> float:
        return self.hold_completed / self.hold_offered if self.hold_offered else 0.0

    @property
    def p99_ratio(self) -> float | None:
        if self.clean_p99_ms is None or self.worst_hold_minute_p99_ms is None:
            return None
        return self.worst_hold_minute_p99_ms / self.clean_p99_ms if self.clean_p99_ms else None

    @property
    def passes(self) -> dict[str, bool]:
        ratio = self.p99_ratio
        return {
            "share": self.hold_share >= SHARE_BAR,
            "ratio": ratio is not None and ratio <= RATIO_BAR,
            "recovery": self.recovery_s is not None and self.recovery_s <= RECOVERY_BAR_S,
        }


def summarize(run: HeldXminRun) -> Summary:
    bins = run["bins"]
    hold = [b for b in bins if b["phase"] == "hold"]
    clean_p99s = [b["claim_p99_ms"] for b in bins
                  if b["phase"] == "clean" and b["claim_p99_ms"] is not None]
    clean_p99 = statistics.median(clean_p99s) if clean_p99s else None
    hold_minutes = [m.claim_p99_ms for m in minutes(bins, lambda b: b["phase"] == "hold")
                    if m.claim_p99_ms is not None]
    hold_end = run["phases"]["hold"][1]
    recovery = None
    if clean_p99 is not None:
        for item in bins:
            p99 = item["claim_p99_ms"]
            if (item["t"] > hold_end and p99 is not None
                    and p99 <= RECOVERED_WITHIN * clean_p99):
                recovery = item["t"] - hold_end
                break
    return Summary(
        contestant=run["contestant"],
        peak=run["peak_jobs_per_s"],
        offered_rate=run["offered_jobs_per_s"],
        hold_offered=sum(b["offered"] for b in hold),
        hold_completed=sum(b["completed"] for b in hold),
        clean_p99_ms=clean_p99,
        worst_hold_minute_p99_ms=max(hold_minutes) if hold_minutes else None,
        recovery_s=recovery,
    )


# -- tables --------------------------------------------------------------------------------

def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def mb(value: int) -> str:
    return f"{value / 1_048_576:,.1f}"


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def settings_table(columns: Sequence[tuple[str, Mapping[str, str]]]) -> str:
    """One row per setting, one column per (name, settings)."""
    names = list(dict.fromkeys(name for _, settings in columns for name in settings))
    return table(["setting", *(name for name, _ in columns)],
                 ([name, *(s.get(name, "-") for _, s in columns)] for name in names))


def summary_table(runs: Sequence[HeldXminRun]) -> str:
    summaries = [summarize(r) for r in runs]

    def row(label: str, cell: Callable[[Summary], str]) -> list[str]:
        return [label, *(cell(s) for s in summaries)]

    def ratio(s: Summary) -> str:
        value = s.p99_ratio
        return "-" if value is None else f"{value:,.1f}x {verdict(s.passes['ratio'])}"

    def recovery(s: Summary) -> str:
        text = "never" if s.recovery_s is None else f"{s.recovery_s:,.0f} s"
        return f"{text} {verdict(s.passes['recovery'])}"

    return table(["", *(s.contestant for s in summaries)], [
        row("consumers' peak, jobs/s", lambda s: f"{s.peak:,.0f}"),
        row("offered, jobs/s", lambda s: f"{s.offered_rate:,.0f}"),
        row("hold: completed / offered (bar >= 95%)",
            lambda s: f"{s.hold_completed:,} / {s.hold_offered:,} = {s.hold_share:.1%}"
                      f" {verdict(s.passes['share'])}"),
        row("clean claim p99, ms", lambda s: ms(s.clean_p99_ms)),
        row("worst hold minute claim p99, ms", lambda s: ms(s.worst_hold_minute_p99_ms)),
        row("worst hold minute / clean p99 (bar <= 10x)", ratio),
        row("recovery (bar <= 30 s)", recovery),
    ])


def minute_table(runs: Sequence[HeldXminRun]) -> str:
    """Every contestant's minutes, interleaved: minute 1 of each, then minute 2, ..."""
    per_run = [minutes(r["bins"]) for r in runs]
    rows = []
    for number in sorted({m.minute for ms_ in per_run for m in ms_}):
        for run, run_minutes in zip(runs, per_run, strict=True):
            for m in (m for m in run_minutes if m.minute == number):
                indexes = ", ".join(f"{name} {mb(size)}"
                                    for name, size in m.last["index_bytes"].items())
                rows.append([str(m.minute), run["contestant"], m.phases, f"{m.offered:,}",
                             f"{m.completed:,}", ms(m.claim_p50_ms), ms(m.claim_p99_ms),
                             f"{m.last['dead_tuples']:,}", mb(m.last["table_bytes"]),
                             indexes, f"{m.last['backlog']:,}",
                             str(m.last.get("checkpoints", "-")), ms(m.wal_sync_ms)])
    return table(["min", "contestant", "phase", "offered", "completed", "claim p50 ms",
                  "claim p99 ms", "dead tuples", "table MB", "indexes MB", "backlog",
                  "checkpoints", "WAL flush ms, worst bin"], rows)


RULES = (
    "Rules: a bin is 10 s. Completed share counts the hold's bins. Clean p99 is the median"
    " of the clean bins' claim p99; a minute's p99 is the highest of its bins' p99 (an upper"
    " bound of the minute's own p99), the worst hold minute counting only hold bins."
    f" Recovery is the time from the hold's end to the end of the first bin whose p99 is"
    f" at most {RECOVERED_WITHIN}x the clean p99 (10 s at the least). Dead tuples are"
    " pg_stat_user_tables.n_dead_tup, sizes, backlog and the server's checkpoints begun"
    " (pg_stat_bgwriter) are at each minute's end; a minute's p50 is the median of its"
    " bins' p50. WAL flush ms is the most time the server spent flushing WAL"
    " (pg_stat_wal.wal_sync_time) in one of the minute's bins."
)


def held_xmin_markdown(runs: Sequence[HeldXminRun]) -> str:
    if not runs:
        return "No held-xmin run yet.\n"
    return "\n\n".join([
        "Settings:", settings_table([(r["contestant"], r["settings"]) for r in runs]),
        "Summary:", summary_table(runs),
        "Per minute:", minute_table(runs),
        RULES,
    ]) + "\n"


# -- plots ---------------------------------------------------------------------------------

def plot_held_xmin(runs: Sequence[HeldXminRun], out_dir: Path) -> list[Path]:
    """``held_xmin_throughput.png`` (offered and completed jobs/s, claim p50/p99) and
    ``held_xmin_bloat.png`` (dead tuples, index and table sizes): one column per
    contestant, the hold shaded."""
    # Imported here: reading and summarising results does not need matplotlib.
    from soak_plots import plot_held_xmin_runs

    return plot_held_xmin_runs(runs, out_dir)
