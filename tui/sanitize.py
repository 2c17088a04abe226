"""Make text that comes from containers safe to show: no terminal escapes, no control characters, no markup."""

from __future__ import annotations

import re

from rich.style import Style
from rich.text import Text

from mltop.diagnostics.inert import escaped  # noqa: F401  (the CLI's commands use it from here)
from mltop.diagnostics.one_line import one_line  # noqa: F401  (the tui's tables use it from here)
from mltop.probes.text import ESCAPES

# Terminal escape sequences (probes/text.py) are removed, not shown: coloured log output is common and "[32m"
# noise would hide the text. The probes already removed them from what they redact (an escape inside a
# token would hide it from redaction); this pass covers names and anything else shown.

# What is left that a terminal would act on, plus the Unicode bidi controls that can reorder what the
# reader sees. Tabs are expanded and line breaks (a `python -c` script in a command line, a label
# written over several lines) become spaces first; everything else becomes a replacement character.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
REPLACEMENT = "\ufffd"


def printable(value: object) -> str:
    """The text of `value` with escape sequences removed and control characters replaced."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # the common case: nothing to do
        return text
    text = ESCAPES.sub("", text).expandtabs(4).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return _CONTROLS.sub(REPLACEMENT, text)


def literal(value: object, style: str | Style = "") -> Text:
    """A rich Text showing `value` exactly as written: never parsed as markup, never restyling the screen."""
    return Text(printable(value), style=style, no_wrap=True, end="")


def clip(value: str, width: int) -> str:
    """Shorten `value` to `width` cells with an ellipsis."""
    if width <= 0:
        return ""
    return value if len(value) <= width else value[: max(width - 1, 0)] + "…"
