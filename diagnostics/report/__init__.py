"""Incident reports: a redacted JSON document (document.py) rendered as Markdown or HTML from its rows."""

from .document import (
    FORMATS,
    REPORT_SCHEMA_VERSION,
    build_report,
    default_report_path,
    format_for_path,
    redact_document,
    render,
    render_html,
    render_json,
    render_markdown,
    write_report,
)

__all__ = [
    "FORMATS", "REPORT_SCHEMA_VERSION", "build_report", "default_report_path", "format_for_path",
    "redact_document", "render", "render_html", "render_json", "render_markdown", "write_report",
]
