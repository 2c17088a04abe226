"""Benchmark of the dashboard (a script, not a test): `python tests/bench_tui.py [--containers 100]`.

Starts N busybox containers, runs the real `mltop` dashboard in a tmux terminal (a real pty, so the
terminal writes are counted), and prints:

- launch -> first full frame: from just before the process is spawned to the first frame in which every
  container has its row with live values (CPU % needs two sweeps) — goal <= 1.0 s;
- steady CPU use of the app process (all its threads: UI, sampler, event watcher) as % of one core,
  measured over --measure seconds after --warmup — goal <= 5 %;
- RSS at the end — goal <= 150 MB;
- for comparison, how long `docker stats --no-stream` takes for the same containers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

__test__ = False  # not a pytest module

HERE = os.path.dirname(os.path.abspath(__file__))
LABEL = "mltop-bench"


# --------------------------------------------------------------------------- the app side (in tmux)


def child(args: argparse.Namespace) -> None:
    """Runs inside the tmux pane: the real app on the real terminal, timing itself."""
    from mltop.tui.app import MltopApp

    result: dict[str, float] = {}

    class BenchApp(MltopApp):
        def _first_full_frame(self) -> None:
            super()._first_full_frame()
            if "first_frame_wall" in result:
                return
            result["first_frame_wall"] = time.time()
            result["rows"] = self.screen.table.row_count
            self.set_timer(args.warmup, self._start_measuring)

        def _start_measuring(self) -> None:
            result["cpu0"], result["wall0"], result["sweeps0"] = time.process_time(), time.monotonic(), self.sweeps
            self.set_timer(args.measure, self._stop_measuring)

        def _stop_measuring(self) -> None:
            result["cpu1"], result["wall1"], result["sweeps1"] = time.process_time(), time.monotonic(), self.sweeps
            result["rss_bytes"] = _rss_bytes()
            result["last_sweep_s"] = self.last_sweep_s or 0.0
            self.exit()

    app = BenchApp(nvml=False, interval=args.interval)
    app.run()
    with open(args.out, "w") as f:
        json.dump(result, f)


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------------------- the driver


def start_containers(client, count: int) -> list:
    image = "mltop-test/busybox:1"

    def start(i: int):
        return client.containers.run(image, "sleep 3600", name=f"{LABEL}-{os.getpid()}-{i:03d}", detach=True,
                                     labels={LABEL: "1"})

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(start, range(count)))


def remove_containers(client) -> None:
    leftovers = client.containers.list(all=True, filters={"label": LABEL})
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda c: c.remove(force=True), leftovers))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--measure", type=float, default=20.0)
    parser.add_argument("--size", default="200x60", help="terminal size, COLSxROWS")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    if shutil.which("tmux") is None:
        print("tmux is needed (the app runs in a real terminal)", file=sys.stderr)
        return 2
    import docker

    client = docker.from_env(timeout=60)
    remove_containers(client)
    print(f"starting {args.containers} busybox containers…", flush=True)
    started = time.monotonic()
    start_containers(client, args.containers)
    print(f"  started in {time.monotonic() - started:.1f} s", flush=True)
    total = len(client.containers.list(all=True))
    try:
        out = os.path.join(tempfile.mkdtemp(prefix="mltop-bench-"), "result.json")
        cols, rows = args.size.split("x")
        command = (f"{sys.executable} {os.path.abspath(__file__)} --child --out {out} --interval {args.interval} "
                   f"--warmup {args.warmup} --measure {args.measure}")
        session = f"mltop-bench-{os.getpid()}"
        launched = time.time()
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", cols, "-y", rows, command], check=True)
        deadline = time.monotonic() + args.warmup + args.measure + 120
        while not os.path.exists(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        if not os.path.exists(out):
            print("the app did not finish: no result", file=sys.stderr)
            return 1
        with open(out) as f:
            r = json.load(f)

        stats_started = time.monotonic()
        subprocess.run(["docker", "stats", "--no-stream"], capture_output=True)
        stats_s = time.monotonic() - stats_started
    finally:
        if not args.keep:
            remove_containers(client)

    first = r["first_frame_wall"] - launched
    cpu = (r["cpu1"] - r["cpu0"]) / (r["wall1"] - r["wall0"]) * 100
    sweeps = r["sweeps1"] - r["sweeps0"]
    print(f"mltop dashboard, {args.containers} benchmark containers ({total} on the engine), "
          f"interval {args.interval:g} s, terminal {args.size}")
    print(f"  launch -> first full frame : {first:.2f} s   ({int(r['rows'])} rows)   goal <= 1.0 s")
    print(f"  steady CPU                 : {cpu:.1f} % of one core over {r['wall1'] - r['wall0']:.0f} s "
          f"({sweeps} sweeps, last sweep {r['last_sweep_s'] * 1000:.0f} ms)   goal <= 5 %")
    print(f"  RSS                        : {r['rss_bytes'] / 2**20:.0f} MiB   goal <= 150 MB")
    print(f"  docker stats --no-stream   : {stats_s:.2f} s for the same containers (reference)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
