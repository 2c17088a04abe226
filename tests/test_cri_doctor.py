"""The doctor in Kubernetes terms for pod containers (real pods in the private containerd): the same findings as
for Docker, with a pod spec's fix (resources.limits.memory, resources.limits.cpu) and the CRI as the evidence's
source; each fires on its planted fault and stays silent on a healthy look-alike (a Guaranteed pod with the
same kind of limits, idle)."""

from __future__ import annotations

import time

import pytest
from cri_harness import ContainerSpec, run_scenario


@pytest.fixture(scope="module")
def judged(cri_node):
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.sampler import ProbeOptions, Sampler

    pods = run_scenario(cri_node.run_pod)
    pods["shmfull"] = cri_node.run_pod("ml-team", "shmfull", [ContainerSpec("main", [
        "sh", "-c", "dd if=/dev/zero of=/dev/shm/batch bs=1M count=60 2>/dev/null; exec sleep 600"])])
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
        result = run_doctor(snap, sampler.engine, containers=names, previous=previous)
        yield {f.code + " " + f.container: f for f in result.findings}
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
