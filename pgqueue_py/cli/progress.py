"""Operator commands that work in batches (``prune``, ``retry --all-dead``): call one batch
after another, each its own transaction, until a batch does nothing.

On a terminal, a run that lasts longer than :data:`BAR_AFTER` seconds shows a progress bar
on stderr with the rows done and rows per second; elsewhere (a pipe, a log file, cron)
nothing but the total the command prints at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO

import click

BAR_AFTER = 0.5
"""Seconds before a bar appears: a run that is over sooner shows only its total."""


@dataclass(frozen=True)
class BatchRun:
    """What a batched run did."""

    total: int
    seconds: float
    interrupted: bool
    """Stopped by Ctrl-C; the batches before it were committed."""

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0


def _no_end() -> Iterator[None]:
    # An iterable without a length: click draws a bar of unknown length.
    while True:
        yield None


def run_batches(
    step: Callable[[], int],
    *,
    label: str,
    expected: int | None = None,
    stream: TextIO | None = None,
    bar_after: float = BAR_AFTER,
) -> BatchRun:
    """Call ``step`` (one batch, committed; returns its row count) until it returns 0.

    ``expected`` is how many rows there are to do, when known: the bar then shows a share
    and an ETA. The bar shows once the run has lasted ``bar_after`` seconds. Ctrl-C
    stops the run (a batch it interrupts is rolled back) and is reported, not raised."""
    out = stream if stream is not None else sys.stderr
    on_terminal = out.isatty()
    started = time.monotonic()
    total = 0
    interrupted = False
    with ExitStack() as stack:
        bar: Any = None
        try:
            while True:
                done = step()
                total += done
                elapsed = time.monotonic() - started
                if bar is None and on_terminal and done and elapsed >= bar_after:
                    bar = stack.enter_context(
                        click.progressbar(
                            iterable=None if expected else _no_end(),
                            length=max(expected, total) if expected else None,
                            label=label,
                            file=out,
                            show_pos=True,
                            show_eta=expected is not None,
                            show_percent=expected is not None,
                            item_show_func=lambda rate: rate,
                        )
                    )
                    done = total
                if bar is not None:
                    if bar.length is not None and total > bar.length:
                        bar.length = total  # more arrived than expected
                    bar.update(done, f"{total / elapsed:,.0f} rows/s" if elapsed else None)
                if not done:
                    break
        except KeyboardInterrupt:
            interrupted = True
    return BatchRun(total, time.monotonic() - started, interrupted)
