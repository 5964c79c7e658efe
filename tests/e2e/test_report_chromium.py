"""The report opened in headless Debian Chromium: no network request at all, every chart there, numbers = analysis.

Chromium itself talks to Google services in the background (component updates, network time, account lookups);
those requests carry ``initiator: "not an origin"`` in the net log. A request caused by the page (an image, a
font, a stylesheet) carries the page's origin (``null`` for a file:// page). So the test asserts that the net log
holds no request with any other initiator, and proves on a deliberately bad page that such requests are seen.
DNS is mapped to nothing and the proxy is a loopback socket that is never served, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from casprobe.analysis_compare import NEW_CONNECTIONS, SESSIONS
from casprobe.analysis_table import seconds
from casprobe.cli import cli
from casprobe.report import load_report
from tests import reportkit as kit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it)")


@pytest.fixture(scope="module")
def proxy() -> Iterator[int]:
    """A loopback socket that listens and never answers: the proxy every request would have to go through."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def _chromium(page: Path, work: Path, proxy: int) -> tuple[str, list[dict[str, str]]]:
    """Open ``page``; return the DOM after load and the URL requests of the net log (url, initiator)."""
    assert CHROMIUM is not None
    netlog = work / f"{page.stem}.netlog.json"
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={work / 'profile'}",
        "--incognito",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--proxy-server=http://127.0.0.1:{proxy}",
        f"--log-net-log={netlog}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    requests = [
        {"url": e["params"]["url"], "initiator": str(e["params"].get("initiator", ""))}
        for e in log["events"]
        if names.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})
    ]
    return done.stdout, requests


def _from_the_page(requests: list[dict[str, str]]) -> list[str]:
    return [r["url"] for r in requests if r["initiator"] != "not an origin"]


class _Dom(HTMLParser):
    """What the test reads back from the rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[str] = []
        self.cells: dict[tuple[str, str, str], str] = {}
        self.texts: dict[str, str] = {}
        self.verdicts: dict[str, str] = {}
        self._into: tuple[str, object] | None = None
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg" and a.get("id"):
            self.svgs.append(a["id"])
        if tag == "td" and "disc" in a.get("class", "").split():
            self._into, self._buffer = ("cell", (a["data-target"], a["data-class"], a["data-scope"])), []
        elif tag == "span" and a.get("id") == "outage-count":
            self._into, self._buffer = ("text", "outage-count"), []
        elif tag == "li" and "data-target" in a:
            self._into, self._buffer = ("verdict", a["data-target"]), []

    def handle_data(self, data: str) -> None:
        if self._into is not None:
            self._buffer.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._into is None or tag not in ("td", "span", "li"):
            return
        kind, key = self._into
        text = "".join(self._buffer).strip()
        if kind == "cell":
            self.cells[key] = text  # type: ignore[index]
        elif kind == "text":
            self.texts[str(key)] = text
        else:
            self.verdicts[str(key)] = text
        self._into = None


def test_the_report_renders_offline_with_every_chart_and_the_analysis_numbers(tmp_path: Path, proxy: int) -> None:
    """Chromium renders the report with no request from the page; charts present; figures equal the analysis."""
    store = kit.build_store(tmp_path / "run.db")
    page = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(store), "-o", str(page)])
    assert result.exit_code == 0, result.output

    dom, requests = _chromium(page, tmp_path, proxy)
    assert _from_the_page(requests) == []
    parsed = _Dom()
    parsed.feed(dom)

    data = load_report(store)
    a = data.analysis
    expected_charts = {"chart-timeline", "chart-disconnect", "chart-phases", "chart-backends", "chart-load-1"}
    assert set(parsed.svgs) == expected_charts
    assert parsed.texts["outage-count"] == str(len(a.outages)) == "7"
    shown = {key: text for key, text in parsed.cells.items() if key[2] == "overall"}
    expected = {(d.target, d.probe_class, d.scope): seconds(d.disconnect_s) for d in a.comparison}
    assert shown == {k: v for k, v in expected.items() if k[2] == "overall"}
    assert len(shown) == 8
    assert shown[("mb1", NEW_CONNECTIONS, "overall")] != "0 s"
    assert shown[("mb2", SESSIONS, "overall")] == "0 s"
    assert {k: v for k, v in parsed.cells.items() if k[2] == "during"} == {
        k: v for k, v in expected.items() if k[2] == "during"
    }
    assert parsed.verdicts == {v.target: v.sentence for v in data.verdicts}


def test_the_offline_check_sees_a_page_that_loads_from_the_network(tmp_path: Path, proxy: int) -> None:
    """A page with an external image, SVG image and font URL shows those requests in the net log (the check works)."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><p>x</p><img src="http://example.test/a.png">'
        '<svg><image href="https://cdn.example.test/b.png"/></svg>'
        "<style>p{background:url(http://fonts.example.test/f.woff)}</style></body></html>"
    )
    _, requests = _chromium(page, tmp_path, proxy)
    assert sorted(_from_the_page(requests)) == [
        "http://example.test/a.png",
        "http://fonts.example.test/f.woff",
        "https://cdn.example.test/b.png",
    ]
