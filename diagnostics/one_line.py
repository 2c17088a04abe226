"""Text for one table cell: line breaks and tabs as visible markers, cut with `…` to the column.

A command line can hold a whole script (`python3 -c "import x<newline>while True: ..."`); printed as is, its
line breaks split a table row and the borders fall apart. Every table that shows a command (the CLI's
host view, the dashboard's processes pane, the action panels, the Markdown and HTML reports) passes it
through `one_line` first, so they all show it the same way. Terminal escapes and other control characters
are the business of the sanitisers that come after (tui/sanitize.py, the reports' escaping).
"""

from __future__ import annotations

import re

NEWLINE_MARK = "↵"
TAB_MARK = "⇥"
ELLIPSIS = "…"

# Everything str.splitlines() breaks on, CRLF as one break.
_BREAKS = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# The indentation after a break carries no meaning once the lines are joined, and costs the column width.
_AFTER_BREAK = re.compile(f"{NEWLINE_MARK}[ {TAB_MARK}]+")


def one_line(value: object, width: int | None = None) -> str:
    """`value` on one line: each line break becomes `↵`, each tab `⇥`; cut to `width` characters with `…`."""
    text = value if isinstance(value, str) else str(value)
    if "\t" in text or _BREAKS.search(text):
        text = _BREAKS.sub(NEWLINE_MARK, text.strip(" \t\r\n\v\f")).replace("\t", TAB_MARK)
        text = _AFTER_BREAK.sub(NEWLINE_MARK, text)
    if width is not None and len(text) > width:
        return text[: max(width - 1, 0)] + ELLIPSIS if width > 0 else ""
    return text
