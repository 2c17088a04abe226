"""mltop's own Grafana dashboard (`mltop serve --print-grafana-dashboard`): GPUs with GPM, GPU use by container,
container CPU and memory, findings and Xids, over the series `mltop serve` exports. Importable JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass

SEL = 'instance=~"$instance"'  # every query is scoped to the hosts picked in the dashboard's variable
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # "timeseries" | "table" | "stat"
    description: str = ""
    max: float | None = None


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("GPUs", (
        Panel("Utilisation vs SM active", (
            (f"DCGM_FI_DEV_GPU_UTIL{{{SEL}}}", "{{Hostname}} GPU {{gpu}} utilisation"),
            (f'100 * DCGM_FI_PROF_SM_ACTIVE{{{SEL}, GPU_I_ID=""}}', "{{Hostname}} GPU {{gpu}} SM active"),
        ), "percent", description="Utilisation says a kernel ran; SM active (GPM) says how much of the GPU it "
                                  "used. High utilisation with low SM active: small kernels or launch overhead.",
            max=100),
        Panel("Tensor pipes active", (
            (f"100 * DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{SEL}}}", "{{Hostname}} GPU {{gpu}} {{GPU_I_PROFILE}}"),
        ), "percent", description="Near 0 on a busy GPU: FP32 matmuls without TF32 or mixed precision.", max=100),
        Panel("DRAM bandwidth active", (
            (f"100 * DCGM_FI_PROF_DRAM_ACTIVE{{{SEL}}}", "{{Hostname}} GPU {{gpu}} {{GPU_I_PROFILE}}"),
        ), "percent", max=100),
        Panel("SM occupancy", (
            (f"100 * DCGM_FI_PROF_SM_OCCUPANCY{{{SEL}}}", "{{Hostname}} GPU {{gpu}} {{GPU_I_PROFILE}}"),
        ), "percent", max=100),
        Panel("GPU memory used", (
            (f"DCGM_FI_DEV_FB_USED{{{SEL}}} * 1048576", "{{Hostname}} GPU {{gpu}}"),
        ), "bytes"),
        Panel("PCIe and NVLink traffic", (
            (f'DCGM_FI_PROF_PCIE_TX_BYTES{{{SEL}, GPU_I_ID=""}}', "{{Hostname}} GPU {{gpu}} PCIe tx"),
            (f'DCGM_FI_PROF_PCIE_RX_BYTES{{{SEL}, GPU_I_ID=""}}', "{{Hostname}} GPU {{gpu}} PCIe rx"),
            (f'DCGM_FI_PROF_NVLINK_TX_BYTES{{{SEL}, GPU_I_ID=""}}', "{{Hostname}} GPU {{gpu}} NVLink tx"),
            (f'DCGM_FI_PROF_NVLINK_RX_BYTES{{{SEL}, GPU_I_ID=""}}', "{{Hostname}} GPU {{gpu}} NVLink rx"),
        ), "Bps"),
        Panel("Power and temperature", (
            (f"DCGM_FI_DEV_POWER_USAGE{{{SEL}}}", "{{Hostname}} GPU {{gpu}} W"),
            (f"DCGM_FI_DEV_GPU_TEMP{{{SEL}}}", "{{Hostname}} GPU {{gpu}} °C"),
        )),
    )),
    ("GPU use by container", (
        Panel("GPU memory by container", (
            (f"sum by (instance, container, gpu) (mltop_container_gpu_memory_bytes{{{SEL}}})",
             "{{container}} on GPU {{gpu}}"),
        ), "bytes"),
        Panel("SM utilisation by container", (
            (f"sum by (instance, container, gpu) (mltop_container_gpu_sm_utilization_percent{{{SEL}}})",
             "{{container}} on GPU {{gpu}}"),
        ), "percent"),
        Panel("What holds each GPU container back", (
            (f"mltop_container_workload{{{SEL}}} == 1", "{{container}}: {{kind}}"),
        ), kind="table"),
    )),
    ("Containers", (
        Panel("CPU (cores)", (
            (f'sum by (instance, name) (rate(container_cpu_usage_seconds_total{{{SEL}, name!=""}}[{RATE}]))',
             "{{name}}"),
        )),
        Panel("CPU throttled periods", (
            (f"sum by (instance, name) (rate(container_cpu_cfs_throttled_periods_total{{{SEL}}}[{RATE}])) / "
             f"sum by (instance, name) (rate(container_cpu_cfs_periods_total{{{SEL}}}[{RATE}]))", "{{name}}"),
        ), "percentunit"),
        Panel("Memory working set", (
            (f'container_memory_working_set_bytes{{{SEL}, name!=""}}', "{{name}}"),
            (f"container_spec_memory_limit_bytes{{{SEL}}} > 0", "{{name}} limit"),
        ), "bytes"),
        Panel("Network", (
            (f"sum by (instance, name) (rate(container_network_receive_bytes_total{{{SEL}}}[{RATE}]))",
             "{{name}} rx"),
            (f"sum by (instance, name) (rate(container_network_transmit_bytes_total{{{SEL}}}[{RATE}]))",
             "{{name}} tx"),
        ), "Bps"),
    )),
    ("Findings and Xids", (
        Panel("Active findings", (
            (f"sum by (severity) (mltop_findings{{{SEL}}})", "{{severity}}"),
        ), kind="stat"),
        Panel("Findings", (
            (f"mltop_finding{{{SEL}}} == 1", "{{code}} {{container}}"),
        ), kind="table"),
        Panel("Xid errors (last hour)", (
            (f"sum by (instance, gpu, xid) (increase(mltop_gpu_xid_errors_total{{{SEL}}}[1h]))",
             "GPU {{gpu}} Xid {{xid}}"),
        )),
        Panel("Last Xid per GPU", (
            (f"DCGM_FI_DEV_XID_ERRORS{{{SEL}}}", "{{Hostname}} GPU {{gpu}}"),
        ), kind="stat"),
    )),
)


def queries() -> list[str]:
    """Every PromQL query of the dashboard, as written in it (with its $variables)."""
    return [q for _, panels in ROWS for p in panels for q, _ in p.queries]


def dashboard() -> dict:
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels: list[dict] = []
    y = 0
    next_id = 1
    for row_title, row_panels in ROWS:
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        for i, p in enumerate(row_panels):
            width = 24 if p.kind == "table" else 12
            x = 0 if width == 24 else (i % 2) * 12
            defaults: dict = {"unit": p.unit}
            if p.max is not None:
                defaults.update(min=0, max=p.max)
            panel = {
                "id": next_id, "type": p.kind, "title": p.title, "description": p.description,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": width, "x": x, "y": y},
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "targets": [{"refId": chr(ord("A") + j), "datasource": datasource, "expr": q, "legendFormat": legend,
                             **({"format": "table", "instant": True} if p.kind == "table" else {})}
                            for j, (q, legend) in enumerate(p.queries)],
            }
            panels.append(panel)
            next_id += 1
            if width == 24 or x == 12 or i == len(row_panels) - 1:
                y += 8
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "title": "mltop: GPUs and ML containers",
        "uid": "mltop-serve",
        "tags": ["mltop", "gpu", "dcgm", "cadvisor"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "instance", "label": "host", "type": "query", "datasource": datasource,
            "query": {"query": "label_values(mltop_build_info, instance)", "refId": "instance"},
            "definition": "label_values(mltop_build_info, instance)",
            "includeAll": True, "multi": True, "allValue": ".+", "refresh": 2,
            "current": {"text": "All", "value": "$__all"},
        }]},
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"
