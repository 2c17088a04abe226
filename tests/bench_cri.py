"""Benchmark: what pods cost mltop. A script that prints figures, not a test.

    python tests/bench_cri.py                # 100 pod containers (25 pods of 4) on a private containerd
    python tests/bench_cri.py --pods 5 --per-pod 2 --rounds 5
    python tests/bench_cri.py --restarts 3   # each pod container crash-looped 3 times first (dead attempts kept)

Starts a private containerd with its CRI plugin (tests/cri_harness.py, as the tests do: needs root, containerd
and the Docker test images), makes the pods through mltop's CRI client, then prints: the import cost of the
gRPC client, the cold first sweep (ListPodSandbox, ListContainers, a verbose ContainerStatus per container,
every cgroup opened once), the steady sweep per container with the CRI part apart, and the sweep of the same
host without CRI for reference. CPU seconds of this process (the machine may be shared), medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from cri_harness import PAUSE_IMAGE, ContainerSpec, CriNode  # noqa: E402
from images import BUSYBOX_IMAGE, ensure_images  # noqa: E402


def import_cost(rounds: int = 5) -> tuple[float, float]:
    """(median ms to import the CRI client in a fresh interpreter, the same for mltop.probes.sampler alone)."""
    code = ("import time; t = time.perf_counter(); import {m}; print((time.perf_counter() - t) * 1000)")
    out = []
    for module in ("mltop.probes.sampler", "mltop.probes.sampler, mltop.probes.cri.client"):
        times = [float(subprocess.run([sys.executable, "-c", code.format(m=module)], capture_output=True,
                                      text=True, check=True).stdout) for _ in range(rounds)]
        out.append(statistics.median(times))
    return out[0], out[1]


def cpu(fn):
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - started_cpu, time.perf_counter() - started_wall


def dashboard(node: CriNode, n: int, runs: int) -> None:
    """The real dashboard in tmux, as bench_tui.py runs it, on the pods (names bench*/…): its tmux server
    inherits MLTOP_CRI_ENDPOINT from here."""
    import bench_tui
    from bench_engine import compile_bytecode

    compile_bytecode()
    os.environ["MLTOP_CRI_ENDPOINT"] = node.endpoint
    options = argparse.Namespace(size="200x60", interval=1.0, warmup=5.0, measure=20.0, stand_in=False,
                                 record=False)
    results = [bench_tui.run_once(options, n, "bench", None, None, None) for _ in range(runs)]
    med = {key: statistics.median(r[key] for r in results) for key in ("rows_s", "rates_s", "cpu_percent", "rss_mib")}
    runs_text = ", ".join(f"{r['rows_s']:.2f}" for r in results)
    print(f"dashboard, {n} pod containers, 200x60, 1 s (median of {runs}): first frame with every row "
          f"{med['rows_s']:.2f} s (runs {runs_text}), "
          f"rates {med['rates_s']:.2f} s, steady CPU {med['cpu_percent']:.1f} % of a core, RSS {med['rss_mib']:.0f} MiB")
    for part, value in sorted(results[-1]["breakdown"].items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {value:6.2f} %  {part}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=25)
    parser.add_argument("--per-pod", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between steady sweeps")
    parser.add_argument("--profile", action="store_true", help="print where the steady sweeps' CPU goes")
    parser.add_argument("--restarts", type=int, default=0, metavar="N",
                        help="restart each pod container N times first, as the kubelet does (the dead attempts "
                             "are kept: N + 1 CRI containers listed for each pod container mltop shows)")
    parser.add_argument("--dashboard", type=int, default=0, metavar="RUNS",
                        help="also run the real dashboard RUNS times in tmux (tests/bench_tui.py's child): first "
                             "frame with every pod row, steady CPU, RSS")
    args = parser.parse_args()

    from mltop.probes.sampler import ProbeOptions, Sampler

    ensure_images()
    subprocess.run(["docker", "build", "-q", "-t", PAUSE_IMAGE, "-"], check=True, capture_output=True,
                   input=f'FROM {BUSYBOX_IMAGE}\nCMD ["sleep", "2147483647"]\n'.encode())
    base_ms, client_ms = import_cost()
    print(f"import mltop.probes.sampler: {base_ms:.0f} ms; the CRI client on top (grpc, protobuf, stubs): "
          f"{client_ms - base_ms:.0f} ms (only where a CRI socket exists)")
    node = CriNode()
    try:
        node.start()
        started = time.perf_counter()
        command = ["sh", "-c", "exit 1"] if args.restarts else ["sleep", "36000"]
        for i in range(args.pods):
            pod = node.run_pod(f"bench{i % 3}", f"pod{i}", [ContainerSpec(f"c{k}", command)
                                                         for k in range(args.per_pod)])
            for k in range(args.per_pod if args.restarts else 0):
                node.crash_loop(pod, f"c{k}", args.restarts, command=["sleep", "36000"])
        n = args.pods * args.per_pod
        print(f"{n} pod containers in {args.pods} pods started in {time.perf_counter() - started:.0f} s"
              + (f", each restarted {args.restarts} times ({n * (args.restarts + 1)} CRI containers)"
                 if args.restarts else ""))

        sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=node.endpoint, watch_events=False))
        snap, first_cpu, first_wall = cpu(sampler.sweep)
        pods = [c for c in snap.containers if c.kubernetes is not None]
        assert len(pods) == n and all(c.memory_bytes is not None for c in pods), "not every pod measured"
        from mltop.probes.cri.source import CriSource

        cold = CriSource(node.endpoint)
        _, cri_cpu, cri_wall = cpu(cold.view)
        cold.close()
        print(f"first sweep, cold: {first_wall * 1000:.0f} ms wall, {first_cpu * 1000:.0f} ms CPU "
              f"(a cold CRI view alone: {cri_wall * 1000:.0f} ms wall, {cri_cpu * 1000:.0f} ms CPU: "
              f"the lists and {n * (args.restarts + 1)} verbose ContainerStatus)")
        sweeps, views = [], []
        profile = None
        if args.profile:
            import cProfile

            profile = cProfile.Profile()
        for _ in range(args.rounds):
            time.sleep(args.spacing)
            if profile is not None:
                profile.enable()
            _, c, _ = cpu(sampler.sweep)
            if profile is not None:
                profile.disable()
            sweeps.append(c)
            _, v, _ = cpu(sampler.cri.view)
            views.append(v)
        if profile is not None:
            import pstats

            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        sampler.close()
        sweep_ms = statistics.median(sweeps) * 1000
        view_ms = statistics.median(views) * 1000
        print(f"steady sweep: {sweep_ms:.1f} ms CPU ({sweep_ms / n:.3f} ms a pod container), of which the "
              f"CRI lists {view_ms:.1f} ms; at a 1 s interval {sweep_ms / 10:.2f} % of a core")
        plain = Sampler(ProbeOptions(nvml=False, cri_endpoint="none", watch_events=False))
        plain.sweep()
        plain_sweeps = []
        for _ in range(args.rounds):
            time.sleep(args.spacing)
            _, c, _ = cpu(plain.sweep)
            plain_sweeps.append(c)
        plain.close()
        print(f"the same host without CRI (Docker only): {statistics.median(plain_sweeps) * 1000:.1f} ms CPU a sweep")
        if args.dashboard:
            dashboard(node, n, args.dashboard)
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
