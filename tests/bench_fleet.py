"""Benchmark: the fleet view against a synthetic fleet in a real Prometheus. A script that prints figures, not a test.

    python tests/bench_fleet.py                       # 100 hosts x 8 GPUs x 50 containers, 60 s of refreshes
    python tests/bench_fleet.py --hosts 20 --duration 20

Writes the series `mltop serve` would expose for every host (up, mltop_host_info, DCGM_* per GPU with GPM,
container_last_seen and GPU use per container, findings) as OpenMetrics samples every 15 s over the last
--window seconds, backfills them with `promtool tsdb create-blocks-from openmetrics`, starts Prometheus on that
TSDB (127.0.0.1) and measures, in this process:
- the first read (what the view's first frame waits for), and the first frame of the Textual view, headless;
- the CPU the view costs while it refreshes every 5 s (process CPU time / wall time);
- how many queries a refresh makes and how many result rows come back (aggregation happens in Prometheus).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from serve_helpers import free_port, http_get, wait_until  # noqa: E402

MIB = 1 << 20


def write_openmetrics(path: Path, hosts: int, gpus: int, containers: int, window: int, step: int, end: int) -> int:
    rng = random.Random(7)
    samples = 0
    times = list(range(end - window, end + 1, step))
    with path.open("w") as out:
        def family(name: str, kind: str, rows: list[tuple[str, float]]) -> None:
            nonlocal samples
            out.write(f"# TYPE {name} {kind}\n")
            for labels, value in rows:
                for t in times:
                    out.write(f"{name}{{{labels}}} {value} {t}\n")
                    samples += 1

        def host_labels(h: int) -> str:
            return f'job="mltop",instance="10.0.{h // 250}.{h % 250}:10140"'

        family("up", "gauge", [(host_labels(h), 1.0 if h % 37 else 0.0) for h in range(hosts)])
        family("mltop_host_info", "gauge", [(f'{host_labels(h)},Hostname="gpu-{h:03d}"', 1) for h in range(hosts)])
        family("mltop_last_sweep_timestamp_seconds", "gauge", [(host_labels(h), end - 5) for h in range(hosts)])
        for name, value in (("DCGM_FI_DEV_GPU_UTIL", lambda: rng.randint(0, 100)),
                            ("DCGM_FI_DEV_FB_USED", lambda: rng.randint(0, 80 * 1024)),
                            ("DCGM_FI_DEV_FB_FREE", lambda: rng.randint(0, 80 * 1024)),
                            ("DCGM_FI_PROF_SM_ACTIVE", lambda: round(rng.random(), 3))):
            family(name, "gauge", [(f'{host_labels(h)},gpu="{g}",UUID="GPU-{h:04d}-{g}",modelName="NVIDIA H100",'
                                    f'Hostname="gpu-{h:03d}"', value()) for h in range(hosts) for g in range(gpus)])
        family("container_last_seen", "gauge", [(f'{host_labels(h)},name="job-{h}-{c}",id="/docker/{h:04d}{c:04d}"',
                                                 end) for h in range(hosts) for c in range(containers)])
        rows_mem, rows_sm = [], []
        for h in range(hosts):
            for c in range(containers):
                labels = (f'{host_labels(h)},container="job-{h}-{c}",container_id="{h:04d}{c:04d}",'
                          f'gpu="{c % gpus}",UUID="GPU-{h:04d}-{c % gpus}"')
                rows_mem.append((labels, rng.randint(1, 10_000) * MIB))
                rows_sm.append((labels, rng.randint(0, 100)))
        family("mltop_container_gpu_memory_bytes", "gauge", rows_mem)
        family("mltop_container_gpu_sm_utilization_percent", "gauge", rows_sm)
        family("mltop_findings", "gauge", [(f'{host_labels(h)},severity="{s}"', rng.randint(0, 2))
                                           for h in range(hosts) for s in ("critical", "warning", "info")])
        family("mltop_finding", "gauge", [(f'{host_labels(h)},code="{code}",severity="{sev}",container=""', 1)
                                          for h in range(hosts) for code, sev in (("gpu.xid", "critical"),
                                                                                 ("oom.killed", "warning"))
                                          if rng.random() < 0.2])
        out.write("# EOF\n")
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--window", type=int, default=300, help="seconds of history to backfill (default 300)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of refreshes to measure")
    parser.add_argument("--refresh", type=float, default=5.0)
    args = parser.parse_args()
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install prometheus)")
            return 1
    work = Path(tempfile.mkdtemp(prefix="mltop-bench-fleet-"))
    proc = None
    try:
        end = int(time.time())
        started = time.monotonic()
        n = write_openmetrics(work / "fleet.om", args.hosts, args.gpus, args.containers, args.window, 15, end)
        series = n // (args.window // 15 + 1)
        print(f"synthetic fleet: {args.hosts} hosts x {args.gpus} GPUs x {args.containers} containers = "
              f"{series} series, {n} samples ({(work / 'fleet.om').stat().st_size / MIB:.0f} MiB OpenMetrics, "
              f"{time.monotonic() - started:.1f} s to write)")
        started = time.monotonic()
        (work / "tsdb").mkdir()
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(work / "fleet.om"),
                        str(work / "tsdb")], check=True)
        print(f"backfilled with promtool in {time.monotonic() - started:.1f} s")
        (work / "fleet.om").unlink()
        port = free_port()
        (work / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        log = open(work / "prometheus.log", "w")
        proc = subprocess.Popen(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--storage.tsdb.retention.time=1d", "--log.level=warn"],
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(url + "/-/ready", timeout=2)[0] == 200, 120, "prometheus ready")
        measure(url, args)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def measure(url: str, args) -> None:
    from mltop.probes.fleet import FleetReader
    from mltop.probes.prometheus_api import PrometheusClient

    client = PrometheusClient(url)
    reader = FleetReader(client)
    reader.read()  # Prometheus's own first-query warm-up (loading the blocks' indexes) is not the client's cost
    reads = []
    for _ in range(5):
        q0, t0, c0 = client.queries, time.perf_counter(), time.process_time()
        snapshot = reader.read()
        reads.append((time.perf_counter() - t0, time.process_time() - c0, client.queries - q0))
    rows = len(snapshot.hosts) + sum(len(h.gpus) + len(h.findings) for h in snapshot.hosts) + len(snapshot.consumers)
    wall = sorted(r[0] for r in reads)[len(reads) // 2]
    cpu = sorted(r[1] for r in reads)[len(reads) // 2]
    print(f"one read: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms of this process's CPU, {reads[0][2]} queries, "
          f"{rows} result rows ({len(snapshot.hosts)} hosts, {snapshot.hosts_down} down, "
          f"{len(snapshot.consumers)} top consumers)")

    from mltop.tui.fleet.app import FleetApp, HostsScreen

    async def run() -> tuple[float, float, float]:
        app = FleetApp(FleetReader(PrometheusClient(url)), refresh_s=args.refresh)
        t0 = time.perf_counter()
        async with app.run_test(size=(200, 60)) as pilot:
            while not (isinstance(app.screen, HostsScreen) and app.screen.table.row_count == args.hosts):
                await pilot.pause(0.01)
            first = time.perf_counter() - t0
            c0, w0, reads0 = time.process_time(), time.perf_counter(), app.reads
            while time.perf_counter() - w0 < args.duration:
                await pilot.pause(0.5)
            return first, (time.process_time() - c0) / (time.perf_counter() - w0), app.reads - reads0

    first, cpu_share, refreshes = asyncio.run(run())
    print(f"fleet view (headless, 200x60): first frame with every host in {first:.2f} s; "
          f"{refreshes} refreshes every {args.refresh:g} s cost {cpu_share * 100:.1f} % of a core")


if __name__ == "__main__":
    sys.exit(main())
