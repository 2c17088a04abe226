"""What mltop costs, said by mltop: the snapshot's self_cost, the header's cost item and its fit to the width,
the table's unknown rates on the first frame, and the catalog that re-inspects only what events name."""

from __future__ import annotations

import json
import subprocess
import sys

from builders import container, gpu, gpu_workload, snapshot
from conftest import wait_for
from fakenvml import FakeGpu, FakeProcess, FakeScenario

from mltop.probes.model import NvmlStatus, SelfCost, snapshot_to_json
from mltop.probes.sampler import ProbeOptions, Sampler
from mltop.probes.source import StaticSource
from mltop.tui.app import MltopApp
from mltop.tui.widgets.header import fit_facts, header_parts, pack

COST = SelfCost(cpu_percent=1.8, rss_bytes=62 << 20, sweep_s=0.041, nvml_slowest_call_s=0.003,
                nvml_slowest_call="nvmlDeviceGetProcessUtilization")


def gpu_host_snapshot(hostname: str = "gpu-node-017.example", cost: SelfCost | None = COST, running: int = 97):
    workload, device = gpu_workload("trainer")
    others = [container(f"svc-{i:03d}") for i in range(running - 1)]
    others += [container(f"done-{i}", status="exited") for i in range(3)]
    snap = snapshot([workload, *others], [device], hostname=hostname, docker_version="20.10.24+dfsg1",
                    nvml=NvmlStatus("ok", None, "550.54.15", "12.4"))
    return snap if cost is None else _with_cost(snap, cost)


def _with_cost(snap, cost):
    import dataclasses

    return dataclasses.replace(snap, self_cost=cost)


def first_line(snap, width: int, paused: bool = False, interval: float = 1.0) -> str:
    facts, problems = header_parts(snap, "unix:///var/run/docker.sock", interval, paused)
    return pack(fit_facts(facts, width - 2), problems, width - 2).plain


# --------------------------------------------------------------------------- the header fits its width


def test_header_is_one_line_from_120_columns_with_every_item():
    for width in (120, 160, 200):
        line = first_line(gpu_host_snapshot(), width)
        assert "\n" not in line, (width, line)
        assert len(line) <= width - 2
        for item in ("gpu-node-017", "550.54.15", "CUDA 12.4", "97/100", "mltop", "1.8%", "every 1s"):
            assert item in line, (width, item, line)


def test_header_at_200_columns_says_everything_it_costs():
    line = first_line(gpu_host_snapshot(), 200)
    assert "mltop cpu 1.8% rss 62M sweep 41ms nvml 3ms" in line
    assert "engine unix:///var/run/docker.sock (docker 20.10.24+dfsg1)" in line


def test_header_at_80_columns_keeps_what_matters_on_one_line():
    line = first_line(gpu_host_snapshot(), 80)
    assert "\n" not in line, line
    for item in ("gpu-node-017", "engine ok", "550.54.15", "CUDA 12.4", "97/100", "mltop 1.8%"):
        assert item in line, (item, line)


def test_header_names_a_remote_engine_even_when_narrow():
    import dataclasses

    snap = gpu_host_snapshot(hostname="box")
    snap = dataclasses.replace(snap, host=dataclasses.replace(
        snap.host, engine=dataclasses.replace(snap.host.engine, docker_host="ssh://me@gpu-box")))
    line = first_line(snap, 80)
    assert "ssh://me@gpu-box" in line


def test_header_cost_not_known_yet_is_shown_as_such():
    line = first_line(gpu_host_snapshot(cost=SelfCost(None, 40 << 20, 0.2)), 200)
    assert "mltop cpu –% rss 40M sweep 200ms" in line and "nvml" not in line
    assert "0.0%" not in line  # never a made-up zero


def test_header_hostile_hostname_stays_text():
    line = first_line(gpu_host_snapshot(hostname="[bold red]pwn[/]"), 120)
    assert "[bold red]pwn[/]" in line


async def test_dashboard_header_fits_80x24_and_120_columns():
    snap = gpu_host_snapshot()
    for size, expected in (((80, 24), "engine ok"), ((120, 36), "every 1s")):
        app = MltopApp(source=StaticSource([snap]), nvml=False)
        async with app.run_test(size=size) as pilot:
            for _ in range(40):
                await pilot.pause(0.05)
                if app.snapshot is not None and app.screen.query_one("#header").plain:
                    break
            header = app.screen.query_one("#header").plain
            assert "\n" not in header, (size, header)
            assert expected in header and "gpu-node-017" in header and "97/100" in header, (size, header)
            await pilot.press("q")


# --------------------------------------------------------------------------- unknown rates on the first frame


async def test_first_frame_shows_unknown_rates_as_unknown():
    first = snapshot([container("fresh", cpu_percent=None, io_read_bytes_per_s=None, io_write_bytes_per_s=None,
                                net_rx_bytes_per_s=None, net_tx_bytes_per_s=None)])
    app = MltopApp(source=StaticSource([first]), nvml=False)
    async with app.run_test(size=(200, 60)) as pilot:
        for _ in range(40):
            await pilot.pause(0.05)
            if app.screen.table.row_count:
                break
        table = app.screen.table
        key = table.keys_in_order[0]
        assert table.shown_text(key, "cpu") == "–"
        assert table.shown_text(key, "io") == "–/–" and table.shown_text(key, "net") == "–/–"
        await pilot.press("q")


async def test_the_collector_is_off_until_the_first_full_frame_and_on_after():
    """Start-up makes objects that all live on: no cyclic collection among them until the first frame with
    every row, then they are frozen out of its sight; an app that ends earlier leaves the collector on. The
    dashboard's factory tunes this (`mltop`); constructing an MltopApp alone changes nothing (test_tui_startup)."""
    import gc

    from mltop.tui.cli.dashboard import make_dashboard_app

    assert gc.isenabled()
    threshold = gc.get_threshold()
    rows = [snapshot([container("job", cpu_percent=None)]), snapshot([container("job", cpu_percent=12.0)])]
    app = make_dashboard_app(source=StaticSource(rows), nvml=False, interval=0.25)
    try:
        assert not gc.isenabled()
        async with app.run_test(size=(120, 30)) as pilot:
            for _ in range(60):
                await pilot.pause(0.05)
                if app.first_frame_s is not None:
                    break
            assert app.first_frame_s is not None and gc.isenabled() and gc.get_freeze_count() > 0
        ended = make_dashboard_app(source=StaticSource(rows), nvml=False)
        assert not gc.isenabled()
        async with ended.run_test(size=(80, 24)) as pilot:
            await pilot.press("q")
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_the_process_age_behind_started_in_is_measured_to_the_tick():
    """"mltop started in N ms" counts from the process's start: within the kernel's 10 ms tick of the time a
    parent measures, not the whole second that psutil's create_time (boot time in seconds) could be off."""
    script = "import time; time.sleep(0.4); from mltop.tui.app import _process_age_s; print(_process_age_s())"
    import time

    spawned = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    wall = time.monotonic() - spawned
    assert out.returncode == 0, out.stderr
    age = float(out.stdout)
    assert 0.4 <= age <= wall + 0.02


# --------------------------------------------------------------------------- the snapshot says what it costs


def test_sweep_reports_its_own_cost(containers, sampler):
    containers.run(["sleep", "300"])
    first = sampler.sweep()
    assert first.self_cost.cpu_percent is None  # two sweeps make a rate; one makes nothing up
    assert first.self_cost.rss_bytes > 10 << 20 and first.self_cost.sweep_s > 0
    second = sampler.sweep()
    assert second.self_cost.cpu_percent is not None and second.self_cost.cpu_percent >= 0
    assert second.self_cost.nvml_slowest_call_s is None  # NVML off
    assert snapshot_to_json(second)["self_cost"]["sweep_s"] == second.self_cost.sweep_s


def test_snapshot_json_names_the_slowest_nvml_call(nvml_scenario, containers):
    c = containers.run(["sleep", "300"])
    lib = nvml_scenario(FakeScenario(gpus=[FakeGpu(processes=[FakeProcess(c.attrs["State"]["Pid"] or 1)])]))
    result = subprocess.run(
        [sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--interval", "0.25", "--nvml-lib", lib],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    cost = json.loads(result.stdout)["self_cost"]
    assert cost["nvml_slowest_call"].startswith("nvml") and cost["nvml_slowest_call_s"] > 0
    assert cost["cpu_percent"] is not None and cost["rss_bytes"] > 0 and cost["sweep_s"] > 0


def test_snapshot_without_a_sweep_has_no_cost():
    assert snapshot_to_json(snapshot([container()], [gpu(0)]))["self_cost"] is None


# --------------------------------------------------------------------------- events re-inspect, not re-list


def test_event_reinspects_only_the_named_container(containers, monkeypatch):
    from mltop.probes import catalog

    monkeypatch.setattr(catalog, "REINSPECT_MAX", 10_000)  # other sessions' bursts on a shared engine: no re-list
    sampler = Sampler(ProbeOptions(nvml=False))
    try:
        sampler.sweep()
        sampler.catalog.relist_s = 3600
        calls = {"list": 0, "inspect": []}
        real_list, real_inspect = sampler.engine.list_containers, sampler.engine.inspect

        def counting_list():
            calls["list"] += 1
            return real_list()

        def counting_inspect(cid):
            calls["inspect"].append(cid)
            return real_inspect(cid)

        sampler.engine.list_containers = counting_list
        sampler.engine.inspect = counting_inspect
        c = containers.run(["sleep", "300"])
        wait_for(lambda: (s := sampler.sweep().container(c.id)) is not None and s.pid, timeout=15,
                 what="the new container seen through events")
        assert calls["list"] == 0
        assert c.id in calls["inspect"]
        c.remove(force=True)
        wait_for(lambda: sampler.sweep().container(c.id) is None, timeout=15, what="the removed container gone")
        assert calls["list"] == 0
    finally:
        sampler.close()
