"""I/O checks: read throttles, reads stalled under pressure, the timed direct read."""

from __future__ import annotations

from mltop.probes.model import ContainerSample

from ..findings import INFO, WARNING, Finding, evidence
from .base import CheckContext, CheckSkipped, _bytes, _cfg_source, by_runtime, container_check

# Kubernetes sets no read throttle of its own: one on a pod's cgroup was written on the node.
_POD_THROTTLE = ("Kubernetes sets no read throttle itself: something on the node wrote it into the pod's cgroup "
                 "(the file in the evidence); remove it there (`rbps=max riops=max` for that device in io.max) or "
                 "in the tool that set it")


# --------------------------------------------------------------------------- I/O


@container_check("io")
def check_io(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """io.slow: read throttles (config or cgroup), or slow reads while I/O pressure is high."""
    t = ctx.thresholds
    out: list[Finding] = []
    rate = c.io_read_bytes_per_s
    rate_ev = []
    if rate is not None:
        interval_s = c.interval_s or ctx.snapshot.interval_s
        over = f"over {interval_s:.1f} s" if interval_s else "between 2 sweeps"
        rate_ev.append(evidence(f"reading {rate / 1e6:.2f} MB/s", f"cgroup I/O counters (blkio/io.stat), {over}"))

    # A throttle only slows reads that reach it: below it (or with no reads to judge) it is a note, not a warning.
    ev: list[str] = []
    limits_bps: list[int] = []
    for key in ("BlkioDeviceReadBps", "BlkioDeviceReadIOps"):
        for entry in c.config.blkio_throttles.get(key, ()):
            unit = "bytes/s" if key.endswith("Bps") else "IO/s"
            ev.append(evidence(f"HostConfig.{key} {entry.get('Path')} {entry.get('Rate')} {unit}", _cfg_source(c)))
            if key.endswith("Bps") and str(entry.get("Rate", "")).isdigit():
                limits_bps.append(int(entry["Rate"]))
    if c.running:
        for t_ in ctx.facts(c).read_throttles:
            ev.append(evidence(f"{t_.device} {t_.kind}={t_.value}", t_.source))
            if t_.kind == "rbps" and t_.value.isdigit():
                limits_bps.append(int(t_.value))
    if ev:
        lowest = min(limits_bps) if limits_bps else None
        reached = c.running and rate is not None and lowest is not None and \
            rate >= t.io_throttle_reached * lowest
        if reached:
            ev.append(evidence(f"{rate:.0f} bytes/s >= {t.io_throttle_reached} x {lowest} bytes/s "
                               f"({t.named('io_throttle_reached')})", "mltop doctor"))
            out.append(Finding(
                "io.slow", WARNING, c.name, "Reads are held at the container's read throttle", tuple(ev + rate_ev),
                by_runtime(c, "Remove the read throttle (`--device-read-bps`/`--device-read-iops`, io.max) or raise it",
                           lambda k: _POD_THROTTLE),
            ))
        else:
            why = ("no read rate yet" if rate is None else
                   f"reading {rate / 1e6:.2f} MB/s, below {t.io_throttle_reached} x the limit "
                   f"({t.named('io_throttle_reached')})" if lowest is not None else "an I/O-per-second limit")
            out.append(Finding(
                "io.throttle_set", INFO, c.name, f"A read throttle is set ({why})", tuple(ev + rate_ev),
                by_runtime(c, "Nothing to do while reads stay below it; remove it (`--device-read-bps`, io.max) if "
                              "they grow", lambda k: "Nothing to do while reads stay below it. " + _POD_THROTTLE),
            ))

    if c.running and not ev and rate is not None and rate > 0 and rate / 1e6 < t.io_min_read_mb_s:
        pressure_ev = []
        if c.pressure is not None and c.pressure.io is not None:
            if c.pressure.io >= t.io_psi_some_avg10:
                pressure_ev.append(evidence(f"io some avg10 {c.pressure.io:.1f}% >= {t.named('io_psi_some_avg10')}",
                                            f"{c.cgroup_path}/io.pressure"))
        else:
            host = ctx.snapshot.host
            host_psi = host.pressure.get("io")
            if host_psi is not None and host_psi >= t.io_psi_some_avg10:
                pressure_ev.append(evidence(f"host io some avg10 {host_psi:.1f}% >= {t.named('io_psi_some_avg10')} "
                                            "(host-wide: no per-cgroup PSI here)", "/proc/pressure/io"))
            if host.iowait_percent is not None and host.iowait_percent >= t.host_iowait_percent:
                pressure_ev.append(evidence(f"host iowait {host.iowait_percent:.1f}% >= "
                                            f"{t.named('host_iowait_percent')}", "/proc/stat, 2 sweeps"))
        if pressure_ev:
            out.append(Finding(
                "io.slow", WARNING, c.name,
                f"Reads stall under I/O pressure ({rate / 1e6:.1f} MB/s)",
                tuple(rate_ev + [evidence(f"{rate / 1e6:.2f} < {t.named('io_min_read_mb_s')}", "mltop doctor")]
                      + pressure_ev),
                "Move the data to a volume on local NVMe, stage shards locally, use sharded formats "
                "(WebDataset/TFRecord), add loader workers",
            ))
    return out


@container_check("io.read_test")
def check_read_test(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """io.slow / io.read_test from the `--io-test` timed direct read, when one ran in this container."""
    r = ctx.read_tests.get(c.id)
    if r is None:
        return []
    t = ctx.thresholds
    where = by_runtime(c, f"docker exec {c.name} {' '.join(r.command)}",
                       lambda k: f"CRI ExecSync in {k.name}: {' '.join(r.command)}")
    if r.timed_out:
        return [Finding(
            "io.slow", WARNING, c.name, f"A direct read of {r.path} did not finish within {r.seconds:.0f} s",
            (evidence(r.error or "timed out", where),),
            "Check the storage behind this path (network filesystem, throttles); stage the data on local NVMe",
        )]
    if not r.ok:
        raise CheckSkipped(f"read test of {r.path} in {c.name} failed: {r.error}: {r.output!r}")
    rate = f"{r.mb_per_s:.1f} MB/s" if r.mb_per_s is not None else "an unknown rate"
    ev = [evidence(f"read {_bytes(r.bytes_read or 0)} in {r.seconds:.3f} s = {rate} "
                   f"({'O_DIRECT' if r.direct else 'page cache: O_DIRECT refused'}; timing: {r.timing_source})",
                   where),
          evidence(f"dd output {r.output!r}", where)]
    if not r.conclusive:
        ev.append(evidence(f"too small a sample to judge ({_bytes(r.bytes_read or 0)} in {r.seconds:.3f} s): "
                           "exec start-up dominates; read a file of 64 MiB or more", "mltop doctor"))
    elif r.mb_per_s is not None and r.mb_per_s < t.io_min_read_mb_s:
        ev.append(evidence(f"{r.mb_per_s:.1f} < {t.named('io_min_read_mb_s')}", "mltop doctor"))
        return [Finding(
            "io.slow", WARNING, c.name, f"Reading {r.path} runs at {r.mb_per_s:.1f} MB/s", tuple(ev),
            "Move the data to a volume on local NVMe, stage shards locally, remove read throttles",
        )]
    fix = "Nothing to fix" if r.conclusive else "Run --io-test on a file of 64 MiB or more"
    return [Finding("io.read_test", INFO, c.name, f"Reading {r.path} runs at {rate}", tuple(ev), fix)]


