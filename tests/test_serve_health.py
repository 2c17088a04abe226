"""`mltop serve`'s GPU health, Xid and workload series, from built snapshots (no engine, no NVML). The real
Prometheus reading them is in test_serve.py."""

from __future__ import annotations

import time

import builders as b
from serve_helpers import parse_exposition

from mltop.probes.model import XidEvent
from mltop.tui.serve.loop import ServeState
from mltop.tui.serve.metrics import Exposition, SnapshotCollector, XidTally

GIB = 1 << 30
DCGM_LABEL_KEYS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"}


def _state(snap) -> ServeState:
    return ServeState(snapshot=snap, swept_at=time.monotonic(), sweeps=1, last_good_gpus=snap.gpus)


def _scrape(snap) -> dict:
    return parse_exposition(Exposition(lambda: _state(snap), "0").render().decode())


def _by_gpu(m: dict, name: str) -> dict[str, float]:
    return {labels["gpu"]: value for labels, value in m.get(name, [])}


def test_health_series_carry_dcgm_names_units_and_labels_and_skip_unknown_values():
    sick = b.gpu(0, sm_clock_mhz=1410, sm_clock_max_mhz=1980, memory_clock_max_mhz=2619, performance_state=2,
                 fan_percent=73.0, ecc_volatile_corrected=5, ecc_volatile_uncorrected=1, ecc_aggregate_corrected=90,
                 ecc_aggregate_uncorrected=2, retired_pages_pending=True, remapped_rows_correctable=3,
                 remapped_rows_uncorrectable=1, remapped_rows_pending=True, remapped_rows_failed=False,
                 pcie_generation=4, pcie_generation_max=5, pcie_width=8, pcie_width_max=16, encoder_percent=12.0,
                 decoder_percent=0.0)
    bare = b.gpu(1)  # an older board: NVML answered none of the health calls
    m = _scrape(b.snapshot([], [sick, bare], hostname="h7"))
    expected = {
        "DCGM_FI_DEV_SM_CLOCK": 1410, "DCGM_FI_DEV_MAX_SM_CLOCK": 1980, "DCGM_FI_DEV_MAX_MEM_CLOCK": 2619,
        "DCGM_FI_DEV_PSTATE": 2, "DCGM_FI_DEV_FAN_SPEED": 73, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 5,
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 1, "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": 90, "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": 2,
        "DCGM_FI_DEV_RETIRED_PENDING": 1, "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 3,
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 1, "DCGM_FI_DEV_ROW_REMAP_PENDING": 1,
        "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0, "DCGM_FI_DEV_PCIE_LINK_GEN": 4, "DCGM_FI_DEV_PCIE_MAX_LINK_GEN": 5,
        "DCGM_FI_DEV_PCIE_LINK_WIDTH": 8, "DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH": 16, "DCGM_FI_DEV_ENC_UTIL": 12,
        "DCGM_FI_DEV_DEC_UTIL": 0,
    }
    for name, value in expected.items():
        assert _by_gpu(m, name) == {"0": value}, name  # GPU 1: unknown, so no sample at all (not 0)
        (labels, _), = m[name]
        assert set(labels) == DCGM_LABEL_KEYS and labels["Hostname"] == "h7" and labels["device"] == "nvidia0"


def test_xid_gauge_is_the_last_xid_and_the_counter_counts_each_event_once_across_states():
    t0 = time.time() - 3600
    first = (XidEvent(13, t0, "NVML events"), XidEvent(79, t0 + 5, "NVML events"))
    gpu0 = b.gpu(0, xid_events=first)
    quiet = b.gpu(1)  # no Xid, and the probe could watch: 0, as dcgm-exporter says
    # The kernel log is unreadable (no Xids from before mltop started), but NVML events still come: 0 too.
    no_log = b.gpu(2, unavailable={"xid_events": "cannot read /dev/kmsg: Permission denied"})
    tally = XidTally()

    def counts(gpus) -> dict[tuple[str, str], float]:
        snap = b.snapshot([], gpus)
        fams = {f.name: f for f in SnapshotCollector(lambda: _state(snap), tally).collect()}
        return {(s.labels["gpu"], s.labels["xid"]): s.value for s in fams["mltop_gpu_xid_errors"].samples}

    c1 = counts([gpu0, quiet, no_log])
    assert c1[("0", "13")] == 1 and c1[("0", "79")] == 1 and c1[("0", "48")] == 0
    assert c1[("1", "79")] == 0 and c1[("2", "13")] == 0 and ("1", "62") not in c1  # pre-set: the known Xids
    # The next sweep carries the same window plus a second 79: counted once more, the old ones not again.
    later = b.replace(gpu0, xid_events=first + (XidEvent(79, t0 + 60, "/dev/kmsg"),))
    c2 = counts([later, quiet, no_log])
    assert c2[("0", "13")] == 1 and c2[("0", "79")] == 2
    # The window drops its oldest event: the counter never goes down.
    c3 = counts([b.replace(gpu0, xid_events=later.xid_events[1:]), quiet, no_log])
    assert c3[("0", "13")] == 1 and c3[("0", "79")] == 2
    # GPU 0 missing from a sweep, then back with the same window: nothing counted twice.
    counts([quiet, no_log])
    c4 = counts([b.replace(gpu0, xid_events=later.xid_events[1:]), quiet, no_log])
    assert c4[("0", "13")] == 1 and c4[("0", "79")] == 2

    m = _scrape(b.snapshot([], [later, quiet, no_log]))
    assert _by_gpu(m, "DCGM_FI_DEV_XID_ERRORS") == {"0": 79, "1": 0, "2": 0}
    series = {(labels["gpu"], labels["xid"]): v for labels, v in m["mltop_gpu_xid_errors_total"]}
    assert series[("0", "79")] == 2 and series[("0", "13")] == 1
    assert set(m["mltop_gpu_xid_errors_total"][0][0]) == {"gpu", "UUID", "xid"}


def test_exposition_keeps_counting_xids_across_published_states():
    t0 = time.time() - 3600
    g = b.gpu(0, xid_events=(XidEvent(94, t0, "NVML events"),))
    states = [_state(b.snapshot([], [g])), _state(b.snapshot([], [g])),
              _state(b.snapshot([], [b.replace(g, xid_events=g.xid_events + (XidEvent(94, t0 + 9, "NVML events"),))]))]
    current = [states[0]]
    exposition = Exposition(lambda: current[0], "0")
    seen = []
    for state in states:
        current[0] = state
        m = parse_exposition(exposition.render().decode())
        seen.append({labels["xid"]: v for labels, v in m["mltop_gpu_xid_errors_total"]}["94"])
    assert seen == [1, 1, 2]


def test_workload_class_per_gpu_container_names_only():
    busy, g0 = b.gpu_workload("trainer", sm_percent=80.0)
    idle, g1 = b.gpu_workload("notebook", index=1, pid=777, sm_percent=0.0,
                              config_overrides={"env": (("HF_TOKEN", "hf_secretvalue"),)})
    idle = b.replace(idle, cpu_percent=0.5)
    g1 = b.replace(g1, utilization_percent=0.0)
    plain = b.container("web")  # no GPU: no class
    text = Exposition(lambda: _state(b.snapshot([busy, idle, plain], [g0, g1])), "0").render().decode()
    assert "hf_secretvalue" not in text
    m = parse_exposition(text)
    got = {labels["container"]: (labels, v) for labels, v in m["mltop_container_workload"]}
    assert set(got) == {"trainer", "notebook"}
    assert got["trainer"] == ({"container": "trainer", "container_id": busy.id, "image": busy.image, "kind": "gpu"},
                              1.0)
    assert got["notebook"][0]["kind"] == "idle"
