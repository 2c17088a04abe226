"""The InfiniBand families under node_exporter's names and labels (collector/infiniband_linux.go), so dashboards
and alert rules written for node_exporter's `node_infiniband_*` read mltop's agent unchanged."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mltop.probes.fabric_records import IbPort

LABELS = ["device", "port"]

# counters/<file> -> (node_exporter's metric name, help); the data counters are served in octets (x4)
COUNTERS: dict[str, tuple[str, str]] = {
    "excessive_buffer_overrun_errors": ("excessive_buffer_overrun_errors_total",
                                        "Number of times that OverrunErrors consecutive flow control update periods "
                                        "occurred, each having at least one overrun error."),
    "link_downed": ("link_downed_total", "Number of times the link failed to recover from an error state and went down"),
    "link_error_recovery": ("link_error_recovery_total", "Number of times the link successfully recovered from an error state"),
    "local_link_integrity_errors": ("local_link_integrity_errors_total",
                                    "Number of times that the count of local physical errors exceeded the threshold "
                                    "specified by LocalPhyErrors."),
    "multicast_rcv_packets": ("multicast_packets_received_total", "Number of multicast packets received (including errors)"),
    "multicast_xmit_packets": ("multicast_packets_transmitted_total",
                               "Number of multicast packets transmitted (including errors)"),
    "port_rcv_constraint_errors": ("port_constraint_errors_received_total",
                                   "Number of packets received on the switch physical port that are discarded"),
    "port_xmit_constraint_errors": ("port_constraint_errors_transmitted_total",
                                    "Number of packets not transmitted from the switch physical port"),
    "port_rcv_data": ("port_data_received_bytes_total", "Number of data octets received on all links"),
    "port_xmit_data": ("port_data_transmitted_bytes_total", "Number of data octets transmitted on all links"),
    "port_rcv_discards": ("port_discards_received_total",
                          "Number of inbound packets discarded by the port because the port is down or congested"),
    "port_xmit_discards": ("port_discards_transmitted_total",
                           "Number of outbound packets discarded by the port because the port is down or congested"),
    "port_rcv_errors": ("port_errors_received_total",
                        "Number of packets containing an error that were received on this port"),
    "port_rcv_packets": ("port_packets_received_total",
                         "Number of packets received on all VLs by this port (including errors)"),
    "port_xmit_packets": ("port_packets_transmitted_total",
                          "Number of packets transmitted on all VLs from this port (including errors)"),
    "port_xmit_wait": ("port_transmit_wait_total", "Number of ticks during which the port had data to transmit but no "
                       "data was sent during the entire tick"),
    "unicast_rcv_packets": ("unicast_packets_received_total", "Number of unicast packets received (including errors)"),
    "unicast_xmit_packets": ("unicast_packets_transmitted_total",
                             "Number of unicast packets transmitted (including errors)"),
    "port_rcv_remote_physical_errors": ("port_receive_remote_physical_errors_total",
                                        "Number of packets marked with the EBP (End of Bad Packet) delimiter received "
                                        "on the port."),
    "port_rcv_switch_relay_errors": ("port_receive_switch_relay_errors_total",
                                     "Number of packets that could not be forwarded by the switch."),
    "symbol_error": ("symbol_error_total", "Number of minor link errors detected on one or more physical lanes."),
    "VL15_dropped": ("vl15_dropped_total", "Number of incoming VL15 packets dropped due to resource limitations."),
}


def infiniband_families(ports: tuple[IbPort, ...]) -> Iterator[Metric]:
    """node_infiniband_info per HCA, state, physical state and rate per port, and each counter sysfs has."""
    if not ports:
        return
    info = GaugeMetricFamily("node_infiniband_info", "Non-numeric data from /sys/class/infiniband/<device>, value is "
                             "always 1.", labels=["device", "board_id", "firmware_version", "hca_type"])
    seen: set[str] = set()
    for p in ports:
        if p.device not in seen:
            seen.add(p.device)
            info.add_metric([p.device, p.board_id or "", p.firmware_version or "", p.hca_type or ""], 1.0)
    yield info
    gauges = (
        ("state_id", "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, 5: act "
                     "defer)", lambda p: p.state_id),
        ("physical_state_id", "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, "
                              "4: shift, 5: link up, 6: link error recover, 7: phytest)", lambda p: p.phys_state_id),
        ("rate_bytes_per_second", "Maximum signal transfer rate", lambda p: p.rate_bytes_per_s),
    )
    for name, help_text, value in gauges:
        family = GaugeMetricFamily(f"node_infiniband_{name}", help_text, labels=LABELS)
        for p in ports:
            v = value(p)
            if v is not None:
                family.add_metric([p.device, str(p.port)], float(v))
        yield family
    for file, (name, help_text) in COUNTERS.items():
        family = CounterMetricFamily(f"node_infiniband_{name}", help_text, labels=LABELS)
        for p in ports:
            v = p.counter_bytes(file)
            if v is not None:
                family.add_metric([p.device, str(p.port)], float(v))
        if family.samples:
            yield family
