"""The soak benchmarks' PNG plots: panels over time, one column per run, the hold shaded."""

# matplotlib is in the dev extra; its import carries an ignore that holds whether it is
# installed or not, as bench/peers/peer_plots.py does, so that `make lint` passes from
# either venv.

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import matplotlib  # type: ignore[import-not-found,unused-ignore]

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
from matplotlib.axes import Axes  # type: ignore[import-not-found,unused-ignore]
from soak_report import RECOVERED_WITHIN, HeldXminRun, summarize

T = TypeVar("T")
Panel = Callable[[Axes, T], None]
MB = 1_048_576


def phase_grid(path: Path, columns: Sequence[tuple[str, Mapping[str, Sequence[float]], T]],
               panels: Sequence[Panel[T]], title: str) -> None:
    """One row per panel, one column per (title, phases, data); the rows share their
    y scale, and a "hold" phase, when there is one, is shaded."""
    fig, axes = plt.subplots(len(panels), len(columns), figsize=(max(8, 6 * len(columns)),
                             2.8 * len(panels)), squeeze=False, sharey="row")
    for col, (name, phases, data) in enumerate(columns):
        for row, panel in enumerate(panels):
            ax = axes[row][col]
            if "hold" in phases:
                start, end = phases["hold"]
                ax.axvspan(start, end, color="tab:red", alpha=0.12, label="hold")
            panel(ax, data)
            ax.set_xlim(left=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
        axes[0][col].set_title(name)
        axes[-1][col].set_xlabel("seconds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def rates(ax: Axes, run: HeldXminRun) -> None:
    ts = [b["t"] for b in run["bins"]]
    ax.plot(ts, [b["offered"] / 10 for b in run["bins"]], label="offered", linestyle="--")
    ax.plot(ts, [b["completed"] / 10 for b in run["bins"]], label="completed")
    ax.set_ylabel("jobs/s")
    ax.set_ylim(bottom=0)


def latency(ax: Axes, run: HeldXminRun) -> None:
    ts = [b["t"] for b in run["bins"]]
    # A bin in which no claim returned is a gap in the line.
    ax.plot(ts, [nan_if_none(b["claim_p99_ms"]) for b in run["bins"]], label="claim p99")
    ax.plot(ts, [nan_if_none(b["claim_p50_ms"]) for b in run["bins"]], label="claim p50")
    clean = summarize(run).clean_p99_ms
    if clean is not None:
        ax.axhline(clean * RECOVERED_WITHIN, color="grey", linestyle=":",
                   label=f"{RECOVERED_WITHIN}x clean p99")
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")


def dead_tuples(ax: Axes, run: HeldXminRun) -> None:
    ax.plot([b["t"] for b in run["bins"]], [b["dead_tuples"] for b in run["bins"]],
            label="dead tuples")
    ax.set_ylabel("n_dead_tup")


def sizes(ax: Axes, run: HeldXminRun) -> None:
    ts = [b["t"] for b in run["bins"]]
    for name in dict.fromkeys(n for b in run["bins"] for n in b["index_bytes"]):
        ax.plot(ts, [b["index_bytes"].get(name, 0) / MB for b in run["bins"]], label=name)
    ax.plot(ts, [b["table_bytes"] / MB for b in run["bins"]], label="table", linestyle="--")
    ax.set_ylabel("MB")


def plot_held_xmin_runs(runs: Sequence[HeldXminRun], out_dir: Path) -> list[Path]:
    throughput = out_dir / "held_xmin_throughput.png"
    bloat = out_dir / "held_xmin_bloat.png"
    columns = [(r["contestant"], r["phases"], r) for r in runs]
    phase_grid(throughput, columns, [rates, latency],
               "Held-xmin soak: offered vs completed, claim latency (hold shaded)")
    phase_grid(bloat, columns, [dead_tuples, sizes],
               "Held-xmin soak: dead tuples, index and table sizes (hold shaded)")
    return [throughput, bloat]
