"""CgroupLocator: where the hierarchies are mounted (mountinfo) and what the kernel calls a cgroup directory,
wherever the tree is mounted. The agent in a container with the host's tree elsewhere runs in
test_serve_agent.py."""

from __future__ import annotations

from mltop.probes.cgroups import CgroupLocator, parse_v1_mounts

AGENT = "a" * 64
HELD = "b" * 64
# An agent container on a cgroup v1 host: the engine mounted the agent's own cgroups at /sys/fs/cgroup/<c>
# (hierarchy path /docker/<agent>), and `-v /sys/fs/cgroup:/host/cgroup:ro` brought the host's whole tree.
AGENT_MOUNTINFO = "\n".join([
    "600 580 0:140 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X",
    "610 600 0:143 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755",
    f"611 610 0:29 /docker/{AGENT} /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct",
    f"612 610 0:32 /docker/{AGENT} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory",
    "620 600 0:28 / /host/cgroup ro,relatime - tmpfs tmpfs rw,mode=755",
    "621 620 0:29 / /host/cgroup/cpu,cpuacct ro,relatime - cgroup cgroup rw,cpu,cpuacct",
    "622 620 0:32 / /host/cgroup/memory ro,relatime - cgroup cgroup rw,memory",
    "623 620 0:33 / /host/my\\040cgroups/pids ro,relatime - cgroup cgroup rw,pids",
])


def test_the_whole_hierarchy_wins_over_the_containers_own_sub_tree():
    mounts = parse_v1_mounts(AGENT_MOUNTINFO)
    assert mounts["memory"] == ("/host/cgroup/memory", "/")
    assert mounts["cpuacct"] == ("/host/cgroup/cpu,cpuacct", "/")
    assert mounts["pids"] == ("/host/my cgroups/pids", "/")  # mountinfo's octal escapes undone
    # Only the sub-tree is mounted: it is used, and knows what part of the hierarchy it shows.
    own = parse_v1_mounts("\n".join(AGENT_MOUNTINFO.splitlines()[:4]))
    assert own["memory"] == ("/sys/fs/cgroup/memory", f"/docker/{AGENT}")


def test_hierarchy_path_is_the_kernels_name_wherever_the_tree_is_mounted():
    v1 = CgroupLocator(1, v1_mounts=parse_v1_mounts(AGENT_MOUNTINFO))
    assert v1.hierarchy_path(f"/host/cgroup/memory/docker/{HELD}") == f"/docker/{HELD}"
    assert v1.hierarchy_path(f"/host/cgroup/cpu,cpuacct/docker/{HELD}") == f"/docker/{HELD}"
    assert v1.hierarchy_path("/host/cgroup/memory") == "/"
    assert v1.hierarchy_path(f"/sys/fs/cgroup/memory/docker/{HELD}") is None  # not a hierarchy it uses
    own = CgroupLocator(1, v1_mounts={"memory": ("/sys/fs/cgroup/memory", f"/docker/{AGENT}")})
    assert own.hierarchy_path("/sys/fs/cgroup/memory/sub") == f"/docker/{AGENT}/sub"
    v2 = CgroupLocator(2, root="/host/sys/fs/cgroup")
    scope = f"system.slice/docker-{HELD}.scope"
    assert v2.hierarchy_path(f"/host/sys/fs/cgroup/{scope}") == f"/{scope}"
    assert v2.hierarchy_path(f"/host/sys/fs/cgroupx/{scope}") is None


def test_paths_for_pid_join_the_kernels_name_to_the_mount(tmp_path, monkeypatch):
    import mltop.probes.cgroups as cgroups

    text = f"12:memory:/docker/{HELD}\n11:cpu,cpuacct:/docker/{HELD}\n10:pids:/system.slice/x\n0::/\n"
    monkeypatch.setattr(cgroups, "_read", lambda path, read=None: text)
    v1 = CgroupLocator(1, v1_mounts=parse_v1_mounts(AGENT_MOUNTINFO))
    paths = v1.paths_for_pid(1234)
    assert paths["memory"] == f"/host/cgroup/memory/docker/{HELD}"
    assert paths["cpuacct"] == paths["cpu"] == f"/host/cgroup/cpu,cpuacct/docker/{HELD}"
    assert paths["pids"] == "/host/my cgroups/pids/system.slice/x"
    # A sub-tree mount shows what is below it, under its own path, and nothing else.
    own = CgroupLocator(1, v1_mounts={"memory": ("/sys/fs/cgroup/memory", "/docker"),
                                      "pids": ("/sys/fs/cgroup/pids", "/docker")})
    assert own.paths_for_pid(1234) == {"memory": f"/sys/fs/cgroup/memory/{HELD}"}
