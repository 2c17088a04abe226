"""Pods on a real containerd with its CRI plugin (tests/cri_harness.py), seen by mltop's probes."""

from __future__ import annotations

import os

from cri_harness import ContainerSpec

from mltop.probes.identity import CgroupIdentity, identity_of_pid


def test_harness_pods_look_like_the_kubelets(cri_pods):
    """The harness's pods carry the kubelet's labels and cgroup layout, so what mltop reads of them is what it
    reads on a node: the identity of a pod container's process names the pod and its QoS class."""
    node = cri_pods.node
    assert node.version.runtime_name == "containerd" and node.version.runtime_api_version == "v1"
    pod = cri_pods.run("ml-team", "trainer", [ContainerSpec("main", ["sleep", "300"],
                                                               memory_limit_bytes=64 << 20,
                                                               cpu_quota_us=50_000)], qos="Guaranteed")
    cid = pod.containers["main"]
    pid = node.init_pid(cid)
    assert identity_of_pid(pid) == CgroupIdentity(None, cid, pod.uid, "Guaranteed")
    listed = {c.id: c for c in node.client.list_containers()}
    assert listed[cid].labels["io.kubernetes.pod.namespace"] == "ml-team"
    assert listed[cid].metadata.name == "main"
    assert pod.sandbox_id not in listed  # CRI lists sandboxes apart from containers
    with open(f"/proc/{pid}/cgroup") as f:
        assert f"/kubepods/pod{pod.uid}/{cid}" in f.read()
    node.remove_pod(pod)
    assert not os.path.exists(f"/proc/{pid}") or identity_of_pid(pid) is None
    assert cid not in {c.id for c in node.client.list_containers()}
