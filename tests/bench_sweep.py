"""Benchmark: what one sampling sweep costs per container, against the raw cgroup-read floor and the
Docker stats API. A script that prints figures, not a test.

    python tests/bench_sweep.py            # N = 50 and 200
    python tests/bench_sweep.py --n 20     # a quick look

Starts N busybox containers labelled mltop-bench, measures, removes them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))

import docker  # noqa: E402

from images import BUSYBOX_IMAGE, ensure_images  # noqa: E402
from mltop.probes.cgroups import CgroupLocator  # noqa: E402
from mltop.probes.sampler import ProbeOptions, Sampler  # noqa: E402

LABEL = "mltop-bench"


def start_containers(client, n: int) -> list:
    def one(i):
        return client.containers.run(BUSYBOX_IMAGE, ["sleep", "3600"], name=f"mltop-bench-{i}", detach=True,
                                     labels={LABEL: "1"})

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def remove_containers(client) -> None:
    leftovers = client.containers.list(all=True, filters={"label": LABEL})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: c.remove(force=True), leftovers))


def files_a_sweep_reads(locator: CgroupLocator, pid: int) -> list[str]:
    """The same files Sampler reads for one container (v1 or v2), plus its processes' /proc files."""
    paths = locator.paths_for_pid(pid)
    if locator.version == 2:
        d = paths["unified"]
        files = [f"{d}/{n}" for n in ("cpu.stat", "memory.stat", "memory.events", "memory.max", "cpu.max",
                                      "io.stat", "memory.current", "pids.current", "cpu.pressure",
                                      "memory.pressure", "io.pressure", "cgroup.procs")]
        procs_file = f"{d}/cgroup.procs"
    else:
        cpu = paths.get("cpuacct") or paths["cpu"]
        cfs = paths.get("cpu") or cpu
        mem = paths["memory"]
        files = [f"{cpu}/cpuacct.usage", f"{cfs}/cpu.stat", f"{cfs}/cpu.cfs_quota_us", f"{cfs}/cpu.cfs_period_us",
                 f"{mem}/memory.stat", f"{mem}/memory.usage_in_bytes", f"{mem}/memory.limit_in_bytes",
                 f"{mem}/memory.oom_control", f"{paths['blkio']}/blkio.throttle.io_service_bytes_recursive",
                 f"{paths['pids']}/pids.current", f"{paths['pids']}/cgroup.procs"]
        procs_file = f"{paths['pids']}/cgroup.procs"
    files.append(f"/proc/{pid}/net/dev")
    with open(procs_file) as f:
        files += [f"/proc/{p}/stat" for p in f.read().split()]
    return files


def raw_floor(file_lists: list[list[str]], rounds: int) -> float:
    """Seconds per container to open and read those files, no parsing, in a tight loop."""
    start = time.perf_counter()
    for _ in range(rounds):
        for files in file_lists:
            for path in files:
                with open(path, "rb") as f:
                    f.read()
    return (time.perf_counter() - start) / rounds / len(file_lists)


def sweep_cost(sampler: Sampler, n: int, rounds: int, relist: bool = False) -> tuple[float, float]:
    """(median, mean) seconds per container of a full sweep with the catalog warm; with `relist`, each sweep
    also re-lists the containers from the engine (what happens after an event or every 5 s)."""
    times = []
    for _ in range(rounds):
        if relist:
            sampler.catalog.mark_stale()
        start = time.perf_counter()
        snap = sampler.sweep()
        times.append(time.perf_counter() - start)
        assert sum(1 for c in snap.containers if c.name.startswith("mltop-bench-")) == n
    return statistics.median(times) / n, statistics.mean(times) / n


def stats_api_cost(client, containers: list, samples: int) -> float:
    start = time.perf_counter()
    for c in containers[:samples]:
        client.api.stats(c.id, stream=False, one_shot=True)
    return (time.perf_counter() - start) / samples


def run(n: int, rounds: int, stats_samples: int) -> None:
    client = docker.from_env(timeout=120)
    remove_containers(client)
    t0 = time.perf_counter()
    started = start_containers(client, n)
    print(f"\nN = {n}: started {n} containers in {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        sampler = Sampler(ProbeOptions(nvml=False))
        first = time.perf_counter()
        sampler.sweep()  # cold: lists and inspects every container
        cold = time.perf_counter() - first
        sampler.sweep()
        median, mean = sweep_cost(sampler, n, rounds)
        relist_median, _ = sweep_cost(sampler, n, max(rounds // 4, 3), relist=True)
        locator = sampler._get_locator(None)
        pids = [c.attrs["State"]["Pid"] or client.api.inspect_container(c.id)["State"]["Pid"] for c in started]
        file_lists = [files_a_sweep_reads(locator, pid) for pid in pids]
        floor = raw_floor(file_lists, rounds)
        stats = stats_api_cost(client, started, stats_samples)
        sampler.close()
        files_per = statistics.mean(len(f) for f in file_lists)
        print(f"  cold first sweep (list + inspect all): {cold * 1000:8.1f} ms total")
        print(f"  full sweep, steady, per container:     {median * 1e3:8.3f} ms median, {mean * 1e3:.3f} ms mean "
              f"({rounds} sweeps)")
        print(f"  sweep that also re-lists from the engine: {relist_median * 1e3:5.3f} ms per container "
              f"(after an event, or every 5 s)")
        print(f"  raw floor, same {files_per:.0f} files, per container:  {floor * 1e3:8.3f} ms")
        print(f"  Docker stats API one_shot, per container: {stats * 1e3:8.1f} ms ({stats_samples} calls)")
        print(f"  sweep / floor = {median / floor:.2f}x (goal <= 2x); "
              f"stats API / sweep = {stats / median:,.0f}x (goal >= 1000x)", flush=True)
    finally:
        remove_containers(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="*", default=[50, 200])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--stats-samples", type=int, default=5)
    args = parser.parse_args()
    ensure_images([BUSYBOX_IMAGE])
    for n in args.n:
        run(n, args.rounds, args.stats_samples)


if __name__ == "__main__":
    main()
