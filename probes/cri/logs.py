"""A pod container's log from its CRI log file, as the kubelet writes it: one line per record,
`<RFC3339Nano time> <stdout|stderr> <F|P> <text>`, where P marks a partial line continued by the next record
(joined here), and rotation renames `0.log` to `0.log.<timestamp>` (followed here)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

KUBELET_LOG_ROOT = "/var/log/pods"  # /var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log
MAX_LINE = 64 * 1024  # a line longer than this (in joined partials) is cut, as the kubelet's own reader does


@dataclass(frozen=True)
class LogLine:
    time: str  # RFC 3339 with nanoseconds, as written
    stream: str  # "stdout" | "stderr"
    text: str


def parse_record(raw: str) -> tuple[str, str, bool, str] | None:
    """(time, stream, partial, text) of one record; None for a line that is not one."""
    parts = raw.rstrip("\n").split(" ", 3)
    if len(parts) < 3 or parts[1] not in ("stdout", "stderr"):
        return None
    tag = parts[2]
    text = parts[3] if len(parts) > 3 else ""
    # the tag may carry more flags after a ':' in later CRI versions ("F:x"); the first is F or P
    return parts[0], parts[1], tag.split(":", 1)[0] == "P", text


class LogAssembler:
    """Joins partial records per stream into whole lines."""

    def __init__(self):
        self._partial: dict[str, tuple[str, list[str]]] = {}

    def feed(self, raw: str) -> LogLine | None:
        record = parse_record(raw)
        if record is None:
            return None
        time, stream, partial, text = record
        pending = self._partial.get(stream)
        if partial:
            if pending is None:
                self._partial[stream] = (time, [text])
            elif sum(len(p) for p in pending[1]) < MAX_LINE:
                pending[1].append(text)
            return None
        if pending is not None:
            del self._partial[stream]
            return LogLine(pending[0], stream, ("".join(pending[1]) + text)[:MAX_LINE])
        return LogLine(time, stream, text[:MAX_LINE])


def rotated_files(path: str) -> list[str]:
    """The rotated siblings of `path` still in plain text, oldest first (`0.log.20240101-000000`; the kubelet
    gzips older ones, which are left out)."""
    return sorted(p for p in glob.glob(glob.escape(path) + ".*") if not p.endswith(".gz"))


def read_log(path: str, tail: int = 200) -> list[LogLine]:
    """The last `tail` whole lines of the container's log, across its newest rotation."""
    lines: list[LogLine] = []
    assembler = LogAssembler()
    for name in [*rotated_files(path)[-1:], path]:
        try:
            with open(name, errors="replace") as f:
                for raw in f:
                    line = assembler.feed(raw)
                    if line is not None:
                        lines.append(line)
                        if len(lines) > tail * 2:
                            del lines[:-tail]
        except OSError:
            continue
    return lines[-tail:]


class LogFollower:
    """New whole lines of a log file since the last call, across rotation: when the file at `path` is another
    one (a new inode) or shorter than what was read, the rest of the old file is read first, then the new one
    from its start."""

    def __init__(self, path: str, from_end: bool = True):
        self.path = path
        self._assembler = LogAssembler()
        self._file = None
        self._inode = None
        if from_end:
            self._open(seek_end=True)

    def _open(self, seek_end: bool = False) -> bool:
        try:
            f = open(self.path, "rb")
        except OSError:
            return False
        self._file = f
        self._inode = os.fstat(f.fileno()).st_ino
        if seek_end:
            f.seek(0, os.SEEK_END)
        return True

    def _drain(self) -> list[LogLine]:
        out = []
        while True:
            start = self._file.tell()
            raw = self._file.readline()
            if not raw:
                break
            if not raw.endswith(b"\n"):  # a record still being written: read it whole next time
                self._file.seek(start)
                break
            line = self._assembler.feed(raw.decode(errors="replace"))
            if line is not None:
                out.append(line)
        return out

    def poll(self) -> list[LogLine]:
        if self._file is None and not self._open():
            return []
        out = self._drain()
        try:
            st = os.stat(self.path)
        except OSError:
            return out  # rotated away and not recreated yet
        if st.st_ino != self._inode or st.st_size < self._file.tell():
            self._file.close()
            if self._open():
                out += self._drain()
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
