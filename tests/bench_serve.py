"""Benchmark: what `mltop serve` costs on a host with N running containers and 2 simulated GPUs. A script that
prints figures, not a test.

    python tests/bench_serve.py                 # N = 200, --interval 5, 60 s of steady state
    python tests/bench_serve.py --n 20 --duration 20

Starts N busybox containers labelled mltop-bench-serve=<this pid>, runs `mltop serve` as a user would, measures
its CPU and RSS, the client-side time of /metrics scrapes and the exposition size, and `docker stats
--no-stream` for reference; removes the containers at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

import docker  # noqa: E402
import psutil  # noqa: E402

from fakenvml import FakeGpu, FakeProcess, FakeScenario, build_fake_nvml, write_scenario  # noqa: E402
from images import BUSYBOX_IMAGE, ensure_images  # noqa: E402
from serve_helpers import ServeProcess, wait_until  # noqa: E402

LABEL = "mltop-bench-serve"
GIB = 1 << 30
# GPU Performance Metrics on both GPUs (NVML_GPM_METRIC_* id -> % or MiB/s): the DCGM_FI_PROF_* families too
GPM = {1: 97.0, 2: 60.0, 3: 30.0, 5: 40.0, 10: 35.0, 11: 0.0, 12: 20.0, 13: 5.0, 20: 100.0, 21: 200.0,
       60: 1000.0, 61: 1000.0}


def start_containers(client, n: int) -> list:
    def one(i):
        return client.containers.run(BUSYBOX_IMAGE, ["sleep", "3600"], name=f"mltop-bench-serve-{os.getpid()}-{i:03d}",
                                     detach=True, labels={LABEL: str(os.getpid())})

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def remove_containers(client) -> None:
    mine = client.containers.list(all=True, filters={"label": f"{LABEL}={os.getpid()}"}, ignore_removed=True)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: c.remove(force=True), mine))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady state measured")
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--doctor-interval", type=float, default=0.0,
                        help="doctor interval of the measured serve (default 0: off; its cost is measured apart)")
    parser.add_argument("--amortize-doctor", type=float, default=300.0,
                        help="doctor interval to spread one measured doctor run over (serve's default)")
    args = parser.parse_args()
    ensure_images([BUSYBOX_IMAGE])
    client = docker.from_env(timeout=120)
    work = Path(tempfile.mkdtemp(prefix="mltop-bench-serve-"))
    serve = None
    try:
        t0 = time.perf_counter()
        started = start_containers(client, args.n)
        print(f"N = {args.n}: started {args.n} containers in {time.perf_counter() - t0:.1f} s", flush=True)
        pids = [client.api.inspect_container(c.id)["State"]["Pid"] for c in started[:4]]
        lib = build_fake_nvml(work / "nvml")
        scenario = work / "scenario.txt"
        write_scenario(scenario, FakeScenario(gpus=[
            FakeGpu(mem_used=40 * GIB, util=80, processes=[FakeProcess(pids[0], 20 * GIB, sm=50),
                                                           FakeProcess(pids[1], 18 * GIB, sm=30)], gpm=GPM),
            FakeGpu(uuid="GPU-00000000-0000-0000-0000-000000000001", pci="00000000:3C:00.0", mem_used=30 * GIB,
                    processes=[FakeProcess(pids[2], 15 * GIB, sm=40), FakeProcess(pids[3], 14 * GIB, sm=20)],
                    gpm=GPM),
        ]))
        serve = ServeProcess("--interval", str(args.interval), "--doctor-interval", str(args.doctor_interval),
                             "--nvml-lib", str(lib),
                             env={"MLTOP_FAKE_NVML_SCENARIO": str(scenario)})
        serve.wait_healthy(timeout=120)
        prefix = f"mltop-bench-serve-{os.getpid()}-"
        wait_until(lambda: serve.metrics_text().count(f'name="{prefix}') >= args.n, 120, "all containers on /metrics")
        time.sleep(2 * args.interval)  # past the first doctor run's start-up and the catalog's first listing
        proc = psutil.Process(serve.proc.pid)
        cpu0, wall0 = sum(proc.cpu_times()[:2]), time.monotonic()
        time.sleep(args.duration)
        cpu1, wall1 = sum(proc.cpu_times()[:2]), time.monotonic()
        rss = proc.memory_info().rss
        steady_cpu = (cpu1 - cpu0) / (wall1 - wall0) * 100

        times = []
        for _ in range(args.scrapes):
            start = time.perf_counter()
            text = serve.metrics_text()
            times.append(time.perf_counter() - start)
        mine = [line for line in text.splitlines() if f'"{prefix}' in line]
        per_container = sum(len(line) + 1 for line in mine) / args.n

        # One doctor run, as serve's doctor thread does it, timed in this process (CPU seconds).
        from mltop.diagnostics.doctor import run_doctor
        from mltop.probes.sampler import ProbeOptions, Sampler

        sampler = Sampler(ProbeOptions(nvml=False))
        previous = sampler.sweep()
        snapshot = sampler.sweep()
        c0 = time.process_time()
        run_doctor(snapshot, sampler.engine, previous=previous)
        doctor_cpu = time.process_time() - c0
        sampler.close()

        start = time.perf_counter()
        subprocess.run(["docker", "stats", "--no-stream"], capture_output=True, check=True, timeout=600)
        docker_stats = time.perf_counter() - start

        print(f"  mltop serve --interval {args.interval:g} --doctor-interval {args.doctor_interval:g}, {args.n} containers, "
              f"2 simulated GPUs ({len(client.containers.list())} running on the host in all):")
        print(f"  steady CPU over {args.duration:.0f} s:     {steady_cpu:6.2f} % of one core (goal <= 1 %)")
        doctor_share = doctor_cpu / args.amortize_doctor * 100
        on_host = sum(1 for c in snapshot.containers if c.running)  # serve measures every container on the host
        per_container_ms = steady_cpu / 100 * args.interval / on_host * 1e3
        doctor_per_container_ms = doctor_cpu / on_host * 1e3
        projected = (per_container_ms * args.n / 1e3 / args.interval + doctor_per_container_ms * args.n / 1e3
                     / args.amortize_doctor) * 100
        print(f"  one doctor run:               {doctor_cpu:6.2f} s CPU for {len(snapshot.containers)} containers "
              f"({on_host} running) = "
              f"{doctor_share:.2f} % of one core every {args.amortize_doctor:g} s; total "
              f"{steady_cpu + doctor_share:.2f} %")
        print(f"  per container: {per_container_ms:.3f} ms CPU per sweep, {doctor_per_container_ms:.1f} ms per doctor run; "
              f"projected for a host with exactly {args.n}: {projected:.2f} % of one core")
        print(f"  RSS:                          {rss / 2**20:6.1f} MiB (goal <= 80 MB)")
        print(f"  /metrics scrape, client-side: {statistics.median(times) * 1e3:6.1f} ms median of {args.scrapes}, "
              f"{max(times) * 1e3:.1f} ms max (goal <= 20 ms)")
        print(f"  exposition: {len(text.encode()):,} bytes in all, {per_container:,.0f} bytes per container "
              f"({len(mine) / args.n:.0f} series each)")
        print(f"  reference: `docker stats --no-stream` took {docker_stats:.2f} s for "
              f"{len(client.containers.list())} running containers", flush=True)
    finally:
        if serve is not None:
            serve.stop()
        t0 = time.perf_counter()
        remove_containers(client)
        print(f"removed the bench containers in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
