"""Incident reports: a redacted document (document.py) rendered as Markdown (markdown.py) or HTML (html.py),
both from the rows in rows.py (pods.py: the pods' part) and nothing else."""

from .document import (
    FORMATS,
    REPORT_SCHEMA_VERSION,
    HistoryView,
    build_report,
    default_report_path,
    format_for_path,
    redact_document,
    render,
    render_json,
    write_report,
)
from .html import render_html
from .markdown import render_markdown

__all__ = [
    "FORMATS", "REPORT_SCHEMA_VERSION", "HistoryView", "build_report", "default_report_path", "format_for_path",
    "redact_document", "render", "render_html", "render_json", "render_markdown", "write_report",
]
