"""The agent image: built from the repo's Dockerfile over the offline Python test image, run with the documented
mounts (--pid=host, the cgroup tree and the engine socket read-only), scraped from the host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fakenvml import FakeGpu, FakeProcess, FakeScenario, write_scenario
from serve_helpers import REPO, free_port, http_get, parse_exposition, wait_until

GIB = 1 << 30


@pytest.fixture(scope="module")
def agent_image(docker_client, test_images, tmp_path_factory):
    """Build context = the Dockerfile + scripts/vendor_agent.py's tree, as the README says; removed after."""
    context = tmp_path_factory.mktemp("agent-context")
    shutil.copy(REPO / "Dockerfile", context / "Dockerfile")
    vendored = subprocess.run([sys.executable, str(REPO / "scripts" / "vendor_agent.py"),
                               str(context / "build" / "agent-vendor")], capture_output=True, text=True)
    assert vendored.returncode == 0, vendored.stderr
    tag = f"mltop-test/agent:{os.getpid()}"
    build = subprocess.run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={test_images['python']}",
                            "-t", tag, str(context)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    yield tag
    try:
        docker_client.images.remove(tag, force=True)
    except Exception:
        pass


def test_agent_container_attributes_gpu_memory_and_reads_cgroups(docker_client, containers, agent_image,
                                                                  fake_nvml_lib, tmp_path):
    holder = containers.run(["sleep", "300"], name=f"mltop-agent-gpu-{os.getpid()}")
    holder_pid = docker_client.containers.get(holder.id).attrs["State"]["Pid"]
    scenario = tmp_path / "scenario.txt"
    write_scenario(scenario, FakeScenario(gpus=[
        FakeGpu(mem_used=9 * GIB, processes=[FakeProcess(holder_pid, used_memory=5 * GIB, sm=25)]),
        FakeGpu(uuid="GPU-00000000-0000-0000-0000-000000000001", pci="00000000:3C:00.0"),
    ]))
    port = free_port()
    # As documented, less `--gpus all`: this host has no NVIDIA runtime, so the simulated library is
    # mounted instead and named with --nvml-lib.
    agent = containers.run(
        ["--interval", "1", "--doctor-interval", "0", "--nvml-lib", "/opt/fakenvml/libnvidia-ml.so.1"],
        image=agent_image, name=f"mltop-agent-{os.getpid()}", pid_mode="host",
        ports={"10140/tcp": ("127.0.0.1", port)},
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
                 "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"},
                 str(Path(fake_nvml_lib).parent): {"bind": "/opt/fakenvml", "mode": "ro"},
                 str(tmp_path): {"bind": "/opt/fakenvml-scenario", "mode": "ro"}},
        environment={"MLTOP_FAKE_NVML_SCENARIO": "/opt/fakenvml-scenario/scenario.txt"},
    )
    url = f"http://127.0.0.1:{port}"

    def scraped():
        if docker_client.containers.get(agent.id).status != "running":
            raise AssertionError(f"the agent exited: {agent.logs().decode(errors='replace')}")
        code, body = http_get(url + "/metrics", timeout=2)
        m = parse_exposition(body.decode()) if code == 200 else {}
        names = {labels.get("name") for labels, _ in m.get("container_cpu_usage_seconds_total", [])}
        return m if holder.name in names and m.get("mltop_container_gpu_memory_bytes") else None

    m = wait_until(scraped, 60, "the agent's /metrics to list the holder with its GPU memory")
    (labels, value), = m["mltop_container_gpu_memory_bytes"]
    assert labels["container"] == holder.name and labels["container_id"] == holder.id and value == 5 * GIB
    cpu = [v for l, v in m["container_cpu_usage_seconds_total"] if l["name"] == holder.name]
    wss = [v for l, v in m["container_memory_working_set_bytes"] if l["name"] == holder.name]
    assert cpu and cpu[0] > 0 and wss and wss[0] > 0  # cgroup counters read from inside the agent
    assert [v for l, v in m["DCGM_FI_DEV_FB_USED"] if l["gpu"] == "0"] == [9 * 1024]
    assert [v for _, v in m["mltop_engine_up"]] == [1.0] and [v for _, v in m["mltop_nvml_up"]] == [1.0]
    assert http_get(url + "/healthz")[0] == 200


def test_agent_with_the_host_cgroup_tree_mounted_elsewhere_labels_cadvisor_ids_as_the_kernel_names_them(
        docker_client, containers, agent_image):
    """The host's tree at /host/cgroup, the agent's own cgroup mounts at /sys/fs/cgroup as the engine made them:
    the locator reads the host's from mountinfo, and `id` is the kernel's name, not a path inside the agent."""
    from mltop.probes.cgroups import detect_cgroup_version

    if detect_cgroup_version() == 2:
        pytest.skip("cgroup v2: the agent sees the host's tree through its own cgroup namespace, at /sys/fs/cgroup")
    holder = containers.run(["sleep", "300"], name=f"mltop-agent-elsewhere-held-{os.getpid()}")
    holder_pid = docker_client.containers.get(holder.id).attrs["State"]["Pid"]
    with open(f"/proc/{holder_pid}/cgroup") as f:
        kernel_name = next(line.split(":", 2)[2].strip() for line in f
                           if "memory" in line.split(":", 2)[1].split(","))
    port = free_port()
    agent = containers.run(
        ["--interval", "1", "--doctor-interval", "0", "--no-nvml"],
        image=agent_image, name=f"mltop-agent-elsewhere-{os.getpid()}", pid_mode="host",
        ports={"10140/tcp": ("127.0.0.1", port)},
        volumes={"/sys/fs/cgroup": {"bind": "/host/cgroup", "mode": "ro"},
                 "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"}},
    )
    url = f"http://127.0.0.1:{port}"

    def holder_series():
        if docker_client.containers.get(agent.id).status != "running":
            raise AssertionError(f"the agent exited: {agent.logs().decode(errors='replace')}")
        code, body = http_get(url + "/metrics", timeout=2)
        m = parse_exposition(body.decode()) if code == 200 else {}
        return [(labels, v) for labels, v in m.get("container_cpu_usage_seconds_total", [])
                if labels["name"] == holder.name] or None

    (labels, cpu), = wait_until(holder_series, 60, "the holder's cAdvisor series on the agent's /metrics")
    assert labels["id"] == kernel_name and kernel_name.endswith(holder.id), (labels, kernel_name)
    assert cpu > 0  # its counters were found in the host's tree, under /host/cgroup
    m = parse_exposition(http_get(url + "/metrics")[1].decode())
    wss = [(l["id"], v) for l, v in m["container_memory_working_set_bytes"] if l["name"] == holder.name]
    assert wss and wss[0][0] == kernel_name and wss[0][1] > 0
    assert not any(l["id"].startswith(("/host/", "/sys/")) for l, _ in m["container_cpu_usage_seconds_total"])


# What the Dockerfile's run line and the DaemonSet keep: every capability dropped but these two.
KEPT_CAPABILITIES = ["SYS_PTRACE", "DAC_READ_SEARCH"]


def _run_least_privileged_agent(containers, agent_image, tmp_path, cap_add, name):
    port = free_port()
    history = tmp_path / f"history-{name}"
    history.mkdir()
    agent = containers.run(
        ["--interval", "1", "--doctor-interval", "0", "--no-nvml"],
        image=agent_image, name=f"mltop-agent-{name}-{os.getpid()}", pid_mode="host",
        ports={"10140/tcp": ("127.0.0.1", port)}, cap_drop=["ALL"], cap_add=cap_add,
        security_opt=["no-new-privileges"], read_only=True,
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
                 "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"},
                 str(history): {"bind": "/var/lib/mltop", "mode": "rw"}},
    )
    return agent, f"http://127.0.0.1:{port}", history


def test_the_agent_image_refuses_exec_and_reads_every_container_with_only_the_capabilities_it_keeps(
        docker_client, containers, agent_image, tmp_path):
    """The Dockerfile's run line: all capabilities dropped but SYS_PTRACE and DAC_READ_SEARCH, no new
    privileges, a read-only root. A process of another user in another container still has its open files
    counted (that is what the two are kept for: without them the count is missing), the recording is 0600."""
    env = docker_client.images.get(agent_image).attrs["Config"]["Env"]
    assert "MLTOP_NO_EXEC=1" in env
    holder = containers.run(["sleep", "300"], name=f"mltop-agent-caps-held-{os.getpid()}", user="1000:1000")

    def holder_fds(agent, url):
        if docker_client.containers.get(agent.id).status != "running":
            raise AssertionError(f"the agent exited: {agent.logs().decode(errors='replace')}")
        code, body = http_get(url + "/metrics", timeout=2)
        m = parse_exposition(body.decode()) if code == 200 else {}
        swept = m.get("container_cpu_usage_seconds_total", [])
        if not any(labels.get("name") == holder.name for labels, _ in swept):
            return None  # not swept yet
        fds = [v for labels, v in m.get("container_file_descriptors", []) if labels.get("name") == holder.name]
        return fds or [None]

    agent, url, history = _run_least_privileged_agent(containers, agent_image, tmp_path, KEPT_CAPABILITIES, "caps")
    (fds,) = wait_until(lambda: holder_fds(agent, url), 60, "the holder on the least-privileged agent's /metrics")
    assert fds is not None and fds >= 3, fds  # sleep's stdin, stdout, stderr
    assert oct(os.stat(history / "history.db").st_mode & 0o777) == oct(0o600)

    bare, bare_url, _ = _run_least_privileged_agent(containers, agent_image, tmp_path, [], "nocaps")
    (missing,) = wait_until(lambda: holder_fds(bare, bare_url), 60, "the holder on the capability-less agent")
    assert missing is None  # the two capabilities are what let the agent see it
