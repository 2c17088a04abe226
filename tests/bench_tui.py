"""Benchmark of the dashboard (a script, not a test): `python tests/bench_tui.py [--containers 100 500]`.

For each N, starts N busybox containers (labelled as test containers, so an interrupted run is cleaned up by
the next pytest session), runs the real `mltop` dashboard --repeat times in its own tmux server (a real pty,
so terminal writes are counted) with the simulated libnvidia-ml.so.1 (--gpus GPUs, whose processes are the
host PIDs of the first containers), removes the containers, and prints the median of the runs:

- launch -> first frame with every row: from just before the process is spawned to the first frame that
  shows a row for every container (rates not known yet show `–`) — goal <= 0.5 s at 100, <= 1.0 s at 500;
- launch -> rates filled: the first frame in which every running container's CPU % is known (two sweeps);
- steady CPU of the app process (all its threads: UI, sampler, event watcher, background doctor) as % of
  one core, over --measure seconds after --warmup — goal <= 2 % at 100, <= 5 % at 500;
- RSS at the end — goal <= 100 MB at 100, <= 150 MB at 500;
- what the app says it costs (Snapshot.self_cost: its CPU %, RSS, last sweep, slowest NVML call).

`--profile DIR` adds one run under `py-spy record` during the measured window (raw collapsed stacks in DIR)
and prints the top functions by own time and by total time. The numbers move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

__test__ = False  # not a pytest module

HERE = os.path.dirname(os.path.abspath(__file__))
LABEL = "mltop-bench"
TEST_LABEL = "mltop-test"  # tests/conftest.py: leftovers whose session pid is gone are removed by pytest
SESSION_LABEL = "mltop-test-session"


# --------------------------------------------------------------------------- the app side (in tmux)


def child(args: argparse.Namespace) -> None:
    """Runs inside the tmux pane: the real app on the real terminal, timing itself."""
    from mltop.tui.app import MltopApp
    from mltop.tui.cli.dashboard import make_dashboard_app

    result: dict[str, float] = {}
    prefix = args.prefix

    class BenchApp(MltopApp):
        # (not on_mltop_app_sampled: Textual calls every class's handler along the MRO, so an override that
        # also called super() would arm the poll timer twice)
        def _show(self, snapshot) -> None:
            super()._show(snapshot)
            if snapshot is None or snapshot is not self.snapshot:
                return
            ours = [c for c in snapshot.containers if c.name.startswith(prefix)]
            if len(ours) < args.expect or self.screen.table.row_count < len(snapshot.containers):
                return
            if "rows_wall" not in result:
                self.call_after_refresh(self._mark, "rows_wall")
            measured = [c for c in ours if c.running and c.memory_bytes is not None]
            if "rates_wall" not in result and measured and all(c.cpu_percent is not None for c in measured):
                result["unknown_cpu_shown"] = float(self._unknown_rates_shown)
                self.call_after_refresh(self._mark, "rates_wall")
            elif "rates_wall" not in result:
                # rates not known yet: the table must say so, never show a made-up 0
                table = self.screen.table
                self._unknown_rates_shown = all(table.cell_text(c.id, "cpu") == "–" for c in ours if c.running)

        _unknown_rates_shown = False

        if args.stand_in:
            def _make_sampler(self):
                from bench_engine import stand_in_sampler
                from mltop.probes.sampler import ProbeOptions

                options = dict(docker_host=self._docker_host_arg, nvml=self.nvml, nvml_lib=self.nvml_lib)
                if "inspect_in_background" in ProbeOptions.__dataclass_fields__:
                    options["inspect_in_background"] = True
                return stand_in_sampler(ProbeOptions(**options))

            def new_engine(self):
                from bench_engine import StandInEngine

                return StandInEngine(self._docker_host_arg)

        def _mark(self, what: str) -> None:
            if what in result:
                return
            result[what] = time.time()
            if what == "rates_wall":
                self.set_timer(args.warmup, self._start_measuring)

        def _start_measuring(self) -> None:
            result["threads0"], result["parts0"] = _thread_cpu(), dict(costs)
            result["cpu0"], result["wall0"], result["sweeps0"] = time.process_time(), time.monotonic(), self.sweeps
            with open(args.out + ".measuring", "w") as f:
                f.write(str(os.getpid()))
            self.set_timer(args.measure, self._stop_measuring)

        def _stop_measuring(self) -> None:
            result["cpu1"], result["wall1"], result["sweeps1"] = time.process_time(), time.monotonic(), self.sweeps
            result["threads1"], result["parts1"] = _thread_cpu(), dict(costs)
            result["rss_bytes"] = _rss_bytes()
            result["last_sweep_s"] = self.last_sweep_s or 0.0
            cost = getattr(self.snapshot, "self_cost", None)
            if cost is not None:
                result["self_cost"] = {k: getattr(cost, k) for k in cost.__dataclass_fields__}
            self.exit()

    costs = _account_costs()
    record = os.path.join(os.path.dirname(args.out), "history.sqlite") if args.record else None
    # As `mltop` makes it: with the start-up tuning and the first sweep before Textual starts
    app = make_dashboard_app(BenchApp, nvml=bool(args.nvml_lib), nvml_lib=args.nvml_lib, interval=args.interval,
                             record=record)
    app.run()
    with open(args.out, "w") as f:
        json.dump(result, f)


# What the CPU goes to, without a sampling profiler's own cost: the CPU clock of every thread, and the CPU time
# spent inside a few entry points (each timed with the CPU clock of the thread that runs it).
ACCOUNTED = {
    "sweep (sampler thread)": ("mltop.probes.sampler", "Sampler", "sweep"),
    "snapshot -> screen (UI thread)": ("mltop.tui.app", "MltopApp", "on_mltop_app_sampled"),
    "background doctor": ("mltop.diagnostics.doctor", None, "run_doctor"),
}


def _account_costs() -> dict[str, float]:
    import functools
    import importlib

    costs = dict.fromkeys(ACCOUNTED, 0.0)
    for part, (module_name, class_name, attr) in ACCOUNTED.items():
        module = importlib.import_module(module_name)
        owner = getattr(module, class_name) if class_name else module
        original = getattr(owner, attr)

        def timed(*a, __original=original, __part=part, **kw):
            started = time.thread_time()
            try:
                return __original(*a, **kw)
            finally:
                costs[__part] += time.thread_time() - started

        setattr(owner, attr, functools.wraps(original)(timed))

    import gc

    costs["garbage collector (any thread)"] = 0.0
    for generation in range(3):
        costs[f"garbage collector, generation {generation}"] = 0.0
    started_at: list[float] = []

    def collecting(phase: str, info: dict) -> None:
        if phase == "start":
            started_at.append(time.thread_time())
        elif started_at:
            spent = time.thread_time() - started_at.pop()
            costs["garbage collector (any thread)"] += spent
            costs[f"garbage collector, generation {info['generation']}"] += spent

    gc.callbacks.append(collecting)
    return costs


def _thread_cpu() -> dict[str, float]:
    import threading

    out: dict[str, float] = {}
    for t in threading.enumerate():
        name = "asyncio executor" if t.name.startswith("asyncio_") else t.name
        try:
            out[name] = out.get(name, 0.0) + time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (OSError, TypeError):
            pass
    return out


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------------------- the driver


def start_containers(client, count: int, prefix: str, busy: bool = False) -> list:
    from bench_sweep import BUSY_COMMAND
    from images import BUSYBOX_IMAGE

    labels = {LABEL: "1", TEST_LABEL: "1", SESSION_LABEL: str(os.getpid())}

    def start(i: int):
        return client.containers.run(BUSYBOX_IMAGE, BUSY_COMMAND if busy else "sleep 3600",
                                     name=f"{prefix}{i:03d}", detach=True, labels=labels)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(start, range(count)))


def remove_containers(client) -> None:
    """Ours (this pid), and benchmark leftovers whose process is gone; never anyone else's."""
    mine = client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={os.getpid()}"}, sparse=True)
    leftovers = [c for c in client.containers.list(all=True, filters={"label": LABEL}, sparse=True)
                 if not ((c.attrs.get("Labels") or {}).get(SESSION_LABEL, "").isdigit()
                         and os.path.exists(f"/proc/{c.attrs['Labels'][SESSION_LABEL]}"))]
    with ThreadPoolExecutor(max_workers=4) as pool:  # gently: the engine is shared
        list(pool.map(lambda c: c.remove(force=True), {c.id: c for c in mine + leftovers}.values()))


def fake_nvml(work: str, gpus: int, pids: list[int]) -> tuple[str, str]:
    """(library path, scenario path): `gpus` simulated GPUs, busy, with 4 processes each from `pids`."""
    sys.path.insert(0, HERE)
    from fakenvml import FakeGpu, FakeProcess, FakeScenario, build_fake_nvml, write_scenario

    lib = str(build_fake_nvml(os.path.join(work, "nvml")))
    devices = []
    for g in range(gpus):
        procs = [FakeProcess(pid, used_memory=(2 + i) << 30, sm=10 + i)
                 for i, pid in enumerate(pids[g * 4:(g + 1) * 4])]
        devices.append(FakeGpu(uuid=f"GPU-00000000-0000-4000-8000-{g:012d}", util=60 + g, mem_util=40,
                               mem_used=30 << 30, pci=f"00000000:{0x3B + g:02X}:00.0", processes=procs))
    scenario = os.path.join(work, "scenario.txt")
    write_scenario(scenario, FakeScenario(gpus=devices))
    return lib, scenario


def run_once(args, n: int, prefix: str, lib: str | None, scenario: str | None, profile: str | None,
             pythonpath: str | None = None) -> dict:
    work = tempfile.mkdtemp(prefix="mltop-bench-")
    out = os.path.join(work, "result.json")
    cols, rows = args.size.split("x")
    env = f"env MLTOP_FAKE_NVML_SCENARIO={scenario} " if scenario else "env "
    if pythonpath:
        env += f"PYTHONPATH={pythonpath} "
    command = (f"{env}{sys.executable} {os.path.abspath(__file__)} --child --out {out} --interval {args.interval} "
               f"--warmup {args.warmup} --measure {args.measure} --prefix {prefix} --expect {n}"
               + (f" --nvml-lib {lib}" if lib else "") + (" --stand-in" if args.stand_in else "")
               + (" --record" if args.record else ""))
    server = f"mltop-bench-{os.getpid()}-{os.path.basename(work)}"  # our own tmux server, one per run
    launched = time.time()
    subprocess.run(["tmux", "-L", server, "new-session", "-d", "-x", cols, "-y", rows, command], check=True)
    deadline = time.monotonic() + args.warmup + args.measure + 120
    spy = None
    while not os.path.exists(out) and time.monotonic() < deadline:
        if profile and spy is None and os.path.exists(out + ".measuring"):
            with open(out + ".measuring") as f:
                pid = f.read().strip()
            spy = subprocess.Popen(["py-spy", "record", "--pid", pid, "--gil", "-r", "200",
                                    "-d", str(int(args.measure)), "-f", "raw", "-o", profile],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.05)
    subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True)
    if spy is not None:
        spy.wait(timeout=30)
    if not os.path.exists(out):
        raise RuntimeError("the app did not finish: no result")
    with open(out) as f:
        r = json.load(f)
    shutil.rmtree(work, ignore_errors=True)
    if "rows_wall" not in r or "cpu1" not in r:
        raise RuntimeError(f"the app's result is incomplete: {r}")
    return {
        "rows_s": r["rows_wall"] - launched,
        "rates_s": r["rates_wall"] - launched,
        "unknown_cpu_shown": bool(r.get("unknown_cpu_shown")),
        "cpu_percent": (r["cpu1"] - r["cpu0"]) / (r["wall1"] - r["wall0"]) * 100,
        "window_s": r["wall1"] - r["wall0"],
        "sweeps": r["sweeps1"] - r["sweeps0"],
        "rss_mib": r["rss_bytes"] / 2**20,
        "last_sweep_ms": r["last_sweep_s"] * 1000,
        "self_cost": r.get("self_cost"),
        "breakdown": _breakdown(r),
    }


def _breakdown(r: dict) -> dict[str, float]:
    """% of one core by thread and by accounted entry point, over the measured window."""
    window = r["wall1"] - r["wall0"]
    out = {}
    for key0, key1, kind in (("threads0", "threads1", "thread"), ("parts0", "parts1", "in")):
        for name, end in r.get(key1, {}).items():
            start = r.get(key0, {}).get(name)
            if start is not None:
                out[f"{kind} {name}"] = (end - start) / window * 100
    return out


def top_of_profile(path: str, count: int = 12) -> str:
    """Top entries of a py-spy raw (collapsed) profile: by own time (the leaf frame), by the innermost mltop
    function on the stack (what of ours the time is spent under, libraries included), and by entry point."""
    own: Counter = Counter()
    ours: Counter = Counter()
    roots: Counter = Counter()
    samples = 0
    for_project = ("probes/", "tui/", "diagnostics/")
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            frames = [fr for fr in stack.split(";") if fr and not fr.startswith(("thread (", "process "))]
            if not frames:
                continue
            count_n = int(n)
            samples += count_n
            own[frames[-1]] += count_n
            project = [fr for fr in frames if any(p in fr for p in for_project)]
            ours[_function(project[-1]) if project else "(no mltop frame: Textual / asyncio / threads)"] += count_n
            roots[_function(project[0]) if project else _function(frames[0])] += count_n
    lines = [f"  {samples} samples holding the GIL (py-spy --gil: Python on a CPU)", "  own time (leaf):"]
    lines += [f"    {n * 100 / samples:5.1f}%  {fr}" for fr, n in own.most_common(count)]
    lines.append("  under mltop function (innermost on the stack):")
    lines += [f"    {n * 100 / samples:5.1f}%  {fr}" for fr, n in ours.most_common(count)]
    lines.append("  by outermost mltop function (entry point):")
    lines += [f"    {n * 100 / samples:5.1f}%  {fr}" for fr, n in roots.most_common(8)]
    return "\n".join(lines)


def _function(frame: str) -> str:
    """"KeyedTable.sync (tui/keyed_table.py:190)" -> "KeyedTable.sync (tui/keyed_table.py)"."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, nargs="+", default=[100])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the medians are printed")
    parser.add_argument("--gpus", type=int, default=2, help="simulated GPUs (0: NVML off)")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--measure", type=float, default=20.0)
    parser.add_argument("--size", default="200x60", help="terminal size, COLSxROWS")
    parser.add_argument("--profile", metavar="DIR", help="one more run under py-spy record; raw stacks go here")
    parser.add_argument("--docker-stats", action="store_true", help="also time `docker stats --no-stream`")
    parser.add_argument("--existing", metavar="PREFIX", help="use the running containers named PREFIX* "
                        "instead of starting (and removing) --containers")
    parser.add_argument("--record", action="store_true", help="with the flight recorder on, as `mltop` runs "
                        "by default (into a file in the run's temporary directory)")
    parser.add_argument("--busy", action="store_true", help="containers whose CPU counter moves every second "
                        "(busybox top), so no idle container's reads are skipped")
    parser.add_argument("--stand-in", action="store_true", help="inspect, info and logs from tests/bench_engine.py "
                        "(an engine that lists but does not inspect): steady-state figures only")
    parser.add_argument("--compare", metavar="DIR", help="also run the app with PYTHONPATH=DIR (another "
                        "checkout's mltop), interleaved with this tree's runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nvml-lib", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    from bench_engine import compile_bytecode

    compile_bytecode()

    if shutil.which("tmux") is None:
        print("tmux is needed (the app runs in a real terminal)", file=sys.stderr)
        return 2
    import docker

    client = docker.from_env(timeout=120)
    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}, load {os.getloadavg()[0]:.2f} (shared: figures move)")
    sizes = [None] if args.existing else args.containers
    for n in sizes:
        if args.existing:
            # containers already there (e.g. left by an engine that stopped removing them): never removed here
            prefix = args.existing
            containers = [c for c in client.containers.list(filters={"name": prefix}, sparse=True)
                          if c.attrs["Names"][0].lstrip("/").startswith(prefix)]
            n = len(containers)
            print(f"\nN = {n}: existing running containers named {prefix}*", flush=True)
        else:
            remove_containers(client)
            prefix = f"{LABEL}-{os.getpid()}-"
            started = time.monotonic()
            containers = start_containers(client, n, prefix, args.busy)
            print(f"\nN = {n}: started in {time.monotonic() - started:.1f} s", flush=True)
        variants = [("this tree", None)] + ([(f"PYTHONPATH={args.compare}", args.compare)] if args.compare else [])
        runs: dict[str, list[dict]] = {name: [] for name, _ in variants}
        try:
            lib = scenario = None
            if args.gpus:
                if args.stand_in:
                    from bench_engine import _first_pid

                    pids = [p for p in (_first_pid(c.id) for c in containers) if p][:4 * args.gpus]
                else:
                    pids = [client.api.inspect_container(c.id)["State"]["Pid"] for c in containers[:4 * args.gpus]]
                lib, scenario = fake_nvml(tempfile.mkdtemp(prefix="mltop-bench-nvml-"), args.gpus, pids)
            for i in range(args.repeat):
                for name, pythonpath in variants:  # interleaved, so that the neighbours' load falls on each alike
                    r = run_once(args, n, prefix, lib, scenario, None, pythonpath)
                    runs[name].append(r)
                    print(f"  run {i + 1} ({name}): rows {r['rows_s']:.2f} s, rates {r['rates_s']:.2f} s, "
                          f"CPU {r['cpu_percent']:.1f} %, RSS {r['rss_mib']:.0f} MiB, "
                          f"last sweep {r['last_sweep_ms']:.0f} ms, load {os.getloadavg()[0]:.2f}", flush=True)
            profiles = []
            if args.profile:
                os.makedirs(args.profile, exist_ok=True)
                for name, pythonpath in variants:
                    profile = os.path.join(args.profile, f"tui-{n}{'-compare' if pythonpath else ''}.txt")
                    run_once(args, n, prefix, lib, scenario, profile, pythonpath)
                    profiles.append((name, profile))
            total = len(client.api.containers(all=True))
            stats_s = None
            if args.docker_stats:
                t0 = time.monotonic()
                subprocess.run(["docker", "stats", "--no-stream"], capture_output=True)
                stats_s = time.monotonic() - t0
        finally:
            if not args.existing:
                remove_containers(client)
        for name, profile in profiles:
            print(f"  py-spy profile of the steady state, {n} containers, {name}: {profile}")
            print(top_of_profile(profile))
        goals = {"rows": 0.5 if n <= 100 else 1.0, "cpu": 2 if n <= 100 else 5, "rss": 100 if n <= 100 else 150}
        for name, _ in variants:
            done = runs[name]
            if not done:
                continue

            def med(key: str) -> float:
                return statistics.median(r[key] for r in done)

            print(f"mltop dashboard ({name}), {n} benchmark containers ({total} on the engine), {args.gpus} "
                  f"simulated GPUs, interval {args.interval:g} s, terminal {args.size}; median of {len(done)} runs")
            print(f"  launch -> first frame, every row : {med('rows_s'):.2f} s   goal <= {goals['rows']} s "
                  f"(unknown CPU % shown as '–' before: {all(r['unknown_cpu_shown'] for r in done)})")
            print(f"  launch -> rates filled           : {med('rates_s'):.2f} s")
            print(f"  steady CPU                       : {med('cpu_percent'):.1f} % of one core over "
                  f"{done[0]['window_s']:.0f} s ({done[0]['sweeps']} sweeps)   goal <= {goals['cpu']} %")
            print(f"  RSS                              : {med('rss_mib'):.0f} MiB   goal <= {goals['rss']} MB")
            print(f"  last sweep                       : {med('last_sweep_ms'):.0f} ms")
            parts: dict[str, list[float]] = {}
            for r in done:
                for k, v in r["breakdown"].items():
                    parts.setdefault(k, []).append(v)
            print("  where the CPU goes (% of one core, median; 'in' = inside that entry point, any thread):")
            for k, v in sorted(parts.items(), key=lambda kv: -statistics.median(kv[1])):
                print(f"    {statistics.median(v):5.2f} %  {k}")
            if done[-1]["self_cost"]:
                print(f"  the app's own figure (last run)  : {done[-1]['self_cost']}")
        if stats_s is not None:
            print(f"  docker stats --no-stream         : {stats_s:.2f} s for the same containers (reference)")
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
