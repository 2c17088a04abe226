"""Soak benchmark: does an always-on mltop grow? A script that prints figures, not a test.

    python tests/bench_soak.py --duration 3600 --report soak.json     # the published hour
    python tests/bench_soak.py --duration 300 --warmup 60             # a quick check
    python tests/bench_soak.py --no-pods --churn-per-minute 10

Runs the real `mltop serve` (recording on with a small --max-size, 1 s sweeps, the doctor on) and the real
dashboard (`mltop` in its own tmux server at 80x24, 1 s sweeps), both on the simulated libnvidia-ml.so.1 (two
GPUs whose processes are two resident containers), while containers churn on the Docker engine (created,
run, exited 0 or 3, OOM-killed under a small memory limit, SIGKILLed, removed: --parallel at a time, paced
at --churn-per-minute) and pods churn on a private containerd (tests/cri_harness.py, --pods-per-minute), and
a scraper fetches /metrics every --scrape-interval seconds as Prometheus does (/healthz, /snapshot.json and
/findings.json now and then). Every --sample-interval it prints RSS, open file descriptors and threads of
both processes and the recording's size; at the end the RSS slope per hour after --warmup (least squares),
the fd and thread ranges after warm-up, failed scrapes, error and traceback lines of both processes' logs,
the lifecycles done, and the recording's size against its cap. --report FILE writes the same as JSON.

Containers are named mltop-soak-<pid>-… and labelled as test containers of this pid (an interrupted run's
are removed by the next run or pytest session); everything is removed at the end, also on Ctrl-C or SIGTERM
(which end the run early: the summary covers what it reached). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

__test__ = False  # not a pytest module

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from images import BUSYBOX_IMAGE, PYTHON_IMAGE, ensure_images  # noqa: E402
from serve_helpers import free_port, parse_exposition  # noqa: E402

LABEL = "mltop-soak"
TEST_LABEL = "mltop-test"  # tests/conftest.py removes leftovers whose session pid is gone
SESSION_LABEL = "mltop-test-session"
MIB = 1 << 20
PROMETHEUS_HEADERS = {"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1", "User-Agent": "Prometheus/2.45.0",
                      "X-Prometheus-Scrape-Timeout-Seconds": "10"}
# allocates 8 MiB at a time (touched) until the cgroup's limit kills it
ALLOCATE = "b = []\nwhile True:\n    b.append(bytearray(8 << 20))\n"
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
TRACEBACK = "Traceback (most recent call last)"


# --------------------------------------------------------------------------- the two measured processes


def proc_figures(pid: int) -> dict | None:
    """RSS (bytes), open fds and threads of a live process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return {"rss": int(status["VmRSS"].split()[0]) * 1024, "fds": fds, "threads": int(status["Threads"])}
    except (OSError, KeyError, ValueError):  # gone, or a zombie (no VmRSS)
        return None


def recording_bytes(path: str) -> dict[str, int]:
    """The recording on disk: the database, its -wal and -shm files, and all three."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        try:
            out[suffix.lstrip("-") or "db"] = os.path.getsize(path + suffix)
        except OSError:
            out[suffix.lstrip("-") or "db"] = 0
    out["total"] = sum(out.values())
    return out


def recording_data_bytes(path: str) -> int | None:
    """The pages in use (what --max-size caps: the recorder's own measure), read-only."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            page = db.execute("PRAGMA page_size").fetchone()[0]
            used = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
            return used * page
        finally:
            db.close()
    except sqlite3.Error:
        return None


class Dashboard:
    """The real `mltop` in its own tmux server at 80x24 (a real pty); remain-on-exit keeps the pane (and a
    traceback in it) if the app ends."""

    def __init__(self, work: str, mltop: str, args: list[str], env: dict[str, str]):
        self.server = f"mltop-soak-{os.getpid()}"
        conf = os.path.join(work, "tmux.conf")
        with open(conf, "w") as f:
            f.write("set -g remain-on-exit on\nset -g history-limit 2000\n")
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        command = f"exec env {exports} {mltop} {' '.join(args)}"
        subprocess.run(["tmux", "-L", self.server, "-f", conf, "new-session", "-d", "-s", "soak", "-x", "80",
                        "-y", "24", command], check=True)
        out = subprocess.run(["tmux", "-L", self.server, "display-message", "-p", "-t", "soak", "#{pane_pid}"],
                             capture_output=True, text=True, check=True).stdout.strip()
        self.pid = int(out)

    def screen(self, history: bool = False) -> str:
        args = ["tmux", "-L", self.server, "capture-pane", "-p", "-t", "soak"] + (["-S", "-"] if history else [])
        done = subprocess.run(args, capture_output=True, text=True)
        return done.stdout

    def alive(self) -> bool:
        return proc_figures(self.pid) is not None and _state(self.pid) != "Z"

    def stop(self) -> str:
        """Quit as a user does (q), then end the tmux server; returns the pane's last text."""
        before = self.screen(history=True)
        subprocess.run(["tmux", "-L", self.server, "send-keys", "-t", "soak", "q"], capture_output=True)
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        after = self.screen(history=True)  # what the app printed as it ended (a traceback, if it had one)
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True)
        return f"{before}\n--- after q ---\n{after}"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "?"


# --------------------------------------------------------------------------- churn


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.done: dict[str, int] = {}
        self.errors: list[str] = []
        self.behind = 0  # paced starts dropped because every worker was busy

    def count(self, kind: str) -> None:
        with self.lock:
            self.done[kind] = self.done.get(kind, 0) + 1

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what[:300])

    def total(self, prefix: str = "") -> int:
        with self.lock:
            return sum(n for k, n in self.done.items() if k.startswith(prefix))


DOCKER_KINDS = ("exit0", "exit3", "oom", "killed", "exit0", "exit3", "stopped")
POD_KINDS = ("exit0", "exit1", "oom", "removed-running")


def docker_lifecycle(client, name: str, kind: str, labels: dict[str, str], stop: threading.Event) -> str:
    """One container from create to remove; returns what it ended as (checked against the engine's word)."""
    run_s = random.uniform(1.0, 4.0)
    log = f"echo 'step 1 loss 0.5'; echo 'RuntimeError: CUDA error: out of memory' >&2; sleep {run_s:.1f}"
    image, command, extra = BUSYBOX_IMAGE, ["sh", "-c", f"{log}; exit 0"], {}
    if kind == "exit3":
        command = ["sh", "-c", f"{log}; exit 3"]
    elif kind == "oom":
        image, command = PYTHON_IMAGE, ["python3", "-c", ALLOCATE]
        extra = {"mem_limit": "48m", "memswap_limit": "48m"}
    elif kind in ("killed", "stopped"):
        command = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    container = client.containers.create(image, command, name=name, labels=labels, **extra)
    try:
        container.start()
        if kind in ("killed", "stopped"):
            stop.wait(run_s)
            if kind == "killed":
                container.kill()
            else:
                container.stop(timeout=5)
        result = container.wait(timeout=120)
        state = client.api.inspect_container(container.id)["State"]
        code = result.get("StatusCode")
        expected = {"exit0": 0, "exit3": 3, "oom": 137, "killed": 137, "stopped": 0}[kind]
        if code != expected or (kind == "oom" and not state.get("OOMKilled")):
            raise RuntimeError(f"{kind} container {name} ended with {code}, OOMKilled {state.get('OOMKilled')}")
    finally:
        container.remove(force=True)
    return kind


def docker_churn(client, prefix: str, labels: dict, args, tally: Tally, stop: threading.Event) -> None:
    """--parallel workers take paced tickets; each ticket is one container lifecycle."""
    import queue

    tickets: queue.Queue = queue.Queue(maxsize=args.parallel)
    counter = iter(range(10 ** 9))

    def worker() -> None:
        while not stop.is_set():
            try:
                i = tickets.get(timeout=1)
            except queue.Empty:
                continue
            kind = DOCKER_KINDS[i % len(DOCKER_KINDS)]
            try:
                docker_lifecycle(client, f"{prefix}{i:05d}", kind, labels, stop)
                tally.count(f"docker {kind}")
            except Exception as exc:  # the engine is shared and loaded: say it, go on
                if not stop.is_set():
                    tally.error(f"docker {kind}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, name=f"churn-{w}", daemon=True) for w in range(args.parallel)]
    for t in threads:
        t.start()
    period = 60.0 / args.churn_per_minute
    next_t = time.monotonic()
    while not stop.is_set():
        try:
            tickets.put_nowait(next(counter))
        except queue.Full:
            with tally.lock:
                tally.behind += 1
        next_t += period
        stop.wait(max(0.0, next_t - time.monotonic()))
    for t in threads:
        t.join(timeout=150)


def pod_churn(node, args, tally: Tally, stop: threading.Event) -> None:
    """One pod at a time, paced at --pods-per-minute: run, wait for its container to end (or remove it
    running), remove the pod."""
    from cri_harness import ContainerSpec

    period = 60.0 / args.pods_per_minute
    next_t = time.monotonic()
    i = 0
    while not stop.is_set():
        kind = POD_KINDS[i % len(POD_KINDS)]
        run_s = random.uniform(1.0, 4.0)
        log = f"echo 'epoch 1 loss 0.5'; echo 'Traceback (most recent call last):' >&2; sleep {run_s:.1f}"
        spec = {"exit0": ContainerSpec("main", ["sh", "-c", f"{log}; exit 0"]),
                "exit1": ContainerSpec("main", ["sh", "-c", f"{log}; exit 1"]),
                # `tail /dev/zero` buffers a line that never ends until the limit kills it
                "oom": ContainerSpec("main", ["sh", "-c", "tail /dev/zero"], memory_limit_bytes=32 << 20),
                "removed-running": ContainerSpec("main", ["sleep", "600"])}[kind]
        pod = None
        try:
            pod = node.run_pod("soak", f"soak-{os.getpid()}-{i:05d}", [spec])
            if kind == "removed-running":
                stop.wait(run_s)
            else:
                code = node.wait_exited(pod.containers["main"], timeout_s=120)
                expected = {"exit0": 0, "exit1": 1, "oom": 137}[kind]
                if code != expected:
                    raise RuntimeError(f"pod {kind} ended with {code}")
            node.remove_pod(pod)
            pod = None
            tally.count(f"pod {kind}")
        except Exception as exc:
            if not stop.is_set():
                tally.error(f"pod {kind}: {type(exc).__name__}: {exc}")
        finally:
            if pod is not None:
                try:
                    node.remove_pod(pod)
                except Exception:
                    pass
        i += 1
        next_t += period
        stop.wait(max(0.0, next_t - time.monotonic()))


# --------------------------------------------------------------------------- scrapes


class Scrapes:
    def __init__(self):
        self.ok: dict[str, int] = {}
        self.failed: list[str] = []
        self.seconds: list[float] = []  # /metrics, client-side
        self.dumps: list[str] = []  # py-spy dumps of serve's threads, taken while a scrape was slow
        self.in_flight: tuple[int, float] | None = None  # (scrape number, monotonic start) of the scrape under way

    def total_failed(self) -> int:
        return len(self.failed)


def dump_threads(pid: int, path: str) -> str:
    """`py-spy dump` of every thread of `pid` (what a stalled agent is doing), saved to `path`."""
    spy = shutil.which("py-spy")
    if spy is None:
        return "(py-spy is not installed)"
    try:
        done = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
        text = done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        text = "(py-spy dump timed out)"
    with open(path, "w") as f:
        f.write(text)
    return text


def watch_slow_scrapes(scrapes: Scrapes, stop: threading.Event, pid: int, work: str, after_s: float = 3.0) -> None:
    """While a request has waited `after_s`, dump serve's threads once (3 dumps at most): what it is doing
    while it does not answer, not after."""
    dumped = None
    while not stop.wait(0.5) and len(scrapes.dumps) < 3:
        current = scrapes.in_flight
        if current is not None and current[0] != dumped and time.monotonic() - current[1] > after_s:
            dumped = current[0]
            dump = os.path.join(work, f"serve-threads-{len(scrapes.dumps) + 1}.txt")
            text = dump_threads(pid, dump)
            scrapes.dumps.append(f"{time.strftime('%H:%M:%S')}, a request waiting {after_s:g} s: {dump}\n{text}")


def scrape_loop(url: str, args, scrapes: Scrapes, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        paths = ["/metrics"]
        if n % 6 == 3:
            paths.append("/healthz")
        if n % 12 == 6:
            paths.append("/snapshot.json")
        if n % 24 == 12:
            paths.append("/findings.json")
        for k, path in enumerate(paths):
            started = time.monotonic()
            scrapes.in_flight = (n * 4 + k, started)
            try:
                request = urllib.request.Request(url + path, headers=PROMETHEUS_HEADERS)
                with urllib.request.urlopen(request, timeout=10) as r:
                    body = r.read()
                    status = r.status
                if status != 200:
                    raise RuntimeError(f"HTTP {status}")
                if path == "/metrics":
                    scrapes.seconds.append(time.monotonic() - started)
                    families = parse_exposition(body.decode())
                    if "mltop_up" not in families and not any(k.startswith("mltop_") for k in families):
                        raise RuntimeError("no mltop_ series in the exposition")
                elif path.endswith(".json"):
                    json.loads(body)
                scrapes.ok[path] = scrapes.ok.get(path, 0) + 1
            except Exception as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc = RuntimeError(f"HTTP {exc.code}: {exc.read()[:200]!r}")
                scrapes.failed.append(f"{time.strftime('%H:%M:%S')} {path}: {type(exc).__name__}: {exc}"[:300])
            finally:
                scrapes.in_flight = None
        n += 1
        stop.wait(args.scrape_interval)


# --------------------------------------------------------------------------- logs and figures


def log_problems(*paths: str, extra_text: str = "") -> dict:
    """Error/critical and traceback lines, and warnings, of the logs (and `extra_text`: the pane)."""
    errors, tracebacks, warnings, kinds = [], 0, {}, {}
    errors_total = [0]
    texts = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                texts.append(f.read())
        except FileNotFoundError:
            pass
    texts.append(extra_text)
    for text in texts:
        previous = ""
        for line in text.splitlines():
            if TRACEBACK in line:
                tracebacks += 1
                # what logged it (the line before), ids and times taken out, so that repeats count together
                key = re.sub(r"[0-9a-f]{12,64}", "<id>", re.sub(r"^\S+ \S+ ", "", previous.strip()))[:200]
                kinds[key] = kinds.get(key, 0) + 1
            previous = line
            if ERROR_LINE.search(line):
                if TRACEBACK not in line:  # those are counted by kind above
                    errors.append(line.strip()[:300])
                else:
                    errors_total[0] += 1
            elif " WARNING " in line or ": WARNING " in line:
                # the message without its time stamp, so repeats count together
                key = re.sub(r"^\S+ \S+ ", "", line.strip())[:200]
                warnings[key] = warnings.get(key, 0) + 1
    return {"error_lines": len(errors) + errors_total[0], "tracebacks": tracebacks, "first_errors": errors[:20],
            "traceback_kinds": sorted(kinds.items(), key=lambda kv: -kv[1])[:10],
            "warnings": sum(warnings.values()),
            "top_warnings": sorted(warnings.items(), key=lambda kv: -kv[1])[:10]}


def slope_per_hour(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) in value per hour."""
    if len(samples) < 3:
        return None
    ts = [t for t, _ in samples]
    vs = [v for _, v in samples]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in samples) / var * 3600


def summarize(samples: list[dict], warmup: float, who: str) -> dict:
    after = [s for s in samples if s["t"] >= warmup and s.get(who)]
    if not after:
        return {"samples": 0}
    rss = [(s["t"], s[who]["rss"] / MIB) for s in after]
    out = {"samples": len(after), "rss_mib_first": rss[0][1], "rss_mib_last": rss[-1][1],
           "rss_mib_max": max(v for _, v in rss), "rss_slope_mib_per_h": slope_per_hour(rss)}
    for key in ("fds", "threads"):
        values = [s[who][key] for s in after]
        out[f"{key}_min"], out[f"{key}_max"] = min(values), max(values)
        out[f"{key}_slope_per_h"] = slope_per_hour([(s["t"], s[who][key]) for s in after])
    return out


def remove_containers(client, mine_only: bool = False) -> None:
    """Ours (this pid), and soak leftovers whose process is gone; never anyone else's."""
    found = client.api.containers(all=True, filters={"label": LABEL})
    doomed = []
    for c in found:
        owner = (c.get("Labels") or {}).get(SESSION_LABEL, "")
        if owner == str(os.getpid()) or (not mine_only and not (owner.isdigit() and os.path.exists(f"/proc/{owner}"))):
            doomed.append(c["Id"])

    def remove(cid: str) -> None:
        try:
            client.api.remove_container(cid, force=True)
        except Exception:
            pass

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(remove, doomed))


# --------------------------------------------------------------------------- the run


class Soak:
    """One run: the measured processes, the churn, the scrapes, the samples; stop() ends everything it
    started, whatever of it was started."""

    def __init__(self, args, client):
        self.args, self.client = args, client
        self.stop_event = threading.Event()
        self.stopped_early: list[str] = []
        self.work = args.keep or tempfile.mkdtemp(prefix="mltop-soak-")
        os.makedirs(self.work, exist_ok=True)
        self.prefix = f"{LABEL}-{os.getpid()}-"
        self.labels = {LABEL: "1", TEST_LABEL: "1", SESSION_LABEL: str(os.getpid())}
        self.node = self.serve = self.dashboard = None
        self.threads: list[threading.Thread] = []
        self.tally, self.scrapes, self.samples = Tally(), Scrapes(), []
        self.pane_text = ""
        self.serve_record = os.path.join(self.work, "serve-history.db")
        self.dash_record = os.path.join(self.work, "dashboard-history.db")
        self.logs = {name: os.path.join(self.work, f"{name}.log") for name in ("serve", "serve-stderr", "dashboard")}
        self.started_wall = time.time()
        self.t0 = time.monotonic()
        self.url = ""
        self.elapsed = 0.0

    # ------------------------------------------------------------------ start

    def fake_gpus(self) -> tuple[str, dict[str, str]]:
        """(the simulated library, its environment): two GPUs, each used by a resident container."""
        from fakenvml import FakeGpu, FakeProcess, FakeScenario, build_fake_nvml, write_scenario

        resident = [self.client.containers.run(BUSYBOX_IMAGE, ["sleep", str(int(self.args.duration + 3600))],
                                               name=f"{self.prefix}gpu{g}", detach=True, labels=self.labels)
                    for g in range(2)]
        pids = [self.client.api.inspect_container(c.id)["State"]["Pid"] for c in resident]
        lib = str(build_fake_nvml(os.path.join(self.work, "nvml")))
        scenario = os.path.join(self.work, "scenario.txt")
        write_scenario(scenario, FakeScenario(gpus=[
            FakeGpu(uuid=f"GPU-00000000-0000-4000-8000-{g:012d}", util=70, mem_used=30 << 30,
                    pci=f"00000000:{0x3B + g:02X}:00.0",
                    processes=[FakeProcess(pids[g], used_memory=20 << 30, sm=60)])
            for g in range(2)]))
        return lib, {"MLTOP_FAKE_NVML_SCENARIO": scenario}

    def start(self) -> None:
        args = self.args
        lib, env = self.fake_gpus()
        cri = ["--cri-endpoint", "none"]
        if args.pods:
            from cri_harness import CriNode, build_pause_image

            build_pause_image(BUSYBOX_IMAGE)
            self.node = CriNode()
            self.node.start()
            cri = ["--cri-endpoint", self.node.endpoint]
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        serve_args = ["serve", "--listen", f"127.0.0.1:{port}", "--interval", "1", "--doctor-interval",
                      f"{args.doctor_interval:g}", "--record", self.serve_record, "--max-size", args.max_size,
                      "--log-file", self.logs["serve"], "--nvml-lib", lib, *cri]
        with open(self.logs["serve-stderr"], "w") as err:
            self.serve = subprocess.Popen([args.mltop, *serve_args], stdout=err, stderr=subprocess.STDOUT,
                                          env={**os.environ, **env}, start_new_session=True)
        self.dashboard = Dashboard(self.work, args.mltop, ["--interval", "1", "--nvml-lib", lib, "--record",
                                                           self.dash_record, "--log-file", self.logs["dashboard"],
                                                           *cri], env)
        self.wait_healthy()
        print(f"mltop serve pid {self.serve.pid} on {self.url}, dashboard pid {self.dashboard.pid} "
              f"(tmux -L {self.dashboard.server}); {args.mltop}; work dir {self.work}", flush=True)
        print(f"churn: {args.churn_per_minute:g} containers/min ({args.parallel} at a time)"
              + (f", {args.pods_per_minute:g} pods/min" if args.pods else "")
              + f"; scrapes every {args.scrape_interval:g} s; doctor every {args.doctor_interval:g} s; "
              f"recording cap {args.max_size}; duration {args.duration:g} s, warm-up {args.warmup:g} s", flush=True)

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if self.serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mltop serve did not become healthy (exit {self.serve.poll()})")
            time.sleep(0.5)

    def start_load(self) -> None:
        """The churn and the scrapes, each in its own thread."""
        stop = self.stop_event
        targets = [("docker-churn", docker_churn, (self.client, self.prefix, self.labels, self.args, self.tally, stop)),
                   ("scrapes", scrape_loop, (self.url, self.args, self.scrapes, stop)),
                   ("slow-scrapes", watch_slow_scrapes, (self.scrapes, stop, self.serve.pid, self.work))]
        if self.node is not None:
            targets.append(("pod-churn", pod_churn, (self.node, self.args, self.tally, stop)))
        self.t0 = time.monotonic()
        for name, target, target_args in targets:
            thread = threading.Thread(target=target, args=target_args, name=name, daemon=True)
            self.threads.append(thread)
            thread.start()

    # ------------------------------------------------------------------ measure

    def sample(self) -> dict:
        s = {"t": time.monotonic() - self.t0, "serve": proc_figures(self.serve.pid),
             "dashboard": proc_figures(self.dashboard.pid), "recording": recording_bytes(self.serve_record),
             "dashboard_recording": recording_bytes(self.dash_record), "containers": self.tally.total("docker"),
             "pods": self.tally.total("pod"), "failed_scrapes": self.scrapes.total_failed(),
             "load": os.getloadavg()[0]}
        self.samples.append(s)

        def fmt(p: dict | None) -> str:
            return f"{p['rss'] / MIB:>6.1f}MiB {p['fds']:>4} {p['threads']:>4}" if p else f"{'gone':>9} {'':>4} {'':>4}"

        print(f"{s['t']:>6.0f} | {fmt(s['serve'])} | {fmt(s['dashboard'])[1:]} | "
              f"{s['recording']['total'] / 1e6:>6.2f} | {s['containers']:>5} {s['pods']:>4} "
              f"{len(self.tally.errors):>4} | {sum(self.scrapes.ok.values()):>7} {s['failed_scrapes']:>4} | "
              f"{s['load']:.1f}", flush=True)
        return s

    def measure(self) -> None:
        """A sample every --sample-interval until --duration, a signal, or a measured process ending."""
        args = self.args
        print(f"{'t s':>6} | {'serve RSS':>9} {'fds':>4} {'thr':>4} | {'dash RSS':>8} {'fds':>4} {'thr':>4} | "
              f"{'rec MB':>6} | {'ctrs':>5} {'pods':>4} {'errs':>4} | {'scrapes':>7} {'fail':>4} | load", flush=True)
        next_sample = time.monotonic()
        while not self.stop_event.is_set():
            s = self.sample()
            if s["serve"] is None or not self.dashboard.alive():
                print("a measured process is gone: stopping", flush=True)
                self.stopped_early.append("serve ended" if s["serve"] is None else "dashboard ended")
                return
            if s["t"] >= args.duration:
                return
            next_sample += args.sample_interval
            self.stop_event.wait(max(0.0, min(next_sample - time.monotonic(), args.duration - s["t"] + 0.01)))

    # ------------------------------------------------------------------ end

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=160)
        self.elapsed = time.monotonic() - self.t0
        for step in self._cleanup_steps():
            try:
                result = step()
                if isinstance(result, str):
                    self.pane_text = result
            except Exception as exc:  # the next step still runs
                print(f"cleaning up: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        with open(os.path.join(self.work, "dashboard-pane.txt"), "w") as f:
            f.write(self.pane_text)

    def _cleanup_steps(self) -> list:
        """In order: the dashboard (returns its pane's text), serve, our containers, the containerd."""
        serve, node, dashboard = self.serve, self.node, self.dashboard

        def end_serve() -> None:
            if serve is not None and serve.poll() is None:
                serve.send_signal(signal.SIGTERM)
                try:
                    serve.wait(15)
                except subprocess.TimeoutExpired:
                    serve.kill()
                    serve.wait()

        return [dashboard.stop if dashboard is not None else (lambda: ""), end_serve,
                lambda: remove_containers(self.client, mine_only=True),
                node.stop if node is not None else (lambda: None)]

    def report(self) -> dict:
        from mltop.probes.recording.source import parse_size

        args, samples, scrapes, tally = self.args, self.samples, self.scrapes, self.tally
        cap = parse_size(args.max_size)
        biggest = max((s["recording"]["total"] for s in samples), default=0)
        biggest_db = max((s["recording"]["db"] for s in samples), default=0)
        return {
            "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_wall)),
            "elapsed_s": self.elapsed, "warmup_s": args.warmup, "stopped_early": self.stopped_early,
            "churn_per_minute": args.churn_per_minute, "parallel": args.parallel,
            "pods_per_minute": args.pods_per_minute if args.pods else 0,
            "serve": summarize(samples, args.warmup, "serve"),
            "dashboard": summarize(samples, args.warmup, "dashboard"),
            "lifecycles": dict(sorted(tally.done.items())),
            "container_lifecycles": tally.total("docker"), "pod_lifecycles": tally.total("pod"),
            "lifecycle_errors": len(tally.errors), "first_lifecycle_errors": tally.errors[:20],
            "paced_starts_dropped": tally.behind,
            "scrapes_ok": scrapes.ok, "scrapes_failed": scrapes.total_failed(),
            "first_failed_scrapes": scrapes.failed[:20], "serve_threads_at_slow_scrapes": scrapes.dumps,
            "metrics_scrape_ms_median": statistics.median(scrapes.seconds) * 1000 if scrapes.seconds else None,
            "metrics_scrape_ms_max": max(scrapes.seconds) * 1000 if scrapes.seconds else None,
            "metrics_scrapes_over_1s": sum(1 for x in scrapes.seconds if x > 1.0),
            "load_average_max": max((s["load"] for s in samples), default=None),
            "load_average_median": statistics.median(s["load"] for s in samples) if samples else None,
            "serve_log": log_problems(self.logs["serve"], self.logs["serve-stderr"]),
            "dashboard_log": log_problems(self.logs["dashboard"], extra_text=self.pane_text),
            "recording": {"cap_bytes": cap, "max_on_disk_bytes": biggest, "max_db_file_bytes": biggest_db,
                          "last_on_disk_bytes": samples[-1]["recording"]["total"] if samples else 0,
                          "data_bytes_at_end": recording_data_bytes(self.serve_record),
                          "within_cap": biggest_db <= cap, "within_cap_with_wal": biggest <= cap},
            "dashboard_recording_bytes": samples[-1]["dashboard_recording"]["total"] if samples else 0,
            "samples": samples,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of churn (default 3600)")
    parser.add_argument("--warmup", type=float, default=600.0,
                        help="seconds before figures count for the slope and ranges (default 600)")
    parser.add_argument("--churn-per-minute", type=float, default=36.0, help="container lifecycles a minute")
    parser.add_argument("--parallel", type=int, default=5, help="container lifecycles at a time")
    parser.add_argument("--pods", action=argparse.BooleanOptionalAction, default=True,
                        help="also churn pods on a private containerd (needs root and containerd)")
    parser.add_argument("--pods-per-minute", type=float, default=4.0)
    parser.add_argument("--scrape-interval", type=float, default=5.0)
    parser.add_argument("--sample-interval", type=float, default=30.0, help="seconds between printed samples")
    parser.add_argument("--doctor-interval", type=float, default=30.0, help="mltop serve's --doctor-interval")
    parser.add_argument("--max-size", default="5MB", help="mltop serve's --max-size (small, so the cap is reached)")
    parser.add_argument("--mltop", default=os.path.join(os.path.dirname(sys.executable), "mltop"),
                        help="the mltop executable (default: the one beside this Python)")
    parser.add_argument("--report", metavar="FILE", help="write the summary as JSON here")
    parser.add_argument("--keep", metavar="DIR", help="keep the logs and recordings in DIR (default: a temporary "
                        "directory, removed at the end)")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is needed (the dashboard runs in a real terminal)", file=sys.stderr)
        return 2
    import docker

    ensure_images([BUSYBOX_IMAGE, PYTHON_IMAGE])
    client = docker.from_env(timeout=120)
    remove_containers(client)  # an interrupted earlier run's
    soak = Soak(args, client)

    def on_signal(signum, _frame) -> None:
        soak.stopped_early.append(signal.Signals(signum).name)
        soak.stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        soak.start()
        soak.start_load()
        soak.measure()
    finally:
        soak.stop()
    report = soak.report()
    print_summary(report)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
    if not args.keep:
        shutil.rmtree(soak.work, ignore_errors=True)
    return 0


def print_summary(r: dict) -> None:
    def mib(v) -> str:
        return "n/a" if v is None else f"{v:+.2f}"

    print(f"\nsoak: {r['elapsed_s']:.0f} s ({r['elapsed_s'] / 3600:.2f} h), figures after a {r['warmup_s']:g} s "
          f"warm-up" + (f"; stopped early: {', '.join(r['stopped_early'])}" if r["stopped_early"] else ""))
    for who in ("serve", "dashboard"):
        s = r[who]
        if not s.get("samples"):
            print(f"  {who}: no samples after the warm-up")
            continue
        print(f"  {who:9}: RSS {s['rss_mib_first']:.1f} -> {s['rss_mib_last']:.1f} MiB (max {s['rss_mib_max']:.1f}), "
              f"slope {mib(s['rss_slope_mib_per_h'])} MiB/h (goal < 1) over {s['samples']} samples; "
              f"fds {s['fds_min']}-{s['fds_max']} (slope {mib(s['fds_slope_per_h'])}/h), "
              f"threads {s['threads_min']}-{s['threads_max']} (slope {mib(s['threads_slope_per_h'])}/h)")
    print(f"  lifecycles: {r['container_lifecycles']} containers, {r['pod_lifecycles']} pods "
          f"({', '.join(f'{k} {n}' for k, n in r['lifecycles'].items())}); {r['lifecycle_errors']} failed on the "
          f"driver's side, {r['paced_starts_dropped']} paced starts dropped (every worker busy)")
    for e in r["first_lifecycle_errors"][:5]:
        print(f"    {e}")
    by_path = ", ".join(f"{k} {n}" for k, n in r["scrapes_ok"].items())
    print(f"  scrapes: {sum(r['scrapes_ok'].values())} ok ({by_path}), "
          f"{r['scrapes_failed']} failed (goal 0); /metrics {r['metrics_scrape_ms_median'] or 0:.1f} ms median, "
          f"{r['metrics_scrape_ms_max'] or 0:.0f} ms max, {r['metrics_scrapes_over_1s']} over 1 s; load average "
          f"{r['load_average_median'] or 0:.1f} median, {r['load_average_max'] or 0:.1f} max (2 cores, shared)")
    for e in r["first_failed_scrapes"][:5]:
        print(f"    {e}")
    for dump in r["serve_threads_at_slow_scrapes"][:1]:
        print("    serve's threads during the first slow request (py-spy dump):\n      "
              + dump.replace("\n", "\n      ")[:4000])
    for who in ("serve_log", "dashboard_log"):
        log = r[who]
        print(f"  {who.replace('_', ' ')}: {log['tracebacks']} tracebacks, {log['error_lines']} error lines "
              f"(goal 0), {log['warnings']} warnings")
        for kind, n in log["traceback_kinds"][:5]:
            print(f"    {n} x traceback after: {kind}")
        for e in log["first_errors"][:5]:
            print(f"    {e}")
        for w, n in log["top_warnings"][:3]:
            print(f"    {n} x {w}")
    rec = r["recording"]
    data = "n/a" if rec["data_bytes_at_end"] is None else f"{rec['data_bytes_at_end'] / 1e6:.2f} MB"
    print(f"  recording: {rec['last_on_disk_bytes'] / 1e6:.2f} MB on disk at the end (max "
          f"{rec['max_on_disk_bytes'] / 1e6:.2f} MB with the WAL, database file alone max "
          f"{rec['max_db_file_bytes'] / 1e6:.2f} MB), {data} of data, cap {rec['cap_bytes'] / 1e6:.2f} MB: the database "
          f"{'within' if rec['within_cap'] else 'OVER'} the cap, with its WAL "
          f"{'within' if rec['within_cap_with_wal'] else 'over'}; the dashboard's "
          f"own recording {r['dashboard_recording_bytes'] / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
