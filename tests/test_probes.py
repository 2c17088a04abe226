"""The telemetry probes against a real Docker engine: CPU, memory, I/O, processes, vanishing containers,
an engine that is down or refuses us."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from cpu_placement import steady_cpu
from mltop.probes.cgroups import detect_cgroup_version
from mltop.probes.engine import Engine
from mltop.probes.sampler import ProbeOptions, Sampler

MiB = 1024 * 1024


def _two_sweeps(sampler, seconds=1.5):
    sampler.sweep()
    time.sleep(seconds)
    return sampler.sweep()


def _find(snapshot, container):
    found = snapshot.container(container.id)
    assert found is not None, f"{container.name} missing from snapshot: {[c.name for c in snapshot.containers]}"
    return found


def test_cpu_burner_reads_about_one_core(containers, sampler, docker_client):
    burner = containers.run(["sh", "-c", "while :; do :; done"], **steady_cpu(docker_client))
    idle = containers.run(["sleep", "300"])
    snap = _two_sweeps(sampler, 2.0)
    busy = _find(snap, burner)
    # one busy core = 100 %; this machine has 2 cores and the test itself uses some CPU
    assert 75 <= busy.cpu_percent <= 110, busy.cpu_percent
    assert busy.cpu_limit_percent is None and busy.cpu_limit_cores is None
    assert _find(snap, idle).cpu_percent < 5


def test_cpu_percent_of_limit(containers, sampler, docker_client):
    burner = containers.run(["sh", "-c", "while :; do :; done"], nano_cpus=500_000_000,
                            **steady_cpu(docker_client))
    snap = _two_sweeps(sampler, 2.0)
    c = _find(snap, burner)
    assert c.cpu_limit_cores == pytest.approx(0.5)
    assert 35 <= c.cpu_percent <= 60, c.cpu_percent
    assert 70 <= c.cpu_limit_percent <= 120, c.cpu_limit_percent


def _docker_stats_mem_bytes(name: str) -> float:
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{json .}}", name],
                         capture_output=True, text=True, check=True).stdout
    usage = json.loads(out)["MemUsage"].split("/")[0].strip()
    units = {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB}
    for unit in sorted(units, key=len, reverse=True):
        if usage.endswith(unit):
            return float(usage[: -len(unit)]) * units[unit]
    raise AssertionError(f"unparsed docker stats memory {usage!r}")


def test_memory_matches_docker_stats(containers, sampler):
    # /dev/shm pages are charged to the container's memory cgroup: a busybox way to hold 120 MiB
    holder = containers.run(
        ["sh", "-c", "dd if=/dev/zero of=/dev/shm/hold bs=1M count=120 && sleep 300"],
        shm_size="256m", mem_limit="512m",
    )
    wait_for(lambda: any(p.cmdline == "sleep 300" for p in _find(sampler.sweep(), holder).processes),
             what="dd done, memory filled")
    ours = _find(sampler.sweep(), holder)
    theirs = _docker_stats_mem_bytes(holder.name)
    assert abs(ours.memory_bytes - theirs) <= 0.10 * theirs, (ours.memory_bytes, theirs)
    assert ours.memory_limit_bytes == 512 * MiB
    assert ours.shm_bytes >= 120 * MiB


def _docker_block_device() -> str:
    """The block device under Docker's root directory, e.g. /dev/vda."""
    root = subprocess.run(["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dev = os.stat(root).st_dev
    major, minor = os.major(dev), os.minor(dev)
    sys_path = f"/sys/dev/block/{major}:{minor}"
    if os.path.exists(os.path.join(sys_path, "partition")):
        sys_path = os.path.dirname(os.path.realpath(sys_path))
    return "/dev/" + os.path.basename(os.path.realpath(sys_path))


def test_reader_shows_io_bytes(containers, sampler):
    device = _docker_block_device()
    # On cgroup v1 the kernel accounts per-cgroup block I/O only for devices with a throttle rule, so
    # the reader gets a rule far above what the disk can do (docker stats reads the same counters).
    reader = containers.run(
        ["sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count=16 oflag=direct 2>/dev/null; "
                     "while :; do dd if=/data/f of=/dev/null bs=1M iflag=direct 2>/dev/null; done"],
        device_read_bps=[{"Path": device, "Rate": 10 * 1024 * MiB}],
        device_write_bps=[{"Path": device, "Rate": 10 * 1024 * MiB}],
    )
    snap = _two_sweeps(sampler, 1.5)
    c = _find(snap, reader)
    assert c.io_read_bytes >= 16 * MiB
    assert c.io_write_bytes >= 16 * MiB
    assert c.io_read_bytes_per_s > 1 * MiB


def test_processes_carry_host_and_container_pids(containers, sampler):
    c = containers.run(["sh", "-c", "sleep 301 & sleep 302 & wait"])
    snap = _two_sweeps(sampler, 0.5)
    sample = _find(snap, c)
    cmdlines = {p.cmdline: p for p in sample.processes}
    assert "sleep 301" in cmdlines and "sleep 302" in cmdlines
    init = [p for p in sample.processes if p.container_pid == 1]
    assert init and init[0].host_pid == c.attrs["State"]["Pid"]
    assert all(p.host_pid != p.container_pid for p in sample.processes)
    assert all(p.user == "root" and p.rss_bytes > 0 and p.cpu_percent is not None for p in sample.processes)
    assert sample.pids == 3


def test_stopped_container_is_listed_with_exit_code(containers, sampler):
    c = containers.run(["sh", "-c", "exit 3"], wait_running=False)
    wait_for(lambda: (c.reload() or c.status) == "exited", what="container exited")
    sample = _find(sampler.sweep(), c)
    assert sample.status == "exited"
    assert sample.config.exit_code == 3
    assert sample.cpu_percent is None and sample.memory_bytes is None  # null, not a made-up zero


def test_container_removed_mid_sweep_is_dropped(containers, docker_client):
    # No event watcher and no re-list: the catalog still believes in the container when its cgroup vanishes.
    sampler = Sampler(ProbeOptions(nvml=False, watch_events=False))
    sampler.catalog.relist_s = 3600
    try:
        keep = containers.run(["sleep", "300"])
        doomed = containers.run(["sleep", "300"])
        assert sampler.sweep().container(doomed.id) is not None
        doomed.remove(force=True)
        snap = sampler.sweep()
        assert snap.container(doomed.id) is None
        assert snap.container(keep.id) is not None
    finally:
        sampler.close()


def test_container_removed_between_list_and_inspect(containers, docker_client):
    sampler = Sampler(ProbeOptions(nvml=False, watch_events=False))
    keep = containers.run(["sleep", "300"])
    doomed = containers.run(["sleep", "300"])
    real_inspect = sampler.engine.inspect

    def inspect_after_removal(container_id):
        if container_id == doomed.id:
            docker_client.api.remove_container(doomed.id, force=True)
        return real_inspect(container_id)

    sampler.engine.inspect = inspect_after_removal
    try:
        snap = sampler.sweep()
        assert snap.host.engine.ok
        assert snap.container(doomed.id) is None
        assert snap.container(keep.id) is not None
    finally:
        sampler.close()


def test_new_container_appears_through_events(containers, sampler):
    sampler.sweep()
    sampler.catalog.relist_s = 3600  # only the event watcher can tell the sampler about it
    c = containers.run(["sleep", "300"])
    wait_for(lambda: sampler.sweep().container(c.id) is not None, timeout=10, what="container seen via events")


# ----------------------------------------------------------------------------- engine down / refused


def test_engine_stopped_gives_clear_status(tmp_path):
    # A socket file nobody listens on: exactly what a stopped dockerd leaves behind.
    path = tmp_path / "docker.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    sampler = Sampler(ProbeOptions(docker_host=f"unix://{path}", nvml=False))
    try:
        snap = sampler.sweep()
    finally:
        sampler.close()
    assert snap.host.engine.status == "unreachable"
    assert "refused" in snap.host.engine.error and "systemctl start docker" in snap.host.engine.error
    assert snap.containers == ()
    assert snap.host.hostname  # the rest of the snapshot is still good


def test_snapshot_cli_with_engine_down(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--no-nvml", "--interval", "0.25",
         "--docker-host", f"unix://{tmp_path}/missing.sock"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3
    doc = json.loads(result.stdout)
    assert doc["host"]["engine"]["status"] == "unreachable"
    assert "Traceback" not in result.stderr
    assert "does not exist" in result.stderr


def test_socket_permission_denied_names_the_fix(tmp_path):
    """An unprivileged user against a root-only socket (run in a forked child that drops to nobody)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a root-only socket and drop privileges in a child")
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    os.chmod(path, 0o600)
    os.chmod(tmp_path, 0o755)
    import docker  # noqa: F401  (loaded before the fork: the child cannot read root's site-packages)
    import requests  # noqa: F401

    Engine(f"unix://{tmp_path}/warmup.sock").status()  # load the lazy imports while still root
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setgid(65534)
            os.setuid(65534)
            status = Engine(f"unix://{path}").status()
            os.write(write_fd, json.dumps([status.status, status.error]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    data = os.read(read_fd, 65536)
    server.close()
    status, error = json.loads(data)
    assert status == "permission_denied"
    assert "docker group" in error and "usermod -aG docker" in error


# ----------------------------------------------------------------------------- parsing and JSON


def test_cgroup_v2_files_parse(tmp_path):
    """cgroup v2 reading, on a directory laid out as the kernel does (this host runs v1)."""
    from mltop.probes.cgroups import read_counters

    files = {
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\n"
                    "nr_throttled 4\nthrottled_usec 1000\n",
        "cpu.max": "150000 100000\n",
        "memory.current": str(300 * MiB) + "\n",
        "memory.max": "max\n",
        "memory.stat": f"anon {200 * MiB}\nfile {100 * MiB}\ninactive_file {60 * MiB}\nshmem {5 * MiB}\n",
        "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
        "pids.current": "7\n",
        "io.stat": "254:0 rbytes=1048576 wbytes=2048 rios=10 wios=1 dbytes=0 dios=0\n"
                   "8:0 rbytes=1048576 wbytes=0 rios=3 wios=0 dbytes=0 dios=0\n",
        "io.pressure": "some avg10=21.50 avg60=10.00 avg300=2.00 total=100\n"
                       "full avg10=1.00 avg60=0.00 avg300=0.00 total=1\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    c = read_counters(2, {"unified": str(tmp_path)})
    assert c.cpu_usage_ns == 2_500_000_000 and c.cpu_throttled_periods == 4
    assert c.cpu_quota_cores == 1.5
    assert c.memory_working_set_bytes == 240 * MiB and c.memory_limit_bytes is None
    assert c.oom_kills == 1 and c.pids == 7
    assert (c.io_read_bytes, c.io_write_bytes) == (2 * 1048576, 2048)
    assert c.psi_io == 21.5 and c.psi_cpu is None


def _v1_tree(root, quota_us: int, usage: int) -> dict[str, str]:
    """A container's cgroup v1 directories as the kernel lays them out (one per controller)."""
    files = {
        "cpuacct": {"cpuacct.usage": "5000000000\n"},
        "cpu": {"cpu.stat": "nr_periods 100\nnr_throttled 7\nthrottled_time 1000\n",
                "cpu.cfs_quota_us": f"{quota_us}\n", "cpu.cfs_period_us": "100000\n"},
        "memory": {"memory.usage_in_bytes": f"{usage}\n", "memory.limit_in_bytes": str(1 << 62) + "\n",
                   "memory.stat": f"total_cache {40 * MiB}\ntotal_inactive_file {30 * MiB}\ntotal_shmem 0\n",
                   "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
        "pids": {"pids.current": "3\n"},
    }
    paths = {}
    for controller, content in files.items():
        directory = root / controller
        directory.mkdir()
        for name, text in content.items():
            (directory / name).write_text(text)
        paths[controller] = str(directory)
    return paths


@pytest.mark.parametrize("quota_us", [-1, 50000])
def test_memory_stat_is_carried_only_while_the_container_is_idle_and_its_usage_holds(tmp_path, quota_us):
    """Between whole readings, memory.stat is carried only for a container whose CPU counter and memory usage
    both held, and every carried figure is named; a running container's is read even at the same usage (one
    pinned at its limit turns cache into anonymous memory there). cpu.stat is read only when a CPU quota can
    throttle the container; CPU, usage and OOM kills of a running container are read every time.

    (This test pinned the opposite before issue 18: a running container's working set carried while its usage
    held, which hid the cache-to-anonymous shift at the memory limit for up to 10 sweeps.)"""
    from mltop.probes.cgroups import read_bytes, read_counters

    paths = _v1_tree(tmp_path, quota_us, usage=100 * MiB)
    reads = []

    def read(path):
        reads.append(os.path.basename(path))
        return read_bytes(path)

    whole = read_counters(1, paths, read=read)
    assert {"memory.stat", "cpu.stat"} <= set(reads) and whole.memory_working_set_bytes == 70 * MiB
    assert whole.carried == frozenset()
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("6000000000\n")  # it ran: not idle
    (tmp_path / "memory" / "memory.stat").write_text(f"total_cache {40 * MiB}\ntotal_inactive_file 0\n")
    reads.clear()
    busy = read_counters(1, paths, read=read, idle_since=whole)
    assert {"memory.stat", "cpuacct.usage", "memory.usage_in_bytes", "memory.oom_control"} <= set(reads)
    assert ("cpu.stat" in reads) == (quota_us > 0)
    assert busy.cpu_usage_ns == 6_000_000_000 and busy.cpu_throttled_periods == 7
    assert busy.memory_working_set_bytes == 100 * MiB  # the cache went inactive -> active: read at once
    assert busy.carried == (frozenset() if quota_us > 0 else {"cpu_throttled_periods"})
    (tmp_path / "memory" / "memory.stat").write_text(f"total_cache {40 * MiB}\ntotal_inactive_file {MiB}\n")
    reads.clear()
    idle = read_counters(1, paths, read=read, idle_since=busy)  # CPU counter and usage held
    assert not {"memory.stat", "cpu.stat", "memory.oom_control", "pids.current"} & set(reads)
    assert idle.memory_working_set_bytes == 100 * MiB  # carried until the next whole reading
    assert idle.carried == {"memory_inactive_file_bytes", "memory_cache_bytes", "memory_shmem_bytes", "oom_kills",
                            "pids", "cpu_throttled_periods"}
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text(f"{101 * MiB}\n")  # reclaim or a page fault
    reads.clear()
    moved = read_counters(1, paths, read=read, idle_since=idle)
    assert "memory.stat" in reads and moved.memory_working_set_bytes == 100 * MiB
    assert "memory_inactive_file_bytes" not in moved.carried and "pids" in moved.carried


def test_a_known_process_list_is_read_again_when_one_of_them_is_gone(containers, sampler):
    """A busy container with the same task count is sampled from the PIDs it had; a PID that is gone sends the
    sampler to cgroup.procs, where the processes that started meanwhile are found, and none is read twice."""
    c = containers.run(["sh", "-c", "sleep 300 & sleep 300 & wait"])
    wait_for(lambda: len(sampler.sweep().container(c.id).processes) == 3, what="three processes")
    paths = sampler._paths[c.id][1]
    listed = sorted(p.host_pid for p in sampler.sweep().container(c.id).processes)
    gone = 4_194_999  # above pid_max: no such process
    processes, keys = sampler._sample_processes(sampler._locator.version, paths, frozenset(),
                                                known=[listed[0], gone])
    assert sorted(p.host_pid for p in processes) == listed and len(keys) == 3


def test_snapshot_json_has_documented_keys(containers):
    c = containers.run(["sleep", "300"], environment={"HF_TOKEN": "hf_" + "x" * 34, "CUDA_VERSION": "12.4.1"})
    result = subprocess.run(
        [sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--interval", "0.5",
         "--nvml-lib", "/nonexistent/libnvidia-ml.so.1"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1
    host = doc["host"]
    for key in ("hostname", "kernel", "docker_version", "cgroup_version", "cgroup_driver", "runtimes", "nvml"):
        assert key in host
    assert host["cgroup_version"] == detect_cgroup_version() or host["cgroup_version"] in (1, 2)
    assert host["nvml"]["status"] == "library_not_found" and host["nvml"]["error"]
    assert host["nvml"]["driver_version"] is None  # unavailable is null, never a made-up value
    assert doc["gpus"] == []
    (ours,) = [x for x in doc["containers"] if x["id"] == c.id]
    for key in ("id", "name", "image", "status", "cpu_percent", "cpu_limit_percent", "memory_bytes",
                "memory_limit_bytes", "pids", "io_read_bytes_per_s", "io_write_bytes_per_s", "net_rx_bytes_per_s",
                "net_tx_bytes_per_s", "oom_kills", "gpus", "processes", "interval_s", "carried"):
        assert key in ours, key
    assert isinstance(ours["carried"], list) and ours["interval_s"] > 0
    assert ours["memory_limit_bytes"] is None
    assert ours["processes"][0].keys() >= {"host_pid", "container_pid", "user", "cmdline", "cpu_percent",
                                           "rss_bytes", "gpu_memory_bytes"}
    assert "hf_" + "x" * 34 not in result.stdout  # secrets are redacted at the source
    assert ["CUDA_VERSION", "12.4.1"] in ours["config"]["env"]


# ----------------------------------------------------------------------------- GPU attribution


def test_gpu_processes_are_attributed_to_their_containers(containers, nvml_scenario):
    from fakenvml import FakeGpu, FakeProcess

    trainer = containers.run(["sh", "-c", "sleep 400 & wait"], name="mltop-test-trainer")
    server = containers.run(["sleep", "401"], name="mltop-test-server")
    worker_pid = [p for p in _child_pids(trainer.attrs["State"]["Pid"])][0]
    host_pid = os.getpid()  # a GPU process in no container
    lib = nvml_scenario(gpus=[
        FakeGpu(uuid="GPU-aaaa", util=87, mem_used=30 << 30, processes=[
            FakeProcess(pid=worker_pid, used_memory=20 << 30, sm=60),
            FakeProcess(pid=host_pid, used_memory=1 << 30, sm=5),
        ]),
        FakeGpu(uuid="GPU-bbbb", util=40, mem_used=10 << 30, processes=[
            FakeProcess(pid=server.attrs["State"]["Pid"], used_memory=8 << 30, sm=35),
            FakeProcess(pid=worker_pid, used_memory=2 << 30, sm=10),
        ]),
    ])
    sampler = Sampler(ProbeOptions(nvml_lib=lib))
    try:
        snap = _two_sweeps(sampler, 0.5)
    finally:
        sampler.close()
    assert snap.host.nvml.status == "ok" and snap.host.nvml.cuda_driver_version == "12.4"
    gpu0 = {p.host_pid: p for p in snap.gpus[0].processes}
    assert gpu0[worker_pid].container_name == "mltop-test-trainer"
    assert gpu0[worker_pid].container_id == trainer.id and gpu0[worker_pid].runtime == "docker"
    assert gpu0[host_pid].container_id is None  # host process
    assert [p.host_pid for g in snap.gpus for p in g.processes if p.container_id is None] == [host_pid]

    t = snap.container(trainer.id)
    assert [(g.uuid, g.memory_bytes, g.sm_percent) for g in t.gpus] == [
        ("GPU-aaaa", 20 << 30, 60.0), ("GPU-bbbb", 2 << 30, 10.0)]
    assert t.gpu_memory_bytes == 22 << 30
    (worker,) = [p for p in t.processes if p.host_pid == worker_pid]
    assert worker.gpu_indices == (0, 1) and worker.gpu_memory_bytes == 22 << 30 and worker.sm_percent == 70
    s = snap.container(server.id)
    assert [(g.index, g.memory_bytes) for g in s.gpus] == [(1, 8 << 30)]


def _child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def test_docker_context_and_docker_host_are_honoured(tmp_path, monkeypatch):
    from mltop.probes.engine import docker_host_in_use

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    subprocess.run(["docker", "context", "create", "gpubox", "--docker", f"host=unix://{tmp_path}/ctx.sock"],
                   check=True, capture_output=True, env={**os.environ, "DOCKER_CONFIG": str(tmp_path)})
    monkeypatch.setenv("DOCKER_CONTEXT", "gpubox")
    assert docker_host_in_use() == f"unix://{tmp_path}/ctx.sock"
    status = Engine().status()
    assert status.docker_host == f"unix://{tmp_path}/ctx.sock" and status.status == "unreachable"
    monkeypatch.setenv("DOCKER_HOST", "ssh://ml@gpubox")
    assert docker_host_in_use() == "ssh://ml@gpubox"
    assert docker_host_in_use("tcp://10.0.0.5:2375") == "tcp://10.0.0.5:2375"


def test_secrets_never_enter_a_snapshot_or_log_lines(containers, sampler):
    from mltop.probes.model import snapshot_to_json

    secret = "correct-horse-battery-staple"
    token = "hf_" + "Q" * 34
    c = containers.run(
        # the secret is also an argument of the container's main process (sh's $0)
        ["sh", "-c", f"echo starting with {secret} and {token}; while :; do sleep 1; done", secret],
        environment={"DB_PASSWORD": secret, "HF_TOKEN": token, "CUDA_VERSION": "12.4.1"},
        labels={"hub-token": token, "note": f"pw is {secret}"},
    )
    wait_for(lambda: sampler.engine.logs(c.id), what="first log line")
    snap = _two_sweeps(sampler, 0.3)
    text = json.dumps(snapshot_to_json(snap))
    assert c.id in text and "while :; do sleep 1; done" in text and "12.4.1" in text
    assert secret not in text and token not in text
    lines = sampler.engine.logs(c.id)
    assert lines and lines[0].startswith("starting with") and secret not in lines[0] and token not in lines[0]


@pytest.mark.parametrize("command", [[], ["snapshot"], ["doctor"], ["report"], ["run"]])
def test_every_command_has_help(command):
    result = subprocess.run([sys.executable, "-m", "mltop.tui.cli", *command, "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mltop") and "Traceback" not in result.stderr


def test_ssh_engine_that_cannot_be_reached_names_the_check():
    import shutil

    if shutil.which("ssh") is None:
        pytest.skip("no ssh client on this machine: ssh:// engines use it")
    status = Engine("ssh://nobody@127.0.0.1:1").status()
    assert status.status == "unreachable"
    assert "ssh -p 1 nobody@127.0.0.1 docker info" in status.error


def test_container_whose_pid_is_not_visible_is_kept_with_null_counters(containers):
    """As with a remote engine, or mltop in its own PID namespace: the engine's view stays, counters are null."""
    c = containers.run(["sleep", "300"])
    sampler = Sampler(ProbeOptions(nvml=False))
    real_inspect = sampler.engine.inspect

    def inspect_from_elsewhere(container_id):
        attrs = real_inspect(container_id)
        if container_id == c.id:
            attrs["State"]["Pid"] = 4_194_999  # above pid_max: no such process here
        return attrs

    sampler.engine.inspect = inspect_from_elsewhere
    try:
        snap = _two_sweeps(sampler, 0.3)
    finally:
        sampler.close()
    sample = _find(snap, c)
    assert sample.status == "running" and sample.config.command == ("sleep", "300")
    assert sample.cpu_percent is None and sample.memory_bytes is None and sample.processes == ()
    assert any("not visible from here" in note for note in snap.host.limitations)


def test_remote_engine_limitation_is_explained():
    from mltop.probes.host import view_limitations

    (note,) = view_limitations(["trainer"], 1, "ssh://ml@gpu-box")
    assert "ssh://ml@gpu-box runs on another machine" in note and "ssh -t HOST mltop" in note


# ----------------------------------------------------------------------------- idle containers


def test_an_idle_containers_processes_are_carried_then_read_again_when_it_runs(containers, monkeypatch,
                                                                                docker_client):
    """An idle container (CPU counter unmoved) keeps its processes at 0 % without reading them; the sweep after
    it wakes reads them again, with CPU % over one interval, not over the idle stretch."""
    from mltop.probes import sampler as sampler_module

    monkeypatch.setattr(sampler_module, "IDLE_FULL_READ_EVERY", 1000)  # no periodic full read in this test
    sampler = Sampler(ProbeOptions(nvml=False))
    try:
        c = containers.run(["sh", "-c", "mkfifo /tmp/go && read x < /tmp/go && while :; do :; done"],
                           **steady_cpu(docker_client))
        wait_for(lambda: c.exec_run(["test", "-p", "/tmp/go"]).exit_code == 0, what="the fifo")
        first = sampler.sweep().container(c.id)
        for _ in range(8):
            time.sleep(0.4)
            idle = sampler.sweep().container(c.id)
            assert idle.cpu_percent < 5
            assert [(p.host_pid, p.cmdline) for p in idle.processes] == \
                   [(p.host_pid, p.cmdline) for p in first.processes]
            assert all(p.cpu_percent in (0.0, None) for p in idle.processes)
        assert idle.pids == first.pids == 1
        c.exec_run(["sh", "-c", "echo > /tmp/go"])  # the shell wakes and spins
        time.sleep(1.0)
        awake = sampler.sweep().container(c.id)
        assert awake.cpu_percent > 50
        (shell,) = [p for p in awake.processes if p.host_pid == first.processes[0].host_pid]
        assert shell.cpu_percent > 50, "CPU % over the last interval, not since the last full read"
    finally:
        sampler.close()


def test_an_idle_container_is_still_read_whole_now_and_then(containers, sampler):
    from mltop.probes.sampler import IDLE_FULL_READ_EVERY

    c = containers.run(["sleep", "300"])
    sampler.sweep()
    sampler.sweep()
    (pids_file,) = [p for p in sampler._files._last_read if c.id in p and p.endswith("/pids.current")]
    reads = set()
    for _ in range(IDLE_FULL_READ_EVERY + 1):
        sampler.sweep()
        reads.add(sampler._files._last_read[pids_file])
    assert 1 <= len(reads) <= 2, "read whole once in IDLE_FULL_READ_EVERY sweeps, and not every sweep"


def test_a_process_started_in_an_idle_container_shows_at_the_next_sweep(containers, sampler):
    c = containers.run(["sleep", "300"])
    for _ in range(3):
        sampler.sweep()
        time.sleep(0.2)
    before = sampler.sweep().container(c.id)
    assert len(before.processes) == 1 and before.pids == 1
    c.exec_run(["sh", "-c", "sleep 60 &"], detach=True)
    wait_for(lambda: len(sampler.sweep().container(c.id).processes) >= 2, timeout=5, what="the new process")
    assert sampler.sweep().container(c.id).pids >= 2


# ----------------------------------------------------------------------------- a cold start on a dense host


def test_background_inspections_wait_while_held_and_fill_the_configs_once_released(containers):
    """With many containers new, a sweep answers from the list at once (provisional rows) and inspects in the
    background; the dashboard holds those inspections over its first frame, then releases them."""
    from mltop.probes.catalog import BACKGROUND_INSPECT_MIN

    started = [containers.run(["sleep", "300"]) for _ in range(BACKGROUND_INSPECT_MIN + 2)]
    ids = {c.id for c in started}
    sampler = Sampler(ProbeOptions(nvml=False, inspect_in_background=True))
    try:
        sampler.catalog.hold_background_inspections()
        first = sampler.sweep()
        ours = [c for c in first.containers if c.id in ids]
        assert len(ours) == len(ids) and all(c.config_pending for c in ours)
        assert all(c.memory_bytes is not None for c in ours), "measured from the cgroup found by id"
        time.sleep(0.5)
        held = [c for c in sampler.sweep().containers if c.id in ids]
        assert all(c.config_pending for c in held), "nothing inspected while held"
        sampler.catalog.release_background_inspections()
        wait_for(lambda: not any(c.config_pending for c in sampler.sweep().containers if c.id in ids),
                 timeout=20, what="every configuration, inspected in the background")
        filled = [c for c in sampler.sweep().containers if c.id in ids]
        assert all(c.config.command == ("sleep", "300") and c.processes for c in filled)
    finally:
        sampler.close()


# ----------------------------------------------------------------------------- the engine's socket path


def _answering_socket(tmp_path, answers: list[bytes]):
    """A unix socket server that reads one request at a time and writes the next canned answer; an answer
    of b"" closes the connection instead (as an engine that dropped an idle keep-alive connection)."""
    import threading

    path = str(tmp_path / "engine.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    requests: list[bytes] = []

    def serve():
        pending = list(answers)
        while pending:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while pending:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        more = conn.recv(4096)
                        if not more:
                            break
                        data += more
                    if not data:
                        break
                    requests.append(data)
                    answer = pending.pop(0)
                    if not answer:
                        break  # close this connection: the client must open another
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return path, server, requests


def test_socket_gets_read_lengths_chunks_and_survive_a_dropped_connection(tmp_path):
    from mltop.probes.unix_api import Unanswered, UnixSocketAPI

    version = b'{"Version": "27.0", "ApiVersion": "1.46"}'
    chunked_list = b'[{"Id": "a"}, {"Id": "b"}]'
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(version), version),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (chunked_list[:7], chunked_list[7:])) + b"0\r\n\r\n",
        b"",  # the engine drops the kept connection: the next GET goes out again on a new one
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!",
        b"SSH-2.0-OpenSSH\r\n",
    ]
    path, server, requests = _answering_socket(tmp_path, answers)
    api = UnixSocketAPI(path, timeout_s=5)
    try:
        assert api.version()["Version"] == "27.0"
        assert [c["Id"] for c in api.get("/containers/json", all=1)] == ["a", "b"]
        with pytest.raises(LookupError):
            api.inspect("gone")  # after the dropped connection, retried on a new one: the engine's 404
        with pytest.raises(Unanswered, match="not JSON"):
            api.get("/info")
        with pytest.raises(Unanswered, match="no HTTP status line"):
            api.get("/info")
    finally:
        api.close()
        server.close()
    assert requests[0].startswith(b"GET /version HTTP/1.1\r\n")
    assert requests[1].startswith(b"GET /v1.46/containers/json?all=1 HTTP/1.1\r\n")
    assert requests[3].startswith(b"GET /v1.46/containers/gone/json HTTP/1.1\r\n")




def test_a_local_engine_is_read_without_the_docker_sdk(containers):
    """Version, list, info, inspect and the events stream go over the unix socket with the standard library
    (the SDK's import is ~60 ms of CPU on the way to the first frame); the answers are the engine's own."""
    c = containers.run(["sleep", "300"])
    script = f"""
import sys, threading, time
from mltop.probes.engine import Engine, not_found_errors
from mltop.probes.sampler import ProbeOptions, Sampler
engine = Engine()
events = []
stream = engine.events(since=time.time() - 600)
reader = threading.Thread(target=lambda: [events.append(e) for e in stream], daemon=True)
reader.start()
sampler = Sampler(ProbeOptions(nvml=False), engine=engine)
snap = sampler.sweep()
found = snap.container({c.id!r})
assert found is not None and found.config.command and found.memory_bytes, found
assert snap.host.docker_version and snap.host.cgroup_version, snap.host
try:
    engine.inspect("0" * 64)
    raise SystemExit("inspect of a missing container did not raise")
except not_found_errors():
    pass
deadline = time.time() + 10
while not any(e.get("id") == {c.id!r} or (e.get("Actor") or {{}}).get("ID") == {c.id!r} for e in events):
    assert time.time() < deadline, "no event for the container"
    time.sleep(0.05)
stream.close()
reader.join(5)
assert not reader.is_alive(), "close() ends the stream"
sampler.close()
print("sdk loaded:", "docker" in sys.modules, "requests" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sdk loaded: False False" in result.stdout


def test_a_socket_that_answers_no_api_falls_back_to_the_sdk_and_its_explanation(tmp_path):
    """Something listens on the socket but is not an engine: the SDK path answers, and explains."""
    path = tmp_path / "not-docker.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)

    def answer():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
            conn.close()

    import threading

    threading.Thread(target=answer, daemon=True).start()
    try:
        engine = Engine(f"unix://{path}", timeout_s=3)
        from mltop.probes.engine import EngineError

        with pytest.raises(EngineError) as raised:
            engine.list_containers()
        assert engine._api_ok is False
        # the SDK's own words about the same answer, with the endpoint named
        assert "500 Server Error" in raised.value.message and str(path) in raised.value.message
    finally:
        server.close()
