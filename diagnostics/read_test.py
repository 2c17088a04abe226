"""A timed direct read of one file inside a container (`dd … iflag=direct` via docker exec), in MB/s."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass

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


def _exec(api, container_id: str, argv: list[str], timeout_s: float) -> tuple[int | None, str, float, bool]:
    """Run argv in the container; (exit code, output, wall seconds, timed out). Kills the exec on timeout."""
    exec_id = api.exec_create(container_id, argv, stdout=True, stderr=True)["Id"]
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["output"] = api.exec_start(exec_id)
        except Exception as exc:  # the engine dropped the stream: report it as the output
            box["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=run, name="mltop-read-test", daemon=True)
    worker.start()
    worker.join(timeout_s)
    wall = time.monotonic() - started
    if worker.is_alive():
        try:
            pid = api.exec_inspect(exec_id).get("Pid")
            if pid:
                os.kill(int(pid), signal.SIGKILL)  # host PID: only reachable when mltop runs on the host
        except Exception:
            pass
        return None, "", wall, True
    raw = box.get("output", b"")
    output = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    if "error" in box:
        output += f"\n{box['error']}"
    code = api.exec_inspect(exec_id).get("ExitCode")
    return code, output.strip(), wall, False


def timed_direct_read(engine, container_id: str, path: str, max_mb: int = 256,
                      timeout_s: float = 30.0) -> ReadTestResult:
    """Read up to `max_mb` MiB of `path` with O_DIRECT inside the container and time it."""
    api = engine.client.api
    # What an exec costs by itself (create, start, stream): taken off the wall time when dd gives none.
    _, _, overhead, _ = _exec(api, container_id, ["dd", "if=/dev/null", "of=/dev/null"], timeout_s)
    direct = True
    argv = read_command(path, max_mb, direct)
    code, output, wall, timed_out = _exec(api, container_id, argv, timeout_s)
    if not timed_out and code != 0 and "Invalid argument" in output:
        # The filesystem refuses O_DIRECT (tmpfs, some overlay setups): read through the page cache instead.
        direct = False
        argv = read_command(path, max_mb, direct)
        code, output, wall, timed_out = _exec(api, container_id, argv, timeout_s)
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
            size = _file_size(api, container_id, path, timeout_s)
            if size is not None:
                bytes_read = min(size, max_mb * MIB)
    rate = bytes_read / seconds / 1e6 if bytes_read is not None and seconds > 0 else None
    return ReadTestResult(path, tuple(argv), True, bytes_read, seconds, rate, direct, False, code, output, timing)


def _file_size(api, container_id: str, path: str, timeout_s: float) -> int | None:
    code, output, _, timed_out = _exec(api, container_id, ["stat", "-L", "-c", "%s", path], timeout_s)
    if timed_out or code != 0:
        return None
    try:
        return int(output.split()[-1])
    except (ValueError, IndexError):
        return None
