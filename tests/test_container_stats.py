"""probes/container_stats.py on cgroup v1 and v2 file layouts (the engine test, test_serve_exporters.py, covers
the host's own version against its real files): what each file gives, what is absent, what is carried."""

from __future__ import annotations

import os
from pathlib import Path

from mltop.probes.container_stats import read_container_stats

V2_CPU_STAT = "usage_usec 5000000\nuser_usec 3000000\nsystem_usec 2000000\nnr_periods 40\nnr_throttled 7\n" \
              "throttled_usec 350000\n"
V2_MEMORY_STAT = "anon 1048576\nfile 4194304\nkernel_stack 16384\nfile_mapped 8192\nshmem 0\ninactive_file 4096\n"


def write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def v2_files(tmp_path: Path, **extra: str) -> Path:
    cg = tmp_path / "v2"
    write(cg, {"cpu.stat": V2_CPU_STAT, "cpu.max": "50000 100000\n", "cpu.weight": "100\n",
               "memory.stat": V2_MEMORY_STAT, "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
               "memory.swap.current": "0\n", "memory.low": "67108864\n", **extra})
    return cg


def read(version: int, paths: dict[str, str], **kwargs):
    values = dict(net_pid=None, pids=[os.getpid()], usage_ns=5_000_000_000, memory_usage=6 << 20, tasks=4,
                  previous=None, idle=False, full=True)
    values.update(kwargs)
    return read_container_stats(version, paths, **values)


def test_v2_files_give_every_figure_and_a_missing_peak_is_none(tmp_path):
    s = read(2, {"unified": str(v2_files(tmp_path))})
    assert (s.cpu_user_seconds, s.cpu_system_seconds) == (3.0, 2.0)
    assert (s.cpu_cfs_periods, s.cpu_cfs_throttled_periods, s.cpu_cfs_throttled_seconds) == (40, 7, 0.35)
    assert (s.cpu_quota_us, s.cpu_period_us) == (50000, 100000)
    # cAdvisor maps cpu.weight [1, 10000] linearly onto shares [2, 262144] (convertCPUWeightToCPULimit): the default
    # weight 100 reads 2597, and docker's --cpu-shares 1024 (written as weight 39) reads 998.
    assert s.cpu_shares == 2 + 99 * 262142 // 9999 == 2597
    assert (s.memory_rss_bytes, s.memory_cache_bytes, s.memory_mapped_file_bytes) == (1048576, 4194304, 8192)
    assert (s.memory_swap_bytes, s.memory_failcnt, s.memory_reservation_bytes) == (0, 3, 64 << 20)
    assert s.memory_max_usage_bytes is None  # no memory.peak before kernel 5.19: absent, not 0
    assert (s.memory_usage_bytes, s.threads, s.processes) == (6 << 20, 4, 1)
    assert abs(s.file_descriptors - len(os.listdir("/proc/self/fd"))) <= 1  # (listdir holds one of its own)


def test_v2_unlimited_quota_and_no_swap_file(tmp_path):
    cg = v2_files(tmp_path, **{"cpu.max": "max 100000\n", "memory.low": "0\n"})
    os.remove(cg / "memory.swap.current")  # no swap accounting
    s = read(2, {"unified": str(cg)})
    assert (s.cpu_quota_us, s.cpu_period_us) == (None, 100000)
    assert s.memory_swap_bytes is None and s.memory_reservation_bytes is None


def test_v1_files_and_hierarchy_totals(tmp_path):
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = tmp_path / "cpu"
    mem = tmp_path / "memory"
    write(cpu, {"cpuacct.stat": f"user {3 * ticks}\nsystem {ticks}\n",
                "cpu.stat": "nr_periods 10\nnr_throttled 2\nthrottled_time 1500000000\n",
                "cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n", "cpu.shares": "512\n"})
    write(mem, {"memory.stat": "cache 1\nrss 2\nmapped_file 3\ntotal_cache 4096\ntotal_rss 8192\n"
                               "total_mapped_file 12288\n",  # no total_swap: no swap accounting
                "memory.failcnt": "5\n", "memory.max_usage_in_bytes": "999424\n",
                "memory.soft_limit_in_bytes": "9223372036854771712\n"})
    s = read(1, {"cpu": str(cpu), "cpuacct": str(cpu), "memory": str(mem)})
    assert (s.cpu_user_seconds, s.cpu_system_seconds) == (3.0, 1.0)
    assert (s.cpu_cfs_periods, s.cpu_cfs_throttled_periods, s.cpu_cfs_throttled_seconds) == (10, 2, 1.5)
    assert (s.cpu_quota_us, s.cpu_period_us, s.cpu_shares) == (None, 100000, 512)  # -1: no quota
    assert (s.memory_rss_bytes, s.memory_cache_bytes, s.memory_mapped_file_bytes) == (8192, 4096, 12288)
    assert s.memory_swap_bytes is None  # absent, not zero
    assert (s.memory_failcnt, s.memory_max_usage_bytes) == (5, 999424)
    assert s.memory_reservation_bytes is None  # the kernel's "unlimited"


def test_an_idle_container_carries_what_only_a_running_task_moves(tmp_path):
    cg = v2_files(tmp_path)
    first = read(2, {"unified": str(cg)})
    # The files move (they would not while nothing runs, but this shows what is read and what is carried).
    write(cg, {"cpu.stat": V2_CPU_STAT.replace("user_usec 3000000", "user_usec 9000000"),
               "memory.stat": V2_MEMORY_STAT.replace("anon 1048576", "anon 2097152")})
    idle = read(2, {"unified": str(cg)}, previous=first, idle=True, full=False)
    assert idle.cpu_user_seconds == 3.0  # CPU counter stood still: carried
    assert idle.memory_rss_bytes == 1048576  # usage stood still: memory.stat carried
    moved = read(2, {"unified": str(cg)}, previous=first, idle=False, full=False, memory_usage=7 << 20)
    assert moved.cpu_user_seconds == 9.0 and moved.memory_rss_bytes == 2097152
    assert moved.cpu_quota_us == 50000  # the spec is read on whole readings only, carried in between
