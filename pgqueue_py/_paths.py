"""Where the SQL engine lives: inside the installed package, or in the source tree."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def sql_dir() -> Path:
    """The folder holding ``migrations/``, ``functions/`` and ``MIGRATIONS.sha256``.

    A wheel carries it as ``pgqueue_py/sql`` (hatch force-include); an editable install
    or a source checkout uses the repository's top-level ``sql/``.
    """
    for candidate in (_PACKAGE_DIR / "sql", _PACKAGE_DIR.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"pgqueue SQL files not found: looked for {_PACKAGE_DIR / 'sql'} "
        f"and {_PACKAGE_DIR.parent / 'sql'}; reinstall the pgqueue package"
    )
