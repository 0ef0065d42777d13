"""The benchmark report: self-contained ``report.html`` plus ``summary.md``.

>>> from sol.report import build_report
>>> html_path, md_path = build_report(run, out_dir)  # doctest: +SKIP
"""

from sol.report.html import build_report, render_html
from sol.report.markdown import render_markdown

__all__ = ["build_report", "render_html", "render_markdown"]
