"""Files kept open between sweeps (probes/openfiles.py): they read what a fresh open would, and they let go
of processes, cgroups and network namespaces that are gone. The engine tests restart and remove real
containers under a sampler."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from mltop.probes.openfiles import OpenFiles, read_whole
from mltop.probes.processes import read_stat
from mltop.probes.sampler import ProbeOptions, Sampler


def _open_fd_targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


def test_a_kept_file_reads_its_current_content(tmp_path):
    path = tmp_path / "counter"
    path.write_bytes(b"1\n")
    files = OpenFiles(budget=10)
    assert files.read(str(path)) == b"1\n"
    assert len(files) == 1
    with open(path, "r+b") as f:  # in place: the same inode, as a kernel file is
        f.write(b"22\n")
    assert files.read(str(path)) == b"22\n"
    assert len(files) == 1
    files.close()
    assert len(files) == 0


def test_a_long_file_is_read_whole(tmp_path):
    path = tmp_path / "long"
    content = b"".join(b"line %06d\n" % i for i in range(30000))  # 360 KB: several reads
    path.write_bytes(content)
    files = OpenFiles(budget=10)
    assert files.read(str(path)) == content
    assert files.read(str(path)) == content  # and again, from offset 0
    assert read_whole(str(path)) == content
    # a procfs seq_file longer than a page, compared with a plain read
    maps = files.read("/proc/self/mounts")
    assert maps.count(b"\n") == open("/proc/self/mounts", "rb").read().count(b"\n")
    files.close()


def test_an_exited_process_is_gone_even_if_its_pid_comes_back():
    child = subprocess.Popen([sys.executable, "-c", "import time; [sum(range(10**5)) for _ in iter(int, 1)]"])
    try:
        files = OpenFiles(budget=10)
        first = read_stat(child.pid, files.read)
        wait_for(lambda: read_stat(child.pid, files.read).cpu_ticks > first.cpu_ticks, timeout=10,
                 what="the busy child's CPU ticks to rise through the kept file")
        assert len(files) == 1
    finally:
        child.kill()
        child.wait()
    # the zombie is reaped: the kept descriptor names that process, not whoever gets its PID next
    assert read_stat(child.pid, files.read) is None
    assert f"/proc/{child.pid}/stat" not in files._fds
    files.close()


def test_files_not_read_in_a_sweep_are_closed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    files = OpenFiles(budget=10)
    files.begin_sweep()
    files.read(str(a))
    files.read(str(b))
    files.end_sweep()
    assert len(files) == 2
    files.begin_sweep()
    files.read(str(a))
    files.end_sweep()
    assert len(files) == 1
    assert not any(t.endswith("/b") and str(tmp_path) in t for t in _open_fd_targets())
    files.close()


def test_past_the_budget_files_are_opened_per_read(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"f{i}"
        p.write_bytes(str(i).encode())
        paths.append(str(p))
    files = OpenFiles(budget=2)
    assert [files.read(p) for p in paths] == [b"0", b"1", b"2", b"3", b"4"]
    assert len(files) == 2
    files.close()
    with pytest.raises(FileNotFoundError):
        OpenFiles(budget=2).read(str(tmp_path / "missing"))


def test_the_open_file_limit_is_raised_within_the_hard_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = OpenFiles().budget
    new_soft, new_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert new_hard == hard and new_soft >= soft
    assert 0 < budget < new_soft  # some descriptors are always left for everything else


# ----------------------------------------------------------------------------- with a real engine


def _container_fds(container_id: str, pid: int | None) -> list[str]:
    return [t for t in _open_fd_targets() if container_id in t or (pid and t.startswith(f"/proc/{pid}/"))]


def test_a_restarted_container_is_measured_through_its_new_cgroup(containers):
    sampler = Sampler(ProbeOptions(nvml=False))
    try:
        c = containers.run(["sh", "-c", "while :; do :; done"])
        sampler.sweep()
        time.sleep(0.5)
        before = sampler.sweep().container(c.id)
        assert before.cpu_percent > 20
        assert _container_fds(c.id, before.pid), "the sweep keeps the container's files open"
        c.restart(timeout=0)
        c.reload()
        wait_for(lambda: sampler.sweep().container(c.id).pid == c.attrs["State"]["Pid"], timeout=15,
                 what="the sampler to see the new PID")
        time.sleep(0.5)
        after = sampler.sweep().container(c.id)
        assert after.cpu_percent > 20, "the new cgroup's counters are read, not the removed one's"
        assert after.memory_bytes and after.processes
        assert not [t for t in _open_fd_targets() if t.startswith(f"/proc/{before.pid}/net/")], \
            "the old PID's network namespace is let go at once"
        for _ in range(2 * sampler._files.keep_unread + 1):
            sampler.sweep()
        assert not [t for t in _open_fd_targets() if t.startswith(f"/proc/{before.pid}/")], \
            "and its other files a few sweeps later"
    finally:
        sampler.close()


def test_a_removed_container_lets_go_of_its_files(containers):
    sampler = Sampler(ProbeOptions(nvml=False))
    try:
        keep = containers.run(["sleep", "300"])
        doomed = containers.run(["sleep", "300"])
        pid = sampler.sweep().container(doomed.id).pid
        assert _container_fds(doomed.id, pid)
        doomed.remove(force=True)
        wait_for(lambda: sampler.sweep().container(doomed.id) is None, timeout=10, what="the removal seen")
        sampler.sweep()
        assert not [t for t in _open_fd_targets() if t.startswith(f"/proc/{pid}/net/")]
        for _ in range(2 * sampler._files.keep_unread + 1):
            sampler.sweep()
        assert _container_fds(doomed.id, pid) == []
        assert sampler.sweep().container(keep.id).memory_bytes
    finally:
        sampler.close()
    assert _container_fds(keep.id, None) == [], "close() closes every kept file"


def _fd_table_size(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("FDSize:"))


def test_the_descriptor_table_is_grown_in_one_step_and_nothing_open_is_touched():
    """The kernel doubles the table as files are opened, and in a process with threads each doubling waits
    for an RCU grace period; grow_descriptor_table sizes it once. Run in a fresh interpreter: this one's
    table was grown by earlier tests."""
    script = """
import os, sys
from mltop.probes import openfiles

def table():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("FDSize:"))

before = table()
keep = os.open("/dev/null", os.O_RDONLY)
openfiles.prepare(3000)
after = table()
os.fstat(keep)  # still open: nothing was closed or replaced
fresh = os.open("/dev/null", os.O_RDONLY)
print(before, after, fresh - keep)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    before, after, gap = map(int, out.stdout.split())
    assert before < 3000 <= after <= 8192
    assert gap == 1, "the next descriptor is still the lowest free one: the probe descriptors were closed"


def test_reserve_grows_the_table_for_the_files_a_sweep_will_keep():
    files = OpenFiles(budget=20_000)
    try:
        files.reserve(5000)
        assert _fd_table_size() >= 5000
    finally:
        files.close()
