"""``casprobe serve``'s pages for people: the ``/`` status page and the ``debug=true`` text of ``/probe``.

Both show the same step traces (blackbox_exporter's ``prober/history.go`` keeps recent results and their logs for
its status page; ``debug=true`` returns the log, the metrics and the module's configuration). The page is plain
HTML: no script, no stylesheet or font from elsewhere, every value escaped. Nothing secret can appear: results
carry no secret by construction (credentials hold a :class:`~casprobe.net.credentials.Secret`), and module
settings are shown through :meth:`~casprobe.serve_config.ServeModule.summary`, which describes a password by
where it comes from (``file PATH`` / ``env VAR``).
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Mapping, Sequence

from casprobe import __version__
from casprobe.model import ProbeResult
from casprobe.serve_metrics import Scrape

__all__ = ["debug_text", "status_page", "trace_lines"]


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def trace_lines(result: ProbeResult) -> list[str]:
    """A result and its steps, one line each, as ``debug=true`` and the status page show them."""
    verdict = "ok" if result.success else f"FAILED ({result.error_class.value if result.error_class else '?'})"
    head = f"[{result.probe}] {verdict} in {result.duration:.3f} s"
    lines = [head + (f": {result.detail}" if result.detail else "")]
    for step in result.steps:
        mark = "+" if step.ok else "-"
        bits = [f"  {mark} {step.name}"]
        if step.status_code is not None:
            bits.append(f"HTTP {step.status_code}")
        if step.duration:
            bits.append(f"{step.duration:.3f} s")
        if step.address:
            bits.append(f"at {step.address}")
        if step.fe_server:
            bits.append(f"X-FEServer {step.fe_server}")
        if step.response_code is not None:
            bits.append(f"X-ResponseCode {step.response_code}")
        if step.error_class is not None:
            bits.append(f"class {step.error_class.value}")
        line = "  ".join(bits)
        lines.append(line + (f": {step.detail}" if step.detail else ""))
    if result.auth_used or result.auth_offered:
        lines.append(f"  auth: used {result.auth_used or 'none'}; offered {', '.join(result.auth_offered) or 'none'}")
    if result.tls is not None and result.tls.not_after:
        lines.append(f"  certificate: expires {result.tls.not_after} ({result.tls.days_left} days)")
    return lines


def debug_text(scrape: Scrape, metrics: str, settings: Mapping[str, object]) -> str:
    """``/probe?debug=true``: the trace, the metrics a scrape would have returned, the module's settings."""
    lines = [
        f"Probe of {scrape.target} with module {scrape.module} at {_when(scrape.started_at)}",
        f"deadline {scrape.timeout_s:.3f} s; took {scrape.duration:.3f} s; outcome {scrape.outcome}",
        "",
        "Trace:",
    ]
    for result in scrape.results:
        lines += trace_lines(result)
    lines += ["", "", "Metrics that would have been returned:", metrics.rstrip("\n"), "", ""]
    lines += ["Module configuration:", json.dumps(settings, indent=2, sort_keys=True, default=str)]
    return "\n".join(lines) + "\n"


_STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}"
    ".ok{color:#075e07}.bad{color:#a40000}pre{margin:.3em 0;white-space:pre-wrap}"
)


def _rows(scrapes: Iterable[Scrape]) -> Iterable[str]:
    for scrape in scrapes:
        css = "ok" if scrape.success else "bad"
        classes = sorted({r.error_class.value for r in scrape.results if r.error_class is not None})
        trace = "\n".join(line for result in scrape.results for line in trace_lines(result))
        yield (
            "<tr>"
            f"<td>{html.escape(_when(scrape.started_at))}</td>"
            f"<td>{html.escape(scrape.module)}</td>"
            f"<td>{html.escape(scrape.target)}</td>"
            f'<td class="{css}">{html.escape(scrape.outcome)}</td>'
            f"<td>{html.escape(', '.join(classes))}</td>"
            f"<td>{scrape.duration:.3f} s</td>"
            f"<td><details><summary>{len(scrape.results)} probe(s)</summary>"
            f"<pre>{html.escape(trace)}</pre></details></td>"
            "</tr>"
        )


def status_page(
    scrapes: Sequence[Scrape], modules: Mapping[str, Mapping[str, object]], facts: Mapping[str, str]
) -> str:
    """``/``: the server's facts, its modules (settings without secrets) and the recent scrapes, newest first."""
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
    module_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td><pre>{html.escape(json.dumps(summary, sort_keys=True))}</pre></td></tr>"
        for name, summary in modules.items()
    )
    recent = "".join(_rows(reversed(scrapes))) or '<tr><td colspan="7">no scrape yet</td></tr>'
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>casprobe serve</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>casprobe serve {html.escape(__version__)}</h1>"
        '<p><a href="/metrics">/metrics</a> · /probe?module=MODULE&amp;target=NAME[&amp;debug=true]</p>'
        f"<table>{fact_rows}</table>"
        f"<h2>Modules</h2><table><tr><th>module</th><th>settings</th></tr>{module_rows}</table>"
        "<h2>Recent scrapes</h2><table><tr><th>started</th><th>module</th><th>target</th><th>outcome</th>"
        f"<th>error class</th><th>duration</th><th>trace</th></tr>{recent}</table>"
        "</body></html>\n"
    )
