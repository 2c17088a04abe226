"""Container text made inert for plain-text outputs (the CLI's lines, the Markdown and HTML reports): control
characters and terminal escapes shown as visible `\\x1b` / `\\u202e` text, never obeyed; tabs and newlines kept."""

from __future__ import annotations

import re

# What a terminal would act on (C0 and C1 controls but tab and newline, DEL) and the Unicode bidi controls
# that can reorder what the reader sees.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escaped(value: object) -> str:
    """`value` with each control character written out (`\\x1b`, `\\u202e`): a report `cat` in a terminal, or
    a label that carries an escape sequence, shows the sequence instead of obeying it."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # the common case: nothing to do
        return text
    return _CONTROLS.sub(
        lambda m: f"\\x{ord(m.group(0)):02x}" if ord(m.group(0)) < 0x100 else f"\\u{ord(m.group(0)):04x}", text)
