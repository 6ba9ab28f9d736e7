"""Typed job definitions: ``mypy --strict`` rejects a wrong payload where a job is added
and a missing key where it is handled, and accepts a program that gets them right."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).resolve().parent / "typing_cases"
REPO = CASES.parent.parent
EXPECTED = re.compile(r"# error: \[(?P<code>[a-z-]+)\](?P<text>.*)$")
REPORTED = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)  \[(?P<code>[a-z-]+)\]$"
)


def run_mypy(path: Path, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes",
         "--no-pretty", "--cache-dir", str(cache_dir), str(path.relative_to(REPO))],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy_cache")


def expected_errors(path: Path) -> dict[int, tuple[str, str]]:
    """Line number -> (error code, text the message must contain), from the markers."""
    expected: dict[int, tuple[str, str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if match := EXPECTED.search(line):
            expected[number] = (match["code"], match["text"].strip())
    return expected


def test_mypy_rejects_wrong_payloads_and_missing_keys(mypy_cache: Path) -> None:
    path = CASES / "wrong_payload.py"
    expected = expected_errors(path)
    assert len(expected) >= 5, "the markers in wrong_payload.py went missing"

    result = run_mypy(path, mypy_cache)

    reported: dict[int, tuple[str, str]] = {}
    for line in result.stdout.splitlines():
        match = REPORTED.match(line)
        assert match is not None, f"unexpected mypy output: {line}\n{result.stderr}"
        assert match["file"].endswith("wrong_payload.py"), line
        reported[int(match["line"])] = (match["code"], match["message"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert sorted(reported) == sorted(expected), result.stdout
    for number, (code, text) in expected.items():
        assert reported[number][0] == code, f"line {number}: {reported[number]}"
        assert text in reported[number][1], f"line {number}: {reported[number]}"


def test_mypy_accepts_payloads_and_handlers_that_match_their_job_types(
    mypy_cache: Path,
) -> None:
    result = run_mypy(CASES / "right_payload.py", mypy_cache)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
