"""`mltop fleet`: three real `mltop serve` agents (each its own --node-name and simulated GPUs), scraped by a real
Prometheus; the fleet read from that Prometheus as JSON and in the Textual view; an agent stopped; Prometheus
stopped or holding no mltop series.

The three agents run on this machine and share its Docker engine, so a container finding (the OOM-killed
container) appears on each host whose doctor runs; the GPU findings (Xid, ECC) belong to gpu-b alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fakenvml import HEALTHY, FakeGpu, FakeProcess, FakeScenario, FakeXid, write_scenario
from serve_helpers import REPO, PrometheusServer, ServeProcess, free_port

GIB = 1 << 30


def _container_pid(client, cid: str) -> int:
    return int(client.api.inspect_container(cid)["State"]["Pid"])


@pytest.fixture(scope="module")
def three_hosts(docker_client, test_images, fake_nvml_lib, tmp_path_factory):
    from conftest import ContainerFactory, wait_for

    factory = ContainerFactory(docker_client, test_images)
    tag = os.getpid()
    work = tmp_path_factory.mktemp("fleet")
    agents: dict[str, ServeProcess] = {}
    prometheus = None
    try:
        trainer = factory.run(["sleep", "600"], name=f"mltop-fleet-trainer-{tag}")
        hog = factory.run(["sh", "-c", "dd if=/dev/zero of=/dev/shm/x bs=1M count=256; sleep 1; exit 137"],
                          name=f"mltop-fleet-oom-{tag}", wait_running=False, mem_limit="64m", memswap_limit="64m",
                          shm_size="512m")
        wait_for(lambda: docker_client.containers.get(hog.id).attrs["State"]["Status"] == "exited",
                 what="the OOM hog exits")
        trainer_pid = _container_pid(docker_client, trainer.id)
        scenarios = {
            # gpu-a: healthy, busy, the trainer container on GPU 0
            "gpu-a": FakeScenario(gpus=[
                FakeGpu(uuid="GPU-aaaa0000-0000-0000-0000-000000000000", util=80, mem_used=40 * GIB,
                        processes=[FakeProcess(trainer_pid, used_memory=30 * GIB, sm=75)],
                        gpm={2: 60.0}),  # GPM: SM active 60 % (NVML_GPM_METRIC_SM_UTIL); GPU 1 has no GPM
                FakeGpu(uuid="GPU-aaaa0000-0000-0000-0000-000000000001", pci="00000000:3C:00.0", util=20,
                        mem_used=8 * GIB)]),
            # gpu-b: an Xid 79 (fallen off the bus) and uncorrected ECC errors on GPU 0
            "gpu-b": FakeScenario(gpus=[
                FakeGpu(uuid="GPU-bbbb0000-0000-0000-0000-000000000000", util=0, mem_used=1 * GIB,
                        health={**HEALTHY, "ecc_vol_unc": 3, "ecc_agg_unc": 3})],
                xids=[FakeXid(gpu=0, code=79, at=1.0)]),
            # gpu-c: one idle GPU
            "gpu-c": FakeScenario(gpus=[FakeGpu(uuid="GPU-cccc0000-0000-0000-0000-000000000000", util=5)]),
        }
        for name, scenario in scenarios.items():
            path = work / f"{name}.txt"
            write_scenario(path, scenario)
            agents[name] = ServeProcess("--interval", "1", "--doctor-interval", "2", "--no-record",
                                        "--nvml-lib", str(fake_nvml_lib), "--node-name", name,
                                        env={"MLTOP_FAKE_NVML_SCENARIO": str(path)})
        for agent in agents.values():
            agent.wait_healthy()
        prometheus = PrometheusServer(work, [f"127.0.0.1:{a.port}" for a in agents.values()])
        prometheus.wait_for("count(mltop_host_info) == 3", timeout=40, what="three agents scraped")
        prometheus.wait_for('mltop_finding{code="gpu.xid"}', timeout=40, what="gpu-b's Xid finding")
        prometheus.wait_for("count(mltop_findings) >= 9", timeout=40, what="every agent's doctor")
        prometheus.wait_for(f'mltop_container_gpu_memory_bytes{{container="{trainer.name}"}}', timeout=30)
        yield dict(agents=agents, prometheus=prometheus, trainer=trainer, hog=hog, work=work)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for agent in agents.values():
            agent.stop()
        factory.cleanup()


def fleet_json(url: str, *extra: str, env: dict | None = None) -> tuple[int, dict | None, str]:
    result = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "fleet", "--prometheus", url, "--json", *extra],
                            capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, **(env or {})})
    doc = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, doc, result.stderr


def test_fleet_json_lists_every_host_worst_first_with_gpus_containers_and_findings(three_hosts):
    code, doc, err = fleet_json(three_hosts["prometheus"].url)
    assert code == 0, err
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert set(hosts) == {"gpu-a", "gpu-b", "gpu-c"}
    assert doc["hosts_up"] == 3 and doc["hosts_down"] == 0 and doc["errors"] == []
    # worst first: gpu-b holds the critical Xid 79
    assert doc["hosts"][0]["host"] == "gpu-b", json.dumps([(h["host"], h["findings_by_severity"]) for h in doc["hosts"]])
    b = hosts["gpu-b"]
    assert b["agent"] == "up" and b["last_sweep_age_s"] < 30
    assert {"gpu.xid", "gpu.ecc"} <= {f["code"] for f in b["findings"]}
    assert b["findings_by_severity"]["critical"] >= 1 and b["worst_finding"] in ("gpu.xid", "gpu.ecc")
    a = hosts["gpu-a"]
    assert a["gpu_count"] == 2 and [g["index"] for g in a["gpus"]] == ["0", "1"]
    assert a["gpu_utilization_mean_percent"] == pytest.approx(50.0)
    # SM active from GPM where a GPU has it (dcgm-exporter's ratio): the mean of the GPUs that report it
    assert [g["sm_active"] for g in a["gpus"]] == [pytest.approx(0.6), None]
    assert a["sm_active_mean"] == pytest.approx(0.6) and hosts["gpu-c"]["sm_active_mean"] is None
    assert a["gpu_memory_used_bytes"] == 48 * GIB and a["gpu_memory_total_bytes"] == 160 * GIB
    assert not {"gpu.xid", "gpu.ecc"} & {f["code"] for f in a["findings"]}
    trainer = three_hosts["trainer"]
    assert [c["container"] for c in a["gpu_containers"]] == [trainer.name]
    assert a["gpu_containers"][0]["gpu_memory_bytes"] == 30 * GIB and a["gpu_containers"][0]["sm_percent"] == 75
    assert a["containers_running"] >= 1
    top = doc["top_gpu_consumers"][0]
    assert (top["host"], top["container"]) == ("gpu-a", trainer.name)
    assert [f["host"] for f in doc["findings_by_code"]["gpu.xid"]] == ["gpu-b"]
    # the OOM-killed container is on this machine's one engine, so every agent that runs the doctor reports it
    assert {f["host"] for f in doc["findings_by_code"]["oom.killed"]} == {"gpu-a", "gpu-b", "gpu-c"}


SIZES = [(80, 24), (160, 50)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_fleet_view_hosts_consumers_findings_and_a_host(three_hosts, size):
    from conftest import until

    from mltop.probes.fleet import FleetReader
    from mltop.probes.prometheus_api import PrometheusClient
    from mltop.tui.fleet.app import ConsumersScreen, FindingsScreen, FleetApp, HostsScreen

    app = FleetApp(FleetReader(PrometheusClient(three_hosts["prometheus"].url)), refresh_s=2)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: isinstance(app.screen, HostsScreen) and app.screen.table.row_count == 3,
                    what="three host rows")
        screen = app.screen
        table = screen.table
        order = [table.cell_text(k, "host") for k in table.keys_in_order]
        assert order[0] == "gpu-b"  # worst first
        assert "agent" in table.visible_columns and "findings" in table.visible_columns
        header = str(screen.query_one("#fleet-header").render())
        assert "3 hosts up" in header and three_hosts["prometheus"].url in header
        assert table.cell_text(table.keys_in_order[0], "agent").startswith("up")
        if size[0] >= 160:
            assert {"gpus", "util", "gpu_mem"} <= set(table.visible_columns)
            a_key = next(k for k in table.keys_in_order if table.cell_text(k, "host") == "gpu-a")
            assert table.cell_text(a_key, "gpus") == "2" and table.cell_text(a_key, "util") == "50.0"
            assert table.cell_text(a_key, "sm") == "60.0"

        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, ConsumersScreen) and app.screen.table.row_count >= 1,
                    what="the top consumers")
        consumers = app.screen.table
        first = consumers.keys_in_order[0]
        assert consumers.cell_text(first, "container") == three_hosts["trainer"].name
        assert consumers.cell_text(first, "host") == "gpu-a"

        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FindingsScreen) and app.screen.table.row_count >= 2,
                    what="the findings by code")
        findings = app.screen.table
        xid_rows = [k for k in findings.keys_in_order if "\x00gpu.xid\x00" in k]
        assert [findings.cell_text(k, "host") for k in xid_rows] == ["gpu-b"]

        await pilot.press("h")
        await until(pilot, lambda: isinstance(app.screen, HostsScreen), what="back to the hosts")
        await pilot.press("enter")  # the cursor is on the worst host: the app leaves with it
        await until(pilot, lambda: app.return_value is not None, what="the host chosen")
    assert app.return_value.hostname == "gpu-b"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_a_fleet_host_opens_in_the_dashboard_read_from_prometheus_and_never_acts(three_hosts, size):
    """gpu-a in the same dashboard mltop shows for a live host: its GPUs, the trainer container with its GPU
    memory, findings from mltop_finding; every in-container action refused with the command to run there."""
    from conftest import until

    from mltop.probes.fleet import FleetReader
    from mltop.probes.fleet_host import PrometheusHostSource
    from mltop.probes.prometheus_api import PrometheusClient
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.dashboard import DashboardScreen

    client = PrometheusClient(three_hosts["prometheus"].url)
    host = next(h for h in FleetReader(client).read().hosts if h.hostname == "gpu-a")
    source = PrometheusHostSource(client, host.job, host.instance, host.hostname)
    trainer = three_hosts["trainer"]
    app = MltopApp(docker_host=source.act_command, interval=1.0, source=source)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.container(trainer.id) is not None,
                    what="the trainer from Prometheus")
        snapshot = app.snapshot
        assert [g.uuid for g in snapshot.gpus] == ["GPU-aaaa0000-0000-0000-0000-000000000000",
                                                   "GPU-aaaa0000-0000-0000-0000-000000000001"]
        assert snapshot.gpus[0].utilization_percent == 80 and snapshot.gpus[0].memory_used_bytes == 40 * GIB
        row = snapshot.container(trainer.id)
        assert row.name == trainer.name and row.gpu_memory_bytes == 30 * GIB and row.gpus[0].index == 0
        assert snapshot.host.hostname == "gpu-a"
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        header = str(screen.query_one("#header").render())
        assert "PROMETHEUS" in header and "gpu-a" in header
        table = screen.table
        await until(pilot, lambda: trainer.id in table.keys_in_order, what="the trainer's row")
        assert table.cell_text(trainer.id, "name") == trainer.name
        # the graphs' history comes from range queries over the last minutes: the memory the trainer held
        assert any(v == 30 * GIB for v in app.history.container(trainer.id, "gpu_memory_bytes"))
        assert any(v == 80 for v in app.history.gpu("GPU-aaaa0000-0000-0000-0000-000000000000", "utilization_percent"))
        await until(pilot, lambda: app.doctor_result is not None and any(
            f.code == "oom.killed" for f in app.doctor_result.findings), what="findings from mltop_finding")
        table.move_to_key(trainer.id)
        for key in ("n", "p", "f"):
            await pilot.press(key)
            await pilot.pause(0.05)
            assert isinstance(app.screen, DashboardScreen), key
        messages = [str(n.message) for n in app._notifications]
        assert any("The fleet view reads Prometheus" in m and "ssh -t gpu-a mltop" in m for m in messages), messages


def test_no_mltop_series_says_how_to_add_the_scrape_config(tmp_path):
    prometheus = PrometheusServer(tmp_path, [f"127.0.0.1:{free_port()}"])  # a target with nothing behind it
    try:
        code, doc, err = fleet_json(prometheus.url)
    finally:
        prometheus.stop()
    assert code == 4
    assert doc["hosts"] == []
    assert "no mltop serve targets in this Prometheus" in err and "mltop serve --print-scrape-config" in err


def test_prometheus_down_is_one_clear_line_and_exit_3(tmp_path):
    prometheus = PrometheusServer(tmp_path, [])
    url = prometheus.url
    prometheus.stop()
    code, doc, err = fleet_json(url)
    assert code == 3 and doc is None
    assert err.strip().count("\n") == 0
    assert f"cannot reach Prometheus at {url}" in err
    code, _, err = fleet_json("not-a-url")
    assert code == 2 and "expected an http:// or https:// URL" in err


def test_credentials_come_from_the_environment_and_never_show(three_hosts):
    """Basic auth from MLTOP_PROMETHEUS_USER/PASSWORD is sent (Prometheus ignores it); a URL's user:password
    part is dropped from what is shown."""
    url = three_hosts["prometheus"].url.replace("http://", "http://alice:s3cret@")
    code, doc, err = fleet_json(url, env={"MLTOP_PROMETHEUS_USER": "bob", "MLTOP_PROMETHEUS_PASSWORD": "hunter2"})
    assert code == 0, err
    assert "s3cret" not in json.dumps(doc) and "hunter2" not in json.dumps(doc)
    assert doc["prometheus"] == three_hosts["prometheus"].url


def test_a_stopped_agent_is_shown_down_with_its_last_sweep_not_dropped(three_hosts):
    """Last in this module: it stops gpu-c's agent."""
    prometheus = three_hosts["prometheus"]
    agent = three_hosts["agents"]["gpu-c"]
    agent.stop()
    prometheus.wait_for(f'up{{instance="127.0.0.1:{agent.port}"}} == 0', timeout=30, what="gpu-c's scrape failing")
    code, doc, err = fleet_json(prometheus.url)
    assert code == 0, err
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert set(hosts) == {"gpu-a", "gpu-b", "gpu-c"}
    c = hosts["gpu-c"]
    assert c["agent"] == "down" and c["last_sweep"] is not None and c["last_sweep_age_s"] >= 0
    assert c["findings"] == [] and c["containers_running"] == 0
    assert doc["hosts_down"] == 1 and doc["hosts_up"] == 2
    assert doc["hosts"][0]["host"] == "gpu-c"  # a host whose agent is down sorts first
