"""gpu.missing: an NVIDIA GPU on PCI (--sysfs-root) that NVML does not list, with the kernel log's last Xid for it."""

from __future__ import annotations

import time

import builders as b
from fakenvml import FakeGpu, FakeScenario
from sysfs_tree import write_pci

from mltop.diagnostics.checks import CheckContext, HostFacts, Thresholds
from mltop.diagnostics.doctor import judge
from mltop.probes.fabric_records import PciGpu
from mltop.probes.model import NvmlStatus, XidEvent
from mltop.probes.pci import PciGpuProbe
from mltop.probes.sampler import ProbeOptions, Sampler


def _tree(root):
    write_pci(root, "0000:3b:00.0")  # listed by NVML
    write_pci(root, "0000:5e:00.0", driver=None)  # fallen off the bus
    write_pci(root, "0000:5e:00.1", klass="0x040300", device="0x22a3", driver="snd_hda_intel")  # its HDMI audio
    write_pci(root, "0000:07:00.0", klass="0x068000", device="0x22a3")  # an NVSwitch
    write_pci(root, "0000:00:1f.0", vendor="0x8086", klass="0x030000", driver=None)  # another vendor's VGA


def _judge(snapshot):
    ctx = CheckContext(snapshot=snapshot, containers=(), logs={}, host=HostFacts(), thresholds=Thresholds())
    return [f for f in judge(ctx).findings if f.code == "gpu.missing"]


def test_a_gpu_on_pci_that_nvml_lost_is_named_with_its_last_xid(tmp_path, nvml_scenario, monkeypatch):
    _tree(tmp_path)
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("3,900,6000000,-;NVRM: Xid (PCI:0000:5e:00): 79, pid=0, GPU has fallen off the bus.\n"
                    "3,901,7000000,-;NVRM: Xid (PCI:0000:3b:00): 13, pid=7, Graphics Exception\n")
    monkeypatch.setenv("MLTOP_KMSG", str(kmsg))
    lib = nvml_scenario(FakeScenario(gpus=[FakeGpu(pci="00000000:3B:00.0")]))
    sampler = Sampler(ProbeOptions(docker_host="none", nvml_lib=lib, sysfs_root=str(tmp_path), cri_endpoint="none",
                                   watch_events=False))
    try:
        snap = sampler.sweep()
    finally:
        sampler.close()
    assert [(g.address, g.listed_by_nvml) for g in snap.pci_gpus] == [("0000:3b:00.0", True), ("0000:5e:00.0", False)]
    (f,) = _judge(snap)
    assert f.severity == "critical" and "0000:5e:00.0" in f.title and "Xid 79" in f.title
    assert any("fallen off the bus" in e for e in f.evidence) and any("driver none bound" in e for e in f.evidence)


def test_silent_when_nvml_lists_every_gpu_and_when_nvml_is_unavailable(tmp_path):
    write_pci(tmp_path, "0000:18:00.0")
    probe = PciGpuProbe(str(tmp_path), kmsg_path="")
    listed = probe.sample(["00000000:18:00.0"])
    assert [g.listed_by_nvml for g in listed] == [True]
    assert _judge(b.replace(b.snapshot(gpus=[b.gpu(0)]), pci_gpus=listed)) == []
    unknown = probe.sample(None)  # NVML gave no list
    assert [g.listed_by_nvml for g in unknown] == [None]
    down = b.snapshot(nvml=NvmlStatus("library_not_found", "libnvidia-ml.so.1 not found"))
    lost = (PciGpu("0000:18:00.0", "0x2330", "0x030200", None, False),)
    assert _judge(b.replace(down, pci_gpus=lost)) == []


def test_missing_gpu_without_any_xid_still_fires(tmp_path):
    lost = (PciGpu("0000:2a:00.0", "0x2330", "0x030200", "nvidia", False,
                   XidEvent(48, time.time() - 60, "/dev/kmsg", "0000:2a:00", "NVRM: Xid (PCI:0000:2a:00): 48, DBE")),
            PciGpu("0000:3b:00.0", "0x2330", "0x030200", "nvidia", False))
    found = _judge(b.replace(b.snapshot(gpus=[b.gpu(0)]), pci_gpus=lost))
    assert [("0000:2a:00.0" in f.title, "last Xid 48" in f.title) for f in found] == [(True, True), (False, False)]
