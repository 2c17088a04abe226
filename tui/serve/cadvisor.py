"""cAdvisor's container and machine families from the last snapshot, with cAdvisor's names, types and units
(its docs/storage/prometheus.md). A family this host's cgroups cannot give is absent, not zero."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from mltop.probes.model import ContainerSample, HostInfo

CONTAINER_LABELS = ["id", "image", "name"]  # cAdvisor's

Getter = Callable[[ContainerSample], "float | int | None"]


def _stat(field: str) -> Getter:
    return lambda c: getattr(c.stats, field) if c.stats is not None else None


def _usage(c: ContainerSample) -> float | None:
    """The cgroup's own usage; without the further figures (not read), working set plus page cache."""
    if c.stats is not None and c.stats.memory_usage_bytes is not None:
        return c.stats.memory_usage_bytes
    return c.memory_bytes + (c.memory_cache_bytes or 0) if c.memory_bytes is not None else None


# (sample name, type, help, ContainerSample -> value or None), in exposition order. Counters carry `_total`.
CONTAINER_FAMILIES: tuple[tuple[str, str, str, Getter], ...] = (
    ("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds.",
     lambda c: c.cpu_usage_seconds),
    ("container_cpu_user_seconds_total", "counter", "Cumulative user cpu time consumed in seconds.",
     _stat("cpu_user_seconds")),
    ("container_cpu_system_seconds_total", "counter", "Cumulative system cpu time consumed in seconds.",
     _stat("cpu_system_seconds")),
    ("container_cpu_cfs_periods_total", "counter", "Number of elapsed enforcement period intervals.",
     _stat("cpu_cfs_periods")),
    ("container_cpu_cfs_throttled_periods_total", "counter", "Number of throttled period intervals.",
     _stat("cpu_cfs_throttled_periods")),
    ("container_cpu_cfs_throttled_seconds_total", "counter",
     "Total time duration the container has been throttled, in seconds.", _stat("cpu_cfs_throttled_seconds")),
    ("container_spec_cpu_quota", "gauge", "CPU quota of the container (microseconds per period).",
     _stat("cpu_quota_us")),
    ("container_spec_cpu_period", "gauge", "CPU period of the container (microseconds).", _stat("cpu_period_us")),
    ("container_spec_cpu_shares", "gauge", "CPU share of the container.", _stat("cpu_shares")),
    ("container_memory_working_set_bytes", "gauge", "Current working set (usage - inactive_file), in bytes.",
     lambda c: c.memory_bytes),
    ("container_memory_usage_bytes", "gauge", "Current memory usage, including all memory regardless of when it "
     "was accessed, in bytes.", _usage),
    ("container_memory_rss", "gauge", "Size of RSS in bytes.", _stat("memory_rss_bytes")),
    ("container_memory_cache", "gauge", "Number of bytes of page cache memory.", _stat("memory_cache_bytes")),
    ("container_memory_swap", "gauge", "Container swap usage in bytes.", _stat("memory_swap_bytes")),
    ("container_memory_mapped_file", "gauge", "Size of memory mapped files in bytes.",
     _stat("memory_mapped_file_bytes")),
    # cAdvisor types failcnt a counter, but a counter's samples must end in `_total` (promtool lints it): a gauge
    # keeps cAdvisor's name, so dashboards and rules written for it work; increase()/rate() work the same.
    ("container_memory_failcnt", "gauge", "Number of memory usage hits limits.", _stat("memory_failcnt")),
    ("container_memory_max_usage_bytes", "gauge", "Maximum memory usage recorded in bytes.",
     _stat("memory_max_usage_bytes")),
    ("container_spec_memory_limit_bytes", "gauge", "Memory limit for the container, in bytes (0: none).",
     lambda c: c.memory_limit_bytes or 0),
    ("container_spec_memory_reservation_limit_bytes", "gauge", "Memory reservation limit for the container, in "
     "bytes.", _stat("memory_reservation_bytes")),
    ("container_oom_events_total", "counter", "Count of out of memory events observed for the container.",
     lambda c: c.oom_kills),
    ("container_fs_reads_bytes_total", "counter", "Cumulative count of bytes read.", lambda c: c.io_read_bytes),
    ("container_fs_writes_bytes_total", "counter", "Cumulative count of bytes written.", lambda c: c.io_write_bytes),
    ("container_processes", "gauge", "Number of processes running inside the container.", _stat("processes")),
    ("container_threads", "gauge", "Number of threads running inside the container.", _stat("threads")),
    ("container_file_descriptors", "gauge", "Number of open file descriptors for the container.",
     _stat("file_descriptors")),
    ("container_sockets", "gauge", "Number of open sockets for the container.", _stat("sockets")),
)
# (sample name, help, NetInterface attribute), all counters, label `interface` added.
NETWORK_FAMILIES: tuple[tuple[str, str, str], ...] = tuple(
    (f"container_network_{direction}_{part}_total", f"Cumulative count of {what.format(verb, verbing)}.",
     f"{prefix}_{suffix}")
    for direction, verb, verbing, prefix in (("receive", "received", "receiving", "rx"),
                                             ("transmit", "transmitted", "transmitting", "tx"))
    for part, what, suffix in (("bytes", "bytes {0}", "bytes"), ("packets", "packets {0}", "packets"),
                               ("packets_dropped", "packets dropped while {1}", "dropped"),
                               ("errors", "errors encountered while {1}", "errors"))
)


def _measured(c: ContainerSample) -> bool:
    """Running and measured here (not a remote engine's, nor another PID namespace's)."""
    return c.memory_bytes is not None or c.cpu_usage_seconds is not None


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def start_time(c: ContainerSample) -> float | None:
    """State.StartedAt as unix time (the engine writes RFC 3339 with nanoseconds); None when not started."""
    match = _RFC3339.match(c.config.started_at or "")
    if match is None or match.group(1).startswith("0001-"):
        return None
    whole, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        return datetime.fromisoformat(whole + zone).timestamp() + float("0." + (fraction or "0"))
    except ValueError:
        return None


def container_text(containers: tuple[ContainerSample, ...], taken_at: float,
                   cgroup_id: Callable[[ContainerSample], str]) -> str:
    """Every cAdvisor container family the snapshot holds figures for, as exposition text; `cgroup_id` gives the
    `id` label. Written here rather than through prometheus-client's families: 200 containers make ~7,000
    samples, and formatting each container's labels once keeps a render (and so a scrape that finds the text
    stale) within a few milliseconds."""
    rows = [(f'id="{_escape(cgroup_id(c))}",image="{_escape(c.image)}",name="{_escape(c.name)}"' + _pod(c), c)
            for c in containers if _measured(c)]
    out: list[str] = []
    for name, kind, help_text, value_of in (*CONTAINER_FAMILIES,
                                            ("container_start_time_seconds", "gauge",
                                             "Start time of the container since unix epoch in seconds.", start_time),
                                            ("container_last_seen", "gauge",
                                             "Last time a container was seen by the exporter (unix time).",
                                             lambda c: taken_at)):
        lines = []
        for labels, c in rows:
            value = value_of(c)
            if value is not None:
                lines.append(f"{name}{{{labels}}} {_number(value)}\n")
        if lines:  # a family no container has is absent, not zero
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            out.extend(lines)
    nics = [(labels, nic) for labels, c in rows if c.stats is not None for nic in c.stats.network]
    if nics:
        for name, help_text, attribute in NETWORK_FAMILIES:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
            out.extend(f'{name}{{{labels},interface="{_escape(nic.name)}"}} {_number(getattr(nic, attribute))}\n'
                       for labels, nic in nics)
    else:  # no per-interface figures (not read): the namespace's totals, without an interface label
        for name, value_of in (("container_network_receive_bytes_total", lambda c: c.net_rx_bytes),
                               ("container_network_transmit_bytes_total", lambda c: c.net_tx_bytes)):
            lines = [f"{name}{{{labels}}} {_number(value_of(c))}\n" for labels, c in rows
                     if value_of(c) is not None]
            if lines:
                help_text = next(h for n, h, _ in NETWORK_FAMILIES if n == name)
                out.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
                out.extend(lines)
    return "".join(out)


def _pod(c: ContainerSample) -> str:
    """The kubelet's cAdvisor labels of a pod container (namespace, pod, container); nothing outside pods."""
    k = c.kubernetes
    if k is None:
        return ""
    return f',namespace="{_escape(k.namespace)}",pod="{_escape(k.pod)}",container="{_escape(k.container)}"'


def _escape(value: str) -> str:
    """A label value as the text format wants it (backslash, newline and double quote escaped)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _number(value: float | int) -> str:
    return floatToGoString(value)


def machine_families(host: HostInfo) -> Iterator[Metric]:
    cores = GaugeMetricFamily("machine_cpu_cores", "Number of logical CPU cores.")
    cores.add_metric([], float(host.cpu_count))
    yield cores
    memory = GaugeMetricFamily("machine_memory_bytes", "Amount of memory installed on the machine, in bytes.")
    memory.add_metric([], float(host.memory_total_bytes))
    yield memory
