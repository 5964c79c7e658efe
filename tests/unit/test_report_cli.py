"""``casprobe report``: the file is written where it should be; bad input gives one line and exit 3, no traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from casprobe.cli import cli
from casprobe.report import load_report
from casprobe.report.jsonform import report_json
from casprobe.store import RunStore
from tests import reportkit as kit


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kit.build_store(tmp_path_factory.mktemp("cli") / "run.db", seconds=130)


def test_the_default_path_is_reports_date_time_run_under_the_current_folder(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without -o the report goes to reports/<UTC date>-<HHMM>-<run id[:8]>.html (folder created), path printed."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", str(store_path)])
    assert result.exit_code == 0, result.output
    expected = Path("reports") / f"2025-04-30-0800-{kit.RUN_ID[:8]}.html"
    assert result.output.strip() == str(expected)
    page = (tmp_path / expected).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert 'id="chart-timeline"' in page


def test_json_goes_to_stdout_and_equals_the_report_data(store_path: Path) -> None:
    """--format json without -o prints the report's JSON, the same document report_json gives."""
    result = CliRunner().invoke(cli, ["report", str(store_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    expected = json.loads(json.dumps(report_json(load_report(store_path))))
    printed.pop("generated_at"), expected.pop("generated_at")
    assert printed == expected


def test_output_and_baseline_are_honoured(store_path: Path, tmp_path: Path) -> None:
    """-o writes exactly there; --baseline adds the side-by-side section."""
    out = tmp_path / "sub.html"
    result = CliRunner().invoke(cli, ["report", str(store_path), "--baseline", str(store_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    assert 'id="baseline"' in out.read_text(encoding="utf-8")


def _not_a_store(path: Path) -> Path:
    path.write_text("hello, not a database\n")
    return path


@pytest.mark.parametrize(
    ("make", "where", "message"),
    [
        (lambda p: p / "missing.db", "store", "no such file"),
        (lambda p: _not_a_store(p / "text.db"), "store", "not a SQLite database"),
        (lambda p: p, "store", "is a folder"),
        (lambda p: p / "missing.db", "baseline", "baseline: .*no such file"),
        (lambda p: _not_a_store(p / "text.db"), "baseline", "baseline: .*not a SQLite database"),
    ],
    ids=["missing", "not-sqlite", "folder", "missing-baseline", "baseline-not-sqlite"],
)
def test_bad_input_gives_one_line_and_exit_3(
    store_path: Path, tmp_path: Path, make: object, where: str, message: str
) -> None:
    """A missing, foreign or folder store (or baseline) gives one clear line on stderr and exit 3."""
    bad = make(tmp_path)  # type: ignore[operator]
    args = [str(bad)] if where == "store" else [str(store_path), "--baseline", str(bad)]
    out = subprocess.run(
        [sys.executable, "-m", "casprobe", "report", *args, "-o", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("casprobe report: ")
    assert re.search(message, lines[0])
    assert not (tmp_path / "r.html").exists()


def test_an_unwritable_output_is_a_clear_error(store_path: Path, tmp_path: Path) -> None:
    """An output in a folder that does not exist gives a message and exit 3."""
    result = CliRunner().invoke(cli, ["report", str(store_path), "-o", str(tmp_path / "no" / "such" / "r.html")])
    assert result.exit_code == 3
    assert "cannot write" in result.output


def test_an_empty_store_still_writes_a_report_and_warns(tmp_path: Path) -> None:
    """A store without results gives a report that says so (exit 0) and a warning."""
    path = tmp_path / "empty.db"
    RunStore.create(path, kit.run_info()).close()
    out = tmp_path / "empty.html"
    result = CliRunner().invoke(cli, ["report", str(path), "-o", str(out)])
    assert result.exit_code == 0
    assert "holds no results" in result.output
    assert 'id="nothing"' in out.read_text(encoding="utf-8")
