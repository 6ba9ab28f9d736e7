"""``sql/functions/`` reads in order: no file calls a function that a later file defines.

The migrations runner re-applies the files in name order, and a reader goes the same way,
so a helper that more than one stage calls lives in the shared file, before every stage.
The calls come from the text: every ``pgq.name(`` outside comments, where ``name`` is a
function some file in ``sql/functions/`` creates. ``create or replace function`` and
``comment on function`` lines name a function without calling it.
"""

from __future__ import annotations

import re
from pathlib import Path

from pgqueue_py._paths import sql_dir

FUNCTIONS_DIR = sql_dir() / "functions"
SHARED_FILE = "03_shared.sql"

_DEFINITION = re.compile(r"create\s+or\s+replace\s+function\s+pgq\.(\w+)\s*\(", re.IGNORECASE)
_NAMING = re.compile(r"(?:create\s+or\s+replace|comment\s+on)\s+function\s+pgq\.\w+\s*\(",
                     re.IGNORECASE)  # fmt: skip
_REFERENCE = re.compile(r"pgq\.(\w+)\s*\(")
_COMMENT = re.compile(r"--[^\n]*")


def _code(path: Path) -> str:
    """The file's SQL without comments and without the lines that only name a function."""
    return _NAMING.sub("", _COMMENT.sub("", path.read_text(encoding="utf-8")))


def definitions(folder: Path) -> dict[str, str]:
    """Each function's name and the file that defines it (its first definition)."""
    defined: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql")):
        for match in _DEFINITION.finditer(_COMMENT.sub("", path.read_text(encoding="utf-8"))):
            defined.setdefault(match.group(1), path.name)
    return defined


def references(folder: Path) -> dict[str, set[str]]:
    """For each function of ``folder``, the files that call (or grant) it."""
    defined = definitions(folder)
    callers: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.sql")):
        for match in _REFERENCE.finditer(_code(path)):
            if match.group(1) in defined:
                callers.setdefault(match.group(1), set()).add(path.name)
    return callers


def forward_references(folder: Path) -> list[str]:
    """Every call of a function defined in a file that sorts after the calling file."""
    defined = definitions(folder)
    return [f"{caller} calls pgq.{name}, defined later in {defined[name]}"
            for name, files in sorted(references(folder).items())
            for caller in sorted(files) if caller < defined[name]]  # fmt: skip


def test_no_file_calls_a_function_defined_in_a_later_file() -> None:
    assert definitions(FUNCTIONS_DIR), "no function definitions found: is the pattern stale?"
    assert forward_references(FUNCTIONS_DIR) == []


def test_a_forward_reference_is_reported(tmp_path: Path) -> None:
    (tmp_path / "10_a.sql").write_text(
        "-- pgq._b( in a comment is not a call\n"
        "create or replace function pgq.a() returns void language plpgsql as $$\n"
        "begin perform pgq._b(1); end; $$;\n"
        "comment on function pgq.a() is 'a';\n",
        encoding="utf-8",
    )
    (tmp_path / "20_b.sql").write_text(
        "create or replace function pgq._b(x integer) returns void language sql as $$ select $$;\n"
        "comment on function pgq._b(integer) is 'b';\n",
        encoding="utf-8",
    )
    assert forward_references(tmp_path) == ["10_a.sql calls pgq._b, defined later in 20_b.sql"]


def test_internals_more_than_one_stage_calls_live_in_the_shared_file() -> None:
    defined = definitions(FUNCTIONS_DIR)
    misplaced = {name: sorted(files)
                 for name, files in references(FUNCTIONS_DIR).items()
                 if name.startswith("_") and len(files - {SHARED_FILE}) > 1
                 and defined[name] != SHARED_FILE}  # fmt: skip
    assert misplaced == {}


def test_fail_jobs_is_called_with_named_arguments() -> None:
    calls = [(path.name, call.group(0))
             for path in sorted(FUNCTIONS_DIR.glob("*.sql"))
             for call in re.finditer(r"pgq\._fail_jobs\s*\([^;]*", _code(path))]  # fmt: skip
    assert len(calls) >= 3, calls
    names = ("job_ids", "errors", "retry", "clear_lease_token")
    positional = [c for c in calls if not all(f"{arg} =>" in c[1] for arg in names)]
    assert positional == []
