"""The house rules that tools can check: ruff clean, mypy --strict clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_finds_nothing() -> None:
    """`ruff check` and `ruff format --check` pass on the package, the tests and the benchmarks."""
    lint = _run("ruff", "check", "casprobe", "tests", "bench")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run("ruff", "format", "--check", "casprobe", "tests", "bench")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_finds_nothing() -> None:
    """`mypy --strict` (configured in pyproject.toml) passes on the whole package."""
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
