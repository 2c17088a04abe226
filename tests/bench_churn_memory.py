"""What mltop keeps per container that has come and gone: tracemalloc over a real Sampler, a Recorder on a temp
file and a doctor every few sweeps, while a helper thread starts and removes short-lived containers.

    .venv/bin/python tests/bench_churn_memory.py [--lifecycles 120] [--warmup 40] [--top 15] [--dashboard]

(MLTOP_NVML_LIB=path: NVML on, e.g. the suite's simulated library; --dashboard: the real dashboard, headless,
recording, instead of serve's parts: a Sampler, a Recorder, the doctor every 10 sweeps and the /metrics collector.)

Prints the traced memory growth between the warm-up mark and the end, in bytes per container lifecycle (start,
run, exit, remove), and the allocation sites (by traceback) that grew most. Goal: ~0 bytes per lifecycle (what
remains is noise: the allocator's free lists, the interpreter's own caches). The churn is moderate (3 alive at
a time) since the machine's cores are shared.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid

PREFIX = f"mltop-leak-{uuid.uuid4().hex[:6]}-"
IMAGE = "mltop-test/busybox:1"


class Churn(threading.Thread):
    """Keeps `alive` containers running a second or two each; some exit 1, some are OOM-killed; each is removed
    once it exited. Counts finished lifecycles."""

    def __init__(self, alive: int = 3):
        super().__init__(daemon=True, name="churn")
        import docker

        self.client = docker.from_env()
        self.alive = alive
        self.done = 0
        self.stop = threading.Event()
        self._n = 0

    def run(self) -> None:
        running: list = []
        while not self.stop.is_set():
            while len(running) < self.alive:
                self._n += 1
                kind = self._n % 4
                cmd = ["sh", "-c", "sleep 1.5" if kind else "sleep 1; exit 1"]
                kwargs = {}
                if kind == 3:  # fills its memory limit: the kernel kills it
                    cmd = ["sh", "-c", "sleep 1; dd if=/dev/zero bs=1M count=64 | tail > /dev/null"]
                    kwargs = {"mem_limit": "16m", "memswap_limit": "16m"}
                running.append(self.client.containers.run(IMAGE, cmd, name=f"{PREFIX}{self._n}", detach=True,
                                                          labels={"mltop.test": "leak"}, **kwargs))
            time.sleep(0.3)
            for c in list(running):
                try:
                    c.reload()
                    if c.status in ("exited", "dead"):
                        c.remove(force=True)
                        running.remove(c)
                        self.done += 1
                except Exception:
                    running.remove(c)
                    self.done += 1
        for c in running:
            try:
                c.remove(force=True)
            except Exception:
                pass


def report(first, churn_done: int, sweeps: int, args) -> None:
    """The growth since `first` (lifecycles done, tracemalloc snapshot, traced bytes) and its top sites."""
    gc.collect()
    last = tracemalloc.take_snapshot()
    traced = tracemalloc.get_traced_memory()[0]
    n = max(churn_done - first[0], 1)
    print(f"end: {churn_done} lifecycles, {sweeps} sweeps, traced {traced / 1e6:.2f} MB")
    print(f"growth: {traced - first[2]:+d} B over {n} lifecycles = {(traced - first[2]) / n:+.0f} B/lifecycle")
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diffs = last.filter_traces(filters).compare_to(first[1].filter_traces(filters), "traceback")
    for stat in diffs[:args.top]:
        print(f"\n{stat.size_diff:+9d} B {stat.count_diff:+6d} blocks")
        for line in stat.traceback.format()[-2 * args.frames:]:
            print("   ", line)


async def dashboard(args) -> None:
    """The real dashboard, headless at 80x24, recording into a temp file, while containers churn."""
    from mltop.tui.app import MltopApp

    work = tempfile.mkdtemp(prefix="mltop-leak-")
    app = MltopApp(nvml_lib=os.environ.get("MLTOP_NVML_LIB"), nvml=bool(os.environ.get("MLTOP_NVML_LIB")),
                   interval=args.interval, record=os.path.join(work, "history.db"))
    churn = Churn()
    churn.start()
    first = None
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            while True:
                await pilot.pause(args.interval)
                if first is None and churn.done >= args.warmup:
                    gc.collect()
                    first = (churn.done, tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[0])
                    print(f"warm: {churn.done} lifecycles, traced {first[2] / 1e6:.2f} MB", flush=True)
                if first is not None and churn.done >= first[0] + args.lifecycles:
                    break
            report(first, churn.done, 0, args)
    finally:
        churn.stop.set()
        churn.join(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dashboard", action="store_true", help="the dashboard (headless) instead of serve's parts")
    parser.add_argument("--lifecycles", type=int, default=120, help="measured container lifecycles")
    parser.add_argument("--warmup", type=int, default=40, help="lifecycles before the first snapshot")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--doctor-every", type=int, default=10, help="sweeps")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()

    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.recording import Recorder
    from mltop.probes.sampler import ProbeOptions, Sampler
    from mltop.tui.serve.loop import ServeState
    from mltop.tui.serve.metrics import SnapshotCollector

    tracemalloc.start(args.frames)
    if args.dashboard:
        import asyncio

        asyncio.run(dashboard(args))
        return
    work = tempfile.mkdtemp(prefix="mltop-leak-")
    sampler = Sampler(ProbeOptions(nvml=bool(os.environ.get("MLTOP_NVML_LIB")),
                                   nvml_lib=os.environ.get("MLTOP_NVML_LIB"), container_stats=True))
    recorder = Recorder(os.path.join(work, "history.db"), max_bytes=2_000_000, retention_every_s=5.0).start()
    state = {"value": ServeState()}
    collector = SnapshotCollector(lambda: state["value"])
    churn = Churn()
    churn.start()
    sweeps = 0
    previous = None
    first = None
    try:
        while True:
            snap = sampler.sweep()
            sweeps += 1
            doctor = run_doctor(snap, sampler.engine, previous=previous) if sweeps % args.doctor_every == 0 \
                else None
            state["value"] = ServeState(snapshot=snap, previous=previous, sweeps=sweeps, doctor=doctor)
            list(collector.collect())
            recorder.record(snap, doctor)
            previous = snap
            done = churn.done
            if first is None and done >= args.warmup:
                recorder.flush()
                gc.collect()
                first = (done, tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[0])
                print(f"warm: {done} lifecycles, {sweeps} sweeps, traced {first[2] / 1e6:.2f} MB", flush=True)
            if first is not None and done >= first[0] + args.lifecycles:
                break
            time.sleep(args.interval)
        recorder.flush()
        report(first, churn.done, sweeps, args)
    finally:
        churn.stop.set()
        churn.join(30)
        recorder.close()
        sampler.close()


if __name__ == "__main__":
    main()
