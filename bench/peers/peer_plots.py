"""The peers benchmark's PNG plots: drain throughput by setting, idle-latency CDFs."""

# matplotlib lives in the peers' venv, not in the project's: its import carries an
# ignore that holds whether it is installed or not, so that `make lint` passes from
# either venv.

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib  # type: ignore[import-not-found,unused-ignore]

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
from matplotlib import ticker  # type: ignore[import-not-found,unused-ignore]

Sweep = Sequence[tuple[str, int, Sequence[float], bool]]
"""Per setting: its label, its concurrency-like number, the jobs/s of each round, and
whether it is the contestant's default."""


def plot_throughput(path: Path, sweeps: Mapping[str, Sweep]) -> None:
    """One panel per contestant: jobs/s per setting (median, range as error bars), the
    settings in order of their concurrency; the default's bar hatched."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 4.8), squeeze=False)
    for ax, (name, sweep) in zip(axes[0], sweeps.items(), strict=False):
        ordered = sorted(sweep, key=lambda item: (item[1], not item[3]))
        labels = [label.replace(", ", ",\n").replace(" defaults", "\ndefaults")
                  for label, _, _, _ in ordered]
        medians = [statistics.median(v) if v else 0.0 for _, _, v, _ in ordered]
        low = [m - min(v) if v else 0.0 for m, (_, _, v, _) in zip(medians, ordered,
                                                                   strict=True)]
        high = [max(v) - m if v else 0.0 for m, (_, _, v, _) in zip(medians, ordered,
                                                                    strict=True)]
        bars = ax.bar(range(len(ordered)), medians, yerr=[low, high], capsize=4,
                      color="tab:blue")
        for bar, (_, _, values, default) in zip(bars, ordered, strict=True):
            if default:
                bar.set_hatch("//")
                bar.set_facecolor("tab:orange")
            middle = bar.get_x() + bar.get_width() / 2
            if values:
                ax.annotate(f"{statistics.median(values):,.0f}", (middle, max(values)),
                            ha="center", va="bottom", fontsize=8)
            else:
                ax.annotate("failed", (middle, 0), ha="center", va="bottom", color="tab:red")
        ax.set_xticks(range(len(ordered)), labels, fontsize=7, rotation=35, ha="right")
        ax.set_title(name)
        top = max((max(v) for _, _, v, _ in ordered if v), default=1.0)
        ax.set_ylim(0, top * 1.18)  # each panel its own scale: the peers differ 100-fold
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("drain, jobs/s (median, range)")
    fig.suptitle("Drain throughput by setting, each panel on its own scale "
                 "(hatched: the contestant's defaults)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency_cdf(path: Path, samples: Mapping[str, Sequence[float]],
                     floor_ms: float | None) -> None:
    """Idle enqueue-to-start latency, one CDF per contestant (all rounds' samples)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in samples.items():
        if not values:
            ax.plot([], [], label=f"{name}: no samples (failed)")
            continue
        ordered = sorted(values)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.step(ordered, ys, where="post", label=f"{name} (n={len(ordered)})")
    if floor_ms is not None:
        ax.axvline(floor_ms, color="grey", linestyle="--",
                   label=f"floor of two commits ({floor_ms:.1f} ms)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("enqueue to handler start, ms (log scale)")
    ax.set_ylabel("fraction of samples")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Idle enqueue-to-start latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
