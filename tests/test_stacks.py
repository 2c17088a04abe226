"""`mltop doctor --stacks`: four real torch.distributed ranks (gloo, one container each, host network), one of
them sleeping before its all_reduce: mltop names that rank and shows the other three waiting in all_reduce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import wait_for
from fixtures_torch import TORCH_IN_CONTAINER, _libstdcxx
from serve_helpers import free_port

from mltop.diagnostics.actions.stacks import ProcessStack, group, parse_main_thread

REPO = Path(__file__).resolve().parent.parent

DUMP = '''Process 4242: python3 /rank.py
Python v3.11.2 (/usr/local/bin/python3.11)

Thread 4242 (idle): "MainThread"
    all_reduce (torch/distributed/distributed_c10d.py:2050)
    wrapper (torch/distributed/c10d_logger.py:{line})
    <module> (/rank.py:14)
Thread 4250 (idle): "Thread-1 (_worker)"
    wait (threading.py:320)
'''

RANK_SCRIPT = r'''
import datetime, os, sys, time
import torch, torch.distributed as dist
rank = int(os.environ["RANK"])
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=900))
print("joined", rank, flush=True)
if rank == int(os.environ["SLOW_RANK"]):
    time.sleep(900)
print("entering all_reduce", rank, flush=True)
dist.all_reduce(torch.ones(4))
print("done", rank, flush=True)
'''


def test_line_numbers_do_not_split_a_group_and_the_main_thread_is_compared():
    a = parse_main_thread(DUMP.format(line=75))
    assert a == (("all_reduce", "torch/distributed/distributed_c10d.py"), ("wrapper", "torch/distributed/c10d_logger.py"),
                 ("<module>", "/rank.py"))
    b = parse_main_thread(DUMP.format(line=80))
    slow = (("<module>", "/rank.py"),)
    report = group([ProcessStack("r0", 1, "0", a), ProcessStack("r1", 2, "1", b), ProcessStack("r2", 3, "2", slow)])
    assert [s.rank for s in report.outliers] == ["2"] and len(report.groups[0].members) == 2


def test_a_hostile_dump_is_parsed_in_bounded_time_and_frames():
    hostile = 'Thread 1 (idle): "MainThread"\n' + ("    f (" + "(" * 100_000 + ":1)\n") * 20 + "    g (x.py:1)\n" * 100_000
    started = time.perf_counter()
    frames = parse_main_thread(hostile)
    assert time.perf_counter() - started < 5.0 and len(frames) == 256 and all(len(f) <= 400 for _, f in frames)


def test_a_failed_dump_is_listed_not_grouped():
    report = group([ProcessStack("r0", 1, "0", (), error="py-spy was refused")])
    assert report.groups == () and report.failed[0].error == "py-spy was refused"


def test_doctor_stacks_names_the_rank_that_never_reached_all_reduce(containers, cpu_torch, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    volumes = {str(cpu_torch): {"bind": TORCH_IN_CONTAINER, "mode": "ro"}, str(script): {"bind": "/rank.py", "mode": "ro"}}
    lib = _libstdcxx()
    if lib:
        volumes[lib] = {"bind": "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "mode": "ro"}
    port, prefix = free_port(), f"mltop-test-stacks-{uuid.uuid4().hex[:6]}"
    ranks = []
    for rank in range(4):
        env = {"PYTHONPATH": TORCH_IN_CONTAINER, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "4", "RANK": str(rank), "SLOW_RANK": "2", "GLOO_SOCKET_IFNAME": "lo",
               "OMP_NUM_THREADS": "1"}
        ranks.append(containers.run(["python3", "-u", "/rank.py"], image="python", name=f"{prefix}-{rank}",
                                    network_mode="host", volumes=volumes, environment=env))
    for rank, c in enumerate(ranks):  # on a loaded 2-core machine importing torch four times takes a while
        wanted = b"joined" if rank == 2 else b"entering all_reduce"
        wait_for(lambda c=c, w=wanted: w in c.logs(), timeout=300, what=f"rank {rank} to reach its collective")
    time.sleep(2)  # (the three are inside all_reduce a moment after saying so)
    done = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "doctor", "--stacks", "--json", "--no-nvml",
                           "--cri-endpoint", "none", *(c.name for c in ranks)],
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [o["rank"] for o in report["outliers"]] == ["2"], report
    (waiting, *_) = report["groups"]
    assert sorted(m["rank"] for m in waiting["members"]) == ["0", "1", "3"]
    assert waiting["frames"][0]["function"] == "all_reduce" or any(f["function"] == "all_reduce"
                                                                   for f in waiting["frames"][:3])
    assert not any(f["function"] == "all_reduce" for g in report["groups"][1:] for f in g["frames"])
    text = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "doctor", "--stacks", "--no-nvml",
                           "--cri-endpoint", "none", *(c.name for c in ranks)],
                          capture_output=True, text=True, timeout=240, cwd=REPO).stdout
    assert text.startswith("rank 2 differ") and "the other 3 (rank 0, rank 1, rank 3) wait in" in text, text
    # the dashboard's `K` (the `stacks` action) on one rank finds the other ranks of its job by MASTER_ADDR/PORT
    action = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "run", "stacks", ranks[0].name, "--no-nvml",
                             "--cri-endpoint", "none"], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert "rank 2 differ" in action.stdout and "the other 3 (rank 0, rank 1, rank 3) wait in" in action.stdout, \
        action.stdout + action.stderr


async def test_dashboard_key_groups_the_ranks_of_the_selected_containers_job(containers):
    """`K` on one of two containers of one job (the same MASTER_ADDR/MASTER_PORT): both are dumped and grouped."""
    from test_tui_actions import SIZE, open_action, select
    from conftest import until
    from test_tui import make_app

    port = str(free_port())
    spin = "import time\ndef mltop_rank_wait():\n    while True: time.sleep(0.1)\nmltop_rank_wait()"
    job = [containers.run(["python3", "-c", spin], image="python",
                          environment={"MASTER_ADDR": "10.9.9.9", "MASTER_PORT": port, "RANK": str(r)})
           for r in range(2)]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, job[0])
        await until(pilot, lambda: all(app.snapshot.container(c.id).processes for c in job), what="their processes")
        screen = await open_action(pilot, app, "K")
        await until(pilot, lambda: screen.result is not None, timeout=90, what="the stacks")
        assert screen.status == "ok", screen.explanation_text
        text = "\n".join(screen.lines)
        assert "all 2 Python processes have the same stack" in text and "mltop_rank_wait" in text, text
        assert job[1].name in screen.lines[0]
