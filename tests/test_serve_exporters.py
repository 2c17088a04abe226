"""`mltop serve` as the exporters people already chart, on the real engine and a real Prometheus: dcgm-exporter's
profiling fields from GPM (scenario values, per GPU and MIG instance), every cAdvisor container family with
the values the cgroup files hold, promtool's lint, and every query of the printed Grafana dashboard answering."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from fakenvml import (
    GPM_DRAM, GPM_FP16, GPM_FP32, GPM_FP64, GPM_GRAPHICS, GPM_NVLINK_RX, GPM_NVLINK_TX, GPM_OCCUPANCY,
    GPM_PCIE_RX, GPM_PCIE_TX, GPM_SM, GPM_TENSOR, HEALTHY, FakeGpu, FakeMig, FakeProcess, FakeScenario,
    write_scenario,
)
from serve_helpers import PrometheusServer, ServeProcess, parse_exposition, wait_until

from mltop.probes.cgroups import detect_cgroup_version
from mltop.tui.serve import grafana

GIB = 1 << 30
MIB = 1 << 20
# An FP32 training step on an H100: busy SMs, idle tensor pipes (perf.tensor_cores_idle fires for its owner).
H100 = {GPM_GRAPHICS: 97.0, GPM_SM: 88.5, GPM_OCCUPANCY: 41.25, GPM_TENSOR: 0.5, GPM_DRAM: 35.0, GPM_FP64: 0.0,
        GPM_FP32: 72.0, GPM_FP16: 0.25, GPM_PCIE_TX: 120.0, GPM_PCIE_RX: 2400.0, GPM_NVLINK_RX: 15000.0,
        GPM_NVLINK_TX: 14000.0}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


@pytest.fixture(scope="module")
def agent(docker_client, test_images, fake_nvml_lib, tmp_path_factory):
    from conftest import ContainerFactory

    factory = ContainerFactory(docker_client, test_images)
    tag = os.getpid()
    work = tmp_path_factory.mktemp("serve-exporters")
    serve = prometheus = None
    try:
        holder = factory.run(["sleep", "600"], name=f"mltop-exp-gpu-{tag}")
        # A quota, a memory limit and reservation, shares; a short busy spell (throttled periods), a listening
        # socket, two processes.
        limited = factory.run(
            ["sh", "-c", "nc -l -p 8080 & timeout 2 sh -c 'while :; do :; done'; exec sleep 600"],
            name=f"mltop-exp-limited-{tag}", nano_cpus=500_000_000, mem_limit="128m", mem_reservation="64m",
            cpu_shares=512)
        holder_pid = docker_client.containers.get(holder.id).attrs["State"]["Pid"]
        mig_health = {**HEALTHY, "mig_mode": 1}
        scenario = work / "scenario.txt"
        write_scenario(scenario, FakeScenario(
            gpus=[
                FakeGpu(uuid="GPU-e0000000-0000-0000-0000-000000000000", util=96, gpm=H100,
                        processes=[FakeProcess(holder_pid, used_memory=6 * GIB, sm=80)]),
                FakeGpu(uuid="GPU-e0000000-0000-0000-0000-000000000001", pci="00000000:3C:00.0", health=mig_health,
                        gpm={GPM_SM: 50.0}, gpm_mig={1: {GPM_SM: 70.0, GPM_TENSOR: 60.0}, 2: {GPM_SM: 30.0}}),
                FakeGpu(uuid="GPU-e0000000-0000-0000-0000-000000000002", pci="00000000:3D:00.0",
                        name="NVIDIA A100-SXM4-80GB"),  # no GPM
            ],
            migs=[FakeMig(gpu=1, index=0, uuid="MIG-e1", gi=1, profile="1g.10gb"),
                  FakeMig(gpu=1, index=1, uuid="MIG-e2", gi=2, profile="3g.40gb")],
        ))
        serve = ServeProcess("--interval", "1", "--doctor-interval", "2", "--nvml-lib", str(fake_nvml_lib),
                             env={"MLTOP_FAKE_NVML_SCENARIO": str(scenario)})
        serve.wait_healthy()
        prometheus = PrometheusServer(work, [f"127.0.0.1:{serve.port}"])
        prometheus.wait_for(f'count_over_time(container_cpu_usage_seconds_total{{name="{limited.name}"}}[30s]) >= 4',
                            timeout=60, what="four scrapes of the limited container")
        prometheus.wait_for('mltop_finding{code="perf.tensor_cores_idle"} == 1', timeout=30,
                            what="the doctor's first run")
        yield dict(serve=serve, prometheus=prometheus, holder=holder, limited=limited, client=docker_client)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if serve is not None:
            serve.stop()
        factory.cleanup()


def _series(prometheus, expr: str) -> dict[tuple, float]:
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in prometheus.query(expr)}


# --------------------------------------------------------------------------- dcgm-exporter's profiling fields


def test_dcgm_profiling_fields_carry_the_scenarios_gpm_as_ratios_and_bytes(agent):
    p = agent["prometheus"]

    def one(expr: str) -> tuple[dict, float]:
        (result,) = p.query(expr)
        return result["metric"], float(result["value"][1])

    labels, value = one('DCGM_FI_PROF_SM_ACTIVE{gpu="0"}')
    assert value == pytest.approx(0.885)
    assert labels["UUID"] == "GPU-e0000000-0000-0000-0000-000000000000" and labels["modelName"] == \
        "NVIDIA H100 80GB HBM3" and labels["device"] == "nvidia0" and "GPU_I_ID" not in labels  # empty: no label
    for name, expected in (("GR_ENGINE_ACTIVE", 0.97), ("SM_OCCUPANCY", 0.4125), ("PIPE_TENSOR_ACTIVE", 0.005),
                           ("PIPE_FP64_ACTIVE", 0.0), ("PIPE_FP32_ACTIVE", 0.72), ("PIPE_FP16_ACTIVE", 0.0025),
                           ("DRAM_ACTIVE", 0.35), ("PCIE_TX_BYTES", 120 * MIB), ("PCIE_RX_BYTES", 2400 * MIB),
                           ("NVLINK_TX_BYTES", 14000 * MIB), ("NVLINK_RX_BYTES", 15000 * MIB)):
        assert one(f'DCGM_FI_PROF_{name}{{gpu="0"}}')[1] == pytest.approx(expected), name
    # The MIG GPU: the whole GPU, and each GPU instance with its id and profile, as dcgm-exporter labels them.
    by_instance = {(m.get("GPU_I_ID", ""), m.get("GPU_I_PROFILE", "")): v
                   for m, v in ((r["metric"], float(r["value"][1]))
                                for r in p.query('DCGM_FI_PROF_SM_ACTIVE{gpu="1"}'))}
    assert by_instance == {("", ""): pytest.approx(0.5), ("1", "1g.10gb"): pytest.approx(0.7),
                           ("2", "3g.40gb"): pytest.approx(0.3)}
    assert [r["metric"]["GPU_I_ID"] for r in p.query('DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{gpu="1"}')] == ["1"]
    # The A100 has no GPM: no profiling series at all, not zeros; its device fields are there.
    assert not p.query('{__name__=~"DCGM_FI_PROF_.*", gpu="2"}')
    assert p.query('DCGM_FI_DEV_GPU_UTIL{gpu="2"}')


# --------------------------------------------------------------------------- cAdvisor's container families


def _pick(text: str, *keys: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in keys:
            out[key] = int(value)
    return out


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def expected_from_cgroup_files(container_id: str, pid: int) -> dict[str, float]:
    """What the kernel's files say of a container, read here independently of mltop (cgroup v1 or v2)."""
    out: dict[str, float] = {}
    if detect_cgroup_version() == 2:
        (line,) = [x for x in _read(f"/proc/{pid}/cgroup").splitlines() if x.startswith("0::")]
        base = "/sys/fs/cgroup" + line[3:]
        cpu = _pick(_read(f"{base}/cpu.stat"), "user_usec", "system_usec", "nr_periods", "nr_throttled",
                    "throttled_usec")
        out.update(container_cpu_user_seconds_total=cpu["user_usec"] / 1e6,
                   container_cpu_system_seconds_total=cpu["system_usec"] / 1e6,
                   container_cpu_cfs_periods_total=cpu["nr_periods"],
                   container_cpu_cfs_throttled_periods_total=cpu["nr_throttled"],
                   container_cpu_cfs_throttled_seconds_total=cpu["throttled_usec"] / 1e6)
        quota, period = _read(f"{base}/cpu.max").split()
        out.update(container_spec_cpu_quota=int(quota), container_spec_cpu_period=int(period))
        weight = int(_read(f"{base}/cpu.weight"))
        out["container_spec_cpu_shares"] = 2 + (weight - 1) * 262142 // 9999
        mem = _pick(_read(f"{base}/memory.stat"), "anon", "file", "file_mapped")
        out.update(container_memory_usage_bytes=int(_read(f"{base}/memory.current")),
                   container_memory_rss=mem["anon"], container_memory_cache=mem["file"],
                   container_memory_mapped_file=mem["file_mapped"],
                   container_memory_failcnt=_pick(_read(f"{base}/memory.events"), "max")["max"],
                   container_spec_memory_limit_bytes=int(_read(f"{base}/memory.max")),
                   container_spec_memory_reservation_limit_bytes=int(_read(f"{base}/memory.low")),
                   container_threads=int(_read(f"{base}/pids.current")))
        for name, file in (("container_memory_swap", "memory.swap.current"),
                           ("container_memory_max_usage_bytes", "memory.peak")):
            if os.path.exists(f"{base}/{file}"):
                out[name] = int(_read(f"{base}/{file}"))
        procs = [int(x) for x in _read(f"{base}/cgroup.procs").split()]
    else:
        def v1(controller: str, name: str) -> str:
            return _read(f"/sys/fs/cgroup/{controller}/docker/{container_id}/{name}")

        ticks = os.sysconf("SC_CLK_TCK")
        cpu = _pick(v1("cpuacct", "cpuacct.stat"), "user", "system")
        cfs = _pick(v1("cpu", "cpu.stat"), "nr_periods", "nr_throttled", "throttled_time")
        out.update(container_cpu_user_seconds_total=cpu["user"] / ticks,
                   container_cpu_system_seconds_total=cpu["system"] / ticks,
                   container_cpu_cfs_periods_total=cfs["nr_periods"],
                   container_cpu_cfs_throttled_periods_total=cfs["nr_throttled"],
                   container_cpu_cfs_throttled_seconds_total=cfs["throttled_time"] / 1e9,
                   container_spec_cpu_quota=int(v1("cpu", "cpu.cfs_quota_us")),
                   container_spec_cpu_period=int(v1("cpu", "cpu.cfs_period_us")),
                   container_spec_cpu_shares=int(v1("cpu", "cpu.shares")))
        mem = _pick(v1("memory", "memory.stat"), "total_rss", "total_cache", "total_swap", "total_mapped_file")
        out.update(container_memory_usage_bytes=int(v1("memory", "memory.usage_in_bytes")),
                   container_memory_rss=mem["total_rss"], container_memory_cache=mem["total_cache"],
                   container_memory_mapped_file=mem["total_mapped_file"],
                   container_memory_failcnt=int(v1("memory", "memory.failcnt")),
                   container_memory_max_usage_bytes=int(v1("memory", "memory.max_usage_in_bytes")),
                   container_spec_memory_limit_bytes=int(v1("memory", "memory.limit_in_bytes")),
                   container_spec_memory_reservation_limit_bytes=int(v1("memory", "memory.soft_limit_in_bytes")),
                   container_threads=int(v1("pids", "pids.current")))
        if "total_swap" in mem:
            out["container_memory_swap"] = mem["total_swap"]
        procs = [int(x) for x in v1("pids", "cgroup.procs").split()]
    out["container_processes"] = len(procs)
    fds = [os.readlink(f"/proc/{p}/fd/{n}") for p in procs for n in os.listdir(f"/proc/{p}/fd")]
    out["container_file_descriptors"] = len(fds)
    out["container_sockets"] = sum(1 for target in fds if target.startswith("socket:"))
    for line in _read(f"/proc/{pid}/net/dev").splitlines()[2:]:
        name, _, data = line.partition(":")
        if name.strip() == "eth0":
            f = [int(x) for x in data.split()]
            out.update(container_network_receive_bytes_total=f[0], container_network_receive_packets_total=f[1],
                       container_network_receive_errors_total=f[2],
                       container_network_receive_packets_dropped_total=f[3],
                       container_network_transmit_bytes_total=f[8], container_network_transmit_packets_total=f[9],
                       container_network_transmit_errors_total=f[10],
                       container_network_transmit_packets_dropped_total=f[11])
    return out


def test_every_cadvisor_family_holds_what_the_cgroup_files_hold(agent):
    c = agent["limited"]
    info = agent["client"].api.inspect_container(c.id)
    pid = info["State"]["Pid"]

    def mismatches() -> list:
        expected = expected_from_cgroup_files(c.id, pid)
        metrics = agent["serve"].metrics()
        wrong = []
        for name, value in expected.items():
            got = [v for labels, v in metrics.get(name, []) if labels.get("name") == c.name
                   and labels.get("interface", "eth0") == "eth0"]
            if got != [pytest.approx(value)]:
                wrong.append((name, got, value))
        return wrong

    # The busy spell is over: the container idles, and within a sweep or two every figure settles.
    last: list = []

    def settled() -> bool:
        last[:] = mismatches()
        return not last

    try:
        wait_until(settled, timeout=20, what="the files' values in /metrics")
    except AssertionError:
        raise AssertionError(f"(family, /metrics, files): {last}") from None
    metrics = agent["serve"].metrics()

    def value(name: str) -> float:
        (v,) = [v for labels, v in metrics[name] if labels.get("name") == c.name]
        return v

    # What this container was started with, as cAdvisor reports it.
    assert value("container_spec_cpu_quota") == 50_000 and value("container_spec_cpu_period") == 100_000
    assert value("container_spec_cpu_shares") == 512
    assert value("container_spec_memory_limit_bytes") == 128 * MIB
    assert value("container_spec_memory_reservation_limit_bytes") == 64 * MIB
    assert value("container_cpu_cfs_periods_total") > 0  # it ran under its quota (throttled or not: a busy host)
    assert value("container_processes") == 2 and value("container_sockets") >= 1  # nc (listening) and sleep
    started = info["State"]["StartedAt"]
    assert abs(value("container_start_time_seconds") - _rfc3339(started)) < 1e-3
    assert value("container_last_seen") > value("container_start_time_seconds")
    # Working set = usage - inactive_file, and the machine families.
    assert value("container_memory_working_set_bytes") <= value("container_memory_usage_bytes")
    (cores,) = metrics["machine_cpu_cores"]
    assert cores[1] == os.cpu_count()
    mem_total = int(_read("/proc/meminfo").split("MemTotal:")[1].split()[0]) * 1024
    (memory,) = metrics["machine_memory_bytes"]
    assert memory[1] == mem_total


def _rfc3339(text: str) -> float:
    from datetime import datetime

    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


def test_cadvisor_types_and_units_and_promtool_is_clean(agent):
    text = agent["serve"].metrics_text()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name in ("container_cpu_user_seconds", "container_cpu_system_seconds", "container_cpu_cfs_periods",
                 "container_cpu_cfs_throttled_periods", "container_cpu_cfs_throttled_seconds",
                 "container_network_receive_packets_dropped", "container_network_transmit_errors"):
        assert types[name + "_total"] == "counter", name
    for name in ("container_memory_rss", "container_memory_cache", "container_memory_mapped_file",
                 "container_spec_cpu_shares", "container_file_descriptors", "container_start_time_seconds",
                 "machine_cpu_cores", "machine_memory_bytes", "DCGM_FI_PROF_SM_ACTIVE"):
        assert types[name] == "gauge", name
    out = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    # dcgm-exporter's own camelCase label `modelName`, kept on purpose (its dashboards use it), is the only lint.
    expected = re.compile(r"^DCGM_FI_(DEV|PROF)_\w+ label names should be written in 'snake_case' not 'camelCase'$")
    assert all(expected.match(line) for line in problems), problems
    renamed = text.replace('modelName="', 'model_name="')
    clean = subprocess.run([_promtool(), "check", "metrics"], input=renamed, capture_output=True, text=True)
    assert clean.returncode == 0 and not (clean.stdout + clean.stderr).strip(), clean.stdout + clean.stderr


# --------------------------------------------------------------------------- the Grafana dashboard


def test_printed_grafana_dashboard_imports_and_every_query_answers(agent):
    out = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "serve", "--print-grafana-dashboard"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["__inputs"][0]["pluginId"] == "prometheus" and doc["templating"]["list"][0]["name"] == "instance"
    targets = [t["expr"] for panel in doc["panels"] for t in panel.get("targets", ())]
    assert targets == grafana.queries() and len(targets) >= 15
    titles = {panel["title"] for panel in doc["panels"]}
    assert {"GPUs", "GPU use by container", "Containers", "Findings and Xids"} <= titles
    p = agent["prometheus"]
    # The variables as Grafana fills them: "All" hosts (the variable's allValue), a rate window of a few scrapes.
    every_host = doc["templating"]["list"][0]["allValue"]
    assert p.query(doc["templating"]["list"][0]["definition"].replace("label_values(mltop_build_info, instance)",
                                                                      "mltop_build_info"))
    empty = []
    for expr in targets:
        concrete = expr.replace("$instance", every_host).replace("$__rate_interval", "15s")
        if not p.query(concrete):
            empty.append(concrete)
    assert not empty, empty
