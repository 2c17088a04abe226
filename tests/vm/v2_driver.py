"""Runs INSIDE the cgroup v2 guest (tests/vm/guest.py), under the guest's own Python with mltop pip-installed:
starts the workloads, runs mltop as a user would (snapshot, doctor, serve with its recorder) next to direct
reads of the kernel's cgroup files, and prints one JSON document that tests/test_cgroup_v2.py asserts on.

    /opt/mltop/bin/python /mnt/mltop/v2_driver.py /mnt/mltop/libnvidia-ml.so.1

Emulation is slow (docker run 8-15 s, Python 5-6x slower), so one run starts every workload at once and
every mltop command looks at all of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

SHARE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SHARE)  # fakenvml (the scenario writer) is shared next to this file

from fakenvml import FakeGpu, FakeProcess, SCENARIO_ENV, write_scenario  # noqa: E402
from v2_pods import measure_pods, start_pods  # noqa: E402

MLTOP = os.path.join(os.path.dirname(sys.executable), "mltop")
LABEL = "mltop-v2-driver"
IMAGE = "mltop-test/busybox:1"
ROOT = "/sys/fs/cgroup"
MIB = 1 << 20

# name -> docker run options and command. Each is one behaviour the v2 code paths must see.
WORKLOADS = {
    # a GPU job stuck on its CPU quota: busy loop at --cpus 0.5, and an NVML process (fake library); started
    # through a runtime named "nvidia" (runc under that name), as the toolkit's runtime starts GPU containers
    "v2-gpu": (["--cpus", "0.5", "--runtime", "nvidia"], "while :; do :; done"),
    # page cache and /dev/shm: 48 MiB written to a file, 60 MiB to the default 64 MiB /dev/shm, then idle
    "v2-mem": (["--memory", "512m"],
               "dd if=/dev/zero of=/tmp/cache bs=1M count=48 2>/dev/null; "
               "dd if=/dev/zero of=/dev/shm/buf bs=1M count=60 2>/dev/null; sync; exec sleep 100000"),
    # the OOM killer, again and again, in a container that lives on (sh survives, tail is the victim)
    "v2-oom": (["--memory", "32m", "--memory-swap", "32m"],
               "while :; do tail /dev/zero; sleep 2; done"),
    # reads at a 1 MB/s throttle straight from the block device (--device-read-bps lands in io.max)
    "v2-io": (["--device-read-bps", "/dev/vda:1mb", "--device", "/dev/vda:/dev/vda:r"],
              "while :; do dd if=/dev/vda of=/dev/null bs=64k count=4096 iflag=direct 2>/dev/null; done"),
    # network: 1000-byte pings to the bridge's gateway (the guest's kernel answers), 5 a second
    "v2-net": ([], "exec ping -q -s 1000 -i 0.2 $(ip route | awk '/default/ {print $3}')"),
    # tasks near pids.max: 16 of 17 (the shell and 15 sleeps)
    "v2-pids": (["--pids-limit", "17"], "for i in $(seq 15); do sleep 100000 & done; wait"),
}


def sh(cmd: list[str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{cmd}: {result.returncode}: {result.stderr[-1500:]}")
    return result


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError as err:
        return f"<{type(err).__name__}: {err}>" if not isinstance(err, FileNotFoundError) else None


def flat(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def cgroup_files(cid: str, pid: int) -> dict:
    """The kernel's own counters, read directly: what mltop's figures are held against."""
    proc_cgroup = read(f"/proc/{pid}/cgroup") or ""
    rel = proc_cgroup.strip().split("::", 1)[-1] if proc_cgroup.startswith("0::") else None
    d = os.path.join(ROOT, rel.lstrip("/")) if rel else None
    out = {"t": time.time(), "proc_cgroup": proc_cgroup, "dir": d, "exists": bool(d and os.path.isdir(d))}
    if not out["exists"]:
        return out
    names = ["memory.current", "memory.max", "memory.stat", "memory.events", "cpu.stat", "cpu.max",
             "pids.current", "pids.max", "io.stat", "io.max", "cpu.pressure", "memory.pressure",
             "io.pressure", "cgroup.controllers"]
    for name in names:
        out[name] = read(os.path.join(d, name))
    out["memory.stat"] = flat(out["memory.stat"])
    out["memory.events"] = flat(out["memory.events"])
    out["cpu.stat"] = flat(out["cpu.stat"])
    out["net_dev"] = read(f"/proc/{pid}/net/dev")
    return out


def register_nvidia_runtime() -> None:
    """A runtime named "nvidia" (runc under that name): what the NVIDIA Container Toolkit registers. dockerd
    reloads its runtimes on SIGHUP, so no restart."""
    path = "/etc/docker/daemon.json"
    config = json.loads(read(path) or "{}")
    if "nvidia" in config.get("runtimes", {}):
        return
    config.setdefault("runtimes", {})["nvidia"] = {"path": "runc"}
    with open(path, "w") as f:
        json.dump(config, f)
    sh(["systemctl", "kill", "--signal=HUP", "docker.service"])
    for _ in range(60):
        if "nvidia" in sh(["docker", "info", "--format", "{{json .Runtimes}}"]).stdout:
            return
        time.sleep(1)
    raise RuntimeError("dockerd did not take the nvidia runtime")


def start_workloads() -> dict[str, dict]:
    sh(["docker", "rm", "-f", *WORKLOADS], check=False)
    register_nvidia_runtime()

    def run(item):
        name, (opts, cmd) = item
        t0 = time.monotonic()
        cid = sh(["docker", "run", "-d", "--name", name, "--label", LABEL, *opts, IMAGE, "sh", "-c", cmd]).stdout
        return name, {"id": cid.strip(), "docker_run_s": round(time.monotonic() - t0, 1)}

    with ThreadPoolExecutor(len(WORKLOADS)) as pool:
        started = dict(pool.map(run, WORKLOADS.items()))
    for name, info in started.items():
        info["pid"] = int(sh(["docker", "inspect", "--format", "{{.State.Pid}}", name]).stdout)
    return started


def mltop(*args: str, timeout: float = 300, env: dict | None = None) -> dict:
    t0 = time.monotonic()
    result = subprocess.run([MLTOP, *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    out = {"rc": result.returncode, "stderr": result.stderr[-3000:], "seconds": round(time.monotonic() - t0, 1)}
    try:
        out["json"] = json.loads(result.stdout)
    except ValueError:
        out["stdout"] = result.stdout[-3000:]
    return out


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError as err:
        return 0, str(err)


def serve_and_record(lib: str, env: dict, record: str) -> dict:
    """mltop serve with its recorder: the cAdvisor families with their `id` label, then the recording."""
    port = 10140
    proc = subprocess.Popen([MLTOP, "serve", "--listen", f"127.0.0.1:{port}", "--interval", "2",
                             "--doctor-interval", "6", "--record", record, "--nvml-lib", lib],
                            stdout=subprocess.DEVNULL, stderr=open(record + ".log", "w"), env={**os.environ, **env})
    out: dict = {}
    try:
        deadline = time.monotonic() + 120
        metrics = ""
        while time.monotonic() < deadline:
            status, body = get(f"http://127.0.0.1:{port}/metrics")
            # wait for two sweeps and a doctor run: the counters and the findings are both there
            if status == 200 and "mltop_findings{" in body and body.count("container_last_seen{") >= 6:
                metrics = body
                break
            time.sleep(2)
        out["metrics"] = metrics
        time.sleep(6)  # a few more sweeps for the recording
        out["healthz"] = get(f"http://127.0.0.1:{port}/healthz")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out["serve_rc"] = proc.returncode
    out["serve_log"] = (read(record + ".log") or "")[-3000:]
    # the recording, read back as replay reads it
    from mltop.probes.recording.source import RecordingStore

    store = RecordingStore(record)
    try:
        snaps = list(store.snapshots(0, time.time() + 60))
        out["recorded_sweeps"] = len(snaps)
        out["recorded_last"] = {c.name: {"memory_bytes": c.memory_bytes, "cpu_percent": c.cpu_percent,
                                         "oom_kills": c.oom_kills, "pids": c.pids,
                                         "io_read_bytes_per_s": c.io_read_bytes_per_s,
                                         "net_rx_bytes_per_s": c.net_rx_bytes_per_s}
                                for c in snaps[-1].containers} if snaps else {}
    finally:
        store.close()
    out["events"] = mltop("events", "--since", "1h", "--json", "--record", record)
    return out


def agent_in_a_container() -> dict:
    """mltop as README's agent container runs it (--pid=host, the host's /sys/fs/cgroup read-only, the engine
    socket): on v2 Docker gives a container a cgroup namespace of its own, so /proc/<pid>/cgroup reads
    `0::/../docker-<id>.scope` for the others and `0::/` for itself. The guest's own Python and mltop venv are
    mounted into a busybox container (the agent image needs a Python base image the guest does not hold)."""
    mounts = ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro", "/opt/mltop:/opt/mltop:ro",
              "/sys/fs/cgroup:/sys/fs/cgroup:ro", "/var/run/docker.sock:/var/run/docker.sock:ro"]
    cmd = ["docker", "run", "--rm", "--name", "v2-agent", "--label", LABEL, "--pid=host"]
    for m in mounts:
        cmd += ["-v", m]
    script = f"cat /proc/self/cgroup; echo; exec {MLTOP} --no-nvml snapshot --json --interval 1"
    result = sh([*cmd, IMAGE, "sh", "-c", script], timeout=300, check=False)
    head, _, body = result.stdout.partition("\n\n")
    out = {"rc": result.returncode, "stderr": result.stderr[-2000:], "proc_self_cgroup": head}
    try:
        snap = json.loads(body)
        out["containers"] = {c["name"]: {"cgroup_path": c["cgroup_path"], "memory_bytes": c["memory_bytes"],
                                         "pids": c["pids"], "cpu_percent": c["cpu_percent"]}
                             for c in snap["containers"]}
    except ValueError:
        out["stdout"] = result.stdout[-2000:]
    return out


def main() -> int:
    lib = sys.argv[1]
    report: dict = {"host": {
        "kernel": os.uname().release,
        "cgroup_controllers": read(f"{ROOT}/cgroup.controllers"),
        "cgroup_fs": sh(["stat", "-f", "-c", "%T", ROOT]).stdout.strip(),
        "docker": sh(["docker", "info", "--format", "{{.ServerVersion}} {{.CgroupVersion}} {{.CgroupDriver}}"])
        .stdout.strip(),
        "python": sys.version.split()[0],
        "mltop": sh([os.path.join(os.path.dirname(sys.executable), "pip"), "show", "mltop"]).stdout,
        "dev_char_nvidia": sorted(e for e in os.listdir("/dev/char") if e.startswith("195:")),
    }}
    t0 = time.monotonic()
    # the Kubernetes pods (a private containerd, runc's systemd driver) start beside the Docker workloads
    pods_pool = ThreadPoolExecutor(1)
    pods_started = pods_pool.submit(start_pods, SHARE)
    workloads = start_workloads()
    report["start_s"] = round(time.monotonic() - t0, 1)
    report["workloads"] = workloads
    # the fake NVML: one mostly idle GPU; its processes (host PIDs, joined to containers through the v2 path)
    # are the GPU job's busy shell (held back by its CPU quota) and the throttled reader (held back by I/O)
    scenario = os.path.join(SHARE, "scenario.txt")
    procs = [FakeProcess(workloads["v2-gpu"]["pid"], used_memory=3 << 30, sm=10),
             FakeProcess(workloads["v2-io"]["pid"], used_memory=1 << 30, sm=5)]
    write_scenario(scenario, gpus=[FakeGpu(util=15, mem_used=4 << 30, processes=procs)])
    env = {SCENARIO_ENV: scenario}
    time.sleep(8)  # every workload settles: caches written, OOM kills under way, pings flowing

    before = {n: cgroup_files(w["id"], w["pid"]) for n, w in workloads.items()}
    snap = mltop("--nvml-lib", lib, "snapshot", "--json", "--interval", "2", env=env)
    after = {n: cgroup_files(w["id"], w["pid"]) for n, w in workloads.items()}
    report.update(before=before, snapshot=snap, after=after)
    report["doctor"] = mltop("--nvml-lib", lib, "doctor", "--json", env=env)
    t_pods = time.monotonic()
    node, pods = pods_started.result()
    pods_pool.shutdown()
    report["pods"] = measure_pods(node, pods, cgroup_files, mltop)
    report["pods"]["phase_s"] = round(time.monotonic() - t_pods, 1)  # what the pods add after the Docker phase
    report["serve"] = serve_and_record(lib, env, os.path.join("/tmp", "history.db"))
    report["agent"] = agent_in_a_container()
    sh(["docker", "rm", "-f", *WORKLOADS, "v2-agent"], check=False)
    report["total_s"] = round(time.monotonic() - t0, 1)
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
