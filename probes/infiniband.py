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
# Counters, the link layer and the HCA's identity are re-read every this many seconds (state, phys_state and rate
# at every sweep), the first two readings one sweep apart so that a one-shot doctor has a window at once.
# Eight ports' 22 counter files each cost 0.8 ms of CPU a reading with the sweep's kept-open files
# (`python tests/bench_sweep.py --infiniband 8`, a tree in a temporary directory): about 0.1 ms a sweep at 1 s.
COUNTERS_INTERVAL_S = 10.0

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


def counter_rises(new: _Reading, old: _Reading | None) -> dict[str, int]:
    """Each counter's rise between two readings, for those that rose (a reset or a wrap is no rise)."""
    if old is None:
        return {}
    return {name: value - old.counters[name] for name, value in new.counters.items()
            if name in old.counters and value > old.counters[name]}


@dataclass(frozen=True)
class _PortReading:
    """What a counters reading of one port gives, kept until the next one."""

    reading: _Reading
    rates: dict[str, float]
    rises: dict[str, int]
    window_s: float | None  # between this reading and the one before
    link_layer: str | None


class InfinibandProbe:
    """Reads every HCA port's state at each sweep and its counters every `counters_interval_s`; keeps the last two
    counter readings for rates and rises, and which ports were active."""

    def __init__(self, sysfs_root: str = "/sys", read: Read = read_whole,
                 counters_interval_s: float = COUNTERS_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.class_dir = os.path.join(sysfs_root, *CLASS_DIR)
        self._read = read
        self.counters_interval_s = counters_interval_s
        self._clock = clock
        self._readings = 0
        self._last_read: float | None = None
        self._ports: dict[tuple[str, int], _PortReading] = {}
        self._counter_names: dict[tuple[str, int], list[str]] = {}
        self._devices: dict[str, dict[str, str | None]] = {}
        self._seen_active: set[tuple[str, int]] = set()

    def sample(self, read: Read | None = None) -> tuple[IbPort, ...]:
        """Every port of every HCA; () on a host without any (or without the sysfs class)."""
        read = read or self._read
        now = self._clock()
        with_counters = (self._readings < 2 or self._last_read is None
                         or now - self._last_read >= self.counters_interval_s)
        if with_counters:
            self._readings += 1
            self._last_read = now
        out = []
        for device in _listdir(self.class_dir, MAX_DEVICES):
            device_dir = os.path.join(self.class_dir, device)
            if with_counters or device not in self._devices:
                self._devices[device] = {name: _text(read, os.path.join(device_dir, name))
                                         for name in ("board_id", "fw_ver", "hca_type")}
            for port_name in _listdir(os.path.join(device_dir, "ports"), MAX_PORTS):
                if not port_name.isdigit():
                    continue
                out.append(self._port(read, device, int(port_name), os.path.join(device_dir, "ports", port_name),
                                      self._devices[device], with_counters))
        return tuple(out)

    def _port(self, read: Read, device: str, port: int, port_dir: str, info: dict[str, str | None],
              with_counters: bool) -> IbPort:
        key = (device, port)
        state_id, state = parse_state(_text(read, os.path.join(port_dir, "state")))
        phys_id, phys = parse_state(_text(read, os.path.join(port_dir, "phys_state")))
        rate = _text(read, os.path.join(port_dir, "rate"))
        if state_id == 4:
            self._seen_active.add(key)
        kept = self._ports.get(key)
        if with_counters or kept is None:
            names = self._counter_names.get(key)
            if names is None:
                names = self._counter_names[key] = _listdir(os.path.join(port_dir, "counters"), MAX_COUNTERS)
            reading = _Reading(self._clock(), read_counters(read, port_dir, names))
            before = kept.reading if kept is not None else None
            kept = self._ports[key] = _PortReading(
                reading, counter_rates(reading, before), counter_rises(reading, before),
                reading.at - before.at if before is not None else None,
                _text(read, os.path.join(port_dir, "link_layer")))
        return IbPort(  # between readings: the last one's counters, rates and rises
            device=device, port=port, state=state, state_id=state_id, phys_state=phys, phys_state_id=phys_id,
            rate=rate, rate_bytes_per_s=parse_rate(rate), link_layer=kept.link_layer,
            counters=kept.reading.counters, counter_rates=kept.rates, counter_rises=kept.rises,
            rise_window_s=kept.window_s, seen_active=key in self._seen_active,
            board_id=info["board_id"], firmware_version=info["fw_ver"], hca_type=info["hca_type"],
        )
