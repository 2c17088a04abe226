"""NCCL in the doctor: collective timeouts and NCCL errors in a rank's log, NCCL_SOCKET_IFNAME and NCCL_IB_DISABLE
against the container's interfaces and the host's HCAs; the log parser is linear and never crashes."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings, strategies as st

import builders as b
from conftest import wait_for

from mltop.diagnostics.checks import CheckContext, HostFacts, Thresholds
from mltop.diagnostics.checks.nccl import interface_matches
from mltop.diagnostics.doctor import judge, run_doctor
from mltop.diagnostics.nccl_log import LINE_CAP, parse_timeout, scan
from mltop.probes.fabric_records import IbPort

WATCHDOG = ("[rank3]:[E ProcessGroupNCCL.cpp:563] [Rank 3] Watchdog caught collective operation timeout: "
            "WorkNCCL(SeqNum=1234, OpType=ALLREDUCE, NumelIn=1048576, NumelOut=1048576, Timeout(ms)=600000) ran for "
            "600041 milliseconds before timing out.")
SYSTEM_ERROR = ("torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL."
                "cpp:1970, unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.19.3")
HARMLESS = ("gpu-1:77:77 [0] NCCL INFO Bootstrap : Using eth0:10.0.0.2<0>",
            "epoch 3 step 1200 loss 0.731 (a watchdog is a dog that watches)",
            "NCCL version 2.19.3+cuda12.3")


def _codes(c, logs=(), interfaces=None, infiniband=()):
    snap = b.replace(b.snapshot([c]), infiniband=tuple(infiniband))
    ctx = CheckContext(snapshot=snap, containers=(c,), logs={c.id: tuple(logs)}, host=HostFacts(),
                       thresholds=Thresholds(), interfaces={c.id: interfaces} if interfaces is not None else {})
    return {f.code: f for f in judge(ctx).findings if f.code.startswith("nccl.")}


def _env(name="rank3", **env):
    return b.container(name, config_overrides={"env": tuple(env.items())})


def test_watchdog_line_gives_collective_seq_and_timeout():
    t = parse_timeout(WATCHDOG)
    assert (t.rank, t.op, t.seq, t.timeout_ms, t.ran_for_ms, t.numel_in) == (3, "ALLREDUCE", 1234, 600000, 600041,
                                                                             1048576)


def test_nccl_timeout_fires_on_the_watchdog_line_and_names_what_timed_out():
    f = _codes(_env(), ["step 10", WATCHDOG])["nccl.timeout"]
    assert f.severity == "critical" and "ALLREDUCE SeqNum=1234" in f.title and "rank 3" in f.title
    assert "after 600 s" in f.title and "--stacks" in f.fix and "-e NCCL_DEBUG=INFO" in f.fix


def test_a_pod_rank_is_told_in_pod_spec_terms():
    from mltop.probes.model import KubernetesInfo

    pod = b.replace(_env(), kubernetes=KubernetesInfo("ml", "train-3", "uid-3", "main", "Guaranteed"),
                    runtime="containerd")
    fix = _codes(pod, [WATCHDOG])["nccl.timeout"].fix
    assert "containers: [{name: main, env: [{name: NCCL_DEBUG, value: 'INFO'}]}]" in fix and "docker" not in fix


def test_nccl_error_fires_on_unhandled_system_error_and_warns_on_nccl_warn_alone():
    f = _codes(_env(), [SYSTEM_ERROR])["nccl.error"]
    assert f.severity == "critical" and "unhandled system error" in f.title
    warn = _codes(_env(), ["gpu-1:77:90 [0] NCCL WARN NET/Socket : Connect to 10.0.0.9<41233> failed"])["nccl.error"]
    assert warn.severity == "warning"


def test_look_alike_lines_are_silent():
    assert _codes(_env(), HARMLESS) == {}


def test_socket_ifname_prefixes_exclusion_and_exact_match():
    have = ("lo", "eth0", "ib0")
    assert interface_matches("eth", have) == ("eth0",)
    assert interface_matches("=eth", have) == ()
    assert interface_matches("=eth0", have) == ("eth0",)
    assert interface_matches("^eth,lo", have) == ("ib0",)
    assert interface_matches("^=eth0", have) == ("lo", "ib0")
    assert interface_matches("bond0,ib", have) == ("ib0",)


def test_socket_ifname_missing_fires_only_when_nothing_matches():
    f = _codes(_env(NCCL_SOCKET_IFNAME="ib0"), interfaces=("lo", "eth0"))["nccl.socket_ifname_missing"]
    assert "names no interface" in f.title and "lo, eth0" in " ".join(f.evidence) and "-e NCCL_SOCKET_IFNAME=eth0" in f.fix
    assert "nccl.socket_ifname_missing" in _codes(_env(NCCL_SOCKET_IFNAME="^eth,lo"), interfaces=("lo", "eth0"))
    assert _codes(_env(NCCL_SOCKET_IFNAME="eth"), interfaces=("lo", "eth0")) == {}
    assert _codes(_env(NCCL_SOCKET_IFNAME="ib0"), interfaces=None) == {}  # not read: no judgement


def _active_hca(active=True):
    return IbPort("mlx5_0", 1, "ACTIVE" if active else "DOWN", 4 if active else 1, "LinkUp", 5, "400 Gb/sec (4X NDR)",
                  50_000_000_000, "InfiniBand")


def test_ib_disabled_fires_on_a_host_with_active_hcas_and_mentions_p2p():
    f = _codes(_env(NCCL_IB_DISABLE="1", NCCL_P2P_DISABLE="1"), infiniband=[_active_hca()])["nccl.ib_disabled"]
    assert "1 active" in f.title and any("NCCL_P2P_DISABLE=1" in e for e in f.evidence)
    assert _codes(_env(NCCL_IB_DISABLE="1"), infiniband=[_active_hca(False)]) == {}
    assert _codes(_env(NCCL_IB_DISABLE="1"), infiniband=[]) == {}
    assert _codes(_env(NCCL_IB_DISABLE="0"), infiniband=[_active_hca()]) == {}


# --------------------------------------------------------------------------- hostile text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("WorkNCL(=),SeqNum OpType [Rank3] 0123456789 ncclWARN\n"),
                        max_size=600), max_size=20))
def test_the_parser_never_crashes_on_any_text(lines):
    found = scan(lines)
    assert len(found.timeouts) <= 3 and len(found.errors) <= 6


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_any_text_around_the_watchdog_marker_parses_or_is_none(before, after):
    t = parse_timeout(before + "Watchdog caught collective operation timeout: WorkNCCL(" + after)
    assert t is not None and len(t.line) <= LINE_CAP
    assert t.seq is None or t.seq >= 0 and (t.op is None or len(t.op) <= 64)


def test_pathological_lines_are_bounded():
    bad = [WATCHDOG[:-60] + "=" * 1_000_000, "[Rank " * 200_000 + "Watchdog caught collective operation timeout",
           "WorkNCCL(" + "a=1," * 300_000, "NCCL WARN " * 100_000]
    started = time.perf_counter()
    found = scan(bad * 5)
    assert time.perf_counter() - started < 2.0  # (a generous budget: a backtracking parse takes minutes)
    assert all(len(t.line) <= LINE_CAP for t in found.timeouts)


# --------------------------------------------------------------------------- a real container


def test_doctor_on_a_real_rank_whose_log_holds_the_watchdog_line(containers, sampler):
    script = f"echo 'step 1 loss 2.0'; echo '{WATCHDOG}' >&2; sleep 300"
    c = containers.run(["sh", "-c", script], environment={"NCCL_SOCKET_IFNAME": "ib9", "RANK": "3"})
    wait_for(lambda: WATCHDOG.encode() in c.logs(), what="the watchdog line in the log")
    snap = sampler.sweep()
    result = run_doctor(snap, sampler.engine, containers=[c.name])
    found = {f.code: f for f in result.findings if f.container == c.name}
    assert "ALLREDUCE SeqNum=1234" in found["nccl.timeout"].title
    # the container has lo and eth0 in its own network namespace, no ib9
    missing = found["nccl.socket_ifname_missing"]
    assert any("eth0" in e and "/net/dev" in e for e in missing.evidence)
