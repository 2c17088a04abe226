"""InfiniBand and RoCE ports from sysfs (<sysfs>/class/infiniband/): state, rate, link layer and counters, with
per-second rates from two readings.

The same files node_exporter's infiniband collector reads (prometheus/procfs sysfs/class_infiniband.go): a
port's `state` and `phys_state` are "<id>: <NAME>", its `rate` "400 Gb/sec (4X NDR)", its `counters/` one
decimal integer a file (`N/A (no PMA)` where the HCA has no performance agent: skipped).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from .fabric_records import DATA_COUNTERS, IbPort
from .openfiles import read_whole

CLASS_DIR = ("class", "infiniband")
MAX_DEVICES = 64
MAX_PORTS = 32
MAX_COUNTERS = 64  # files read per counters/ directory
VALUE_CAP = 256  # bytes of a sysfs attribute taken
# Counters are re-read every this many sweeps (state and rate at every one); 1: every sweep. Eight ports' 22
# counter files each cost 0.8 ms of CPU a sweep with the sweep's kept-open files (`python tests/bench_sweep.py
# --infiniband 8`, on a tree in a temporary directory), so every sweep reads them.
COUNTERS_EVERY = 1

Read = Callable[[str], bytes]


@dataclass(frozen=True)
class _Reading:
    at: float  # monotonic, when the counters were read
    counters: dict[str, int]


def _text(read: Read, path: str) -> str | None:
    try:
        return read(path)[:VALUE_CAP].decode("utf-8", errors="replace").strip()
    except OSError:
        return None


def parse_state(text: str | None) -> tuple[int | None, str | None]:
    """"4: ACTIVE" -> (4, "ACTIVE"); (None, None) when it is not that shape."""
    if not text:
        return None, None
    number, sep, name = text.partition(":")
    if not sep or not number.strip().isdigit():
        return None, None
    return int(number.strip()), name.strip() or None


def parse_rate(text: str | None) -> int | None:
    """"400 Gb/sec (4X NDR)" -> bytes per second (Gb/s x 125,000,000, as node_exporter counts it)."""
    if not text:
        return None
    head = text.split(" ", 1)[0]
    try:
        gbits = float(head)
    except ValueError:
        return None
    if not 0 <= gbits < 1e6:
        return None
    return int(gbits * 125_000_000)


def _counter(raw: str | None) -> int | None:
    if raw is None or not raw.isdigit():
        return None  # "N/A (no PMA)", unreadable
    return int(raw)


def _listdir(path: str, cap: int) -> list[str]:
    try:
        with os.scandir(path) as entries:
            names = []
            for entry in entries:
                names.append(entry.name)
                if len(names) >= cap:
                    break
            return sorted(names)
    except OSError:
        return []


def read_counters(read: Read, port_dir: str, names: list[str] | None = None) -> dict[str, int]:
    """counters/<name> -> value for the port's readable counters (`names`: the files, when already listed)."""
    directory = os.path.join(port_dir, "counters")
    out = {}
    for name in names if names is not None else _listdir(directory, MAX_COUNTERS):
        value = _counter(_text(read, os.path.join(directory, name)))
        if value is not None:
            out[name] = value
    return out


def counter_rates(new: _Reading, old: _Reading | None) -> dict[str, float]:
    """Each counter's rise per second between two readings (octets for the data counters); a counter that went
    down (reset, wrapped) gives no rate."""
    if old is None or new.at <= old.at:
        return {}
    seconds = new.at - old.at
    out = {}
    for name, value in new.counters.items():
        before = old.counters.get(name)
        if before is None or value < before:
            continue
        scale = 4 if name in DATA_COUNTERS else 1
        out[name] = (value - before) * scale / seconds
    return out


class InfinibandProbe:
    """Reads every HCA port at each sweep; keeps the previous counters for rates, and which ports were active."""

    def __init__(self, sysfs_root: str = "/sys", read: Read = read_whole, counters_every: int = COUNTERS_EVERY):
        self.class_dir = os.path.join(sysfs_root, *CLASS_DIR)
        self._read = read
        self._counters_every = max(1, counters_every)
        self._sweeps = 0
        self._previous: dict[tuple[str, int], _Reading] = {}
        self._counter_names: dict[tuple[str, int], list[str]] = {}
        self._seen_active: set[tuple[str, int]] = set()
        self._rates: dict[tuple[str, int], dict[str, float]] = {}

    def sample(self, read: Read | None = None) -> tuple[IbPort, ...]:
        """Every port of every HCA; () on a host without any (or without the sysfs class)."""
        read = read or self._read
        self._sweeps += 1
        with_counters = self._sweeps == 1 or self._sweeps % self._counters_every == 0
        out = []
        for device in _listdir(self.class_dir, MAX_DEVICES):
            device_dir = os.path.join(self.class_dir, device)
            info = {name: _text(read, os.path.join(device_dir, name)) for name in ("board_id", "fw_ver", "hca_type")}
            for port_name in _listdir(os.path.join(device_dir, "ports"), MAX_PORTS):
                if not port_name.isdigit():
                    continue
                out.append(self._port(read, device, int(port_name), os.path.join(device_dir, "ports", port_name),
                                      info, with_counters))
        return tuple(out)

    def _port(self, read: Read, device: str, port: int, port_dir: str, info: dict[str, str | None],
              with_counters: bool) -> IbPort:
        key = (device, port)
        state_id, state = parse_state(_text(read, os.path.join(port_dir, "state")))
        phys_id, phys = parse_state(_text(read, os.path.join(port_dir, "phys_state")))
        rate = _text(read, os.path.join(port_dir, "rate"))
        if state_id == 4:
            self._seen_active.add(key)
        previous = self._previous.get(key)
        if with_counters or previous is None:
            names = self._counter_names.get(key)
            if names is None:
                names = self._counter_names[key] = _listdir(os.path.join(port_dir, "counters"), MAX_COUNTERS)
            reading = _Reading(time.monotonic(), read_counters(read, port_dir, names))
            self._rates[key] = counter_rates(reading, previous)
            self._previous[key] = previous = reading
        counters, rates = previous.counters, self._rates.get(key, {})  # (between readings: the last one's)
        return IbPort(
            device=device, port=port, state=state, state_id=state_id, phys_state=phys, phys_state_id=phys_id,
            rate=rate, rate_bytes_per_s=parse_rate(rate),
            link_layer=_text(read, os.path.join(port_dir, "link_layer")),
            counters=counters, counter_rates=rates, seen_active=key in self._seen_active,
            board_id=info["board_id"], firmware_version=info["fw_ver"], hca_type=info["hca_type"],
        )
