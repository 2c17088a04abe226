"""Benchmark: what one sampling sweep costs per container, against the raw cgroup-read floor and the
Docker stats API, and what `mltop snapshot --json` costs. A script that prints figures, not a test.

    python tests/bench_sweep.py                 # N = 100 and 500
    python tests/bench_sweep.py --n 20          # a quick look
    python tests/bench_sweep.py --gpus 2        # also a sweep with the simulated NVML (its own line)
    python tests/bench_sweep.py --gpm 8         # only what GPM sampling adds per GPU (no containers)
    python tests/bench_sweep.py --infiniband 8  # only what reading 8 HCA ports adds to a sweep (a sysfs tree)

Starts N busybox containers (labelled as test containers of this process, so pytest cleans up after an
interrupted run), measures, removes them. Times are CPU seconds of this process (the machine may be shared:
wall time then measures the neighbours), medians of --rounds sweeps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))

import docker  # noqa: E402

from images import BUSYBOX_IMAGE, ensure_images  # noqa: E402
from mltop.probes.cgroups import CgroupLocator  # noqa: E402
from mltop.probes.sampler import ProbeOptions, Sampler  # noqa: E402

LABEL = "mltop-bench"
TEST_LABEL = "mltop-test"  # tests/conftest.py removes test containers whose session (a pid) is gone
SESSION_LABEL = "mltop-test-session"
PREFIX = f"mltop-bench-sweep-{os.getpid()}-"
# --spacing: seconds between sweeps (and between rounds of the floor), as the dashboard's interval. Back to back
# (0), a busy container's counters seldom move between two sweeps and its reads are skipped as an idle one's.
SPACING = 0.0


# --busy: a process that wakes every second and reads /proc, without forking (busybox top): the container's
# CPU counter moves every sweep, so nothing is carried over as for an idle one (sampler.IDLE_FULL_READ_EVERY)
BUSY_COMMAND = ["sh", "-c", "exec top -b -d 1 >/dev/null"]


def start_containers(client, n: int, busy: bool = False) -> list:
    labels = {LABEL: "1", TEST_LABEL: "1", SESSION_LABEL: str(os.getpid())}

    def one(i):
        return client.containers.run(BUSYBOX_IMAGE, BUSY_COMMAND if busy else ["sleep", "3600"],
                                     name=f"{PREFIX}{i}", detach=True, labels=labels)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def remove_containers(client) -> None:
    """Only this process's containers: other benchmarks and test sessions share the engine."""
    mine = client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={os.getpid()}"}, sparse=True)
    with ThreadPoolExecutor(4) as pool:  # gently: the engine is shared
        list(pool.map(lambda c: c.remove(force=True), mine))


def files_a_sweep_reads(locator: CgroupLocator, pid: int) -> list[str]:
    """The files a steady sweep reads for one container (v1 or v2), plus its processes' /proc files. (Limits
    — memory.max, cpu.max, the CFS quota — are read when a container is inspected and every 30 s, not here.)"""
    paths = locator.paths_for_pid(pid)
    if locator.version == 2:
        d = paths["unified"]
        files = [f"{d}/{n}" for n in ("cpu.stat", "memory.stat", "memory.events", "io.stat", "memory.current",
                                      "pids.current", "cpu.pressure", "memory.pressure", "io.pressure",
                                      "cgroup.procs")]
        procs_file = f"{d}/cgroup.procs"
    else:
        cpu = paths.get("cpuacct") or paths["cpu"]
        cfs = paths.get("cpu") or cpu
        mem = paths["memory"]
        files = [f"{cpu}/cpuacct.usage", f"{cfs}/cpu.stat", f"{mem}/memory.stat", f"{mem}/memory.usage_in_bytes",
                 f"{mem}/memory.oom_control", f"{paths['blkio']}/blkio.throttle.io_service_bytes_recursive",
                 f"{paths['pids']}/pids.current", f"{paths['pids']}/cgroup.procs"]
        procs_file = f"{paths['pids']}/cgroup.procs"
    files.append(f"/proc/{pid}/net/dev")
    with open(procs_file) as f:
        files += [f"/proc/{p}/stat" for p in f.read().split()]
    return files


def raw_floor(file_lists: list[list[str]], rounds: int, kept_open: bool = True) -> float:
    """CPU seconds per container to read all of those files, no parsing, in a tight loop: the cheapest read
    there is. `kept_open`: each file opened once beforehand and re-read with os.pread from offset 0 (what
    the sampler does, probes/openfiles.py); else os.open / os.read until empty / os.close per read."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    fd_lists = [[os.open(path, flags) for path in files] for files in file_lists] if kept_open else []

    def read_kept() -> None:
        for fds in fd_lists:
            for fd in fds:
                os.pread(fd, 65536, 0)

    def open_read_close() -> None:
        for files in file_lists:
            for path in files:
                fd = os.open(path, flags)
                while os.read(fd, 65536):
                    pass
                os.close(fd)

    try:
        spent = 0.0
        for _ in range(rounds):
            time.sleep(SPACING)
            start = time.process_time()
            (read_kept if kept_open else open_read_close)()
            spent += time.process_time() - start
        return spent / rounds / len(file_lists)
    finally:
        for fds in fd_lists:
            for fd in fds:
                os.close(fd)


def sweep_cost(sampler: Sampler, n: int, rounds: int, relist: bool = False) -> tuple[float, float]:
    """(median CPU, median wall) seconds per container of a full sweep with the catalog warm; with `relist`,
    each sweep also re-lists the containers from the engine (every 30 s, or after mark_stale())."""
    cpu, wall = [], []
    measured = n
    for _ in range(rounds):
        if relist:
            sampler.catalog.mark_stale()
        time.sleep(SPACING)
        c0, w0 = time.process_time(), time.perf_counter()
        snap = sampler.sweep()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        assert sum(1 for c in snap.containers if c.name.startswith(PREFIX)) >= n
        # per container measured: other sessions' containers on the engine are swept too
        measured = max(sum(1 for c in snap.containers if c.memory_bytes is not None), 1)
    return statistics.median(cpu) / measured, statistics.median(wall) / measured


def snapshot_cli_cost(nvml_args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(CPU seconds, containers) of one `mltop snapshot --json` run: start-up, both sweeps, the JSON."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--interval", "0.5",
                             *nvml_args], capture_output=True, text=True, env=env, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    count = len(json.loads(result.stdout)["containers"]) if result.returncode == 0 else 0
    return cpu, count


def stats_api_cost(client, containers: list, samples: int) -> float:
    start = time.perf_counter()
    for c in containers[:samples]:
        client.api.stats(c.id, stream=False, one_shot=True)
    return (time.perf_counter() - start) / samples


def run(n: int | None, rounds: int, stats_samples: int, gpus: int, existing: str | None = None,
        stand_in: bool = False, busy: bool = False) -> None:
    global PREFIX
    client = docker.from_env(timeout=120)
    make = Sampler
    if stand_in:
        from bench_engine import StandInEngine, _first_pid

        def make(options):  # noqa: F811
            return Sampler(options, engine=StandInEngine())
    if existing:
        # running containers already there; never removed here
        PREFIX = existing
        started = [c for c in client.containers.list(filters={"name": existing}, sparse=True)
                   if c.attrs["Names"][0].lstrip("/").startswith(existing)]
        if stand_in:  # only those that still have a cgroup
            started = [c for c in started if _first_pid(c.id)]
        n = len(started)
        print(f"\nN = {n}: existing running containers named {existing}* "
              f"({len(client.api.containers(all=True))} on the engine, load {os.getloadavg()[0]:.1f})", flush=True)
    else:
        remove_containers(client)
        t0 = time.perf_counter()
        started = start_containers(client, n, busy)
        print(f"\nN = {n}: started {n} {'busy' if busy else 'idle'} containers in {time.perf_counter() - t0:.1f} s "
              f"({len(client.api.containers(all=True))} on the engine, load {os.getloadavg()[0]:.1f})", flush=True)
    try:
        sampler = make(ProbeOptions(nvml=False))
        first = time.perf_counter()
        sampler.sweep()  # cold: lists and inspects every container
        cold = time.perf_counter() - first
        sampler.sweep()
        sampler.catalog.relist_s = 3600  # the steady state between events (other sessions make events here)
        if stand_in:
            pids = [_first_pid(c.id) for c in started]
        else:
            # (a sparse list entry's State is a word, "running": inspect those)
            pids = [(isinstance(c.attrs.get("State"), dict) and c.attrs["State"]["Pid"])
                    or client.api.inspect_container(c.id)["State"]["Pid"] for c in started]
        locator = sampler._get_locator(None)
        file_lists = [files_a_sweep_reads(locator, pid) for pid in pids]
        # interleaved, so that the neighbours' load falls on both alike
        sweeps, floors, open_floors = [], [], []
        for _ in range(5):
            sweeps.append(sweep_cost(sampler, n, max(rounds // 5, 2)))
            floors.append(raw_floor(file_lists, max(rounds // 5, 2)))
            open_floors.append(raw_floor(file_lists, max(rounds // 10, 1), kept_open=False))
        median = statistics.median(s[0] for s in sweeps)
        wall = statistics.median(s[1] for s in sweeps)
        floor = statistics.median(floors)
        open_floor = statistics.median(open_floors)
        relist, _ = sweep_cost(sampler, n, max(rounds // 8, 3), relist=True)
        sampler.close()
        nvml_line = ""
        env = dict(os.environ)
        nvml_args = ["--no-nvml"]
        if gpus:
            from bench_tui import fake_nvml

            lib, scenario = fake_nvml(tempfile.mkdtemp(prefix="mltop-bench-nvml-"), gpus, pids[:4 * gpus])
            os.environ["MLTOP_FAKE_NVML_SCENARIO"] = env["MLTOP_FAKE_NVML_SCENARIO"] = scenario
            nvml_args = ["--nvml-lib", lib]
            with_gpus = make(ProbeOptions(nvml=True, nvml_lib=lib))
            with_gpus.sweep()
            with_gpus.sweep()
            with_gpus.catalog.relist_s = 3600
            gpu_median, _ = sweep_cost(with_gpus, n, rounds)
            slowest = with_gpus.sweep().self_cost
            with_gpus.close()
            nvml_line = (f"  full sweep with {gpus} simulated GPUs:   {gpu_median * 1e3:8.3f} ms CPU per container "
                         f"(slowest NVML call {slowest.nvml_slowest_call_s * 1e3:.2f} ms, "
                         f"{slowest.nvml_slowest_call})\n")
        cli_cpu = cli_count = stats = None
        if not stand_in:  # both need an engine that answers inspect and stats
            cli_runs = [snapshot_cli_cost(nvml_args, env) for _ in range(3)]
            cli_cpu = statistics.median(c for c, _ in cli_runs)
            cli_count = max(count for _, count in cli_runs)
            stats = stats_api_cost(client, started, stats_samples)
        files_per = statistics.mean(len(f) for f in file_lists)
        print(f"  cold first sweep (list + inspect all): {cold * 1000:8.1f} ms wall total")
        print(f"  full sweep, steady, per container:     {median * 1e3:8.3f} ms CPU ({wall * 1e3:.3f} ms wall), "
              f"median of {rounds} sweeps" + (f", {SPACING:g} s apart" if SPACING else ", back to back"))
        print(f"  sweep that also re-lists from the engine: {relist * 1e3:5.3f} ms CPU per container "
              f"(every 30 s, or after mark_stale)")
        print(f"  raw floor, same {files_per:.0f} files kept open (pread), per container: {floor * 1e3:8.3f} ms CPU")
        print(f"  the same files opened, read and closed each time:  {open_floor * 1e3:8.3f} ms CPU")
        print(nvml_line, end="")
        if cli_cpu is not None:
            print(f"  mltop snapshot --json ({cli_count} containers, {' '.join(nvml_args)}): {cli_cpu:.2f} s CPU = "
                  f"{cli_cpu / max(cli_count, 1) * 1e3:.2f} ms per container (goal <= 1 ms)")
            print(f"  Docker stats API one_shot, per container: {stats * 1e3:8.1f} ms wall ({stats_samples} calls)")
        print(f"  sweep / floor = {median / floor:.2f}x (goal <= 1.5x)"
              + (f"; stats API / sweep = {stats / median:,.0f}x (goal >= 1000x)" if stats else ""), flush=True)
    finally:
        if not existing:
            remove_containers(client)


def gpm_cost(gpus: int, rounds: int) -> None:
    """What GPM sampling adds to a sweep, per GPU: the NVML probe alone over the same simulated GPUs with and
    without GPM (one sample per GPU per sweep, metrics between the last two). CPU of the whole process (the
    NVML worker included), averaged over `rounds` sweeps after a warm-up (init, support answers, samples)."""
    from fakenvml import SCENARIO_ENV, FakeGpu, FakeScenario, build_fake_nvml, write_scenario
    from mltop.probes.nvml import NvmlProbe

    work = tempfile.mkdtemp(prefix="mltop-bench-gpm-")
    lib = str(build_fake_nvml(os.path.join(work, "nvml")))
    metrics = {1: 97.0, 2: 60.0, 3: 30.0, 5: 40.0, 10: 35.0, 11: 0.0, 12: 20.0, 13: 5.0, 20: 100.0, 21: 200.0,
               60: 1000.0, 61: 1000.0}
    cost = {}
    for label, gpm in (("without", None), ("with", metrics)):
        scenario = os.path.join(work, f"{label}.txt")
        write_scenario(scenario, FakeScenario(gpus=[FakeGpu(uuid=f"GPU-00000000-0000-4000-8000-{g:012d}", gpm=gpm)
                                                    for g in range(gpus)]))
        os.environ[SCENARIO_ENV] = scenario
        probe = NvmlProbe(lib, kmsg_path="")
        try:
            for _ in range(3):
                status, sampled = probe.sample()
            assert status.ok and all((g.gpm is not None) == (gpm is not None) for g in sampled), status
            t0, w0 = time.process_time(), time.perf_counter()
            for _ in range(rounds):
                probe.sample()
            cost[label] = ((time.process_time() - t0) / rounds, (time.perf_counter() - w0) / rounds)
        finally:
            probe.close()
    added_cpu = (cost["with"][0] - cost["without"][0]) / gpus
    added_wall = (cost["with"][1] - cost["without"][1]) / gpus
    print(f"\nGPM on {gpus} simulated GPUs, {rounds} sweeps each (NVML probe alone):")
    print(f"  sweep without GPM: {cost['without'][0] * 1e3:7.3f} ms CPU, with GPM: {cost['with'][0] * 1e3:7.3f} ms CPU")
    print(f"  GPM adds {added_cpu * 1e3:.3f} ms CPU ({added_wall * 1e3:.3f} ms wall) per GPU per sweep (goal <= 0.2 ms)")


def infiniband_cost(ports: int, rounds: int, sweep_s: float = 1.0) -> None:
    """What the InfiniBand probe adds to a sweep: `ports` HCA ports (one per HCA, node_exporter's ~22 counters
    each) in a sysfs tree under a temporary root, read with the sweep's kept-open files. A sweep that reads the
    counters costs more than one between readings (every COUNTERS_INTERVAL_S); the steady figure is what a
    dashboard sweeping every `sweep_s` pays on average. The tree is on tmpfs or disk, not sysfs: a real
    attribute read costs its driver's show() on top."""
    from pathlib import Path

    from sysfs_tree import write_ib_port
    from mltop.probes.infiniband import COUNTERS_INTERVAL_S, InfinibandProbe
    from mltop.probes.openfiles import OpenFiles

    root = Path(tempfile.mkdtemp(prefix="mltop-bench-ib-"))
    for i in range(ports):
        write_ib_port(root, f"mlx5_{i}", 1)
    cost = {}
    for label, interval in (("reading", 0.0), ("between", float("inf"))):
        files = OpenFiles(keep_unread=2)
        probe = InfinibandProbe(str(root), counters_interval_s=interval)
        for _ in range(3):
            files.begin_sweep()
            probe.sample(files.read)
            files.end_sweep()
        t0 = time.process_time()
        for _ in range(rounds):
            files.begin_sweep()
            sampled = probe.sample(files.read)
            files.end_sweep()
        cost[label] = (time.process_time() - t0) / rounds
        files.close()
    counters = sum(len(p.counters) for p in sampled)
    steady = cost["between"] + (cost["reading"] - cost["between"]) * min(1.0, sweep_s / COUNTERS_INTERVAL_S)
    print(f"\nInfiniBand: {ports} ports, {counters} counters, {rounds} sweeps each:")
    print(f"  a sweep that reads the counters {cost['reading'] * 1e3:.3f} ms CPU, one between readings "
          f"{cost['between'] * 1e3:.3f} ms ({cost['between'] * 1e6 / ports:.0f} us a port: state, phys_state, rate)")
    print(f"  steady, sweeping every {sweep_s:g} s (counters every {COUNTERS_INTERVAL_S:g} s): "
          f"{steady * 1e3:.3f} ms CPU per sweep")


def nvlink_cost(gpus: int, rounds: int, sweep_s: float = 1.0) -> None:
    """What reading NVLink and the fabric adds to a sweep: the NVML probe alone over `gpus` simulated GPUs with 18
    links each and fabric info, against the same GPUs without NVLink (a PCIe board, whose links are asked once).
    A sweep that reads links, counters and fabric info costs more than one between reads (every
    NvLinkReader.interval_s); the steady figure is what a dashboard sweeping every `sweep_s` pays on average."""
    from fakenvml import SCENARIO_ENV, FakeFabric, FakeGpu, FakeScenario, build_fake_nvml, nvlinks, write_scenario
    from mltop.probes.nvml import NvmlProbe
    from mltop.probes.nvml.nvlink import NvLinkReader

    work = tempfile.mkdtemp(prefix="mltop-bench-nvlink-")
    lib = str(build_fake_nvml(os.path.join(work, "nvml")))
    cost = {}
    for label, links, interval in (("pcie", False, NvLinkReader.interval_s), ("cached", True, NvLinkReader.interval_s),
                                   ("reading", True, 0.0)):
        scenario = os.path.join(work, f"{label}.txt")
        write_scenario(scenario, FakeScenario(gpus=[
            FakeGpu(uuid=f"GPU-00000000-0000-4000-8000-{g:012d}", nvlinks=nvlinks(18) if links else [],
                    fabric=FakeFabric() if links else None) for g in range(gpus)]))
        os.environ[SCENARIO_ENV] = scenario
        probe = NvmlProbe(lib, kmsg_path="")
        probe._nvlink.interval_s = interval
        try:
            for _ in range(3):
                status, sampled = probe.sample()
            assert status.ok and all(len(g.nvlinks) == (18 if links else 0) for g in sampled), status
            t0 = time.process_time()
            for _ in range(rounds):
                probe.sample()
            cost[label] = (time.process_time() - t0) / rounds
        finally:
            probe.close()
    reading, cached = cost["reading"] - cost["pcie"], cost["cached"] - cost["pcie"]
    steady = cached + (reading - cached) * min(1.0, sweep_s / NvLinkReader.interval_s)
    print(f"\nNVLink and fabric on {gpus} simulated GPUs x 18 links, {rounds} sweeps each (NVML probe alone):")
    print(f"  sweep without NVLink: {cost['pcie'] * 1e3:.3f} ms CPU; a sweep that reads links, counters and fabric "
          f"adds {reading * 1e3:.3f} ms, one between reads {cached * 1e3:.3f} ms")
    print(f"  steady, sweeping every {sweep_s:g} s (reads every {NvLinkReader.interval_s:g} s): adds "
          f"{steady * 1e3:.3f} ms CPU per sweep (goal <= 0.3 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="*", default=[100, 500])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--stats-samples", type=int, default=5)
    parser.add_argument("--gpus", type=int, default=0, help="simulated GPUs for the NVML line (0: none)")
    parser.add_argument("--existing", metavar="PREFIX", help="use the running containers named PREFIX* "
                        "instead of starting (and removing) --n")
    parser.add_argument("--stand-in", action="store_true", help="inspect and info from tests/bench_engine.py "
                        "(an engine that lists but does not inspect); no snapshot CLI or stats API figures")
    parser.add_argument("--spacing", type=float, default=0.0, help="seconds between sweeps, as the dashboard's "
                        "interval (default 0: back to back, where a busy container looks idle)")
    parser.add_argument("--busy", action="store_true", help="containers whose CPU counter moves every second "
                        "(busybox top), so no idle container's reads are skipped")
    parser.add_argument("--gpm", type=int, metavar="GPUS", help="only measure what GPM sampling adds per GPU, on "
                        "this many simulated GPUs (no containers)")
    parser.add_argument("--infiniband", type=int, metavar="PORTS", help="only measure what reading this many HCA "
                        "ports adds to a sweep (a sysfs tree under a temporary root; no containers)")
    parser.add_argument("--nvlink", type=int, metavar="GPUS", help="only measure what reading NVLink (18 links a "
                        "GPU) and the fabric adds to a sweep, on this many simulated GPUs (no containers)")
    args = parser.parse_args()
    if args.infiniband:
        infiniband_cost(args.infiniband, max(args.rounds, 200))
        return
    if args.nvlink:
        nvlink_cost(args.nvlink, max(args.rounds, 200))
        return
    if args.gpm:
        gpm_cost(args.gpm, max(args.rounds, 200))
        return
    global SPACING
    SPACING = args.spacing
    from bench_engine import compile_bytecode

    compile_bytecode()
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} (shared: figures move)")
    if args.existing:
        run(None, args.rounds, args.stats_samples, args.gpus, args.existing, args.stand_in)
        return
    ensure_images([BUSYBOX_IMAGE])
    for n in args.n:
        run(n, args.rounds, args.stats_samples, args.gpus, busy=args.busy)


if __name__ == "__main__":
    main()
