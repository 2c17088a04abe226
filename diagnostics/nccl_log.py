"""NCCL and PyTorch-distributed failures in a rank's log lines: collective timeouts and NCCL errors.

Linear in the input and capped: each line is cut to LINE_CAP characters, found by literal substrings, and
its fields read by bounded, anchored patterns at known offsets; at most KEEP hits of each kind are kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

LINE_CAP = 4096  # characters of a line looked at
FIELDS_CAP = 512  # characters after "WorkNCCL(" read for its fields
KEEP = 3  # hits of each kind kept (the last ones)

WATCHDOG = "Watchdog caught collective operation timeout"
# What NCCL (and PyTorch's wrapper of it) writes when a call fails: an error code's name, or its words.
ERROR_MARKS = ("ncclInternalError", "ncclSystemError", "ncclRemoteError", "ncclInvalidUsage", "ncclInvalidArgument",
               "ncclUnhandledCudaError", "unhandled system error", "unhandled cuda error", "internal error - please report",
               "remote process exited or there was a network error", "NCCL communicator was aborted",
               "NCCL error in:")
WARN_MARK = "NCCL WARN"

_FIELD = re.compile(r"\s{0,8}([A-Za-z()]{1,16})=([^,)]{0,64})")
_DIGITS = re.compile(r"\d{1,20}")
_RAN_FOR = re.compile(r" ran for (\d{1,20}) milliseconds")
_RANK = re.compile(r"\[[Rr]ank ?(\d{1,9})\]")


@dataclass(frozen=True)
class CollectiveTimeout:
    """One `Watchdog caught collective operation timeout: WorkNCCL(...)` line."""

    line: str  # verbatim (capped)
    rank: int | None
    seq: int | None  # SeqNum
    op: str | None  # OpType, e.g. "ALLREDUCE"
    timeout_ms: int | None  # Timeout(ms)
    ran_for_ms: int | None
    numel_in: int | None = None
    numel_out: int | None = None


@dataclass(frozen=True)
class NcclError:
    """One line where NCCL says a call failed (`mark`: the words found) or warns (`mark` "NCCL WARN")."""

    line: str
    mark: str

    @property
    def failure(self) -> bool:
        return self.mark != WARN_MARK


@dataclass(frozen=True)
class NcclLog:
    timeouts: tuple[CollectiveTimeout, ...]
    errors: tuple[NcclError, ...]  # failures and warnings, the last KEEP of each


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    m = _DIGITS.match(text.strip())
    return int(m.group()) if m else None


def parse_timeout(line: str) -> CollectiveTimeout | None:
    """The fields of a watchdog timeout line; None when the line is no such line."""
    line = line[:LINE_CAP]
    at = line.find(WATCHDOG)
    if at < 0:
        return None
    rank_m = _RANK.search(line, 0, at) if at else None
    fields: dict[str, str] = {}
    work = line.find("WorkNCCL(", at)
    ran_for = None
    if work >= 0:
        pos, end = work + len("WorkNCCL("), min(len(line), work + len("WorkNCCL(") + FIELDS_CAP)
        while pos < end:
            m = _FIELD.match(line, pos, end)
            if not m:
                break
            fields[m.group(1)] = m.group(2)
            pos = m.end()
            if pos < end and line[pos] == ",":
                pos += 1
            elif pos < end and line[pos] == ")":
                # "Timeout(ms)=600000)" closes WorkNCCL(...)
                pos += 1
                break
            else:
                break
        r = _RAN_FOR.search(line, pos, min(len(line), pos + 64))
        ran_for = int(r.group(1)) if r else None
    return CollectiveTimeout(
        line=line.strip(), rank=int(rank_m.group(1)) if rank_m else None, seq=_int(fields.get("SeqNum")),
        op=(fields.get("OpType") or "").strip() or None, timeout_ms=_int(fields.get("Timeout(ms)")),
        ran_for_ms=ran_for, numel_in=_int(fields.get("NumelIn")), numel_out=_int(fields.get("NumelOut")))


def error_mark(line: str) -> str | None:
    """The failure words a line holds (the first of ERROR_MARKS), "NCCL WARN", or None."""
    line = line[:LINE_CAP]
    for mark in ERROR_MARKS:
        if mark in line:
            return mark
    return WARN_MARK if WARN_MARK in line else None


def scan(lines: Iterable[str]) -> NcclLog:
    """Timeouts and errors in `lines`, the last KEEP of each kind."""
    timeouts: list[CollectiveTimeout] = []
    failures: list[NcclError] = []
    warnings: list[NcclError] = []
    for raw in lines:
        line = raw[:LINE_CAP]
        if "NCCL" not in line and "nccl" not in line and WATCHDOG not in line:
            continue
        timeout = parse_timeout(line)
        if timeout is not None:
            timeouts.append(timeout)
            del timeouts[:-KEEP]
            continue
        mark = error_mark(line)
        if mark is not None:
            bucket = warnings if mark == WARN_MARK else failures
            bucket.append(NcclError(line.strip(), mark))
            del bucket[:-KEEP]
    return NcclLog(tuple(timeouts), tuple(failures + warnings))
