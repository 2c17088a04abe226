"""Run a test's busy container where the shared machine's load cannot starve it.

With the cgroupfs driver a container's cgroup sits under docker/, which competes for the CPU as one group, all
containers together, with each process at the top of the tree: on a machine busy with other work a busy loop
gets a fraction of what it asks, and a test of CPU % measures the machine's load instead of mltop. At the top
of the tree with the most CPU shares it gets what it asks (a CPU quota still caps it). Other drivers (systemd)
name a slice as the parent: the container stays where the engine puts it.

Not for a container whose processes a test expects on a GPU: its cgroup path ("/<id>") no longer names the
runtime, so NVML's PIDs are not attributed to it.
"""

from __future__ import annotations


def steady_cpu(docker_client) -> dict:
    """Keyword arguments for containers.run(...) that give a busy container the CPU it asks for."""
    if docker_client.info().get("CgroupDriver") == "cgroupfs":
        return dict(cgroup_parent="/", cpu_shares=262144)
    return {}
