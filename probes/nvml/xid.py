"""Xid errors from NVML's event set and the kernel log, matched to GPUs by uuid or PCI id."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from ..kmsg import KernelSXid, KmsgReader, normalise_pci
from ..model import GpuSample, SXidEvent, XidEvent
from .health import text

XID_EVENT_TYPE = 0x8  # nvmlEventTypeXidCriticalError
XID_KEEP = 256  # Xid events kept per probe (oldest dropped)
XID_DEDUP_S = 5.0  # a kernel-log Xid this close to an NVML event of the same code and GPU is the same one


class XidEvents:
    """The Xid events seen so far; register() and free() follow the NVML session, close() the probe."""

    def __init__(self, call: Callable[..., Any], kmsg_path: str | None) -> None:
        self._call = call  # the probe's timed, abandonable NVML call
        self._kmsg = KmsgReader(kmsg_path)
        self._event_set: Any = None  # NVML event set registered for Xid events; None when unsupported
        self._xids: list[tuple[str | None, str | None, XidEvent]] = []  # (uuid, pci, event), oldest first
        self.sxids: tuple[SXidEvent, ...] = ()  # NVSwitch errors from the kernel log, oldest first

    def register(self, pynvml: Any) -> None:
        """Ask NVML for Xid events on every GPU; without them, only the kernel log tells of Xids."""
        try:
            event_set = self._call(pynvml.nvmlEventSetCreate)
            for index in range(self._call(pynvml.nvmlDeviceGetCount)):
                handle = self._call(pynvml.nvmlDeviceGetHandleByIndex, index)
                try:
                    self._call(pynvml.nvmlDeviceRegisterEvents, handle, XID_EVENT_TYPE, event_set)
                except pynvml.NVMLError:
                    continue  # this GPU cannot report Xid events (e.g. not supported on it)
            self._event_set = event_set
        except pynvml.NVMLError:
            self._event_set = None

    def free(self, pynvml: Any) -> None:
        """Before the NVML session ends."""
        if self._event_set is not None:
            try:
                pynvml.nvmlEventSetFree(self._event_set)
            except Exception:
                pass
            self._event_set = None

    def close(self) -> None:
        self._kmsg.close()

    def attach(self, pynvml: Any, gpus: list[GpuSample]) -> list[GpuSample]:
        """The GPUs with the Xid events seen so far (NVML events and kernel log), matched by uuid or PCI id."""
        self._drain(pynvml)
        for kx in self._kmsg.poll():
            if isinstance(kx, KernelSXid):
                self.sxids = (*self.sxids, SXidEvent(kx.sxid, kx.time, kx.switch, kx.pci, kx.severity,
                                                     kx.text))[-XID_KEEP:]
                continue
            duplicate = any(e.xid == kx.xid and abs(e.time - kx.time) < XID_DEDUP_S and e.source == "NVML events"
                            for _, _, e in self._xids)
            if not duplicate:
                self._remember(None, kx.pci, XidEvent(kx.xid, kx.time, "/dev/kmsg", kx.pci, kx.text))
        missing = self._kmsg.unavailable
        if not self._xids and not missing:
            return gpus
        out = []
        for g in gpus:
            pci = normalise_pci(g.pci_bus_id)
            mine = tuple(sorted((e for uuid, p, e in self._xids if (uuid and uuid == g.uuid) or (p and p == pci)),
                                key=lambda e: e.time))
            changes: dict[str, Any] = {"xid_events": mine} if mine else {}
            if missing:
                changes["unavailable"] = {**g.unavailable, "xid_events": missing}
            out.append(dataclasses.replace(g, **changes) if changes else g)
        return out

    def _drain(self, pynvml: Any) -> None:
        if self._event_set is None:
            return
        for _ in range(64):  # bounded: a storm of events must not hold the sweep
            try:
                data = self._call(pynvml.nvmlEventSetWait_v2, self._event_set, 0)
            except pynvml.NVMLError:
                return  # TIMEOUT: nothing (more) queued
            if not (data.eventType & XID_EVENT_TYPE):
                continue
            try:
                uuid = text(self._call(pynvml.nvmlDeviceGetUUID, data.device))
            except pynvml.NVMLError:
                uuid = None
            self._remember(uuid, None, XidEvent(int(data.eventData), time.time(), "NVML events"))

    def _remember(self, uuid: str | None, pci: str | None, event: XidEvent) -> None:
        self._xids.append((uuid, pci, event))
        del self._xids[:-XID_KEEP]
