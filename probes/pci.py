"""The NVIDIA GPUs on PCI (<sysfs>/bus/pci/devices/), so a GPU that the driver lost is seen missing from NVML.

A GPU is a function of vendor 0x10de whose class is a display controller: 0x0300xx (VGA) or 0x0302xx (3D). An
NVSwitch (bridge 0x0680xx) and a GPU's HDMI audio function (0x0403xx) are no GPUs. For a GPU that NVML does
not list, the kernel log's last Xid naming its address is looked up (an Xid 79, fallen off the bus, is the
usual story); the log is opened only once such a GPU is seen, so a healthy host never reads it twice.
"""

from __future__ import annotations

import os

from .fabric_records import PciGpu
from .gpu_records import XidEvent
from .kmsg import KmsgReader, normalise_pci

NVIDIA_VENDOR = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")  # class code prefixes: VGA-compatible, 3D controller
MAX_FUNCTIONS = 4096  # PCI functions looked at (a large host has a few hundred)


def _attribute(directory: str, name: str) -> str | None:
    try:
        with open(os.path.join(directory, name), "rb") as f:
            return f.read(64).decode("ascii", errors="replace").strip()
    except OSError:
        return None


def nvidia_gpu_functions(sysfs_root: str) -> list[tuple[str, str | None, str, str | None]]:
    """(address, device id, class, bound driver) of each NVIDIA display/3D function on PCI, by address."""
    devices = os.path.join(sysfs_root, "bus", "pci", "devices")
    try:
        names = sorted(os.listdir(devices))[:MAX_FUNCTIONS]
    except OSError:
        return []
    out = []
    for address in names:
        directory = os.path.join(devices, address)
        if (_attribute(directory, "vendor") or "").lower() != NVIDIA_VENDOR:
            continue
        klass = (_attribute(directory, "class") or "").lower()
        if not klass.startswith(GPU_CLASSES):
            continue
        try:
            driver: str | None = os.path.basename(os.readlink(os.path.join(directory, "driver")))
        except OSError:
            driver = None
        out.append((address, _attribute(directory, "device"), klass, driver))
    return out


class PciGpuProbe:
    """The NVIDIA GPU functions at each sweep, each marked listed by NVML or not (PCI functions rarely change:
    the directory is listed again every `relist_every` sweeps, or at once when NVML's list changes)."""

    def __init__(self, sysfs_root: str = "/sys", kmsg_path: str | None = None, relist_every: int = 30):
        self.sysfs_root = sysfs_root
        self._kmsg_path = kmsg_path
        self._kmsg: KmsgReader | None = None
        self._last_xid: dict[str, XidEvent] = {}  # normalised PCI address -> the last Xid naming it
        self._relist_every = relist_every
        self._sweeps = 0
        self._functions: list[tuple[str, str | None, str, str | None]] | None = None
        self._nvml_seen: frozenset[str] | None = None

    def sample(self, nvml_bus_ids: list[str | None] | None) -> tuple[PciGpu, ...]:
        """`nvml_bus_ids`: the PCI bus ids of the GPUs NVML lists, None when NVML gave no list."""
        listed = None if nvml_bus_ids is None else frozenset(filter(None, map(normalise_pci, nvml_bus_ids)))
        if self._functions is None or self._sweeps % self._relist_every == 0 or listed != self._nvml_seen:
            self._functions = nvidia_gpu_functions(self.sysfs_root)
        self._sweeps += 1
        self._nvml_seen = listed
        out = []
        missing = False
        for address, device_id, klass, driver in self._functions:
            is_listed = None if listed is None else normalise_pci(address) in listed
            missing |= is_listed is False
            out.append(PciGpu(address, device_id, klass, driver, is_listed))
        if not missing:
            return tuple(out)
        self._read_kernel_log()
        return tuple(PciGpu(g.address, g.device_id, g.class_code, g.driver, g.listed_by_nvml,
                            self._last_xid.get(normalise_pci(g.address) or "")) if g.listed_by_nvml is False else g
                     for g in out)

    def _read_kernel_log(self) -> None:
        if self._kmsg is None:
            self._kmsg = KmsgReader(self._kmsg_path)
        for kx in self._kmsg.poll():
            self._last_xid[kx.pci] = XidEvent(kx.xid, kx.time, "/dev/kmsg", kx.pci, kx.text)

    def close(self) -> None:
        if self._kmsg is not None:
            self._kmsg.close()
