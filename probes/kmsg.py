"""Xid errors from the kernel log (/dev/kmsg), so those from before mltop started are seen too.

The NVIDIA driver logs each Xid as `NVRM: Xid (PCI:0000:0b:00): 79, pid=..., GPU has fallen off the bus.`;
the PCI address names the GPU. The NVSwitch driver logs its own errors the same way as SXids (switch Xids):
`nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)` (the
format of nvswitch's NVSWITCH_PRINT_SXID: `nvidia-%s: SXid (PCI:%04x:%02x:%02x.%x): %05d, ` then the text); the PCI
address names the switch. Reading /dev/kmsg needs root (or CAP_SYSLOG with dmesg_restrict); without it
the reader says why and yields nothing. Any path can stand in for /dev/kmsg (a file in the same record
format, `PRI,SEQ,USEC,FLAGS;MESSAGE` a line), which is how tests feed it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

ENV_KMSG = "MLTOP_KMSG"  # a path to read instead of /dev/kmsg; empty turns the kernel log off
DEFAULT_KMSG = "/dev/kmsg"

_XID = re.compile(r"NVRM: Xid \(PCI:([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})(?:\.\d)?\): (\d+)")

_SXID = re.compile(r"nvidia-(nvswitch\d+): SXid \(PCI:([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.\d)?)\): "
                   r"(\d+)(?:, ([A-Za-z-]+))?")


@dataclass(frozen=True)
class KernelSXid:
    switch: str  # "nvswitch3"
    pci: str  # the switch's PCI address as logged, e.g. "0000:05:00.0"
    sxid: int
    severity: str | None  # "Fatal" | "Non-fatal" (the word after the code), None when absent
    time: float  # unix time
    text: str  # the message, verbatim


@dataclass(frozen=True)
class KernelXid:
    pci: str  # "0000:0b:00" (domain:bus:device, lower case), as normalise_pci() writes it
    xid: int
    time: float  # unix time
    text: str  # the message, verbatim


def normalise_pci(bus_id: str | None) -> str | None:
    """"00000000:0B:00.0" (NVML) or "0000:0b:00" (kernel) -> "0000:0b:00"; None when it is not a PCI id."""
    if not bus_id:
        return None
    m = re.match(r"([0-9a-fA-F]+):([0-9a-fA-F]+):([0-9a-fA-F]+)", bus_id)
    if not m:
        return None
    domain, bus, device = (int(x, 16) for x in m.groups())
    return f"{domain & 0xffff:04x}:{bus:02x}:{device:02x}"


def parse_record(record: str, boot_time: float) -> KernelXid | KernelSXid | None:
    """One kmsg record -> a KernelXid or KernelSXid, or None when it is neither."""
    head, sep, message = record.partition(";")
    if not sep:
        return None
    m = _XID.search(message)
    if not m:
        s = _SXID.search(message) if "SXid" in message else None
        if s is None:
            return None
        return KernelSXid(switch=s.group(1), pci=s.group(2).lower(), sxid=int(s.group(3)), severity=s.group(4),
                          time=_record_time(head, boot_time), text=message.strip())
    when = _record_time(head, boot_time)
    pci = normalise_pci(f"{m.group(1)}:{m.group(2)}:{m.group(3)}")
    return KernelXid(pci=pci or "", xid=int(m.group(4)), time=when, text=message.strip())


def _record_time(head: str, boot_time: float) -> float:
    fields = head.split(",")
    try:
        usec = int(fields[2])
    except (IndexError, ValueError):
        usec = None
    return boot_time + usec / 1e6 if usec is not None else time.time()


class KmsgReader:
    """Reads new kernel log records at each poll(): all of them the first time, then only what is new."""

    def __init__(self, path: str | None = None):
        self.unavailable: str | None = None  # why earlier Xids cannot be read; None when they can (or are off)
        if path is None:
            path = os.environ.get(ENV_KMSG)
            if path is None:
                path = DEFAULT_KMSG if os.geteuid() == 0 else ""
                if not path:
                    self.unavailable = "Xids from before mltop started are in the kernel log, read only as root"
        self.path = path
        self._fd: int | None = None
        self._offset = 0  # for a regular file standing in for /dev/kmsg
        self._is_device = False
        # kmsg stamps records in microseconds of the monotonic clock since boot.
        self._boot_time = time.time() - time.monotonic()

    def poll(self) -> list[KernelXid | KernelSXid]:
        if not self.path or (self.unavailable and self._fd is None and self._offset < 0):
            return []
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
                self._is_device = not os.path.isfile(self.path)
                self.unavailable = None
            return self._read_device() if self._is_device else self._read_file()
        except OSError as err:
            self.unavailable = f"cannot read {self.path}: {err.strerror or err}"
            log.debug("kernel log unreadable: %s", self.unavailable)
            self._offset = -1  # do not retry every sweep
            self.close()
            return []

    def _read_device(self) -> list[KernelXid | KernelSXid]:
        out = []
        assert self._fd is not None
        while True:
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.EPIPE:  # overwritten before we read it: go on with the next
                    continue
                raise
            if not record:
                break
            xid = parse_record(record.decode("utf-8", errors="replace"), self._boot_time)
            if xid is not None:
                out.append(xid)
        return out

    def _read_file(self) -> list[KernelXid | KernelSXid]:
        assert self._fd is not None
        os.lseek(self._fd, self._offset, os.SEEK_SET)
        chunks = []
        while True:
            data = os.read(self._fd, 1 << 16)
            if not data:
                break
            chunks.append(data)
        text = b"".join(chunks)
        end = text.rfind(b"\n") + 1  # keep a half-written last line for the next poll
        self._offset += end
        out = []
        for line in text[:end].decode("utf-8", errors="replace").splitlines():
            xid = parse_record(line, self._boot_time)
            if xid is not None:
                out.append(xid)
        return out

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
