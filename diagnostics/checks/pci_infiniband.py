"""The host's PCI and InfiniBand from sysfs: GPUs on PCI that the driver lost, InfiniBand/RoCE ports down, flapping
 or erring (NVLink and the NVSwitch fabric, from NVML, are fabric.py's)."""

from __future__ import annotations

from mltop.probes.fabric_records import IbPort
from mltop.probes.units import local_time

from ..findings import CRITICAL, WARNING, Finding, evidence
from .base import CheckContext, host_check

# counters/ files whose rise means the link itself went down and came back (or did not)
FLAP_COUNTERS = ("link_downed", "link_error_recovery")
# counters/ files whose rise means packets are being lost or corrupted on the link
ERROR_COUNTERS = ("symbol_error", "port_rcv_errors", "port_xmit_discards", "port_rcv_remote_physical_errors",
                  "local_link_integrity_errors", "excessive_buffer_overrun_errors", "port_rcv_switch_relay_errors",
                  "port_xmit_constraint_errors", "port_rcv_constraint_errors", "VL15_dropped")

_PCI_SOURCE = "/sys/bus/pci/devices"
_IB_SOURCE = "/sys/class/infiniband"


@host_check("gpu.missing")
def check_gpu_missing(ctx: CheckContext) -> list[Finding]:
    """gpu.missing: an NVIDIA GPU on PCI that NVML does not list (lost by the driver, or never initialised)."""
    if not ctx.snapshot.host.nvml.ok:
        return []  # no list of GPUs to compare PCI with; the NVML findings say why
    missing = [g for g in ctx.snapshot.pci_gpus if g.listed_by_nvml is False]
    out = []
    for g in missing:
        ev = [evidence(f"PCI {g.address}: vendor 0x10de device {g.device_id or '?'} class {g.class_code}, driver "
                       f"{g.driver or 'none bound'}", f"{_PCI_SOURCE}/{g.address}"),
              evidence(f"NVML lists {len(ctx.snapshot.gpus)} GPU(s), none at {g.address}"
                       + (f" ({', '.join(x.pci_bus_id or '?' for x in ctx.snapshot.gpus)})" if ctx.snapshot.gpus
                          else ""), "NVML nvmlDeviceGetPciInfo")]
        xid = g.last_xid
        if xid is not None:
            ev.append(evidence(f"last Xid {xid.xid} at {local_time(xid.time)}: {xid.text!r}", xid.source))
        fell = xid is not None and xid.xid == 79
        out.append(Finding(
            "gpu.missing", CRITICAL, None,
            f"GPU at PCI {g.address} is on the bus but missing from the driver"
            + (" (Xid 79: fallen off the bus)" if fell else (f" (last Xid {xid.xid})" if xid else "")),
            tuple(ev),
            "Drain the node: jobs see fewer GPUs than it has. Look at `sudo dmesg | grep -i -e NVRM -e Xid` for why the "
            "driver dropped it; a reset (`sudo nvidia-smi -r`) or a reboot brings it back, and if it keeps falling "
            "off the bus the board, its riser or its power needs service",
        ))
    return out


def _window(p: IbPort) -> str:
    return f"over {p.rise_window_s:.1f} s" if p.rise_window_s is not None else "since the last reading"


def _port_facts(p: IbPort) -> str:
    return (f"{p.name}: state {p.state_id}: {p.state}, phys_state {p.phys_state_id}: {p.phys_state}, "
            f"rate {p.rate!r}, link_layer {p.link_layer}")


@host_check("ib.ports")
def check_ib_ports(ctx: CheckContext) -> list[Finding]:
    """ib.port_down, ib.link_flapping, ib.errors: per HCA port."""
    ports = ctx.snapshot.infiniband  # () on a host without HCAs: nothing to judge, and nothing skipped
    out = []
    active = [p for p in ports if p.active]
    for p in ports:
        source = f"{_IB_SOURCE}/{p.device}/ports/{p.port}"
        # (a port disabled by hand, phys_state 3, is a choice, unless it was up in this process's sight)
        if not p.active and (p.seen_active or (active and p.phys_state_id != 3)):
            why = ("it was ACTIVE at an earlier sweep" if p.seen_active else
                   f"{len(active)} other port(s) of this host are ACTIVE: {', '.join(a.name for a in active[:4])}")
            out.append(Finding(
                "ib.port_down", WARNING, None, f"InfiniBand {p.name} is {p.state or 'not active'} ({why})",
                (evidence(_port_facts(p), source), evidence(why, f"{_IB_SOURCE}/*/ports/*/state")),
                f"Check the cable and the switch port of {p.device} port {p.port} (`ibstat {p.device} {p.port}`, "
                "`sudo mlxlink -d <pci> -m` for the cable's signal, the subnet manager: `sminfo`); until it is "
                "back NCCL uses the other ports or falls back to sockets",
            ))
        rises = p.counter_rises  # between the probe's last two counter readings
        flaps = {n: r for n, r in rises.items() if n in FLAP_COUNTERS and r}
        if flaps:
            out.append(Finding(
                "ib.link_flapping", WARNING, None,
                f"InfiniBand {p.name} link is flapping ({', '.join(f'{n} +{r}' for n, r in flaps.items())} "
                f"{_window(p)})",
                tuple(evidence(f"{n} {p.counters[n]} (+{r} {_window(p)})", f"{source}/counters/{n}")
                      for n, r in flaps.items()) + (evidence(_port_facts(p), source),),
                "A link that goes down and recovers stalls every collective across it: reseat or replace the cable "
                "or transceiver, and check the switch port's own error counters (`ibqueryerrors`)",
            ))
        errors = {n: r for n, r in rises.items() if n in ERROR_COUNTERS and r}
        if errors:
            out.append(Finding(
                "ib.errors", WARNING, None,
                f"InfiniBand {p.name} is counting errors ({', '.join(f'{n} +{r}' for n, r in errors.items())} "
                f"{_window(p)})",
                tuple(evidence(f"{n} {p.counters[n]} (+{r} {_window(p)})", f"{source}/counters/{n}")
                      for n, r in errors.items()) + (evidence(_port_facts(p), source),),
                "Rising symbol or receive errors point at the cable, transceiver or switch port (`ibqueryerrors`, "
                "`sudo mlxlink -d <pci> -c` for the BER); rising discards at congestion or a slow receiver. "
                "Counters high but flat are history: `perfquery -R` resets them",
            ))
    return out
