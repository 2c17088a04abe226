"""Moves the wall clock of every Python process that starts with this folder on PYTHONPATH (tests/test_calendar.py
puts it there) MLTOP_TEST_CLOCK_AHEAD_S seconds ahead: time.time and time.time_ns, which is every clock mltop
reads for a date. The monotonic clock, sleeps and timeouts are left alone."""

import os
import time

_AHEAD_S = float(os.environ.get("MLTOP_TEST_CLOCK_AHEAD_S") or 0)
if _AHEAD_S:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _AHEAD_S
    time.time_ns = lambda: _time_ns() + int(_AHEAD_S * 1e9)
