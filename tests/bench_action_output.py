"""What one command's output costs mltop to take in (diagnostics/actions/runner.py): a host subprocess printing
50 MiB without a newline, and 50 MB of 100-byte lines. Prints the seconds and what was kept.

    python tests/bench_action_output.py
"""

from __future__ import annotations

import sys
import time

from mltop.diagnostics.actions.runner import StepControl, run_on_host

CASES = (
    ("50 MiB without a newline", "import sys; sys.stdout.write('x' * (50 << 20))"),
    ("50 MB in 100-byte lines", "import sys; sys.stdout.write(('y' * 99 + '\\n') * 500_000)"),
)


def main() -> None:
    for label, code in CASES:
        started = time.monotonic()
        outcome = run_on_host([sys.executable, "-c", code], StepControl.within(300))
        print(f"{label}: {time.monotonic() - started:.2f} s, kept {len(outcome.text)} characters, "
              f"dropped {outcome.dropped_bytes} bytes in {outcome.dropped_lines} lines")


if __name__ == "__main__":
    main()
