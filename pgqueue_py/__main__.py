"""``python -m pgqueue_py`` runs the ``pgqueue`` command line."""

from __future__ import annotations

from pgqueue_py.cli import main

if __name__ == "__main__":
    main()
