"""probes/cri/logs.py: the kubelet's CRI log format, partial lines joined, rotation followed."""

from __future__ import annotations

import os

from mltop.probes.cri.logs import LogFollower, LogLine, parse_record, read_log

T1, T2, T3 = "2026-12-02T05:00:00.000000001Z", "2026-12-02T05:00:01.5Z", "2026-12-02T05:00:02Z"


def test_records_and_partials(tmp_path):
    path = tmp_path / "0.log"
    path.write_text(
        f"{T1} stdout F epoch 1 loss 0.5\n"
        f"{T2} stderr P Traceback (most recent \n"
        f"{T2} stdout F interleaved on stdout\n"
        f"{T2} stderr P call last): [bold]\n"
        f"{T3} stderr F  RuntimeError: CUDA out of memory\n"
        f"{T3} stdout F \n"
        "not a record\n"
    )
    assert read_log(str(path)) == [
        LogLine(T1, "stdout", "epoch 1 loss 0.5"),
        LogLine(T2, "stdout", "interleaved on stdout"),
        LogLine(T2, "stderr", "Traceback (most recent call last): [bold] RuntimeError: CUDA out of memory"),
        LogLine(T3, "stdout", ""),
    ]
    assert read_log(str(path), tail=1) == [LogLine(T3, "stdout", "")]
    assert parse_record(f"{T1} stdout F:x tagged") == (T1, "stdout", False, "tagged")


def test_tail_reads_across_the_newest_rotation(tmp_path):
    path = tmp_path / "0.log"
    (tmp_path / "0.log.20261202-045900").write_text(f"{T1} stdout F older\n")
    (tmp_path / "0.log.20261202-045800.gz").write_bytes(b"\x1f\x8b not text")
    path.write_text(f"{T2} stdout F newer\n")
    assert [line.text for line in read_log(str(path))] == ["older", "newer"]


def test_follower_joins_partials_and_follows_rotation(tmp_path):
    path = tmp_path / "0.log"
    path.write_text(f"{T1} stdout F before the follower\n")
    follower = LogFollower(str(path))
    assert follower.poll() == []
    with open(path, "a") as f:
        f.write(f"{T2} stdout P half \n{T2} stdout F a line\n{T3} stdout F being wr")
    assert [line.text for line in follower.poll()] == ["half a line"]
    with open(path, "a") as f:
        f.write("itten\n")
    assert [line.text for line in follower.poll()] == ["being written"]
    # the kubelet rotates: 0.log is renamed, a new 0.log starts; a last line lands in the old one first
    with open(path, "a") as f:
        f.write(f"{T3} stdout F last of the old file\n")
    os.rename(path, tmp_path / "0.log.20261202-050003")
    path.write_text(f"{T3} stderr F first of the new file\n")
    assert [line.text for line in follower.poll()] == ["last of the old file", "first of the new file"]
    follower.close()
