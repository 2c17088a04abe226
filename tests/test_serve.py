"""`mltop serve` against the real engine and the simulated NVML, scraped by a real Prometheus; its faults;
its shipped alert rules under promtool. The agent image has its own file (test_serve_agent.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import builders as b
from engine_proxy import EngineSocketProxy
from fakenvml import HEALTHY, FakeGpu, FakeProcess, FakeScenario, FakeXid, hang, write_scenario
from serve_helpers import PrometheusServer, ServeProcess, parse_exposition, wait_until

GIB = 1 << 30
MIB = 1 << 20
RULES_TEST = Path(__file__).with_name("serve_alert_rules_test.yml")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("MLTOP_REQUIRE_DOCKER") == "1":
            pytest.fail("promtool is not installed (apt-get install prometheus)", pytrace=False)
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def _container_pid(client, container_id: str) -> int:
    return client.containers.get(container_id).attrs["State"]["Pid"]


# --------------------------------------------------------------------------- exposition, no engine needed


def test_exposition_from_a_built_snapshot_uses_dcgm_and_cadvisor_names_and_no_secrets():
    from mltop.tui.serve.loop import ServeState
    from mltop.tui.serve.metrics import Exposition

    secret = "hunter2-very-secret"
    c, g = b.gpu_workload("trainer", memory_bytes=6 * GIB, sm_percent=40.0,
                          config_overrides={"env": (("WANDB_API_KEY", secret),), "command": ("python", secret)})
    c = b.replace(c, cpu_usage_seconds=123.5, oom_kills=2, memory_limit_bytes=None,
                  processes=(b.process(4242, cmdline=f"python train.py --token {secret}"),))
    host_proc = b.gpu_process(999, memory_bytes=1 * GIB)
    g = b.replace(g, processes=g.processes + (host_proc,), sm_clock_mhz=1980, memory_clock_mhz=2619)
    snap = b.snapshot([c], [g, b.gpu(1, memory_used_bytes=0)], hostname="gpu-host-7")
    state = ServeState(snapshot=snap, swept_at=time.monotonic(), sweeps=1, last_good_gpus=snap.gpus)
    from mltop.probes.cgroups import CgroupLocator

    # The built sample's cgroup is a v1 path (builders.py): named by a v1 locator, whatever this host runs.
    v1 = CgroupLocator(1, v1_mounts={"memory": ("/sys/fs/cgroup/memory", "/")})
    text = Exposition(lambda: state, "9.9.9", cgroup_name=v1.hierarchy_path).render().decode()
    assert secret not in text and "train.py" not in text
    m = parse_exposition(text)

    (labels, value), = [s for s in m["DCGM_FI_DEV_FB_USED"] if s[0]["gpu"] == "0"]
    assert value == (6 * GIB + 512 * MIB + 1 * GIB) // MIB or value == g.memory_used_bytes // MIB
    assert labels == {"gpu": "0", "UUID": g.uuid, "pci_bus_id": g.pci_bus_id, "device": "nvidia0",
                      "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "gpu-host-7"}
    assert dict((s[0]["gpu"], s[1]) for s in m["DCGM_FI_DEV_SM_CLOCK"]) == {"0": 1980.0}
    assert [v for _, v in m["DCGM_FI_DEV_POWER_USAGE"]] == [300.0, 300.0]  # W, as dcgm-exporter

    (labels, value), = m["mltop_container_gpu_memory_bytes"]
    assert labels == {"container": "trainer", "container_id": c.id, "image": c.image, "gpu": "0", "UUID": g.uuid}
    assert value == 6 * GIB
    assert m["mltop_container_gpu_sm_utilization_percent"][0][1] == 40.0
    assert {s[0]["gpu"]: s[1] for s in m["mltop_host_gpu_processes"]} == {"0": 1.0, "1": 0.0}

    (labels, value), = m["container_cpu_usage_seconds_total"]
    assert labels == {"id": f"/docker/{c.id}", "image": c.image, "name": "trainer"} and value == 123.5
    assert m["container_oom_events_total"][0][1] == 2.0
    assert m["container_spec_memory_limit_bytes"][0][1] == 0.0  # cAdvisor's "no limit"
    assert m["mltop_build_info"][0][0]["version"] == "9.9.9"
    assert "process_resident_memory_bytes" in m


def test_hung_nvml_keeps_the_last_gpu_values_and_says_so():
    from mltop.probes.model import NvmlStatus
    from mltop.tui.serve.loop import SweepLoop

    good = b.snapshot([], [b.gpu(0, memory_used_bytes=3 * GIB)])
    hung = b.snapshot([], [], nvml=NvmlStatus("timeout", "NVML did not answer within 2 s"))

    class Source:
        snapshots = [good, hung]

        def latest(self):
            return self.snapshots.pop(0)

        def close(self):
            pass

    seen = []
    loop = SweepLoop(Source(), 1.0, None)
    loop.add_listener(lambda snapshot, doctor: seen.append((snapshot, doctor)))
    loop.sweep_once()
    state = loop.sweep_once()
    assert state.snapshot is hung and [g.memory_used_bytes for g in state.gpus_to_serve()] == [3 * GIB]
    assert [s for s, _ in seen] == [good, hung]


def test_listeners_get_each_doctor_result_once():
    from mltop.tui.serve.loop import SweepLoop

    snap = b.snapshot([b.container("a")])

    class Source:
        def latest(self):
            return snap

        def close(self):
            pass

    calls = []
    loop = SweepLoop(Source(), 1.0, 60.0, engine=lambda: None, doctor=lambda s, e, previous: ("result", s))
    loop.add_listener(lambda s, d: calls.append(d))
    loop.sweep_once()
    loop.doctor_once()
    loop.sweep_once()
    loop.sweep_once()
    assert calls == [None, ("result", snap), None]
    assert loop.state.doctor == ("result", snap)


def test_healthz_turns_503_after_three_intervals():
    from mltop.tui.serve.http import health
    from mltop.tui.serve.loop import ServeState

    assert health(ServeState(), 5.0)[0] == 503
    state = ServeState(snapshot=b.snapshot(), swept_at=100.0, sweeps=1)
    assert health(state, 5.0, now=114.0)[0] == 200
    code, reason = health(state, 5.0, now=116.0)
    assert code == 503 and "16.0 s ago" in reason


def test_print_assets():
    for flag, needle in (("--print-alert-rules", "MltopGpuMemoryAlmostFull"),
                         ("--print-scrape-config", "job_name: mltop"),
                         ("--print-systemd-unit", "ExecStart=")):
        out = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "serve", flag], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and needle in out.stdout, out.stderr


def test_promtool_checks_and_unit_tests_the_alert_rules(tmp_path):
    promtool = _promtool()
    from mltop.tui.serve.command import asset_text

    (tmp_path / "mltop-alert-rules.yml").write_text(asset_text("alert_rules"))
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    check = subprocess.run([promtool, "check", "rules", "mltop-alert-rules.yml"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([promtool, "test", "rules", "rules_test.yml"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr
    (tmp_path / "scrape.yml").write_text(asset_text("scrape_config"))
    config = subprocess.run([promtool, "check", "config", "scrape.yml"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_port_in_use_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "serve", "--no-nvml", "--listen",
                              f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"mltop serve: cannot listen on 127.0.0.1:{port}: address already in use"]


# --------------------------------------------------------------------------- real engine, real Prometheus


@pytest.fixture(scope="module")
def fleet(docker_client, test_images, fake_nvml_lib, tmp_path_factory):
    """Test containers (a busy loop, a GPU holder, an OOM-killed hog), two simulated GPUs listing the holder's
    host PID, `mltop serve` on them and a Prometheus scraping it every second."""
    from conftest import ContainerFactory, wait_for

    factory = ContainerFactory(docker_client, test_images)
    tag = os.getpid()
    work = tmp_path_factory.mktemp("serve-fleet")
    serve = prometheus = None
    try:
        busy = factory.run(["sh", "-c", "while :; do :; done"], name=f"mltop-serve-busy-{tag}")
        holder = factory.run(["sleep", "600"], name=f"mltop-serve-gpu-{tag}")
        idler = factory.run(["sleep", "600"], name=f"mltop-serve-idle-{tag}")  # holds GPU 1's memory, does nothing
        hog = factory.run(["sh", "-c", "dd if=/dev/zero of=/dev/shm/x bs=1M count=256; sleep 1; exit 137"],
                          name=f"mltop-serve-oom-{tag}", wait_running=False, mem_limit="64m", memswap_limit="64m",
                          shm_size="512m")
        wait_for(lambda: docker_client.containers.get(hog.id).attrs["State"]["Status"] == "exited",
                 what="oom hog exits")
        holder_pid = _container_pid(docker_client, holder.id)
        idler_pid = _container_pid(docker_client, idler.id)
        scenario = work / "scenario.txt"
        write_scenario(scenario, FakeScenario(gpus=[
            FakeGpu(uuid="GPU-5e7e0000-0000-0000-0000-000000000000", mem_used=30 * GIB, util=70, temp=61,
                    power_mw=312_500, processes=[FakeProcess(holder_pid, used_memory=6 * GIB, sm=40),
                                                 FakeProcess(os.getpid(), used_memory=1 * GIB)]),
            # A sick second GPU: new double-bit ECC errors and a link trained at x8 of x16.
            FakeGpu(uuid="GPU-5e7e0000-0000-0000-0000-000000000001", pci="00000000:3C:00.0", mem_used=0,
                    health={**HEALTHY, "ecc_vol_unc": 2, "ecc_agg_unc": 2, "pcie_width": 8},
                    processes=[FakeProcess(idler_pid, used_memory=2 * GIB)]),
        ], xids=[FakeXid(gpu=0, code=79, at=15.0)]))  # after the first scrapes: the counter is seen to rise
        serve = ServeProcess("--interval", "1", "--doctor-interval", "2", "--nvml-lib", str(fake_nvml_lib),
                             env={"MLTOP_FAKE_NVML_SCENARIO": str(scenario)})
        serve.wait_healthy()
        prometheus = PrometheusServer(work, [f"127.0.0.1:{serve.port}"])
        prometheus.wait_for('count(up{job="mltop"} == 1) > 0', what="first scrape")
        # Two scrapes at least, and enough history for rate().
        prometheus.wait_for(f'count_over_time(container_cpu_usage_seconds_total{{name="{busy.name}"}}[30s]) >= 4',
                            timeout=40, what="four scrapes of the busy container")
        yield dict(serve=serve, prometheus=prometheus, busy=busy, holder=holder, idler=idler, hog=hog,
                   client=docker_client,
                   lib=fake_nvml_lib, scenario=scenario)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if serve is not None:
            serve.stop()
        factory.cleanup()


def _value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_prometheus_reads_dcgm_fb_used_in_mib(fleet):
    result = fleet["prometheus"].query('DCGM_FI_DEV_FB_USED{gpu="0"}')
    assert _value(result) == 30 * 1024
    labels = result[0]["metric"]
    assert labels["UUID"] == "GPU-5e7e0000-0000-0000-0000-000000000000"
    assert labels["modelName"] == "NVIDIA H100 80GB HBM3" and labels["device"] == "nvidia0"
    assert labels["Hostname"] == socket.gethostname()
    assert _value(fleet["prometheus"].query('DCGM_FI_DEV_FB_FREE{gpu="0"}')) == 50 * 1024
    assert _value(fleet["prometheus"].query('DCGM_FI_DEV_POWER_USAGE{gpu="0"}')) == 312.5
    assert _value(fleet["prometheus"].query('DCGM_FI_DEV_FB_USED{gpu="1"}')) == 0


def test_prometheus_reads_xid_counter_and_health_series(fleet):
    p = fleet["prometheus"]
    result = p.wait_for('mltop_gpu_xid_errors_total{gpu="0",xid="79"} == 1', timeout=60, what="the Xid 79 event")
    assert result[0]["metric"]["UUID"] == "GPU-5e7e0000-0000-0000-0000-000000000000"
    # The counter was scraped at 0 before the event (pre-set), so increase() sees the first Xid.
    assert _value(p.query('min_over_time(mltop_gpu_xid_errors_total{gpu="0",xid="79"}[5m])')) == 0
    assert _value(p.wait_for('increase(mltop_gpu_xid_errors_total{gpu="0",xid="79"}[1m]) > 0', timeout=30)) > 0
    assert _value(p.query('DCGM_FI_DEV_XID_ERRORS{gpu="0"}')) == 79
    assert _value(p.query('DCGM_FI_DEV_XID_ERRORS{gpu="1"}')) == 0
    assert _value(p.query('mltop_gpu_xid_errors_total{gpu="1",xid="79"}')) == 0
    assert _value(p.query('DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{gpu="1"}')) == 2
    assert _value(p.query('DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{gpu="0"}')) == 0
    assert _value(p.query('DCGM_FI_DEV_PCIE_LINK_WIDTH{gpu="1"}')) == 8
    assert _value(p.query('DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH{gpu="1"}')) == 16
    assert _value(p.query('DCGM_FI_DEV_FAN_SPEED{gpu="0"}')) == 40
    labels = p.query('DCGM_FI_DEV_PSTATE{gpu="0"}')[0]["metric"]
    assert labels["modelName"] == "NVIDIA H100 80GB HBM3" and labels["device"] == "nvidia0"
    # The idler holds GPU memory on an idle GPU and sleeps: class `idle`. The busy loop holds no GPU: no class.
    (workload,) = p.query(f'mltop_container_workload{{container="{fleet["idler"].name}"}} == 1')
    assert workload["metric"]["kind"] == "idle" and workload["metric"]["container_id"] == fleet["idler"].id
    assert workload["metric"]["image"] == "mltop-test/busybox:1"
    assert not p.query(f'mltop_container_workload{{container="{fleet["busy"].name}"}}')


def test_gpu_memory_by_container_names_the_holder(fleet):
    holder = fleet["holder"]
    result = fleet["prometheus"].query(f'mltop_container_gpu_memory_bytes{{gpu="0"}}')
    assert len(result) == 1, result
    labels = result[0]["metric"]
    assert labels["container"] == holder.name and labels["container_id"] == holder.id
    assert labels["image"] == "mltop-test/busybox:1" and labels["gpu"] == "0"
    assert float(result[0]["value"][1]) == 6 * GIB
    sm = fleet["prometheus"].query(f'mltop_container_gpu_sm_utilization_percent{{container="{holder.name}"}}')
    assert _value(sm) == 40
    # The pytest process holds 1 GiB as a host process: counted, not dropped.
    assert _value(fleet["prometheus"].query('mltop_host_gpu_processes{gpu="0"}')) == 1
    assert _value(fleet["prometheus"].query('mltop_host_gpu_memory_bytes{gpu="0"}')) == 1 * GIB


def test_working_set_agrees_with_mltop_snapshot(fleet):
    holder = fleet["holder"]
    out = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--no-nvml", "--interval",
                          "0.25"], capture_output=True, text=True, timeout=120)
    doc = json.loads(out.stdout)
    (mine,) = [c for c in doc["containers"] if c["name"] == holder.name]
    value = _value(fleet["prometheus"].query(f'container_memory_working_set_bytes{{name="{holder.name}"}}'))
    # An idle `sleep`: its working set moves by a few pages at most between the two reads.
    assert abs(value - mine["memory_bytes"]) <= 256 * 1024, (value, mine["memory_bytes"])
    labels = fleet["prometheus"].query(f'container_memory_working_set_bytes{{name="{holder.name}"}}')[0]["metric"]
    assert labels["id"] == f"/docker/{holder.id}" or labels["id"].endswith(holder.id)
    assert labels["image"] == "mltop-test/busybox:1"


def test_rate_of_cpu_counter_of_a_busy_loop_is_about_one_core(fleet):
    busy = fleet["busy"]

    def engine_cpu_seconds() -> tuple[float, float]:
        stats = fleet["client"].api.stats(busy.id, stream=False, one_shot=True)
        return time.time(), stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9

    t0, used0 = engine_cpu_seconds()
    time.sleep(10)
    t1, used1 = engine_cpu_seconds()
    time.sleep(1.5)  # let the scrape after t1 land
    engine_rate = (used1 - used0) / (t1 - t0)  # the engine's own reading, independent of mltop
    expr = f'rate(container_cpu_usage_seconds_total{{name="{busy.name}"}}[{round(t1 - t0)}s])'
    rate = _value(fleet["prometheus"].query(expr, at=t1))
    # A busy loop takes one core when one is free; this host is shared, so the loop may get less. Either way
    # Prometheus' rate of mltop's counter must match what the engine measured over the same window.
    assert abs(rate - engine_rate) <= 0.1 + 0.1 * engine_rate, (rate, engine_rate)
    if engine_rate >= 0.9:
        assert 0.85 <= rate <= 1.1, rate


def test_finding_metric_carries_oom_killed(fleet):
    hog = fleet["hog"]
    result = fleet["prometheus"].wait_for(f'mltop_finding{{code="oom.killed",container="{hog.name}"}} == 1',
                                          timeout=30)
    # The engine sets State.OOMKilled only when the kernel's OOM event reaches it before the exit does, which
    # it does not always (moby/moby#15621): without it, exit 137 with the OOM in the log is a warning.
    flagged = fleet["client"].api.inspect_container(hog.id)["State"]["OOMKilled"]
    assert result[0]["metric"]["severity"] == ("critical" if flagged else "warning")
    assert _value(fleet["prometheus"].query('mltop_findings{severity="critical"}')) >= 1
    code, body = fleet["serve"].get("/findings.json")
    assert code == 200
    assert any(f["code"] == "oom.killed" and f["container"] == hog.name for f in json.loads(body)["findings"])


def test_self_metrics_and_snapshot_json(fleet):
    p = fleet["prometheus"]
    assert _value(p.query("mltop_engine_up")) == 1
    assert p.query('mltop_nvml_up{status="ok"} == 1')
    assert _value(p.query("mltop_sweep_duration_seconds_count")) >= 2
    assert p.query("mltop_build_info") and p.query("process_resident_memory_bytes")
    code, body = fleet["serve"].get("/snapshot.json")
    doc = json.loads(body)
    assert code == 200 and doc["schema_version"] == 1
    assert fleet["holder"].name in [c["name"] for c in doc["containers"]]


def test_promtool_check_metrics_on_a_real_scrape(fleet):
    promtool = _promtool()
    text = fleet["serve"].metrics_text()
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    # The one lint promtool raises is dcgm-exporter's own camelCase label `modelName`, kept on purpose so
    # dashboards written for dcgm-exporter work unchanged (dcgm-exporter's exposition draws the same lint).
    problems = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    expected = re.compile(r"^DCGM_FI_DEV_\w+ label names should be written in 'snake_case' not 'camelCase'$")
    assert problems and all(expected.match(line) for line in problems), problems
    # Everything else is clean: with that one label renamed, promtool has nothing to say.
    renamed = text.replace('modelName="', 'model_name="')
    clean = subprocess.run([promtool, "check", "metrics"], input=renamed, capture_output=True, text=True)
    assert clean.returncode == 0 and not (clean.stdout + clean.stderr).strip(), clean.stdout + clean.stderr


def test_200_parallel_scrapes_all_answered_with_bounded_threads(fleet):
    serve = fleet["serve"]
    before = serve.threads()
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], serve.threads())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(lambda _: serve.get("/metrics", timeout=30), range(200)))
    done.set()
    watcher.join()
    assert [code for code, _ in results] == [200] * 200
    assert all(b"DCGM_FI_DEV_FB_USED" in body for _, body in results)
    from mltop.tui.serve.http import WORKERS

    assert peak[0] <= before + WORKERS, (before, peak[0])
    time.sleep(0.5)
    assert serve.threads() <= before + WORKERS


# --------------------------------------------------------------------------- faults


def test_engine_gone_mid_run_keeps_metrics_and_gpus(docker_client, containers, nvml_scenario, tmp_path):
    lib = nvml_scenario(gpus=[FakeGpu(mem_used=12 * GIB)])
    c = containers.run(["sleep", "300"], name=f"mltop-serve-engine-{os.getpid()}")
    proxy = EngineSocketProxy(tmp_path / "docker.sock").start()
    serve = ServeProcess("--interval", "0.5", "--doctor-interval", "0", "--nvml-lib", lib,
                         "--docker-host", f"unix://{tmp_path / 'docker.sock'}")
    try:
        serve.wait_healthy()
        wait_until(lambda: any(l["name"] == c.name for l, _ in serve.metrics().get("container_last_seen", [])),
                   15, "the container on /metrics")
        proxy.stop()
        m = wait_until(lambda: (lambda m: m if m["mltop_engine_up"][0][1] == 0 else None)(serve.metrics()),
                       20, "mltop_engine_up 0")
        assert m["mltop_engine_up"][0][0]["status"] != "ok"
        assert [v for _, v in m["DCGM_FI_DEV_FB_USED"]] == [12 * 1024]
        assert serve.get("/healthz")[0] == 200  # sweeps go on; the engine being down is not the agent's fault
    finally:
        serve.stop()
        if not proxy.stopped:
            proxy.stop()


def test_hung_nvml_scrapes_answer_fast_with_last_values(nvml_scenario):
    # The first 3 utilisation reads answer; then every read hangs 30 s (past the probe's 2 s deadline).
    lib = nvml_scenario(FakeScenario(gpus=[FakeGpu(mem_used=20 * GIB)],
                                     directives=[hang("nvmlDeviceGetUtilizationRates", 30, after=3)]))
    # No engine (nothing listens there): this test is about NVML alone, whatever state the shared engine is in.
    serve = ServeProcess("--interval", "0.5", "--doctor-interval", "0", "--nvml-lib", lib,
                         "--docker-host", "unix:///nonexistent/mltop-test-docker.sock")
    try:
        serve.wait_healthy()
        m = wait_until(lambda: (lambda m: m if m["mltop_nvml_up"][0][1] == 0 else None)(serve.metrics()),
                       30, "mltop_nvml_up 0")
        assert m["mltop_nvml_up"][0][0]["status"] == "timeout"
        timings = []
        for _ in range(20):
            started = time.monotonic()
            text = serve.metrics_text()
            timings.append(time.monotonic() - started)
            assert "DCGM_FI_DEV_FB_USED" in text
        # NVML hangs 30 s and the probe waits 2 s for it: a scrape that waited on NVML would take seconds.
        # The goal is 100 ms; the median is held to it (a shared, overloaded CI host stretches single scrapes).
        assert sorted(timings)[len(timings) // 2] < 0.1 and max(timings) < 1.0, timings
        m = parse_exposition(text)
        assert [v for _, v in m["DCGM_FI_DEV_FB_USED"]] == [20 * 1024]  # the last values NVML gave
        assert m["mltop_nvml_up"][0][1] == 0
    finally:
        serve.stop()
