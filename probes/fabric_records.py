"""The snapshot's records of the host's fabric as sysfs shows it: InfiniBand/RoCE ports and the NVIDIA GPUs on PCI.
Part of the snapshot (probes/model.py's Snapshot.infiniband and .pci_gpus), kept in their own file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .gpu_records import XidEvent

# counters/ files that hold data in 4-byte words (one per lane of a 4X link), not octets: node_exporter and
# the kernel's ibstat tools multiply them by 4
DATA_COUNTERS = ("port_rcv_data", "port_xmit_data")


@dataclass(frozen=True)
class IbPort:
    """One port of an InfiniBand HCA (or a RoCE NIC: link_layer "Ethernet"), as
    <sysfs>/class/infiniband/<device>/ports/<port>/ says at one sweep."""

    device: str  # "mlx5_0"
    port: int
    state: str | None  # "ACTIVE", "DOWN", "INIT", "ARMED" (the name after "4: ")
    state_id: int | None  # 4 for ACTIVE
    phys_state: str | None  # "LinkUp", "Polling", "Disabled"
    phys_state_id: int | None  # 5 for LinkUp
    rate: str | None  # verbatim, e.g. "400 Gb/sec (4X NDR)"
    rate_bytes_per_s: int | None  # the signalling rate: Gb/s x 125,000,000 (node_exporter's)
    link_layer: str | None  # "InfiniBand" | "Ethernet"
    # counters/<name> -> the value as sysfs writes it (data counters in 4-byte words: see rx_bytes); empty when
    # not read (unreadable, or between two counter readings)
    counters: Mapping[str, int] = field(default_factory=dict)
    # counters/<name> -> its rise per second between this reading and the one before (data counters in octets)
    counter_rates: Mapping[str, float] = field(default_factory=dict)
    # counters/<name> -> how much it rose between the last two counter readings (those that rose), and the seconds
    # between them (None after one reading): the window the doctor judges, kept until the next reading
    counter_rises: Mapping[str, int] = field(default_factory=dict)
    rise_window_s: float | None = None
    # this process saw the port ACTIVE at an earlier reading (or at this one)
    seen_active: bool = False
    board_id: str | None = None  # of the HCA (<device>/board_id, fw_ver, hca_type)
    firmware_version: str | None = None
    hca_type: str | None = None

    @property
    def active(self) -> bool:
        return self.state_id == 4

    @property
    def name(self) -> str:
        return f"{self.device} port {self.port}"

    def counter_bytes(self, name: str) -> int | None:
        """A counter in its unit: octets for the data counters, the count for the rest."""
        value = self.counters.get(name)
        if value is None:
            return None
        return value * 4 if name in DATA_COUNTERS else value


@dataclass(frozen=True)
class PciGpu:
    """An NVIDIA display or 3D controller function on PCI (<sysfs>/bus/pci/devices/<address>/), listed by NVML or
    not: a GPU the driver lost (fallen off the bus, failed to initialise) stays on PCI."""

    address: str  # "0000:0b:00.0", as sysfs names it
    device_id: str | None  # "0x2330"
    class_code: str  # "0x030200"
    driver: str | None  # the bound driver's name ("nvidia", "vfio-pci"), None when none is bound
    listed_by_nvml: bool | None  # None: NVML gave no list to compare with
    last_xid: XidEvent | None = None  # the kernel log's last Xid for it, read only for a GPU NVML does not list
