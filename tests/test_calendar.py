"""No test depends on the calendar: the recorder's tests, and those that still hold a fixed time (a screen's
clock, a tally's event times), pass with the clock moved 30 days ahead, so a date passing never turns CI red
again (it did once: synthetic recordings pinned to one day fell out of the 7-day retention and were pruned)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AHEAD_S = 30 * 86400
# Every module that writes or reads recordings, or that still holds a fixed time.
MODULES = ["test_recorder.py", "test_recorder_faults.py", "test_recorder_status.py", "test_recorder_gpm.py",
           "test_pod_events.py", "test_engine_events.py", "test_serve_health.py", "test_screens.py",
           "test_cri_crashloop.py::test_the_attempts_of_a_pod_container_are_listed_as_one"]


def _moved_env() -> dict[str, str]:
    """This environment with the clock 30 days ahead in every Python process (tests/clock_ahead/sitecustomize.py).
    The engine's own clock (event times, container starts) cannot be moved with ours: engine tests skip here."""
    env = {k: v for k, v in os.environ.items() if k != "MLTOP_REQUIRE_DOCKER"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(HERE, "clock_ahead"), env.get("PYTHONPATH")) if p)
    env["MLTOP_TEST_CLOCK_AHEAD_S"] = str(AHEAD_S)
    env["DOCKER_HOST"] = "unix:///nonexistent/mltop-calendar-test.sock"
    return env


def test_the_clock_is_moved_in_every_python_process_of_the_run():
    moved = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], capture_output=True,
                           text=True, timeout=60, env=_moved_env())
    assert float(moved.stdout) - time.time() > AHEAD_S - 60, moved.stdout + moved.stderr


def test_the_recorder_suite_and_the_fixed_times_pass_with_the_clock_30_days_ahead():
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not cgroup_v2",
                           *MODULES], cwd=HERE, capture_output=True, text=True, timeout=900, env=_moved_env())
    tail = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 40, tail
