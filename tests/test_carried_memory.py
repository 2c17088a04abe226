"""A carried figure never hides a change that matters (issue 18, point 3), on the real engine.

A container pinned at its memory limit turns page cache into anonymous memory at the same usage: the working
set (usage minus inactive file) climbs toward the OOM kill while the usage does not move. mltop must follow the
kernel's working set at every sweep, and may carry memory.stat only for a container that ran no task.
"""

from __future__ import annotations

import os
import time

from conftest import wait_for
from mltop.probes.cgroups import detect_cgroup_version
from mltop.probes.sampler import ProbeOptions, Sampler

MiB = 1 << 20
LIMIT = 64 * MiB
CHUNKS, PACE = 36, 0.25  # 36 MiB of anonymous memory at 4 MiB/s, sampled about every 0.3 s

# Fill the page cache to near the limit with a file in the container's own filesystem, wait on a fifo (no CPU
# meanwhile), then allocate anonymous memory 1 MiB at a time: the kernel evicts the cache at the same usage.
PROGRAM = r"""
import os, time
with open("/cache.bin", "wb") as f:
    for _ in range(56):
        f.write(b"\1" * (1 << 20))
os.mkfifo("/tmp/go")
open("/tmp/go").read()
chunks = []
for _ in range(CHUNKS):
    chunks.append(bytearray(b"\2" * (1 << 20)))
    time.sleep(PACE)
time.sleep(600)
"""


def _memory_dir(pid: int) -> str:
    """The container's memory cgroup directory, from /proc/<pid>/cgroup (not through mltop's locator)."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    if detect_cgroup_version() == 2:
        (path,) = [p for _, controllers, p in lines if controllers == ""]
        return "/sys/fs/cgroup" + path
    (path,) = [p for _, controllers, p in lines if "memory" in controllers.split(",")]
    return "/sys/fs/cgroup/memory" + path


def _kernel(directory: str) -> tuple[int, int]:
    """(usage, working set) as the kernel's files say now: usage minus inactive file, as docker stats shows."""
    v2 = os.path.exists(f"{directory}/memory.current")
    with open(f"{directory}/{'memory.current' if v2 else 'memory.usage_in_bytes'}") as f:
        usage = int(f.read())
    with open(f"{directory}/memory.stat") as f:
        stat = dict(line.split() for line in f)
    inactive = int(stat["inactive_file" if v2 else "total_inactive_file"])
    return usage, usage - inactive if inactive < usage else usage


def test_a_container_at_its_memory_limit_shows_the_kernels_working_set_at_every_sweep(containers):
    program = PROGRAM.replace("CHUNKS", str(CHUNKS)).replace("PACE", str(PACE))
    c = containers.run(["python3", "-c", program], image="python", mem_limit="64m", memswap_limit="64m")
    wait_for(lambda: c.exec_run(["test", "-p", "/tmp/go"]).exit_code == 0, timeout=60, what="the cache filled")
    c.reload()
    directory = _memory_dir(c.attrs["State"]["Pid"])
    assert _kernel(directory)[0] > LIMIT - 16 * MiB, "the page cache fills the container up to its limit"

    sampler = Sampler(ProbeOptions(nvml=False))
    try:
        # Idle (blocked on the fifo): memory.stat is carried between whole readings, and the sample says so.
        idle = [sampler.sweep().container(c.id) for _ in range(4)]
        assert any("memory_bytes" in s.carried for s in idle), [s.carried for s in idle]
        assert all("cpu_percent" not in s.carried for s in idle)

        c.exec_run(["sh", "-c", "echo > /tmp/go"], detach=True)
        seen = []  # (kernel before, mltop, kernel after, usage before, usage after, carried)
        deadline = time.monotonic() + CHUNKS * PACE + 1.0
        while time.monotonic() < deadline:
            usage_before, before = _kernel(directory)
            sample = sampler.sweep().container(c.id)
            usage_after, after = _kernel(directory)
            seen.append((before, sample.memory_bytes, after, usage_before, usage_after, sample.carried,
                         sample.cpu_percent))
            time.sleep(0.3)
    finally:
        sampler.close()

    table = "\n".join(f"kernel {b / MiB:6.1f} .. {a / MiB:6.1f} MiB, mltop {m / MiB:6.1f} MiB, usage "
                      f"{ub / MiB:6.2f} -> {ua / MiB:6.2f} MiB, cpu {cpu}, carried {sorted(car)}"
                      for b, m, a, ub, ua, car, cpu in seen)
    grew = seen[-1][2] - seen[0][0]
    assert grew > 20 * MiB, f"the working set climbed:\n{table}"
    assert all(usage > LIMIT - 6 * MiB for *_, usage, _, _ in seen), f"at the limit all along:\n{table}"
    slack = MiB // 2  # the kernel is read a moment before and after mltop's own reading
    for before, mltop, after, *_ in seen:
        assert min(before, after) - slack <= mltop <= max(before, after) + slack, \
            f"mltop's working set follows the kernel's within one sweep:\n{table}"
    busy = [car for *_, car, cpu in seen if cpu is not None and cpu > 1]
    assert busy and not any("memory_bytes" in car for car in busy), table
