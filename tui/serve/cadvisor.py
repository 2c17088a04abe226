"""cAdvisor's container and machine families from the last snapshot, with cAdvisor's names, types and units
(its docs/storage/prometheus.md). A family this host's cgroups cannot give is absent, not zero."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mltop.probes.model import ContainerSample, ContainerStats, HostInfo

CONTAINER_LABELS = ["id", "image", "name"]  # cAdvisor's
NETWORK_LABELS = CONTAINER_LABELS + ["interface"]

# (name without _total, help, ContainerStats field): counters. prometheus-client writes the `_total` suffix.
STATS_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("container_cpu_user_seconds", "Cumulative user cpu time consumed in seconds.", "cpu_user_seconds"),
    ("container_cpu_system_seconds", "Cumulative system cpu time consumed in seconds.", "cpu_system_seconds"),
    ("container_cpu_cfs_periods", "Number of elapsed enforcement period intervals.", "cpu_cfs_periods"),
    ("container_cpu_cfs_throttled_periods", "Number of throttled period intervals.", "cpu_cfs_throttled_periods"),
    ("container_cpu_cfs_throttled_seconds", "Total time duration the container has been throttled, in seconds.",
     "cpu_cfs_throttled_seconds"),
)
# (name, help, ContainerStats field): gauges.
STATS_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("container_spec_cpu_quota", "CPU quota of the container (microseconds per period).", "cpu_quota_us"),
    ("container_spec_cpu_period", "CPU period of the container (microseconds).", "cpu_period_us"),
    ("container_spec_cpu_shares", "CPU share of the container.", "cpu_shares"),
    ("container_memory_usage_bytes", "Current memory usage, including all memory regardless of when it was "
     "accessed, in bytes.", "memory_usage_bytes"),
    ("container_memory_rss", "Size of RSS in bytes.", "memory_rss_bytes"),
    ("container_memory_cache", "Number of bytes of page cache memory.", "memory_cache_bytes"),
    ("container_memory_swap", "Container swap usage in bytes.", "memory_swap_bytes"),
    ("container_memory_mapped_file", "Size of memory mapped files in bytes.", "memory_mapped_file_bytes"),
    # cAdvisor types failcnt a counter, but a counter's samples must end in `_total` (promtool lints it): a gauge
    # keeps cAdvisor's name, so dashboards and rules written for it work; increase()/rate() work the same.
    ("container_memory_failcnt", "Number of memory usage hits limits.", "memory_failcnt"),
    ("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", "memory_max_usage_bytes"),
    ("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container, in bytes.",
     "memory_reservation_bytes"),
    ("container_processes", "Number of processes running inside the container.", "processes"),
    ("container_threads", "Number of threads running inside the container.", "threads"),
    ("container_file_descriptors", "Number of open file descriptors for the container.", "file_descriptors"),
    ("container_sockets", "Number of open sockets for the container.", "sockets"),
)
# (direction, NetInterface attribute prefix) x (name part, help part, attribute suffix)
NETWORK_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("bytes", "bytes {verb}", "bytes"),
    ("packets", "packets {verb}", "packets"),
    ("packets_dropped", "packets dropped while {verbing}", "dropped"),
    ("errors", "errors encountered while {verbing}", "errors"),
)
_DIRECTIONS = (("receive", "received", "receiving", "rx"), ("transmit", "transmitted", "transmitting", "tx"))


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


def container_families(containers: tuple[ContainerSample, ...], taken_at: float,
                       cgroup_id: Callable[[ContainerSample], str]) -> Iterator[Metric]:
    """Every cAdvisor container family the snapshot holds figures for; `cgroup_id` gives the `id` label."""
    def gauge(name, help_text):
        return GaugeMetricFamily(name, help_text, labels=CONTAINER_LABELS)

    def counter(name, help_text):
        return CounterMetricFamily(name, help_text, labels=CONTAINER_LABELS)

    cpu = counter("container_cpu_usage_seconds", "Cumulative cpu time consumed in seconds.")
    wss = gauge("container_memory_working_set_bytes", "Current working set (usage - inactive_file), in bytes.")
    usage = gauge("container_memory_usage_bytes", "Current memory usage, including all memory regardless of when "
                  "it was accessed, in bytes.")
    limit = gauge("container_spec_memory_limit_bytes", "Memory limit for the container, in bytes (0: none).")
    reads = counter("container_fs_reads_bytes", "Cumulative count of bytes read.")
    writes = counter("container_fs_writes_bytes", "Cumulative count of bytes written.")
    oom = counter("container_oom_events", "Count of out of memory events observed for the container.")
    started = gauge("container_start_time_seconds", "Start time of the container since unix epoch in seconds.")
    seen = gauge("container_last_seen", "Last time a container was seen by the exporter (unix time).")
    counters = [(counter(n, h), f) for n, h, f in STATS_COUNTERS]
    gauges = [(gauge(n, h), f) for n, h, f in STATS_GAUGES if n != "container_memory_usage_bytes"]
    network = {(direction, part): CounterMetricFamily(
        f"container_network_{direction}_{part}", f"Cumulative count of {help_text.format(verb=verb, verbing=verbing)}.",
        labels=NETWORK_LABELS)
        for direction, verb, verbing, _ in _DIRECTIONS for part, help_text, _ in NETWORK_COUNTERS}
    for c in containers:
        if not _measured(c):
            continue
        labels = [cgroup_id(c), c.image, c.name]
        s: ContainerStats | None = c.stats
        _add(cpu, labels, c.cpu_usage_seconds)
        _add(wss, labels, c.memory_bytes)
        if s is not None and s.memory_usage_bytes is not None:
            usage.add_metric(labels, float(s.memory_usage_bytes))
        elif c.memory_bytes is not None:  # no further figures (not read): working set plus page cache
            usage.add_metric(labels, float(c.memory_bytes + (c.memory_cache_bytes or 0)))
        limit.add_metric(labels, float(c.memory_limit_bytes or 0))
        _add(reads, labels, c.io_read_bytes)
        _add(writes, labels, c.io_write_bytes)
        _add(oom, labels, c.oom_kills)
        _add(started, labels, start_time(c))
        seen.add_metric(labels, taken_at)
        if s is None:
            continue
        for family, field in (*counters, *gauges):
            _add(family, labels, getattr(s, field))
        for nic in s.network:
            for direction, _, _, prefix in _DIRECTIONS:
                for part, _, suffix in NETWORK_COUNTERS:
                    network[(direction, part)].add_metric(labels + [nic.name],
                                                          float(getattr(nic, f"{prefix}_{suffix}")))
    if not any(s.stats is not None and s.stats.network for s in containers):
        # No per-interface figures (the sampler read none): the totals, as one interface-less series.
        for c in containers:
            if _measured(c):
                labels = [cgroup_id(c), c.image, c.name, ""]
                _add(network[("receive", "bytes")], labels, c.net_rx_bytes)
                _add(network[("transmit", "bytes")], labels, c.net_tx_bytes)
    families = [cpu, wss, usage, limit, reads, writes, oom, started, seen, *(f for f, _ in counters),
                *(f for f, _ in gauges), *network.values()]
    yield from (f for f in families if f.samples)  # a family no container has is absent, not zero


def machine_families(host: HostInfo) -> Iterator[Metric]:
    cores = GaugeMetricFamily("machine_cpu_cores", "Number of logical CPU cores.")
    cores.add_metric([], float(host.cpu_count))
    yield cores
    memory = GaugeMetricFamily("machine_memory_bytes", "Amount of memory installed on the machine, in bytes.")
    memory.add_metric([], float(host.memory_total_bytes))
    yield memory


def _add(family, labels: list[str], value) -> None:
    if value is not None:
        family.add_metric(labels, float(value))
