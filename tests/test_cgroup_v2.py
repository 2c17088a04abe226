"""The cgroup v2 tier: mltop on a real unified hierarchy with systemd and Docker's systemd cgroup driver.

The host the rest of the suite runs on is cgroup v1 with the cgroupfs driver; these tests run on a Debian 12
guest the suite boots itself (tests/vm/guest.py), where tests/vm/v2_driver.py starts the workloads and runs
mltop (pip-installed from this checkout's wheel) next to direct reads of the kernel's counters. Every test
holds mltop's figure against the kernel's own file, read just before and just after mltop's sweep, and
records the host it ran on (`host` in its properties, and in each failure message).

Selected with `-m cgroup_v2` (the default `-m "not cgroup_v2"` in pyproject.toml leaves it out):
    python3 -m pytest -m cgroup_v2
Tolerances: rates are compared with what the workload does (a 1 MB/s read throttle, 5 pings a second, a
0.5-core quota) within bounds wide enough for emulation's timing; counters and sizes are held between the
kernel's readings before and after mltop's sweep.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.cgroup_v2

MIB = 1 << 20


@pytest.fixture
def run(v2_run, record_property):
    """The driver's result; records which host the test ran on."""
    h = v2_run["host"]
    host = f"cgroup v2 guest: Debian 12, kernel {h['kernel']}, Docker {h['docker']} ({h['cgroup_fs']})"
    record_property("host", host)
    v2_run["host_line"] = host
    return v2_run


def containers(run) -> dict[str, dict]:
    snap = run["snapshot"]
    assert snap["rc"] == 0, f"[{run['host_line']}] mltop snapshot failed: {snap['stderr']}"
    return {c["name"]: c for c in snap["json"]["containers"]}


def between(value, a, b, what, run):
    lo, hi = min(a, b), max(a, b)
    assert value is not None and lo <= value <= hi, \
        f"[{run['host_line']}] {what}: mltop {value}, the kernel {a} before and {b} after"


def findings(run, name) -> set[str]:
    doc = run["doctor"]
    assert "json" in doc, f"[{run['host_line']}] mltop doctor printed no JSON: {doc}"
    return {f["code"] for f in doc["json"]["findings"] if f["container"] == name}


def test_the_guest_is_cgroup_v2_with_systemd(run):
    host = run["host"]
    assert host["cgroup_fs"] == "cgroup2fs", run["host_line"]
    assert host["docker"].endswith(" 2 systemd"), run["host_line"]
    snap_host = run["snapshot"]["json"]["host"]
    assert (snap_host["cgroup_version"], snap_host["cgroup_driver"]) == (2, "systemd"), run["host_line"]
    assert "Version: 0.1.0" in host["mltop"], "mltop is pip-installed in the guest from the host's wheel"


def test_cgroup_paths_are_systemd_scopes(run):
    """/proc/<pid>/cgroup is `0::/system.slice/docker-<id>.scope`, and mltop reads that directory."""
    by_name = containers(run)
    for name, w in run["workloads"].items():
        assert run["before"][name]["proc_cgroup"] == f"0::/system.slice/docker-{w['id']}.scope\n", run["host_line"]
        assert by_name[name]["cgroup_path"] == f"/sys/fs/cgroup/system.slice/docker-{w['id']}.scope", \
            run["host_line"]


def test_cpu_quota_and_throttling(run):
    """cpu.max 50000 100000 is 0.5 cores; usage_usec and nr_throttled as the kernel counts them; the doctor
    names the throttling."""
    c = containers(run)["v2-gpu"]
    before, after = run["before"]["v2-gpu"], run["after"]["v2-gpu"]
    assert c["cpu_limit_cores"] == 0.5 and before["cpu.max"].split() == ["50000", "100000"], run["host_line"]
    assert 0 < c["cpu_percent"] <= 60, f"[{run['host_line']}] cpu_percent {c['cpu_percent']}"  # the quota caps it
    assert c["cpu_limit_percent"] == pytest.approx(c["cpu_percent"] / 0.5, rel=0.02)
    between(c["cpu_usage_seconds"] * 1e6, before["cpu.stat"]["usage_usec"], after["cpu.stat"]["usage_usec"],
            "cpu usage (usec)", run)
    between(c["cpu_throttled_periods"], before["cpu.stat"]["nr_throttled"], after["cpu.stat"]["nr_throttled"],
            "nr_throttled", run)
    assert c["cpu_throttled_periods"] > 0
    assert "cpu.throttled" in findings(run, "v2-gpu"), run["doctor"]["json"]["findings"]


def _kernel_rate(run, name, value) -> float:
    """The kernel's own rate of a counter over the window around mltop's sweep (read before and after)."""
    before, after = run["before"][name], run["after"][name]
    return (value(after) - value(before)) / (after["t"] - before["t"])


def _rbytes(r) -> int:
    return sum(int(m) for m in re.findall(r"rbytes=(\d+)", r["io.stat"]))


def test_rates_match_the_kernels_counters(run):
    """CPU %, read and network rates of `mltop snapshot` against the kernel's counters' own rates around it.
    Steady workloads (a busy loop at its quota, reads at their throttle, pings), so the two windows agree
    within emulation's jitter."""
    by_name = containers(run)
    cpu = _kernel_rate(run, "v2-gpu", lambda r: r["cpu.stat"]["usage_usec"]) / 1e4
    assert by_name["v2-gpu"]["cpu_percent"] == pytest.approx(cpu, abs=10), run["host_line"]
    reads = _kernel_rate(run, "v2-io", _rbytes)
    assert by_name["v2-io"]["io_read_bytes_per_s"] == pytest.approx(reads, rel=0.35), run["host_line"]
    # at a 1 MiB/s throttle the doctor says reads are held at it (io.slow), not below it (io.throttle_set)
    assert "io.slow" in findings(run, "v2-io"), run["doctor"]["json"]["findings"]


def test_working_set_cache_and_shm(run):
    """working set = memory.current − inactive_file; cache = memory.stat `file`; shm = `shmem` (60 MiB in
    the default 64 MiB /dev/shm: the doctor's warning)."""
    c = containers(run)["v2-mem"]
    before, after = run["before"]["v2-mem"], run["after"]["v2-mem"]

    def ws(r):
        return int(r["memory.current"]) - r["memory.stat"]["inactive_file"]

    between(c["memory_bytes"], ws(before), ws(after), "working set", run)
    between(c["memory_cache_bytes"], before["memory.stat"]["file"], after["memory.stat"]["file"], "cache", run)
    assert c["memory_cache_bytes"] >= 60 * MIB  # the shm at least (v2 counts tmpfs under `file`)
    assert 60 * MIB <= c["shm_bytes"] <= 61 * MIB, f"[{run['host_line']}] shm {c['shm_bytes']}"
    assert c["memory_limit_bytes"] == 512 * MIB == int(before["memory.max"])
    (shm,) = [f for f in run["doctor"]["json"]["findings"] if f["container"] == "v2-mem"]
    assert (shm["code"], shm["severity"]) == ("shm.too_small", "warning"), shm
    assert any("memory.stat shmem" in str(e) for e in shm["evidence"]), shm["evidence"]


def test_pids_near_their_limit(run):
    c = containers(run)["v2-pids"]
    assert c["pids"] == 16 == int(run["after"]["v2-pids"]["pids.current"]), run["host_line"]
    assert run["before"]["v2-pids"]["pids.max"].strip() == "17"
    assert "pids.near_max" in findings(run, "v2-pids"), run["doctor"]["json"]["findings"]


def test_oom_kills_counted_and_named(run):
    c = containers(run)["v2-oom"]
    between(c["oom_kills"], run["before"]["v2-oom"]["memory.events"]["oom_kill"],
            run["after"]["v2-oom"]["memory.events"]["oom_kill"], "oom_kill", run)
    assert c["oom_kills"] >= 1
    assert "oom.killed" in findings(run, "v2-oom"), run["doctor"]["json"]["findings"]


def test_read_throttle_in_io_max(run):
    """--device-read-bps lands in io.max; rbytes as io.stat counts them; the doctor reads the throttle from
    io.max (io.slow when reads run at it, io.throttle_set when the measured rate is below half of it)."""
    c = containers(run)["v2-io"]
    io_max = run["before"]["v2-io"]["io.max"]
    assert re.search(r"^\d+:\d+ rbps=1048576 ", io_max, re.M), f"[{run['host_line']}] io.max: {io_max!r}"
    between(c["io_read_bytes"], _rbytes(run["before"]["v2-io"]), _rbytes(run["after"]["v2-io"]), "rbytes", run)
    assert c["io_read_bytes_per_s"] > 0
    (f,) = [f for f in run["doctor"]["json"]["findings"]
            if f["container"] == "v2-io" and f["code"] in ("io.slow", "io.throttle_set")]
    assert any("io.max" in str(e) and "vda" in str(e) for e in f["evidence"]), f["evidence"]


def test_pressure_from_the_cgroups_psi_files(run):
    by_name = containers(run)
    for name in run["workloads"]:
        p = by_name[name]["pressure"]
        assert p is not None and None not in (p["cpu"], p["memory"], p["io"]), f"[{run['host_line']}] {name}: {p}"
    # a reader held at its throttle waits on I/O most of the time
    assert by_name["v2-io"]["pressure"]["io"] > 5, by_name["v2-io"]["pressure"]


def test_network_rates(run):
    """5 pings of 1000 bytes a second: about 5.2 kB/s each way (1042-byte frames), fewer when the emulated
    guest falls behind."""
    c = containers(run)["v2-net"]
    for key in ("net_rx_bytes_per_s", "net_tx_bytes_per_s"):
        assert 1000 <= c[key] <= 12000, f"[{run['host_line']}] {key} {c[key]}"

    def rx(r):
        line = next(l for l in r["net_dev"].splitlines() if l.strip().startswith("eth0:"))
        return int(line.split(":", 1)[1].split()[0])

    between(c["net_rx_bytes"], rx(run["before"]["v2-net"]), rx(run["after"]["v2-net"]), "rx bytes", run)


def test_gpu_attribution_through_the_v2_path(run):
    """NVML's host PID -> /proc/<pid>/cgroup (0::/system.slice/docker-<id>.scope) -> the container."""
    snap = run["snapshot"]["json"]
    by_pid = {p["host_pid"]: p for p in snap["gpus"][0]["processes"]}
    for name in ("v2-gpu", "v2-io"):
        proc = by_pid[run["workloads"][name]["pid"]]
        assert (proc["container_id"], proc["runtime"], proc["container_name"]) == \
            (run["workloads"][name]["id"], "docker", name), f"[{run['host_line']}] {proc}"
    assert containers(run)["v2-gpu"]["gpu_memory_bytes"] == 3 << 30
    assert containers(run)["v2-io"]["gpu_memory_bytes"] == 1 << 30
    # a GPU job pinned at its CPU quota: the input pipeline holds it back
    assert "perf.input_bound" in findings(run, "v2-gpu"), run["doctor"]["json"]["findings"]


def test_input_io_from_the_cgroups_own_io_pressure(run):
    """A GPU container whose reads stall at their throttle: the workload class is input-io, from the cgroup's
    own io.pressure (PSI per cgroup exists on v2 only; v1 falls back to the host's)."""
    c = containers(run)["v2-io"]
    workload = c["workload"]
    assert workload and workload["kind"] == "input-io", f"[{run['host_line']}] {workload}"
    assert any(r.startswith("I/O pressure") for r in workload["reasons"]), workload["reasons"]
    assert "perf.input_bound" in findings(run, "v2-io"), run["doctor"]["json"]["findings"]


def test_dev_char_links_missing_under_the_systemd_driver(run):
    """A GPU container started by the toolkit's runtime, the systemd cgroup driver, no /dev/char/195:*: its
    GPUs vanish at the next daemon-reload. Only a systemd-driver host reaches this check."""
    assert run["host"]["dev_char_nvidia"] == []
    assert "gpu.dev_char_missing" in findings(run, None), run["doctor"]["json"]["findings"]


def test_serve_cadvisor_families_and_id_label(run):
    metrics = run["serve"]["metrics"]
    assert metrics, f"[{run['host_line']}] serve never answered with a doctor run: {run['serve']['serve_log']}"
    for name, w in run["workloads"].items():
        cid = f'id="/system.slice/docker-{w["id"]}.scope"'
        for family in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                       "container_spec_memory_limit_bytes", "container_last_seen"):
            assert re.search(rf"^{family}{{[^}}]*{re.escape(cid)}", metrics, re.M), (name, family)
    oom_id = run["workloads"]["v2-oom"]["id"]
    line = next(l for l in metrics.splitlines()
                if l.startswith("container_oom_events_total{") and oom_id in l)
    assert float(line.rsplit(" ", 1)[1]) >= 1
    io_id = run["workloads"]["v2-io"]["id"]
    line = next(l for l in metrics.splitlines() if l.startswith("container_fs_reads_bytes_total{") and io_id in l)
    assert float(line.rsplit(" ", 1)[1]) > 0
    assert re.search(r'^mltop_finding{[^}]*code="oom.killed"[^}]*container="v2-oom"', metrics, re.M) or \
        re.search(r'^mltop_finding{[^}]*container="v2-oom"[^}]*code="oom.killed"', metrics, re.M)


def test_recorder_on_v2(run):
    serve = run["serve"]
    assert serve["serve_rc"] == 0, serve["serve_log"]
    assert serve["recorded_sweeps"] >= 3
    last = serve["recorded_last"]
    for name in run["workloads"]:
        assert last[name]["memory_bytes"], (name, last[name])
    assert last["v2-oom"]["oom_kills"] >= 1 and last["v2-pids"]["pids"] == 16
    assert last["v2-io"]["io_read_bytes_per_s"] > 0.3 * MIB
    events = serve["events"]["json"]
    assert any(e.get("kind") == "oom" and e.get("container") == "v2-oom" for e in events), events[:20]


def test_agent_container_in_its_own_cgroup_namespace(run):
    """README's agent layout (mltop in a container, --pid=host, /sys/fs/cgroup read-only) on v2, where the
    container has a cgroup namespace of its own: every container is measured in its own scope, the agent
    too. (It found: the others dropped from every sweep, and the agent measured as the host's root cgroup.)"""
    agent = run["agent"]
    assert agent["rc"] == 0 and "containers" in agent, f"[{run['host_line']}] {agent}"
    assert agent["proc_self_cgroup"].strip() == "0::/", agent["proc_self_cgroup"]  # its own namespace
    seen = agent["containers"]
    for name, w in run["workloads"].items():
        assert name in seen, f"[{run['host_line']}] {name} missing from the agent's snapshot: {sorted(seen)}"
        assert seen[name]["cgroup_path"] == f"/sys/fs/cgroup/system.slice/docker-{w['id']}.scope"
        assert seen[name]["memory_bytes"] and seen[name]["pids"]
    own = seen["v2-agent"]
    assert re.fullmatch(r"/sys/fs/cgroup/system\.slice/docker-[0-9a-f]{64}\.scope", own["cgroup_path"]), own
    assert own["memory_bytes"] and own["pids"], own
