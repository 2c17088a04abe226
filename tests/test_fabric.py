"""NVLink and the NVSwitch fabric, end to end through the real probe and the real nvidia-ml-py bindings over the
simulated libnvidia-ml.so.1: every finding fires on its scenario and stays silent on a healthy look-alike (a PCIe
board without NVLink, a link whose counters are high but flat, fabric NOT_SUPPORTED); Fabric Manager found as a
real process; SXids from a kernel log; CUDA error 802 in a log; the GPU panel at 80x24; snapshot --json; serve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import container, host, snapshot
from fakenvml import (FABRIC_COMPLETED, FABRIC_IN_PROGRESS, FABRIC_NOT_STARTED, FABRIC_NOT_SUPPORTED, FakeFabric,
                      FakeGpu, FakeNvLink, FakeScenario, nvlinks)

from mltop.diagnostics.checks import CheckContext, Thresholds
from mltop.diagnostics.checks.fabric import check_cuda_802
from mltop.diagnostics.doctor import run_doctor
from mltop.probes.fabric_manager import read_fabric_manager
from mltop.probes.host_facts import HostFacts, HostProbe
from mltop.probes.nvml import NvmlProbe

DRIVER = "550.54.15"
REPO = Path(__file__).resolve().parents[1]


def hgx(n: int = 8, *, link_down: dict[int, tuple[int, ...]] | None = None, state: int = FABRIC_COMPLETED,
        status: int = 0, links: bool = True, **link0_counters) -> FakeScenario:
    """An HGX board: n H100 SXM GPUs, 18 NVLinks each, on an NVSwitch fabric in `state`."""
    gpus = []
    for i in range(n):
        down = (link_down or {}).get(i, ())
        gpus.append(FakeGpu(uuid=f"GPU-{i:08d}-0000-4000-8000-000000000000", name="NVIDIA H100 80GB HBM3",
                            pci=f"00000000:{0x18 + i:02X}:00.0", step_ms=100,
                            nvlinks=nvlinks(18, down=down, **(link0_counters if i == 0 else {})) if links else [],
                            fabric=FakeFabric(state=state, status=status) if state is not None else None))
    return FakeScenario(gpus=gpus, driver_version=DRIVER)


def pcie_board(n: int = 2) -> FakeScenario:
    """PCIe H100s: no NVLink (every link NOT_SUPPORTED), fabric NOT_SUPPORTED."""
    return FakeScenario(driver_version=DRIVER, gpus=[
        FakeGpu(uuid=f"GPU-{i:08d}-0000-4000-8000-0000000ec1e{i}", name="NVIDIA H100 PCIe",
                pci=f"00000000:{0x3B + i:02X}:00.0", fabric=FakeFabric(state=FABRIC_NOT_SUPPORTED))
        for i in range(n)])


def sample(lib: str, sweeps: int = 2, spacing_s: float = 0.3, kmsg: str = ""):
    """(NVML status, GPUs) of the last of `sweeps` sweeps by the real probe, `spacing_s` apart."""
    probe = NvmlProbe(lib, kmsg_path=kmsg)
    try:
        for i in range(sweeps):
            if i:
                time.sleep(spacing_s)
            status, gpus = probe.sample()
    finally:
        probe.close()
    assert status.ok, status
    return status, gpus


def doctor(status, gpus, fabric_manager=None, containers=(), logs=None):
    snap = snapshot(containers, gpus, nvml=status)
    return run_doctor(snap, None, host_facts=HostFacts(fabric_manager=fabric_manager), container_facts={})


def codes(result, prefix: tuple[str, ...] = ("nvlink.", "fabric.", "nvswitch.")) -> list[str]:
    return sorted(f.code for f in result.findings if f.code.startswith(prefix))


def fm_running(version: str = DRIVER):
    from mltop.probes.fabric_manager import FabricManagerFacts
    return FabricManagerFacts((4321,), "active", "enabled", version, "nv-fabricmanager --version",
                              "/usr/bin/nv-fabricmanager")


# --------------------------------------------------------------------------- the probe's records


def test_the_probe_reads_every_link_and_the_fabric_and_nothing_on_a_pcie_board(nvml_scenario):
    lib = nvml_scenario(hgx(2, link_down={1: (7,)}))
    _, gpus = sample(lib, sweeps=1)
    assert [len(g.nvlinks) for g in gpus] == [18, 18]  # 18 on Hopper, though the bindings allow 36
    assert [g.nvlinks_active for g in gpus] == [18, 17]
    assert [link.link for link in gpus[1].nvlinks if not link.active] == [7]
    assert gpus[0].fabric.state == "completed" and gpus[0].fabric.status == 0

    lib = nvml_scenario(pcie_board())
    _, gpus = sample(lib, sweeps=1)
    assert all(g.nvlinks == () and "no NVLink" in g.unavailable["nvlinks"] for g in gpus)
    assert all(g.fabric.state == "not_supported" for g in gpus)


# --------------------------------------------------------------------------- nvlink.down


def test_a_link_down_on_a_gpu_whose_peers_are_up_is_nvlink_down(nvml_scenario):
    status, gpus = sample(nvml_scenario(hgx(8, link_down={3: (5,)})))
    result = doctor(status, gpus, fm_running())
    assert codes(result) == ["nvlink.down"]
    f = result.findings[[x.code for x in result.findings].index("nvlink.down")]
    assert f.title.startswith("GPU 3: NVLink 5 down (17/18 NVLinks up)")
    assert "nvidia-smi -r -i 3" in f.fix
    assert any("GPU 0 18/18 NVLinks up" in e for e in f.evidence)


def test_a_pcie_board_without_nvlink_raises_nothing(nvml_scenario):
    status, gpus = sample(nvml_scenario(pcie_board()))
    assert codes(doctor(status, gpus)) == []  # no "NVLink down" where there is no NVLink (other tools' mistake)


# --------------------------------------------------------------------------- nvlink.errors


def test_counters_rising_between_two_reads_are_nvlink_errors(nvml_scenario):
    # replay errors on GPU 0 link 0 climb every 100 ms; two sweeps 0.3 s apart see the climb
    status, gpus = sample(nvml_scenario(hgx(2, replay=[0, 40, 90, 150, 230, 320, 420, 530, 650, 780])))
    rises = gpus[0].nvlink_errors.rises
    assert [(r.link, r.counter) for r in rises] == [(0, "replay")] and rises[0].after > rises[0].before
    result = doctor(status, gpus, fm_running())
    assert codes(result) == ["nvlink.errors"]
    f = next(x for x in result.findings if x.code == "nvlink.errors")
    assert f.title.startswith("GPU 0: NVLink error counters rising on link 0")
    assert any(f"{rises[0].before} -> {rises[0].after}" in e for e in f.evidence)


def test_counters_high_but_flat_are_not_nvlink_errors(nvml_scenario):
    status, gpus = sample(nvml_scenario(hgx(2, replay=50_000, crc_flit=1234, recovery=7)))
    assert gpus[0].nvlinks[0].replay == 50_000  # a high level, read and shown...
    assert gpus[0].nvlink_errors is not None and gpus[0].nvlink_errors.rises == ()
    assert codes(doctor(status, gpus, fm_running())) == []  # ...but a level is history, not a problem now


def test_counters_are_read_again_only_after_the_interval(nvml_scenario):
    lib = nvml_scenario(hgx(1, replay=list(range(0, 3200, 100))))
    probe = NvmlProbe(lib, kmsg_path="")
    try:
        reads = [probe.sample()[1][0].nvlink_errors_at for _ in range(2)]
        time.sleep(0.15)
        reads.append(probe.sample()[1][0].nvlink_errors_at)
    finally:
        probe.close()
    assert reads[0] != reads[1]  # the first two reads one sweep apart: a window at once
    assert reads[2] == reads[1]  # then not before NvLinkReader.interval_s (10 s)


# --------------------------------------------------------------------------- fabric.not_ready


@pytest.mark.parametrize("state", [FABRIC_NOT_STARTED, FABRIC_IN_PROGRESS])
def test_gpus_not_registered_with_the_fabric_are_fabric_not_ready(nvml_scenario, state):
    status, gpus = sample(nvml_scenario(hgx(8, state=state)))
    result = doctor(status, gpus, fm_running())
    assert codes(result) == ["fabric.not_ready"]
    f = result.findings[0]
    assert f.severity == "critical" and "8 of 8 GPUs are not registered" in f.title and "802" in f.title


def test_a_registration_that_failed_is_fabric_not_ready(nvml_scenario):
    status, gpus = sample(nvml_scenario(hgx(2, state=FABRIC_COMPLETED, status=999)))
    f = doctor(status, gpus, fm_running()).findings[0]
    assert f.code == "fabric.not_ready" and any("status 999 (Unknown Error)" in e for e in f.evidence)


def test_fabric_manager_absent_on_an_nvswitch_board_is_fabric_not_ready_with_the_install(nvml_scenario):
    from mltop.probes.fabric_manager import FabricManagerFacts
    status, gpus = sample(nvml_scenario(hgx(8, state=FABRIC_NOT_STARTED)))
    absent = FabricManagerFacts((), None, None, None, None, None)
    f = doctor(status, gpus, absent).findings[0]
    assert "apt-get install nvidia-fabricmanager-550=550.54.15-1" in f.fix
    assert "systemctl enable --now nvidia-fabricmanager" in f.fix


def test_fabric_manager_of_another_version_is_fabric_not_ready(nvml_scenario):
    status, gpus = sample(nvml_scenario(hgx(2)))
    f = doctor(status, gpus, fm_running("535.129.03")).findings[0]
    assert f.code == "fabric.not_ready" and f.severity == "warning"
    assert any("Fabric Manager 535.129.03 != driver 550.54.15" in e for e in f.evidence)
    assert "nvidia-fabricmanager-550=550.54.15-1" in f.fix


def test_a_registered_fabric_with_its_fabric_manager_raises_nothing(nvml_scenario):
    status, gpus = sample(nvml_scenario(hgx(8)))
    assert codes(doctor(status, gpus, fm_running())) == []


def test_fabric_manager_running_of_unknown_version_on_a_registered_fabric_raises_nothing(nvml_scenario):
    from mltop.probes.fabric_manager import FabricManagerFacts
    status, gpus = sample(nvml_scenario(hgx(2)))
    unknown = FabricManagerFacts((4321,), None, None, None, None, None)  # no systemctl, no version to read
    assert codes(doctor(status, gpus, unknown)) == []


def test_an_older_driver_answers_through_the_deprecated_fabric_call(nvml_scenario):
    # the old-driver build lacks nvmlDeviceGetGpuFabricInfoV: the probe falls back to nvmlDeviceGetGpuFabricInfo
    status, gpus = sample(nvml_scenario(hgx(2, state=FABRIC_IN_PROGRESS), old_driver=True))
    assert [g.fabric.state for g in gpus] == ["in_progress", "in_progress"]
    assert gpus[0].fabric.health_mask is None  # the v1 struct has none
    assert codes(doctor(status, gpus, fm_running())) == ["fabric.not_ready"]


def test_fabric_not_supported_raises_nothing_even_without_fabric_manager(nvml_scenario):
    from mltop.probes.fabric_manager import FabricManagerFacts
    status, gpus = sample(nvml_scenario(pcie_board()))
    absent = FabricManagerFacts((), None, None, None, None, None)
    assert codes(doctor(status, gpus, absent)) == []
    # and the doctor does not even look for Fabric Manager there
    assert HostProbe(path="/nonexistent").host_facts(fabric_needed=False).fabric_manager is None


# --------------------------------------------------------------------------- Fabric Manager, a real process


@pytest.fixture
def fabric_manager_bin(tmp_path):
    """An executable named nv-fabricmanager that answers --version as the real one does, and otherwise runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fm = bin_dir / "nv-fabricmanager"
    fm.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Fabric Manager version is : 550.54.15"; '
                  'exit 0; fi\nexec 0<&-\nwhile :; do sleep 1; done\n')
    fm.chmod(0o755)
    return bin_dir


def test_fabric_manager_is_found_as_a_running_process_with_its_version(fabric_manager_bin, nvml_scenario):
    before = read_fabric_manager(path=str(fabric_manager_bin))
    assert not before.running and before.version == DRIVER  # installed (on PATH), not running
    proc = subprocess.Popen([str(fabric_manager_bin / "nv-fabricmanager")])
    try:
        deadline = time.time() + 5
        while time.time() < deadline and not read_fabric_manager(path=str(fabric_manager_bin)).running:
            time.sleep(0.05)
        facts = read_fabric_manager(path=str(fabric_manager_bin))
        assert proc.pid in facts.pids and facts.version == DRIVER
        # the doctor's own sensing, on a board that needs it: registered, Fabric Manager running, versions equal
        status, gpus = sample(nvml_scenario(hgx(2)))
        snap = snapshot((), gpus, nvml=status)
        result = run_doctor(snap, None, host=HostProbe(path=str(fabric_manager_bin)), container_facts={})
        assert codes(result) == []
    finally:
        proc.kill()
        proc.wait()
    result = run_doctor(snap, None, host=HostProbe(path=str(fabric_manager_bin)), container_facts={})
    f = next(x for x in result.findings if x.code == "fabric.not_ready")
    assert any("no nv-fabricmanager process runs" in e for e in f.evidence)
    assert "systemctl enable --now nvidia-fabricmanager" in f.fix


def test_a_failed_systemd_unit_is_named(tmp_path, fabric_manager_bin):
    systemctl = fabric_manager_bin / "systemctl"  # systemd does not run here: its answer, as systemctl gives it
    systemctl.write_text("#!/bin/sh\nprintf 'LoadState=loaded\\nActiveState=failed\\nUnitFileState=enabled\\n'\n")
    systemctl.chmod(0o755)
    facts = read_fabric_manager(path=str(fabric_manager_bin))
    assert (facts.unit_state, facts.unit_file_state, facts.running) == ("failed", "enabled", False)


# --------------------------------------------------------------------------- SXids


def test_sxids_in_the_kernel_log_are_nvswitch_sxid_and_evidence_for_the_fabric(nvml_scenario, tmp_path):
    kmsg = tmp_path / "kmsg"
    usec = int(time.monotonic() * 1e6) - 5_000_000  # 5 s ago, in kmsg's clock
    kmsg.write_text(
        f"3,100,{usec},-;nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress non-posted "
        "PRIV error (First)\n"
        f"3,101,{usec},-;nvidia-nvswitch1: SXid (PCI:0000:06:00.0): 20034, Fatal, Link 48 LTSSM Fault Up\n"
        f"3,102,{usec},-;NVRM: Xid (PCI:0000:18:00): 74, pid=1234, NVLink: fatal error detected on link 5\n")
    status, gpus = sample(nvml_scenario(hgx(2, state=FABRIC_IN_PROGRESS)), kmsg=str(kmsg))
    assert [(e.switch, e.sxid, e.severity) for e in status.sxid_events] == [
        ("nvswitch3", 12028, "Non-fatal"), ("nvswitch1", 20034, "Fatal")]
    assert gpus[0].xid_events[0].xid == 74  # the Xid still goes to its GPU
    result = doctor(status, gpus, fm_running())
    by_code = {f.code: f for f in result.findings}
    sxid = [f for f in result.findings if f.code == "nvswitch.sxid"]
    assert [f.severity for f in sxid] == ["critical", "warning"]  # nvswitch1 fatal, nvswitch3 not
    assert any("20034, Fatal" in e for e in by_code["fabric.not_ready"].evidence)


def test_xids_alone_are_no_sxid(nvml_scenario, tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(f"3,102,{int(time.monotonic() * 1e6)},-;NVRM: Xid (PCI:0000:18:00): 74, pid=1, NVLink error\n")
    status, gpus = sample(nvml_scenario(hgx(2)), kmsg=str(kmsg))
    assert status.sxid_events == () and codes(doctor(status, gpus, fm_running()), ("nvswitch.",)) == []


# --------------------------------------------------------------------------- CUDA error 802 in a log


LINES_802 = ("Traceback (most recent call last):",
             "RuntimeError: Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions before "
             "calling NumCudaDevices() that might have already set an error? Error 802: system not yet initialized")


def _ctx(status, gpus, c, fm):
    snap = snapshot((c,), gpus, nvml=status)
    return CheckContext(snapshot=snap, containers=(c,), logs={c.id: LINES_802}, host=HostFacts(fabric_manager=fm),
                        thresholds=Thresholds())


def test_cuda_802_in_a_log_on_an_unready_fabric_is_tied_to_it(nvml_scenario):
    from mltop.probes.fabric_manager import FabricManagerFacts
    status, gpus = sample(nvml_scenario(hgx(2, state=FABRIC_NOT_STARTED)))
    c = container("trainer")
    found = check_cuda_802(_ctx(status, gpus, c, FabricManagerFacts((), "inactive", "disabled", DRIVER, "x", None)), c)
    assert [(f.code, f.container, f.severity) for f in found] == [("fabric.not_ready", "trainer", "critical")]
    assert any("Error 802: system not yet initialized" in e for e in found[0].evidence)
    assert "systemctl enable --now nvidia-fabricmanager" in found[0].fix


def test_cuda_802_once_the_fabric_is_ready_says_restart(nvml_scenario):
    status, gpus = sample(nvml_scenario(hgx(2)))
    c = container("trainer")
    found = check_cuda_802(_ctx(status, gpus, c, fm_running()), c)
    assert found[0].severity == "warning" and "docker restart trainer" in found[0].fix


def test_cuda_802_on_a_pcie_board_is_not_blamed_on_a_fabric(nvml_scenario):
    status, gpus = sample(nvml_scenario(pcie_board()))
    c = container("trainer")
    assert check_cuda_802(_ctx(status, gpus, c, None), c) == []


# --------------------------------------------------------------------------- snapshot --json and serve


def test_snapshot_json_carries_links_and_fabric(nvml_scenario, tmp_path):
    lib = nvml_scenario(hgx(2, link_down={1: (2,)}))
    env = {**os.environ, "MLTOP_KMSG": ""}
    out = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "--docker-host", "none", "snapshot", "--json",
                          "--nvml-lib", lib, "--interval", "0.25"], capture_output=True, text=True, env=env,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    g1 = doc["gpus"][1]
    assert len(g1["nvlinks"]) == 18 and [link["link"] for link in g1["nvlinks"] if not link["active"]] == [2]
    assert g1["nvlinks"][0] == {"link": 0, "active": True, "replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0}
    assert g1["fabric"]["state"] == "completed" and g1["nvlink_errors"]["rises"] == []


def test_serve_exports_nvlink_totals_under_dcgm_names_and_links_under_mltop_names(nvml_scenario):
    from prometheus_client import CollectorRegistry, generate_latest

    from mltop.tui.serve.dcgm import nvlink_families

    status, gpus = sample(nvml_scenario(hgx(2, link_down={1: (4,)}, replay=[0, 40, 90, 150, 230, 320, 420])))
    pcie = sample(nvml_scenario(pcie_board(1)), sweeps=1)[1]

    class Collector:
        def collect(self):
            return nvlink_families(tuple(gpus) + tuple(pcie), "gpu-host-1")

    registry = CollectorRegistry()
    registry.register(Collector())
    text = generate_latest(registry).decode()
    replay = gpus[0].nvlinks[0].replay
    assert f'DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL{{Hostname="gpu-host-1",UUID="{gpus[0].uuid}"' in text
    total = [line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL{")
             and gpus[0].uuid in line]
    assert total and float(total[0].rsplit(" ", 1)[1]) == replay
    assert f'mltop_gpu_nvlink_up{{UUID="{gpus[1].uuid}",gpu="1",link="4"}} 0.0' in text
    down = [line for line in text.splitlines() if line.startswith("mltop_gpu_nvlink_up{") and 'link="4"' in line
            and gpus[1].uuid in line]
    assert down and down[0].endswith(" 0.0")
    assert 'mltop_gpu_nvlink_errors_total{' in text and 'counter="crc_flit"' in text
    assert 'state="completed"' in text
    assert pcie[0].uuid not in "\n".join(l for l in text.splitlines() if "nvlink" in l.lower())  # no NVLink: no series
    # the one lint is dcgm-exporter's own camelCase `modelName` on its fields (kept on purpose, as test_serve says)
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    expected = re.compile(r"^DCGM_FI_DEV_NVLINK_\w+ label names should be written in 'snake_case' not 'camelCase'$")
    assert all(expected.match(line) for line in problems), problems


# --------------------------------------------------------------------------- the GPU panel at 80x24


async def test_the_gpu_panel_at_80x24_shows_each_gpus_links_up(nvml_scenario):
    from test_tui import until
    from test_tui_layout import _settle

    from mltop.probes.source import StaticSource
    from mltop.tui.app import MltopApp
    from mltop.tui.widgets.gpu_panel import GpuCard, GpuPanel

    status, gpus = sample(nvml_scenario(hgx(8, link_down={2: (11,)})), sweeps=1)
    snaps = [snapshot((), gpus, nvml=status, taken_at=1_000_000.0 + i) for i in range(3)]
    app = MltopApp(source=StaticSource(snaps), interval=0.5)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, app)
        panel = app.screen.query_one(GpuPanel)
        await until(pilot, lambda: len(panel.query(GpuCard)) == 8, what="eight GPU cards")
        cards = list(panel.query(GpuCard))
        titles = [c.query_one(".gpu-title").render() for c in cards]
        plain = [str(t.plain if hasattr(t, "plain") else t) for t in titles]
        assert re.search(r"NVL ?17/18 ?✗1", plain[2]), plain[2]  # tight at 80 columns: "NVL17/18✗1"
        assert all(re.search(r"NVL ?18/18", p) and "✗" not in p for i, p in enumerate(plain) if i != 2), plain
        # readable: the whole title fits the width its card gives it at 80 columns
        for card, text in zip(cards, plain):
            title = card.query_one(".gpu-title")
            assert title.size.width >= len(text), (title.size.width, text)
        assert "✖" in plain[2]  # the health mark survives too; the users line (full screen) says "NVLink 11 down"
        await app.workers.wait_for_complete()
        await pilot.pause()
    from mltop.tui.widgets.gpu_panel import gpu_title, health_problems
    assert "NVL 17/18 ✗1" in gpu_title(gpus[2]).plain  # with room (no width given): the spaced form
    assert "NVLink 11 down" in health_problems(gpus[2]) and health_problems(gpus[0]) == []
