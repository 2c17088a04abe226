"""InfiniBand/RoCE ports from a sysfs tree (--sysfs-root): the probe, its rates, the findings, and `mltop serve`
against node_exporter's own infiniband collector on the same tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import builders as b
from serve_helpers import ServeProcess, free_port, http_get, parse_exposition, wait_until
from sysfs_tree import set_counters, set_state, write_ib_port

from mltop.diagnostics.checks import CheckContext, HostFacts, Thresholds
from mltop.diagnostics.doctor import judge
from mltop.probes.fabric_records import IbPort
from mltop.probes.infiniband import InfinibandProbe, parse_rate, parse_state

REPO = Path(__file__).resolve().parent.parent
NODE_EXPORTER = "prometheus-node-exporter"


def _tree(root: Path) -> None:
    write_ib_port(root, "mlx5_0", 1)
    write_ib_port(root, "mlx5_1", 1, rate="200 Gb/sec (4X HDR)", counters={"symbol_error": 7777})  # high, flat
    write_ib_port(root, "mlx5_2", 1, state="1: DOWN", phys="3: Disabled", rate="10 Gb/sec (4X SDR)")
    write_ib_port(root, "mlx5_bond_0", 1, link_layer="Ethernet", rate="100 Gb/sec (2X HDR)",
                  counters={"port_rcv_data": "N/A (no PMA)"})


def test_state_and_rate_parse_like_the_kernel_writes_them():
    assert parse_state("4: ACTIVE") == (4, "ACTIVE")
    assert parse_state("5: LinkUp") == (5, "LinkUp")
    assert parse_state("ACTIVE") == (None, None)
    assert parse_rate("400 Gb/sec (4X NDR)") == 50_000_000_000
    assert parse_rate("2.5 Gb/sec (1X SDR)") == 312_500_000
    assert parse_rate("garbage") is None


def test_probe_reads_every_port_with_rates_from_two_readings(tmp_path):
    _tree(tmp_path)
    probe = InfinibandProbe(str(tmp_path))
    first = {(p.device, p.port): p for p in probe.sample()}
    assert set(first) == {("mlx5_0", 1), ("mlx5_1", 1), ("mlx5_2", 1), ("mlx5_bond_0", 1)}
    p = first[("mlx5_0", 1)]
    assert (p.state, p.state_id, p.phys_state, p.phys_state_id) == ("ACTIVE", 4, "LinkUp", 5)
    assert p.rate_bytes_per_s == 50_000_000_000 and p.link_layer == "InfiniBand" and p.hca_type == "MT4129"
    assert p.counter_bytes("port_rcv_data") == 4 * 123_456_789 and p.counter_rates == {}
    assert "port_rcv_data" not in first[("mlx5_bond_0", 1)].counters  # N/A (no PMA): no value, no crash
    time.sleep(0.2)
    set_counters(tmp_path, "mlx5_0", 1, {"port_rcv_data": 123_456_789 + 1_000_000, "symbol_error": 3})
    again = {(p.device, p.port): p for p in probe.sample()}[("mlx5_0", 1)]
    # a million words in ~0.2 s: ~20 MB/s of octets (4 per word); the flat counters rise at 0
    assert 4e6 / 0.5 < again.counter_rates["port_rcv_data"] < 4e6 / 0.15
    assert again.counter_rates["port_xmit_data"] == 0.0 and again.counter_rates["symbol_error"] > 0
    assert again.seen_active


def test_no_infiniband_class_is_no_ports_and_no_error(tmp_path):
    assert InfinibandProbe(str(tmp_path)).sample() == ()


# --------------------------------------------------------------------------- findings on built snapshots


def _port(device: str, *, active: bool = True, seen_active: bool = False, rises: dict | None = None,
          **counters: int) -> IbPort:
    return IbPort(device=device, port=1, state="ACTIVE" if active else "DOWN", state_id=4 if active else 1,
                  phys_state="LinkUp" if active else "Polling", phys_state_id=5 if active else 2,
                  rate="400 Gb/sec (4X NDR)", rate_bytes_per_s=50_000_000_000, link_layer="InfiniBand",
                  counters={"symbol_error": 0, "link_downed": 0, "link_error_recovery": 0, "port_rcv_errors": 0,
                            **counters},
                  counter_rises=rises or {}, rise_window_s=10.0 if rises is not None else None,
                  seen_active=seen_active or active)


def _judge(ports):
    snap = b.replace(b.snapshot(), infiniband=tuple(ports))
    ctx = CheckContext(snapshot=snap, containers=(), logs={}, host=HostFacts(), thresholds=Thresholds())
    return judge(ctx).findings


def _codes(findings):
    return sorted(f.code for f in findings)


def test_a_port_down_beside_active_peers_fires_and_names_them():
    (f,) = _judge([_port("mlx5_0"), _port("mlx5_1", active=False)])
    assert f.code == "ib.port_down" and "mlx5_1 port 1" in f.title and "mlx5_0 port 1" in f.title


def test_a_port_that_was_active_fires_even_alone():
    (f,) = _judge([_port("mlx5_0", active=False, seen_active=True)])
    assert f.code == "ib.port_down" and "earlier sweep" in f.title


def test_a_port_never_active_with_no_active_peer_is_silent():
    assert _judge([_port("mlx5_0", active=False), _port("mlx5_1", active=False)]) == ()


def test_a_port_disabled_by_hand_beside_active_peers_is_silent():
    disabled = b.replace(_port("mlx5_1", active=False), phys_state="Disabled", phys_state_id=3)
    polling = b.replace(_port("mlx5_2", active=False), phys_state="Polling", phys_state_id=2)
    assert [f.title for f in _judge([_port("mlx5_0"), disabled, polling])] == [
        "InfiniBand mlx5_2 port 1 is DOWN (1 other port(s) of this host are ACTIVE: mlx5_0 port 1)"]


def test_rising_link_downed_is_flapping_and_rising_symbol_errors_are_errors():
    found = _judge([_port("mlx5_0", link_downed=5, symbol_error=120, rises={"link_downed": 2, "symbol_error": 20})])
    assert _codes(found) == ["ib.errors", "ib.link_flapping"]
    flap = next(f for f in found if f.code == "ib.link_flapping")
    assert "link_downed +2 over 10.0 s" in flap.title and any("counters/link_downed" in e for e in flap.evidence)


def test_high_but_flat_counters_are_silent():
    ports = [_port("mlx5_0", link_downed=40, symbol_error=99999, port_rcv_errors=5000, rises={})]
    assert _judge(ports) == ()


def test_counters_are_read_every_interval_and_their_rises_kept_between_readings(tmp_path):
    """State at every sweep, counters at the first two sweeps (a one-shot doctor's window) and then every
    counters_interval_s: a rise seen at one reading stays the port's window until the next reading replaces it."""
    _tree(tmp_path)
    now = [1000.0]
    probe = InfinibandProbe(str(tmp_path), counters_interval_s=10.0, clock=lambda: now[0])
    port = lambda: {(p.device, p.port): p for p in probe.sample()}[("mlx5_0", 1)]
    assert port().counter_rises == {}  # one reading: no window yet
    now[0] += 1
    set_counters(tmp_path, "mlx5_0", 1, {"symbol_error": 12})
    second = port()
    assert second.counter_rises == {"symbol_error": 12} and second.rise_window_s == 1.0  # the second sweep reads
    now[0] += 1
    set_counters(tmp_path, "mlx5_0", 1, {"symbol_error": 50})
    set_state(tmp_path, "mlx5_0", 1, "1: DOWN", "2: Polling")
    between = port()
    assert between.state == "DOWN"  # state at every sweep
    assert between.counters["symbol_error"] == 12 and between.counter_rises == {"symbol_error": 12}  # kept
    now[0] += 10
    later = port()
    assert later.counters["symbol_error"] == 50 and later.counter_rises == {"symbol_error": 38}
    assert later.rise_window_s == 11.0
    now[0] += 10
    assert port().counter_rises == {}  # flat since: the window is empty again


# --------------------------------------------------------------------------- real commands on a real tree


def _mltop(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mltop.tui.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, **(env or {})})


def test_snapshot_json_lists_the_ports_of_the_sysfs_root(tmp_path):
    _tree(tmp_path)
    done = _mltop("snapshot", "--json", "--interval", "0.3", "--no-nvml", "--docker-host", "none",
                  "--cri-endpoint", "none", "--sysfs-root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    ports = {(p["device"], p["port"]): p for p in json.loads(done.stdout)["infiniband"]}
    assert ports[("mlx5_2", 1)]["state"] == "DOWN" and ports[("mlx5_bond_0", 1)]["link_layer"] == "Ethernet"
    assert ports[("mlx5_0", 1)]["counters"]["port_xmit_data"] == 987_654_321


def test_doctor_on_the_tree_names_the_port_that_went_down_and_the_rising_errors(tmp_path):
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.sampler import ProbeOptions, Sampler

    _tree(tmp_path)
    sampler = Sampler(ProbeOptions(docker_host="none", nvml=False, cri_endpoint="none", watch_events=False,
                                   sysfs_root=str(tmp_path)))
    try:
        previous = sampler.sweep()
        set_state(tmp_path, "mlx5_1", 1, "1: DOWN", "2: Polling")  # between the doctor's two sweeps
        set_counters(tmp_path, "mlx5_0", 1, {"symbol_error": 12, "link_error_recovery": 2})
        snap = sampler.sweep()
    finally:
        sampler.close()
    result = run_doctor(snap, None, previous=previous)
    found = {(f.code, f.title.split(" is ")[0].removesuffix(" link")) for f in result.findings}
    assert ("ib.port_down", "InfiniBand mlx5_1 port 1") in found  # active at the first sweep, down at the second
    assert ("ib.errors", "InfiniBand mlx5_0 port 1") in found and ("ib.link_flapping", "InfiniBand mlx5_0 port 1") in found
    assert not any(code.startswith("ib.") and "mlx5_2" in what for code, what in found)  # disabled, never active
    assert not any("mlx5_1" in what and code == "ib.errors" for code, what in found)  # 7777 symbol errors, flat
    assert not any(s.check.startswith("ib.") for s in result.checks_skipped)


def _node_infiniband(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for name, samples in parse_exposition(text).items():
        if name.startswith("node_infiniband_"):
            for labels, value in samples:
                out[(name, tuple(sorted(labels.items())))] = value
    return out


def test_serve_reports_the_same_node_infiniband_series_as_node_exporter(tmp_path):
    binary = shutil.which(NODE_EXPORTER) or ("/usr/bin/" + NODE_EXPORTER if os.path.exists("/usr/bin/" + NODE_EXPORTER)
                                             else None)
    if binary is None:
        if os.environ.get("MLTOP_REQUIRE_DOCKER") == "1":
            pytest.fail("prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)")
        pytest.skip("prometheus-node-exporter is not installed")
    _tree(tmp_path)
    port = free_port()
    exporter = subprocess.Popen([binary, f"--path.sysfs={tmp_path}", "--collector.disable-defaults",
                                 "--collector.infiniband", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    serve = ServeProcess("--interval", "1", "--doctor-interval", "0", "--no-nvml", "--docker-host", "none",
                         "--cri-endpoint", "none", "--no-record", "--sysfs-root", str(tmp_path))
    try:
        serve.wait_healthy(60)
        theirs = wait_until(lambda: _node_infiniband(http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()),
                            30, "node_exporter's infiniband series")
        ours = wait_until(lambda: _node_infiniband(serve.metrics_text()), 30, "mltop's infiniband series")
        assert len(theirs) > 80  # four ports' state, rate and counters
        assert set(ours) == set(theirs), (sorted(set(theirs) - set(ours))[:5], sorted(set(ours) - set(theirs))[:5])
        assert {k: v for k, v in ours.items() if theirs[k] != v} == {}
    finally:
        serve.stop()
        exporter.terminate()
        exporter.wait(10)
