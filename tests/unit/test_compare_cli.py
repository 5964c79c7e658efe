"""``casprobe compare`` as a user runs it: exit codes that gate a pipeline, the three outputs, and broken inputs that
give one line and exit 3 instead of a traceback."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from casprobe.model import ProbeResult, RunInfo
from casprobe.store import RunStore
from tests.unit.test_compare import MB1, NS, failed, round_of, run_of, when, write_check, write_run

ROOT = Path(__file__).resolve().parents[2]


def _compare(*args: str | Path) -> Result:
    from casprobe.cli import cli

    return CliRunner().invoke(cli, ["compare", *map(str, args)])


def _slow(r: ProbeResult) -> ProbeResult:
    return dataclasses.replace(r, phases=dataclasses.replace(r.phases, total=0.1, first_byte=0.06))


@pytest.mark.parametrize("run", [False, True], ids=["check", "run"])
def test_identical_inputs_exit_0_and_say_no_differences(tmp_path: Path, run: bool) -> None:
    """Two identical checks (or runs) exit 0 and print "no differences"."""
    write = write_run if run else write_check
    results = run_of() if run else round_of()
    pre, post = write(tmp_path / "pre", results), write(tmp_path / "post", results)
    out = _compare(pre, post)
    assert out.exit_code == 0, out.output
    assert "OK: no differences" in out.stdout


@pytest.mark.parametrize(
    ("change", "code", "kind"),
    [
        (when(MB1, "health", lambda r: failed(r.target, r.probe)), 2, "failure"),
        (when(NS, "mapi", _slow), 2, "latency"),
        (lambda r: dataclasses.replace(r, auth_used="Negotiate") if r.auth_used else r, 1, "auth_used"),
    ],
    ids=["server-failing", "latency-doubled", "auth-changed"],
)
def test_the_exit_code_gates_on_the_worst_finding(tmp_path: Path, change: object, code: int, kind: str) -> None:
    """A regression exits 2, a change to review alone exits 1, and --format json carries the same finding."""
    assert callable(change)
    pre = write_check(tmp_path / "pre.json", round_of())
    post = write_check(tmp_path / "post.json", round_of(change))
    out = _compare(pre, post, "--format", "json")
    assert out.exit_code == code, out.output
    doc = json.loads(out.stdout)
    assert doc["exit_code"] == code
    assert {f["kind"] for f in doc["findings"]} == {kind}


def test_regressions_are_printed_before_changes(tmp_path: Path) -> None:
    """The terminal output lists the regressions section above the changes section and ends with the verdict."""
    pre = write_check(tmp_path / "pre.json", round_of())
    both = when(MB1, "mapi", lambda r: failed(r.target, r.probe))
    post = write_check(tmp_path / "post.json", round_of(lambda r: both(dataclasses.replace(r, auth_offered=("NTLM",)))))
    out = _compare(pre, post)
    assert out.exit_code == 2
    text = out.stdout
    assert text.index("Regressions (1)") < text.index("Changes to review")
    assert "mb1 mapi worked before and fails after: http_status: HTTP 503" in text
    assert text.rstrip().endswith("CRITICAL: 1 regression, 8 changes to review (exit 2)")


def test_latency_thresholds_come_from_the_options(tmp_path: Path) -> None:
    """--latency-min-ms 100 lets a +50 ms doubling pass; --latency-factor 1.5 with the default minimum catches it."""
    pre = write_check(tmp_path / "pre.json", round_of())
    post = write_check(tmp_path / "post.json", round_of(when(NS, "mapi", _slow)))
    assert _compare(pre, post, "--latency-min-ms", "100").exit_code == 0
    assert _compare(pre, post, "--latency-factor", "1.5").exit_code == 2
    refused = _compare(pre, post, "--latency-factor", "0.5")
    assert refused.exit_code != 0
    assert "0.5 is not in the range" in refused.output


class _Tags(HTMLParser):
    """Every tag name and attribute name of a page, and the text of its style elements."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.attributes: set[str] = set()
        self.css = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self.attributes.update(name for name, _ in attrs)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css += data


def test_html_is_one_self_contained_escaped_page(tmp_path: Path) -> None:
    """--html writes a page with inline CSS only (no script, no link, no src, no url()), the findings, and server
    text escaped."""
    hostile = "<script>alert(1)</script><img src=http://evil.example/x>"
    pre = write_check(tmp_path / "pre.json", round_of())
    post = write_check(
        tmp_path / "post.json", round_of(when(MB1, "ews", lambda r: failed(r.target, r.probe, detail=hostile)))
    )
    page = tmp_path / "out" / "compare.html"
    page.parent.mkdir()
    out = _compare(pre, post, "--html", page)
    assert out.exit_code == 2, out.output
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    tags = _Tags()
    tags.feed(html)
    assert {"style", "table"} <= tags.names
    assert not tags.names & {"script", "link", "img", "iframe", "object", "embed", "base"}
    assert not tags.attributes & {"src", "href", "srcset", "action"}
    assert "url(" not in tags.css
    assert "@import" not in tags.css
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "mb1 ews worked before and fails after" in html
    assert "Regressions (1)" in html


def test_html_that_cannot_be_written_is_exit_3(tmp_path: Path) -> None:
    """--html into a folder that does not exist: one line, exit 3."""
    pre = write_check(tmp_path / "pre.json", round_of())
    out = _compare(pre, pre, "--html", tmp_path / "nowhere" / "c.html")
    assert out.exit_code == 3
    assert "cannot write" in out.stderr


def _empty_store(path: Path) -> Path:
    with RunStore.create(path, RunInfo("r", 1.0, "0.1.0", 1.0, (), ())):
        pass
    return path


def _plain_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    return path


BROKEN: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda p: p / "absent.json", r"absent\.json: no such file"),
    "folder": (lambda p: p, r"is a folder"),
    "empty": (lambda p: _write(p / "e.json", b""), r"the file is empty"),
    "not-json": (lambda p: _write(p / "t.json", b"hello: world\n"), r"neither a run store \(SQLite\) nor a JSON"),
    "json-list": (lambda p: _write(p / "l.json", b"[1, 2]"), r"not the output of casprobe check.*a list"),
    "other-shape": (lambda p: _write(p / "o.json", b'{"a": 1}'), r"no schema_version and results"),
    "analysis": (
        lambda p: _write(p / "a.json", b'{"format": "casprobe.analysis", "version": 1}'),
        r"casprobe analyze output",
    ),
    "newer": (
        lambda p: _write(p / "n.json", b'{"schema_version": 99, "results": []}'),
        r"schema_version 99 is newer",
    ),
    "no-results": (lambda p: _write(p / "z.json", b'{"schema_version": 1, "results": []}'), r"holds no results"),
    "bad-result": (
        lambda p: _write(p / "b.json", b'{"schema_version": 1, "results": [{"target": {}}]}'),
        r"result 1: probe should be a str",
    ),
    "empty-store": (lambda p: _empty_store(p / "e.db"), r"run store holds no results"),
    "plain-sqlite": (lambda p: _plain_sqlite(p / "p.db"), r"not a casprobe run store"),
    "deep-json": (lambda p: _write(p / "d.json", b"[" * 100_000), r"neither a run store"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_input_is_one_line_and_exit_3(tmp_path: Path, case: str) -> None:
    """Each kind of unusable input, given as PRE or POST, exits 3 with one line on stderr naming what is wrong."""
    make, pattern = BROKEN[case]
    broken = make(tmp_path)
    store = case in ("empty-store", "plain-sqlite")
    good = (
        write_run(tmp_path / "good.db", run_of(rounds=1)) if store else write_check(tmp_path / "good.json", round_of())
    )
    for args in ((broken, good), (good, broken)):
        out = _compare(*args)
        assert out.exit_code == 3, (case, out.output)
        assert out.exception is None or isinstance(out.exception, SystemExit), repr(out.exception)
        assert re.search(pattern, out.stderr), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert out.stdout == ""


def test_a_check_and_a_run_cannot_be_mixed(tmp_path: Path) -> None:
    """A check JSON against a run store (whatever their names say) is exit 3 naming both kinds."""
    check = write_check(tmp_path / "pre.db", round_of())  # named like a store, holds JSON
    run = write_run(tmp_path / "post.json", run_of())  # named like JSON, holds a store
    out = _compare(check, run)
    assert out.exit_code == 3
    assert "pre.db is a check JSON and" in out.stderr
    assert "post.json a run store: compare two checks or two runs" in out.stderr


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    """`python -m casprobe compare` on a missing file: exit 3, one red line, no traceback (the real entry point)."""
    out = subprocess.run(
        [sys.executable, "-m", "casprobe", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 3
    assert "Traceback" not in out.stderr
    assert out.stderr.strip() == f"casprobe compare: {tmp_path / 'a.json'}: no such file"
