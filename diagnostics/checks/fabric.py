"""Fabric checks for HGX boards joined by NVSwitch: an NVLink down, NVLink error counters rising, the fabric not
ready (Fabric Manager absent, stopped or of another version than the driver), NVSwitch SXids, and CUDA's error
802 in a container's log. Silent on GPUs without NVLink and on boards whose fabric state is "not supported"
(PCIe boards): there is no fabric to judge there."""

from __future__ import annotations

import re

from mltop.probes.model import ContainerSample, GpuSample, Snapshot

from ..findings import CRITICAL, INFO, WARNING, Finding, evidence
from .base import CheckContext, _log_evidence, _matches, by_runtime, container_check, host_check
from .health import _ago, _gpu_container_names, _gpu_users, _pod_steps

FM_UNIT = "nvidia-fabricmanager"
NOT_READY_STATES = ("not_started", "in_progress")
NVLINK_STATE_SOURCE = "NVML nvmlDeviceGetNvLinkState"
NVLINK_ERRORS_SOURCE = "NVML nvmlDeviceGetNvLinkErrorCounter"
FABRIC_SOURCE = "NVML nvmlDeviceGetGpuFabricInfoV"
COUNTER_WORDS = {"replay": "replay", "recovery": "recovery", "crc_flit": "CRC (flit)", "crc_data": "CRC (data)"}


def _links_text(g: GpuSample) -> str:
    return f"{g.nvlinks_active}/{len(g.nvlinks)} NVLinks up"


# --------------------------------------------------------------------------- NVLink


@host_check("nvlink")
def check_nvlink(ctx: CheckContext) -> list[Finding]:
    """nvlink.down (a link down while the host's other NVLinks are up) and nvlink.errors (DL error counters
    rising between the probe's last two reads). GPUs without NVLink are never judged."""
    t = ctx.thresholds
    with_links = [g for g in ctx.snapshot.gpus if g.nvlinks]
    if not with_links:
        return []
    up = sum(g.nvlinks_active for g in with_links)
    out = []
    for g in with_links:
        down = [link.link for link in g.nvlinks if not link.active]
        if down and up:  # every link of the host down is the fabric's matter (fabric.not_ready), not a link's
            peers = [f"GPU {p.index} {_links_text(p)}" for p in with_links if p is not g][:8]
            ev = [evidence(f"GPU {g.index} ({g.name}, {g.uuid}, PCI {g.pci_bus_id}) NVLink "
                           f"{', '.join(map(str, down))} inactive: {_links_text(g)}", NVLINK_STATE_SOURCE)]
            if peers:
                ev.append(evidence("peers: " + "; ".join(peers), NVLINK_STATE_SOURCE))
            ev.append(evidence(f"on this GPU now: {_gpu_users(g)}", "NVML processes joined to containers"))
            users = _gpu_container_names(g)
            out.append(Finding(
                "nvlink.down", CRITICAL if len(down) == len(g.nvlinks) else WARNING, None,
                f"GPU {g.index}: NVLink {', '.join(map(str, down))} down ({_links_text(g)}): collectives over it "
                "run slower or hang" + (f"; affects {', '.join(users)}" if users else ""),
                tuple(ev),
                f"Drain the GPU, then reset it (`sudo nvidia-smi -r -i {g.index}`; on NVSwitch boards stop "
                f"Fabric Manager first and start it after) and check `nvidia-smi nvlink -s -i {g.index}`; a link "
                "that stays down needs service (reseat or replace the board)" + _pod_steps(ctx, g, hardware=True),
            ))
        window = g.nvlink_errors
        if window is None or not window.rises:
            continue
        rises = [r for r in window.rises if r.after - r.before >= t.nvlink_errors_min]
        if not rises:
            continue
        span = max(window.end - window.start, 0.0)
        ev = [evidence(f"GPU {g.index} ({g.name}, {g.uuid}) link {r.link} {COUNTER_WORDS.get(r.counter, r.counter)} "
                       f"errors {r.before} -> {r.after} (+{r.after - r.before}) in {span:.0f} s", NVLINK_ERRORS_SOURCE)
              for r in rises[:12]]
        if len(rises) > 12:
            ev.append(evidence(f"and {len(rises) - 12} more rising counters", NVLINK_ERRORS_SOURCE))
        ev.append(evidence(f"a rise of {t.named('nvlink_errors_min')} or more counts", "mltop doctor"))
        ev.append(evidence(f"on this GPU now: {_gpu_users(g)}", "NVML processes joined to containers"))
        links = sorted({r.link for r in rises})
        recovering = any(r.counter == "recovery" for r in rises)
        users = _gpu_container_names(g)
        out.append(Finding(
            "nvlink.errors", WARNING, None,
            f"GPU {g.index}: NVLink error counters rising on link {', '.join(map(str, links))}"
            + (" (the link retrained to recover)" if recovering else "")
            + (f"; slows {', '.join(users)}" if users else ""),
            tuple(ev),
            f"Watch `nvidia-smi nvlink -e -i {g.index}`; a link whose counters keep rising degrades and then "
            f"drops: drain the GPU and reset it (`sudo nvidia-smi -r -i {g.index}`); recurring: service",
        ))
    return out


# --------------------------------------------------------------------------- the fabric and Fabric Manager


def fabric_gpus(snapshot: Snapshot) -> list[GpuSample]:
    """The GPUs on an NVSwitch fabric: NVML gives a fabric state other than "not supported"."""
    return [g for g in snapshot.gpus if g.fabric is not None and g.fabric.state != "not_supported"]


def _driver_branch(version: str | None) -> str:
    return version.split(".")[0] if version else "<driver branch>"


def fabric_manager_problems(ctx: CheckContext) -> tuple[list[str], list[str]]:
    """(evidence, fixes) for Fabric Manager on a host whose GPUs need it; both empty when it is fine or unread."""
    fm = ctx.host.fabric_manager
    if fm is None:
        return [], []
    driver = ctx.snapshot.host.nvml.driver_version
    ev, fixes = [], []
    where = f"/proc/*/comm, systemctl show {FM_UNIT}"
    if not fm.running:
        state = f"unit {FM_UNIT} {fm.unit_state} ({fm.unit_file_state})" if fm.unit_state else \
            f"no {FM_UNIT} unit known to systemd (or no systemctl here)"
        ev.append(evidence(f"no nv-fabricmanager process runs; {state}", where))
        if fm.unit_state is None and fm.version is None:  # not installed
            fixes.append(_install(driver, f"sudo systemctl enable --now {FM_UNIT}"))
        else:
            fixes.append(f"`sudo systemctl enable --now {FM_UNIT}` (why it stopped: `journalctl -u {FM_UNIT}`, "
                         "/var/log/fabricmanager.log)")
    elif fm.unit_state not in (None, "active"):
        ev.append(evidence(f"nv-fabricmanager runs (pid {fm.pids[0]}) but unit {FM_UNIT} is {fm.unit_state}", where))
        fixes.append(f"let systemd run it: `sudo systemctl enable {FM_UNIT}` and `sudo systemctl restart {FM_UNIT}`")
    if fm.version is not None and driver is not None and fm.version != driver:
        ev.append(evidence(f"Fabric Manager {fm.version} != driver {driver}: Fabric Manager refuses to run "
                           "with another driver version", f"{fm.version_source}; NVML nvmlSystemGetDriverVersion"))
        fixes.append(_install(driver, f"sudo systemctl restart {FM_UNIT}"))
    elif fm.version is None and fm.running and ev:  # alone, an unknown version is no problem to report
        ev.append(evidence("Fabric Manager's version could not be read (no nv-fabricmanager --version, no "
                           "package)", "nv-fabricmanager --version / dpkg-query / rpm"))
    return ev, fixes


def _install(driver: str | None, then: str) -> str:
    version = driver or "<driver version>"
    return (f"install the Fabric Manager of the driver's version: `sudo apt-get install "
            f"nvidia-fabricmanager-{_driver_branch(driver)}={version}-1` (RHEL: `sudo dnf install "
            f"nvidia-fabric-manager-{version}`), then `{then}`")


@host_check("fabric")
def check_fabric(ctx: CheckContext) -> list[Finding]:
    """fabric.not_ready: a GPU on an NVSwitch fabric is not (yet) registered with it, or Fabric Manager, which
    registers them, is absent, stopped or of another version than the driver."""
    on_fabric = fabric_gpus(ctx.snapshot)
    if not on_fabric:
        return []  # PCIe boards and older drivers: nothing to judge
    not_ready = [g for g in on_fabric if g.fabric.state in NOT_READY_STATES  # type: ignore[union-attr]
                 or (g.fabric.state == "completed" and g.fabric.status != 0)]  # type: ignore[union-attr]
    fm_ev, fm_fixes = fabric_manager_problems(ctx)
    if not not_ready and not fm_ev:
        return []
    ev = []
    for g in not_ready[:8]:
        f = g.fabric
        assert f is not None
        ev.append(evidence(f"GPU {g.index} ({g.uuid}) fabric state {f.state}, status {f.status} ({f.status_text})",
                           FABRIC_SOURCE))
    if len(not_ready) > 8:
        ev.append(evidence(f"and {len(not_ready) - 8} more GPUs not ready", FABRIC_SOURCE))
    ready = len(on_fabric) - len(not_ready)
    if ready:
        ev.append(evidence(f"{ready} of {len(on_fabric)} GPUs on the fabric registered (state completed)",
                           FABRIC_SOURCE))
    ev += fm_ev
    ev += _sxid_evidence(ctx)
    fixes = list(fm_fixes)
    if not_ready and not fm_fixes:
        fixes.append(f"Fabric Manager runs but has not registered every GPU: read `journalctl -u {FM_UNIT}` and "
                     f"/var/log/fabricmanager.log, then `sudo systemctl restart {FM_UNIT}`; GPUs that stay "
                     "unregistered: reset them (`sudo nvidia-smi -r`) or reboot")
    if not_ready:
        summary = (f"{len(not_ready)} of {len(on_fabric)} GPUs are not registered with the NVSwitch fabric: CUDA "
                   "on them fails with error 802 (system not yet initialized)")
    else:
        summary = ("Fabric Manager is not in order on an NVSwitch board: the GPUs are registered now, but the next "
                   "reset or boot leaves them off the fabric (CUDA error 802)")
    fix = "; ".join(fixes)
    return [Finding("fabric.not_ready", CRITICAL if not_ready else WARNING, None, summary, tuple(ev),
                    fix[:1].upper() + fix[1:])]


def _sxid_evidence(ctx: CheckContext, keep: int = 3) -> list[str]:
    recent = [e for e in ctx.snapshot.host.nvml.sxid_events
              if ctx.snapshot.taken_at - e.time <= ctx.thresholds.xid_recent_s]
    return [evidence(f"kernel log {e.text!r} ({_ago(ctx.snapshot.taken_at - e.time)})", "/dev/kmsg")
            for e in recent[-keep:]]


@host_check("nvswitch.sxid")
def check_sxid(ctx: CheckContext) -> list[Finding]:
    """nvswitch.sxid: NVSwitch errors (SXids) in the kernel log, per switch; fatal ones recently: critical."""
    events = ctx.snapshot.host.nvml.sxid_events
    if not events:
        return []
    now = ctx.snapshot.taken_at
    by_switch: dict[str, list] = {}
    for e in events:
        by_switch.setdefault(e.switch, []).append(e)
    out = []
    for switch, mine in sorted(by_switch.items()):
        last = max(mine, key=lambda e: e.time)
        recent = now - last.time <= ctx.thresholds.xid_recent_s
        fatal = any((e.severity or "").lower() == "fatal" for e in mine if now - e.time <= ctx.thresholds.xid_recent_s)
        codes = sorted({e.sxid for e in mine})
        ev = [evidence(f"{switch} (PCI {last.pci_bus_id}) SXid {', '.join(map(str, codes[:8]))} x{len(mine)}, last "
                       f"{_ago(now - last.time)}", "/dev/kmsg")]
        ev += [evidence(f"kernel log {e.text!r}", "/dev/kmsg") for e in mine[-2:]]
        out.append(Finding(
            "nvswitch.sxid", CRITICAL if fatal else WARNING if recent else INFO, None,
            f"NVSwitch {switch} logged {'fatal ' if fatal else ''}errors (SXid {', '.join(map(str, codes[:4]))})",
            tuple(ev),
            "Look the SXids up in the Fabric Manager User Guide's SXid table; after a fatal SXid stop the jobs, "
            f"reset the GPUs and switches (`sudo systemctl stop {FM_UNIT}`, `sudo nvidia-smi -r`, `sudo systemctl "
            f"start {FM_UNIT}`) or reboot; recurring: service",
        ))
    return out


# --------------------------------------------------------------------------- CUDA error 802 in a container's log

# CUDA's cudaErrorSystemNotReady (802), as the runtime, PyTorch and cuInit callers print it.
_CUDA_802 = re.compile(r"cudaErrorSystemNotReady|CUDA_ERROR_SYSTEM_NOT_READY|system not yet initiali[sz]ed|"
                       r"\b[Ee]rror:? 802\b", re.IGNORECASE)


@container_check("fabric.cuda_802")
def check_cuda_802(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """fabric.not_ready for a container whose log holds CUDA error 802 on a host whose GPUs are on an NVSwitch
    fabric: it started before Fabric Manager registered them (or while it was down)."""
    on_fabric = fabric_gpus(ctx.snapshot)
    if not on_fabric:
        return []  # a PCIe board: 802 has other causes there, and nothing about a fabric to say
    hits = _matches(ctx.log_lines(c), _CUDA_802, keep=2)
    if not hits:
        return []
    not_ready = [g for g in on_fabric if g.fabric.state != "completed" or g.fabric.status != 0]  # type: ignore
    fm_ev, fm_fixes = fabric_manager_problems(ctx)
    ev = _log_evidence(ctx, c, hits)
    ev += [evidence(f"GPU {g.index} fabric state {g.fabric.state}, status {g.fabric.status}",  # type: ignore
                    FABRIC_SOURCE) for g in not_ready[:4]]
    ev += fm_ev
    if not not_ready and not fm_ev:
        ev.append(evidence(f"every GPU on the fabric is registered now ({len(on_fabric)} of {len(on_fabric)})",
                           FABRIC_SOURCE))
        return [Finding("fabric.not_ready", WARNING, c.name,
                        "CUDA failed with error 802 (system not yet initialized): the container started before "
                        "the NVSwitch fabric was ready; it is ready now", tuple(ev),
                        by_runtime(c, f"Restart the container (`docker restart {c.name}`)",
                                   lambda k: f"Restart the pod (`{k.delete}`; its controller starts it again)")
                        + f"; make jobs start after {FM_UNIT} (systemd `After={FM_UNIT}.service`)")]
    return [Finding("fabric.not_ready", CRITICAL, c.name,
                    "CUDA failed with error 802 (system not yet initialized): the NVSwitch fabric is not ready",
                    tuple(ev), "; ".join(fm_fixes or [f"read `journalctl -u {FM_UNIT}`, then `sudo systemctl "
                                                      f"restart {FM_UNIT}`"]) + "; then restart the container")]
