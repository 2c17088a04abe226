"""mltop serve on a node with pods: the kubelet's label names on pod containers' series, scraped by a real
Prometheus; dcgm-exporter's pod labels on a GPU only one pod container uses; the DaemonSet."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from cri_harness import run_scenario
from fakenvml import FakeGpu, FakeProcess, FakeScenario, write_scenario
from serve_helpers import PrometheusServer, ServeProcess, wait_until

GIB = 1 << 30


@pytest.fixture(scope="module")
def pod_fleet(cri_node, fake_nvml_lib, tmp_path_factory):
    work = tmp_path_factory.mktemp("pod-fleet")
    pods = run_scenario(cri_node.run_pod)
    serve = prometheus = None
    try:
        main_pid = cri_node.init_pid(pods["trainer"].containers["main"])
        scenario = work / "scenario.txt"
        write_scenario(scenario, FakeScenario(gpus=[
            FakeGpu(uuid="GPU-0d000000-0000-0000-0000-000000000000", mem_used=12 * GIB, util=80,
                    processes=[FakeProcess(main_pid, used_memory=10 * GIB, sm=70)]),
            FakeGpu(uuid="GPU-0d000000-0000-0000-0000-000000000001", pci="00000000:3C:00.0", mem_used=0,
                    processes=[FakeProcess(os.getpid(), used_memory=1 * GIB)]),  # a host process: no pod
        ]))
        serve = ServeProcess("--interval", "1", "--doctor-interval", "2", "--nvml-lib", str(fake_nvml_lib),
                             env={"MLTOP_FAKE_NVML_SCENARIO": str(scenario), "MLTOP_CRI_ENDPOINT": cri_node.endpoint,
                                  "NODE_NAME": "gpu-node-7"})
        serve.wait_healthy()
        prometheus = PrometheusServer(work, [f"127.0.0.1:{serve.port}"])
        prometheus.wait_for('count(up{job="mltop"} == 1) > 0', what="first scrape")
        yield dict(serve=serve, prometheus=prometheus, pods=pods)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if serve is not None:
            serve.stop()
        for pod in pods.values():
            cri_node.remove_pod(pod)


def test_prometheus_sees_pod_containers_by_the_kubelets_labels(pod_fleet):
    p = pod_fleet["prometheus"]
    trainer = pod_fleet["pods"]["trainer"]
    (series,) = p.wait_for('container_memory_working_set_bytes{namespace="ml-team",pod="trainer",container="main"}')
    labels = series["metric"]
    assert labels["name"] == "ml-team/trainer/main"
    assert labels["id"] == f"/kubepods/burstable/pod{trainer.uid}/{trainer.containers['main']}"
    assert labels["image"].endswith("mltop-test/busybox:1")
    assert float(series["value"][1]) > 0
    sizer = p.query('container_spec_memory_limit_bytes{namespace="ml-team",pod="sizer",container="main"}')
    assert float(sizer[0]["value"][1]) == 128 << 20
    assert p.query('container_cpu_usage_seconds_total{namespace="serving",pod="api",container="server"}')
    oom = p.wait_for('container_oom_events_total{namespace="ml-team",pod="trainer",container="loader"} >= 1',
                     timeout=60)
    assert oom
    (up,) = p.query('mltop_source_up{kind="cri"}')
    assert up["metric"]["runtime"] == "containerd" and up["value"][1] == "1"


def test_gpu_series_carry_the_pod_that_uses_the_gpu(pod_fleet):
    p = pod_fleet["prometheus"]
    (gpu0,) = p.wait_for('DCGM_FI_DEV_FB_USED{gpu="0"}')
    assert (gpu0["metric"]["namespace"], gpu0["metric"]["pod"], gpu0["metric"]["container"]) == (
        "ml-team", "trainer", "main")
    assert gpu0["metric"]["Hostname"] == "gpu-node-7"  # NODE_NAME, as the DaemonSet sets it
    (gpu1,) = p.query('DCGM_FI_DEV_FB_USED{gpu="1"}')
    assert "pod" not in gpu1["metric"]  # a host process holds it
    (held,) = p.query('mltop_container_gpu_memory_bytes{namespace="ml-team",pod="trainer",container="main"}')
    assert float(held["value"][1]) == 10 * GIB and held["metric"]["name"] == "ml-team/trainer/main"


def test_the_exposition_is_valid_with_pod_labels(pod_fleet, tmp_path):
    import shutil
    import subprocess

    text = pod_fleet["serve"].metrics_text()
    assert re.search(r'container_memory_working_set_bytes\{[^}]*namespace="serving"[^}]*pod="api"', text)
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed")
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    # (dcgm-exporter's own label names, UUID and modelName, are camelCase: kept for its dashboards)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "camelCase" not in line]
    assert not errors, errors


# ----------------------------------------------------------------------------- the DaemonSet


def _daemonset_docs() -> tuple[dict, dict]:
    import subprocess
    import sys

    text = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "serve", "--print-daemonset"],
                          capture_output=True, text=True, check=True).stdout
    (daemonset,) = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "DaemonSet"]
    commented = "\n".join(line[2:] for line in text.splitlines()
                          if line.startswith("# ") and not line.startswith("# ---") and ":" in line
                          and not line[2:3].isupper())
    podmonitor = yaml.safe_load(commented[commented.index("apiVersion: monitoring"):])
    return daemonset, podmonitor


def test_the_daemonset_mounts_what_the_agent_reads():
    """Each mount is a path the agent reads (and each path it reads is mounted, read-only, at the same place);
    host PIDs; NODE_NAME from the downward API; the named port the PodMonitor scrapes."""
    from mltop.probes.cgroups import CGROUP_ROOT
    from mltop.probes.cri import DEFAULT_ENDPOINTS, ENV_VAR
    from mltop.probes.cri.logs import KUBELET_LOG_ROOT

    daemonset, podmonitor = _daemonset_docs()
    assert daemonset["kind"] == "DaemonSet" and daemonset["apiVersion"] == "apps/v1"
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    (agent,) = spec["containers"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    cri_socket = env[ENV_VAR]["value"][len("unix://"):]
    assert cri_socket in DEFAULT_ENDPOINTS
    reads = {CGROUP_ROOT, cri_socket, KUBELET_LOG_ROOT}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    writes = {"/var/lib/mltop"}  # the flight recorder's history.db
    assert set(mounts) == reads | writes
    for path, mount in mounts.items():
        assert volumes[mount["name"]]["hostPath"]["path"] == path
        assert mount.get("readOnly") is (True if path in reads else None), path
    (port,) = agent["ports"]
    assert port["name"] == "metrics" and port["containerPort"] == 10140
    assert agent["readinessProbe"]["httpGet"]["port"] == "metrics"
    assert agent["resources"]["requests"]["cpu"] and agent["resources"]["limits"]["memory"]
    assert podmonitor["kind"] == "PodMonitor"
    assert podmonitor["spec"]["podMetricsEndpoints"][0]["port"] == port["name"]
    assert podmonitor["spec"]["selector"]["matchLabels"] == daemonset["spec"]["selector"]["matchLabels"]
    text = open(os.path.join(os.path.dirname(__file__), "..", "tui", "serve", "assets", "daemonset.yaml")).read()
    assert "# runtimeClassName: nvidia" in text  # the option, for nodes where nvidia is not the default runtime
