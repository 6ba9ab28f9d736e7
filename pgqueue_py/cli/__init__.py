"""The ``pgqueue`` command line, its table output, and the demo."""

from __future__ import annotations

from pgqueue_py.cli.commands import main

__all__ = ["main"]
