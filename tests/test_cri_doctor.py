"""The doctor in Kubernetes terms for pod containers (real pods in the private containerd): the same findings as
for Docker, with a pod spec's fix (resources.limits.memory, resources.limits.cpu) and the CRI as the evidence's
source; each fires on its planted fault and stays silent on a healthy look-alike (a Guaranteed pod with the
same kind of limits, idle)."""

from __future__ import annotations

import time

import pytest
from cri_harness import NVIDIA_HANDLER, ContainerSpec, run_scenario


@pytest.fixture(scope="module")
def judged(cri_node):
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.host_facts import HostProbe
    from mltop.probes.sampler import ProbeOptions, Sampler

    pods = run_scenario(cri_node.run_pod)
    cri_node.steady_cpu(pods["api"])  # throttled by its quota, not starved by the machine's load
    pods["shmfull"] = cri_node.run_pod("ml-team", "shmfull", [ContainerSpec("main", [
        "sh", "-c", "dd if=/dev/zero of=/dev/shm/batch bs=1M count=60 2>/dev/null; exec sleep 600"])])
    gpu_env = {"NVIDIA_VISIBLE_DEVICES": "GPU-a0000000-0000-0000-0000-00000000000a"}  # as the device plugin sets it
    pods["nort"] = cri_node.run_pod("ml-team", "nort", [ContainerSpec("main", ["sleep", "600"], env=gpu_env)])
    pods["withrt"] = cri_node.run_pod("ml-team", "withrt", [ContainerSpec("main", ["sleep", "600"], env=gpu_env)],
                                      runtime_handler=NVIDIA_HANDLER)
    pods["shmquiet"] = cri_node.run_pod("ml-team", "shmquiet", [ContainerSpec("main", [
        "sh", "-c", "dd if=/dev/zero of=/dev/shm/batch bs=1M count=8 2>/dev/null; exec sleep 600"])])
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=cri_node.endpoint, watch_events=False))
    try:
        loader = pods["trainer"].containers["loader"]
        deadline = time.monotonic() + 30
        while True:  # until the loader's child was OOM-killed and the busy loop has been throttled a while
            previous, snap = sampler.sweep_pair(1.0)
            if (snap.container(loader).oom_kills or 0) >= 1 or time.monotonic() > deadline:
                break
        names = [c.name for c in snap.containers if c.kubernetes is not None and c.kubernetes.namespace in
                 ("ml-team", "serving") and any(c.id in p.containers.values() for p in pods.values())]
        result = run_doctor(snap, sampler.engine, containers=names, previous=previous, host=HostProbe(
            containerd_config=f"{cri_node.tmp}/config.toml"))  # the node's containerd: it defines `nvidia`
        judged = {f.code + " " + f.container: f for f in result.findings}

        def again(config: str):
            found = run_doctor(snap, sampler.engine, containers=names, previous=previous,
                               host=HostProbe(containerd_config=config)).findings
            return {f.code + " " + f.container: f for f in found}

        judged["again"] = again
        yield judged
    finally:
        sampler.close()
        for pod in pods.values():
            cri_node.remove_pod(pod)


def test_an_oom_killed_pod_container_gets_a_resources_limits_memory_fix(judged):
    finding = judged["oom.killed ml-team/trainer/loader"]
    assert "resources.limits.memory 33554432 bytes (32.0 MiB)" in "\n".join(finding.evidence)
    assert "CRI ContainerStatus ml-team/trainer/loader" in "\n".join(finding.evidence)
    assert "`containers: [{name: loader, resources: {limits: {memory: 64Mi}}}]`" in finding.fix
    assert "--memory" not in finding.fix
    # the look-alikes: a Guaranteed pod with a memory limit at rest, and the OOM pod's other container
    assert not [k for k in judged if k.startswith("oom.") and ("sizer" in k or "trainer/main" in k)]


def test_a_throttled_pod_container_gets_a_resources_limits_cpu_fix(judged):
    finding = judged["cpu.throttled serving/api/server"]
    assert "`containers: [{name: server, resources: {limits: {cpu: 1}}}]`" in finding.fix
    assert "--cpus" not in finding.fix
    assert not [k for k in judged if k.startswith("cpu.throttled") and "sizer" in k]  # same quota, idle


def test_a_full_default_dev_shm_gets_a_memory_backed_empty_dir_fix(judged):
    finding = judged["shm.too_small ml-team/shmfull/main"]
    assert finding.severity == "warning"
    text = "\n".join(finding.evidence)
    assert "/dev/shm 67108864 bytes (64.0 MiB) (the pod's own tmpfs" in text and "% of its size" in text
    assert ("`volumes: [{name: dshm, emptyDir: {medium: Memory, sizeLimit: 8Gi}}]` and in container `main` "
            "`volumeMounts: [{name: dshm, mountPath: /dev/shm}]`") in finding.fix
    assert "--shm-size" not in finding.fix
    assert not [k for k in judged if k.startswith("shm.") and "shmquiet" in k]  # the same 64 MiB, 8 MiB used


def test_a_pod_meant_for_gpus_without_nvidias_runtime_gets_runtime_class_name(judged):
    """The node's containerd defines `nvidia`: the fix is the pod's runtimeClassName; the same pod with it is silent."""
    finding = judged["k8s.gpu_runtime ml-team/nort/main"]
    text = "\n".join(finding.evidence)
    assert "env NVIDIA_VISIBLE_DEVICES=GPU-a0000000" in text and "default (no runtimeClassName)" in text
    assert "containerd runtimes: runc, nvidia" in text
    assert finding.fix.startswith("Set `runtimeClassName: nvidia` in the pod spec") and "nvidia-ctk" not in finding.fix
    assert "k8s.gpu_runtime ml-team/withrt/main" not in judged  # runtimeClassName: nvidia
    assert not [k for k in judged if k.startswith("k8s.gpu_runtime") and "shm" in k]  # no GPU asked for


def test_a_node_whose_containerd_has_no_nvidia_runtime_gets_nvidia_ctk(judged, tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "config.toml").write_text('version = 2\nimports = ["conf.d/*.toml"]\n'
                                         '[plugins."io.containerd.grpc.v1.cri".containerd]\n'
                                         '  default_runtime_name = "runc"\n')
    (tmp_path / "conf.d" / "10-runc.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        '  runtime_type = "io.containerd.runc.v2"\n')
    found = judged["again"](str(tmp_path / "config.toml"))
    finding = found["k8s.gpu_runtime ml-team/nort/main"]
    assert "`sudo nvidia-ctk runtime configure --runtime=containerd && sudo systemctl restart containerd`" in finding.fix
    assert "containerd runtimes: runc; default runc" in "\n".join(finding.evidence)
    assert str(tmp_path / "conf.d" / "10-runc.toml") in "\n".join(finding.evidence)
    # a drop-in that registers NVIDIA's runtime as the default (what nvidia-ctk --set-as-default writes): silent
    (tmp_path / "conf.d" / "99-nvidia.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  default_runtime_name = "nvidia"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n  runtime_type = "io.containerd.runc.v2"\n')
    assert not [k for k in judged["again"](str(tmp_path / "config.toml")) if k.startswith("k8s.gpu_runtime")]
