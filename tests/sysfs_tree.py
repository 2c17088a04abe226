"""A sysfs tree written under a temporary root (--sysfs-root): InfiniBand ports and PCI functions, as the
kernel lays them out."""

from __future__ import annotations

from pathlib import Path

IB_COUNTERS = {  # a healthy, busy port's counters/ (the data counters in 4-byte words)
    "symbol_error": 0, "link_downed": 1, "link_error_recovery": 0, "port_rcv_errors": 0, "port_xmit_discards": 0,
    "local_link_integrity_errors": 0, "excessive_buffer_overrun_errors": 0, "port_rcv_remote_physical_errors": 0,
    "port_rcv_switch_relay_errors": 0, "port_rcv_constraint_errors": 0, "port_xmit_constraint_errors": 0,
    "VL15_dropped": 0, "port_rcv_data": 123_456_789, "port_xmit_data": 987_654_321, "port_rcv_packets": 5_000_000,
    "port_xmit_packets": 6_000_000, "port_xmit_wait": 42, "unicast_rcv_packets": 4_999_000,
    "unicast_xmit_packets": 5_999_000, "multicast_rcv_packets": 1000, "multicast_xmit_packets": 1000,
    "port_rcv_discards": 0,
}


def write_ib_port(root: Path, device: str, port: int, *, state: str = "4: ACTIVE", phys: str = "5: LinkUp",
                  rate: str = "400 Gb/sec (4X NDR)", link_layer: str = "InfiniBand",
                  counters: dict[str, int | str] | None = None) -> Path:
    hca = root / "class" / "infiniband" / device
    (hca / "ports" / str(port) / "counters").mkdir(parents=True, exist_ok=True)
    for name, value in (("board_id", "MT_0000000838"), ("fw_ver", "28.39.1002"), ("hca_type", "MT4129")):
        (hca / name).write_text(value + "\n")
    port_dir = hca / "ports" / str(port)
    for name, value in (("state", state), ("phys_state", phys), ("rate", rate), ("link_layer", link_layer)):
        (port_dir / name).write_text(value + "\n")
    set_counters(root, device, port, {**IB_COUNTERS, **(counters or {})})
    return port_dir


def set_counters(root: Path, device: str, port: int, counters: dict[str, int | str]) -> None:
    """Rewrite counters in place (the same inodes, as the kernel's attributes stay the same files)."""
    directory = root / "class" / "infiniband" / device / "ports" / str(port) / "counters"
    for name, value in counters.items():
        with open(directory / name, "w") as f:
            f.write(f"{value}\n")


def set_state(root: Path, device: str, port: int, state: str, phys: str) -> None:
    port_dir = root / "class" / "infiniband" / device / "ports" / str(port)
    with open(port_dir / "state", "w") as f:
        f.write(state + "\n")
    with open(port_dir / "phys_state", "w") as f:
        f.write(phys + "\n")


def write_pci(root: Path, address: str, *, vendor: str = "0x10de", klass: str = "0x030200",
              device: str = "0x2330", driver: str | None = "nvidia") -> None:
    d = root / "bus" / "pci" / "devices" / address
    d.mkdir(parents=True, exist_ok=True)
    for name, value in (("vendor", vendor), ("class", klass), ("device", device)):
        (d / name).write_text(value + "\n")
    if driver:
        drivers = root / "bus" / "pci" / "drivers" / driver
        drivers.mkdir(parents=True, exist_ok=True)
        (d / "driver").symlink_to(drivers)
