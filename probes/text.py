"""Text that comes from containers, bounded where it enters mltop: the caps on what is judged and shown, the
cut (said with `…`), and the removal of terminal escape sequences, which must come before redaction (an escape
inside a token splits it, so no pattern sees the token; a screen that strips the escape later shows it whole).

Every function here is linear in its input: container text is hostile, and a pattern that backtracks over a
long run of separators would let one container stall the sampler.
"""

from __future__ import annotations

import re

ELLIPSIS = "…"

# The caps, in characters, on one piece of container text as mltop keeps it. Text past a cap is neither
# judged nor shown: it is cut, and `…` says so.
COMMAND_CAP = 4096  # a process's command line, one argument of a container's command
LOG_LINE_CAP = 4096  # one log line, one line of an action's output
VALUE_CAP = 2048  # one environment value or label value
# Redaction judges a little past the cap, so that a secret the cut falls in is still recognised whole
# before the cut: a token shape cut short would no longer match its pattern and its start would show.
JUDGE_MARGIN = 512

# Terminal escape sequences: CSI (colours, cursor moves, screen clears), OSC (window titles, hyperlinks,
# clipboard writes) ended by BEL or ST, DCS/SOS/PM/APC strings, the 8-bit CSI/OSC forms, and the short
# two-byte escapes. Each alternative starts at an ESC (or a C1 byte) and runs over characters that cannot
# start another, so one pass is linear.
ESCAPES = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]                 # CSI ... final byte
    | \x9b[0-?]*[ -/]*[@-~]                   # 8-bit CSI
    | (?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?   # OSC ... BEL | ST
    | (?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?  # DCS, SOS, PM, APC ... ST
    | \x1b[ -/]*[0-~]                         # other escapes (charset selection, keypad modes, RIS)
    | \x1b                                    # a lone ESC
    | [\x80-\x9f]                             # a lone C1 control: with every ESC and C1 gone, what is left
                                              # cannot join into a new sequence (stripping is idempotent)
    """,
    re.VERBOSE,
)
_ESCAPE_START = re.compile("[\x1b\x90\x98\x9b\x9d\x9e\x9f]")


def strip_escapes(text: str) -> str:
    """`text` without its terminal escape sequences (other control characters are left to the screens)."""
    if not _ESCAPE_START.search(text):  # the common case: nothing to do
        return text
    return ESCAPES.sub("", text)


def cut(text: str, cap: int) -> str:
    """`text` within `cap` characters: cut with `…` when longer."""
    if len(text) <= cap:
        return text
    return text[: max(cap - 1, 0)] + ELLIPSIS
