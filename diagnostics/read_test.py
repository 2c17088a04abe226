"""A timed direct read of one file inside a container (`dd … iflag=direct` via docker exec), in MB/s."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mltop.probes.redaction import redact_contained
from mltop.probes.text import LOG_LINE_CAP

from .actions.runner import StepControl, exec_in_container

MIB = 1 << 20


@dataclass(frozen=True)
class ReadTestResult:
    path: str
    command: tuple[str, ...]  # the argv run inside the container
    ok: bool
    bytes_read: int | None
    seconds: float | None
    mb_per_s: float | None  # decimal MB (10^6 bytes) per second, as dd prints it
    direct: bool  # False when O_DIRECT was refused and the read went through the page cache
    timed_out: bool
    exit_code: int | None
    output: str  # dd's own words, verbatim
    timing_source: str  # "dd" (dd's own clock) or how the exec wall time was corrected
    error: str | None = None

    @property
    def conclusive(self) -> bool:
        """Whether the sample is big or long enough that exec start-up noise cannot decide the rate."""
        if self.timing_source == "dd":
            return True
        return (self.seconds or 0) >= 0.5 or (self.bytes_read or 0) >= 64 * MIB


_GNU_BYTES = re.compile(r"(\d+) bytes(?: \([^)]*\))? copied, ([\d.]+) s")
_BUSYBOX_BYTES = re.compile(r"(\d+) bytes \([^)]*\) copied, ([\d.]+) seconds")
_RECORDS_IN = re.compile(r"(\d+)\+(\d+) records in")


def read_command(path: str, max_mb: int, direct: bool = True) -> list[str]:
    """dd as an argv list: the path is one argument, never spliced into a shell string."""
    argv = ["dd", f"if={path}", "of=/dev/null", "bs=1M", f"count={max_mb}"]
    if direct:
        argv.append("iflag=direct")
    return argv


def _redact_line(text: str) -> str:
    return redact_contained(text, LOG_LINE_CAP)


def _exec(engine, container_id: str, argv: list[str], timeout_s: float) -> tuple[int | None, str, float, bool]:
    """Run argv in the container; (exit code, output, wall seconds, timed out). Ended on timeout by the
    action runner, which signals only a PID that /proc shows is this container's on a local engine."""
    outcome = exec_in_container(engine, container_id, argv, StepControl.within(timeout_s, redact=_redact_line))
    if outcome.timed_out:
        return None, "", outcome.wall_s, True
    if outcome.error and outcome.exit_code is None and not outcome.text:
        raise RuntimeError(outcome.error)  # the exec could not start: the doctor lists the check as skipped
    output = outcome.text
    if outcome.error:
        output += f"\n{outcome.error}"
    return outcome.exit_code, output.strip(), outcome.wall_s, False


def timed_direct_read(engine, container_id: str, path: str, max_mb: int = 256,
                      timeout_s: float = 30.0) -> ReadTestResult:
    """Read up to `max_mb` MiB of `path` with O_DIRECT inside the container and time it."""
    # What an exec costs by itself (create, start, stream): taken off the wall time when dd gives none.
    _, _, overhead, _ = _exec(engine, container_id, ["dd", "if=/dev/null", "of=/dev/null"], timeout_s)
    direct = True
    argv = read_command(path, max_mb, direct)
    code, output, wall, timed_out = _exec(engine, container_id, argv, timeout_s)
    if not timed_out and code != 0 and "Invalid argument" in output:
        # The filesystem refuses O_DIRECT (tmpfs, some overlay setups): read through the page cache instead.
        direct = False
        argv = read_command(path, max_mb, direct)
        code, output, wall, timed_out = _exec(engine, container_id, argv, timeout_s)
    if timed_out:
        return ReadTestResult(path, tuple(argv), False, None, wall, None, direct, True, None, "",
                              "exec wall time", f"the read did not finish within {timeout_s:g} s")
    if code != 0:
        return ReadTestResult(path, tuple(argv), False, None, wall, None, direct, False, code, output,
                              "exec wall time", f"dd exited with {code}")

    seconds = max(wall - overhead, wall / 2)
    timing = f"exec wall time {wall:.3f} s less {overhead:.3f} s exec start-up"
    bytes_read: int | None = None
    m = _GNU_BYTES.search(output) or _BUSYBOX_BYTES.search(output)
    if m:
        bytes_read, seconds, timing = int(m.group(1)), float(m.group(2)), "dd"
    else:
        records = _RECORDS_IN.search(output)
        full = int(records.group(1)) if records else 0
        partial = int(records.group(2)) if records else 0
        bytes_read = full * MIB
        if partial:
            size = _file_size(engine, container_id, path, timeout_s)
            if size is not None:
                bytes_read = min(size, max_mb * MIB)
    rate = bytes_read / seconds / 1e6 if bytes_read is not None and seconds > 0 else None
    return ReadTestResult(path, tuple(argv), True, bytes_read, seconds, rate, direct, False, code, output, timing)


def _file_size(engine, container_id: str, path: str, timeout_s: float) -> int | None:
    code, output, _, timed_out = _exec(engine, container_id, ["stat", "-L", "-c", "%s", path], timeout_s)
    if timed_out or code != 0:
        return None
    try:
        return int(output.split()[-1])
    except (ValueError, IndexError):
        return None
