"""``casprobe report``: the self-contained HTML report of a run (issue 6), and its JSON form.

The modules: :mod:`~casprobe.report.data` collects a frozen :class:`ReportData` from a run store through the
analysis library; :mod:`~casprobe.report.timeline`, :mod:`~casprobe.report.verdict`, :mod:`~casprobe.report.facts`
and :mod:`~casprobe.report.baseline` add what the analysis does not hold; :mod:`~casprobe.report.charts` draws the
charts (matplotlib → inline SVG); :mod:`~casprobe.report.render` fills the jinja2 template;
:mod:`~casprobe.report.jsonform` gives the same data as JSON. matplotlib and jinja2 are imported only by the last
two, so importing this package stays light.
"""

from __future__ import annotations

from casprobe.report.data import ReportData, ReportError, collect, load_report

__all__ = ["ReportData", "ReportError", "collect", "load_report"]
