"""Regenerate screenshots/*.svg from the real app: `python tests/screenshots.py`.

Starts a few demo containers on the local engine (a training job, an inference server, a notebook, a
job the OOM killer stopped), builds the test suite's simulated libnvidia-ml.so.1 with a scenario whose
GPU processes are the demo containers' real host PIDs, runs the dashboard headless against both, and
saves what it shows: the main dashboard, the GPU panel, a container's detail with its graphs, a log, the
diagnostics view (`d`), a py-spy dump (`p`), `mltop fleet` over three agents scraped by a real
Prometheus, and a Kubernetes node (pods in a private containerd, two of them time-sliced on one GPU, a
crash-looping job) with its diagnosis. The GPU figures are the simulation's, not a real GPU's. Not a test (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import re
import sys
import tempfile
import time

__test__ = False

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from fakenvml import SCENARIO_ENV, FakeGpu, FakeProcess, FakeScenario, build_fake_nvml, write_scenario  # noqa: E402

LABEL = "mltop-screenshots"
SIZE = (120, 36)

TRAIN_LOG = (
    "i=0; echo 'loading checkpoint /ckpt/llama-7b (13.5 GB)'; echo 'world size 1, bf16, batch 16'; "
    "while :; do i=$((i+1)); "
    "echo \"epoch 3 step $((1200+i)) loss 1.$((90 - i % 40)) lr 3.0e-04 tok/s 3$((i % 9))12 gpu_mem 41.2G\"; "
    "if [ $((i % 7)) = 0 ]; then echo \"eval step $((1200+i)): val_loss 1.8$((i % 10)) ppl 6.$((i % 9))\"; fi; "
    "sleep 0.4; done"
)
INFER_LOG = (
    "i=0; while :; do i=$((i+1)); "
    "echo \"INFO 127.0.0.1 POST /v1/completions 200 $((40 + i % 60)) ms tokens=$((100 + i % 300))\"; "
    "sleep 0.7; done"
)


def start_demo(client) -> dict:
    for old in client.containers.list(all=True, filters={"label": LABEL}):
        old.remove(force=True)
    busybox, python = "mltop-test/busybox:1", "mltop-test/python:1"
    labels = {LABEL: "1"}
    run = client.containers.run
    demo = {
        "train": run(busybox, ["sh", "-c", TRAIN_LOG + " & while :; do :; done"], name="demo-train-llama",
                     detach=True, labels={**labels, "team": "research"}, nano_cpus=800_000_000,
                     shm_size="16g", ipc_mode="private",
                     environment={"NCCL_DEBUG": "WARN", "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz123456",
                                  "CUDA_VISIBLE_DEVICES": "0"}),
        "infer": run(busybox, ["sh", "-c", INFER_LOG], name="demo-infer-api", detach=True, labels=labels,
                     mem_limit="2g", nano_cpus=2_000_000_000),
        # a script over several lines, as `python3 -c` often gets: the tables show it on one line (↵)
        "notebook": run(python, ["python3", "-c", "import time\nx = bytearray(120 << 20)\nwhile True:\n"
                                                  "    time.sleep(60)"],
                        name="demo-notebook", detach=True, labels=labels, mem_limit="4g"),
        "oom": run(python, ["python3", "-c", "b = bytearray(1 << 30)"], name="demo-preprocess", detach=True,
                   labels=labels, mem_limit="256m", memswap_limit="256m"),
    }
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for c in demo.values():
            c.reload()
        if demo["oom"].status == "exited" and all(demo[k].status == "running" for k in ("train", "infer", "notebook")):
            return demo
        time.sleep(0.2)
    raise RuntimeError("the demo containers did not reach their states")


def write_gpu_scenario(path: str, demo: dict) -> None:
    pid = {name: c.attrs["State"]["Pid"] for name, c in demo.items() if c.status == "running"}
    write_scenario(path, FakeScenario(gpus=[
        # Curves (one value every step_ms, cycling), so the graphs show what a training job does:
        # busy steps with a dip at each eval, the allocator's memory moving with them.
        FakeGpu(uuid="GPU-5a7c1e2b-0000-4000-8000-000000000000", util=TRAIN_UTIL, mem_util=61,
                mem_used=TRAIN_MEM, step_ms=500, temp=74, power_mw=512_000, clocks_event=0x4,
                processes=[FakeProcess(pid["train"], used_memory=41 << 30, sm=84)]),
        FakeGpu(uuid="GPU-5a7c1e2b-0000-4000-8000-000000000001", util=INFER_UTIL, mem_util=9, mem_used=(85 << 30) // 10,
                step_ms=500,
                temp=51, power_mw=190_000, pci="00000000:5E:00.0",
                processes=[FakeProcess(pid["infer"], used_memory=8 << 30, sm=21)]),
    ]))


# The simulated library cycles through at most 32 values.
TRAIN_UTIL = [88, 92, 95, 90, 93, 96, 91, 89, 94, 41] * 3
TRAIN_MEM = [(v * (1 << 30)) // 100 for v in (4110, 4150, 4180, 4190, 4190, 4170, 4190, 4195, 4185, 4120) * 3]
INFER_UTIL = [12, 30, 23, 45, 18, 9, 27, 52, 33, 15, 22, 38, 19, 26, 48, 31, 11, 24, 36, 20]


# A run of text that begins with spaces: some SVG renderers (rsvg-convert, image viewers built on it) drop the
# leading spaces of a <text> element and draw `memory 640K  no limit` as `memory 640Kno limit`.
_LEADING_SPACES = re.compile(r'(<text [^>]*?x=")([\d.]+)("[^>]*?textLength=")([\d.]+)("[^>]*>)((?:&#160;)+)([^<]+)</text>')


def keep_leading_spaces(svg: str) -> str:
    """Start each such run at its first visible character instead: the same picture in every renderer."""
    def move(m: re.Match) -> str:
        spaces = m.group(6).count("&#160;")
        cell = float(m.group(4)) / (spaces + len(html.unescape(m.group(7))))
        x, length = float(m.group(2)) + spaces * cell, float(m.group(4)) - spaces * cell
        return f"{m.group(1)}{x:g}{m.group(3)}{length:g}{m.group(5)}{m.group(7)}</text>"

    return _LEADING_SPACES.sub(move, svg)


def save_svg(app, out_dir: str, name: str) -> str:
    """What the app shows now, as out_dir/<name>.svg; its path."""
    path = os.path.join(out_dir, f"{name}.svg")
    with open(path, "w", encoding="utf-8") as f:
        f.write(keep_leading_spaces(app.export_screenshot()))
    return path


async def capture(out_dir: str, lib: str, demo: dict, history_s: float) -> list[str]:
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.logs import LogPane
    from mltop.tui.screens.actions import ActionScreen
    from mltop.tui.screens.diagnostics import DiagnosticsScreen

    app = MltopApp(nvml_lib=lib, interval=0.5)
    saved = []

    def save(name: str) -> None:
        saved.append(save_svg(app, out_dir, name))

    async with app.run_test(size=SIZE) as pilot:
        async def until(predicate, timeout=30.0):
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise RuntimeError("timed out")
                await pilot.pause(0.1)

        await until(lambda: app.snapshot is not None and all(
            app.snapshot.container(c.id) is not None for c in demo.values()))
        screen = app.screen
        screen.sort_column = "gpu_mem"
        await until(lambda: len(app.history.container(demo["train"].id, "cpu_percent")) >= history_s * 2,
                    timeout=history_s + 30)
        screen.table.move_to_key(demo["train"].id)
        await pilot.pause(0.6)
        if any(not c.name.startswith("demo-") for c in app.snapshot.containers):
            # a shared engine (tests of another checkout running): show only the demo
            print("  other containers on this engine: filtering the dashboard to demo-")
            await pilot.press("slash", *"demo", "minus", "enter")
            await pilot.pause(0.6)
        save("dashboard")

        await pilot.press("g")
        await pilot.pause(0.6)
        save("gpu-panel")
        await pilot.press("escape")

        await pilot.press("enter")
        await until(lambda: len(app.screen.query_one(LogPane).lines) > 5)
        await pilot.pause(0.6)
        save("container-detail")
        await pilot.press("escape")

        await pilot.press("l")
        await until(lambda: len(app.screen.query_one(LogPane).lines) > 20)
        await pilot.press("slash", "e", "v", "a", "l", "enter")
        await pilot.pause(0.6)
        save("logs")
        await pilot.press("escape", "escape")

        await until(lambda: screen.table.marker(demo["oom"].id) == "critical")  # the background doctor
        screen.table.move_to_key(demo["oom"].id)
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, DiagnosticsScreen) and app.screen.result is not None)
        await pilot.pause(0.6)
        save("diagnostics")
        await pilot.press("escape")

        screen.table.move_to_key(demo["notebook"].id)
        await pilot.pause(0.3)
        await pilot.press("p")
        await until(lambda: isinstance(app.screen, ActionScreen) and app.screen.result is not None)
        await pilot.pause(0.6)
        save("action-py-spy")
    return saved


async def capture_fleet(out_dir: str, lib: str, scenario: str, work: str) -> list[str]:
    """`mltop fleet` over three agents on this machine (each its own --node-name and simulated GPUs: the demo's,
    one with an Xid 79 and ECC errors, one idle), scraped by a real Prometheus: the hosts and the findings."""
    from pathlib import Path

    from fakenvml import HEALTHY, FakeXid
    from serve_helpers import PrometheusServer, ServeProcess

    from mltop.probes.fleet import FleetReader
    from mltop.probes.prometheus_api import PrometheusClient
    from mltop.tui.fleet.app import FindingsScreen, FleetApp, HostsScreen

    sick = os.path.join(work, "sick.txt")
    write_scenario(sick, FakeScenario(gpus=[FakeGpu(uuid="GPU-5c0b0000-0000-0000-0000-000000000000", util=0,
                                                    health={**HEALTHY, "ecc_vol_unc": 3, "ecc_agg_unc": 3})],
                                      xids=[FakeXid(gpu=0, code=79, at=1.0)]))
    idle = os.path.join(work, "idle.txt")
    write_scenario(idle, FakeScenario(gpus=[FakeGpu(uuid="GPU-1d1e0000-0000-0000-0000-000000000000", util=3)]))
    agents = [ServeProcess("--interval", "1", "--doctor-interval", "2", "--no-record", "--nvml-lib", lib,
                           "--node-name", name, env={SCENARIO_ENV: path})
              for name, path in (("gpu-node-01", scenario), ("gpu-node-02", sick), ("gpu-node-03", idle))]
    prometheus = None
    saved = []
    try:
        for agent in agents:
            agent.wait_healthy()
        prometheus = PrometheusServer(Path(work), [f"127.0.0.1:{a.port}" for a in agents])
        prometheus.wait_for("count(mltop_findings) >= 9", timeout=60, what="every agent's doctor")
        prometheus.wait_for('mltop_finding{code="gpu.xid"}', timeout=60, what="the Xid finding")
        app = FleetApp(FleetReader(PrometheusClient(prometheus.url)), refresh_s=2)
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(200):
                if isinstance(app.screen, HostsScreen) and app.screen.table.row_count == 3:
                    break
                await pilot.pause(0.1)
            await pilot.pause(0.5)
            for name, key, screen_class in (("fleet-hosts", None, HostsScreen),
                                            ("fleet-findings", "f", FindingsScreen)):
                if key:
                    await pilot.press(key)
                    await pilot.pause(0.8)
                assert isinstance(app.screen, screen_class)
                saved.append(save_svg(app, out_dir, name))
    finally:
        if prometheus is not None:
            prometheus.stop()
        for agent in agents:
            agent.stop()
    return saved


SERVE_LOG = ("i=0; while :; do i=$((i+1)); echo \"INFO POST /v1/embeddings 200 $((8 + i % 20)) ms batch=$((1 + i % 32))\"; "
             "sleep 0.9; done")
TOKENIZE = ("echo 'tokenizing shard 00042 of /data/c4-en'; "
            "echo 'FileNotFoundError: [Errno 2] No such file or directory: /data/c4-en/shard-00042.json.gz' >&2; exit 1")


async def capture_pods(out_dir: str, lib: str, work: str) -> list[str]:
    """A Kubernetes node: pods in a private containerd with CRI (tests/cri_harness.py), the GPUs
    the kubelet gave them (the tests' pod-resources server), two serving pods time-sliced on one GPU, and a
    crash-looping job; the dashboard grouped by pod (`P`), and the crash loop's diagnosis (`d`)."""
    import subprocess

    from cri_harness import PAUSE_IMAGE, ContainerSpec, CriNode
    from pod_resources_server import PodResourcesServer

    from mltop.tui.app import MltopApp
    from mltop.tui.screens.diagnostics import DiagnosticsScreen

    subprocess.run(["docker", "build", "-q", "-t", PAUSE_IMAGE, "-"], check=True, capture_output=True,
                   input=b'FROM mltop-test/busybox:1\nCMD ["sleep", "2147483647"]\n')
    node = CriNode()
    kubelet = PodResourcesServer()
    pods = {}
    saved = []
    gpu = [f"GPU-7b3d{i}000-0000-4000-8000-000000000000" for i in range(3)]
    try:
        node.start()
        busy = ["sh", "-c", TRAIN_LOG + " & while :; do :; done"]
        pods["train0"] = node.run_pod("research", "llama-train-0", [
            ContainerSpec("trainer", busy, cpu_quota_us=80_000, shm_bytes=1 << 30),
            ContainerSpec("loader", ["sleep", "3600"], memory_limit_bytes=2 << 30)], qos="Burstable",
            runtime_handler="nvidia", labels={"app": "llama-train", "team": "research"})
        pods["train1"] = node.run_pod("research", "llama-train-1", [
            ContainerSpec("trainer", busy, cpu_quota_us=80_000, shm_bytes=1 << 30)], runtime_handler="nvidia",
            labels={"app": "llama-train"})
        pods["vllm"] = node.run_pod("serving", "vllm-api-7f9c", [
            ContainerSpec("server", ["sh", "-c", INFER_LOG], memory_limit_bytes=4 << 30, shm_bytes=1 << 30)],
            qos="Guaranteed", runtime_handler="nvidia")
        pods["embed"] = node.run_pod("serving", "embed-api-5d2", [
            ContainerSpec("server", ["sh", "-c", SERVE_LOG], memory_limit_bytes=1 << 30, shm_bytes=1 << 30)],
            qos="Guaranteed", runtime_handler="nvidia")
        pods["tokenize"] = node.run_pod("data", "tokenize-shards", [ContainerSpec("main", ["sh", "-c", TOKENIZE])],
                                        qos="BestEffort")
        crasher = node.crash_loop(pods["tokenize"], "main", 5)[-1]
        node.wait_exited(crasher)
        kubelet.allocations = {
            ("research", "llama-train-0", "trainer"): [("nvidia.com/gpu", [gpu[0]])],
            ("research", "llama-train-1", "trainer"): [("nvidia.com/gpu", [gpu[1]])],
            ("serving", "vllm-api-7f9c", "server"): [("nvidia.com/gpu", [f"{gpu[2]}::0"])],
            ("serving", "embed-api-5d2", "server"): [("nvidia.com/gpu", [f"{gpu[2]}::1"])],
        }
        pid = {name: node.init_pid(next(iter(pod.containers.values()))) for name, pod in pods.items()
               if name != "tokenize"}
        scenario = os.path.join(work, "pods.txt")
        write_scenario(scenario, FakeScenario(gpus=[
            FakeGpu(uuid=gpu[0], util=TRAIN_UTIL, mem_util=61, mem_used=TRAIN_MEM, step_ms=500, temp=74,
                    power_mw=512_000, processes=[FakeProcess(pid["train0"], used_memory=41 << 30, sm=84)]),
            FakeGpu(uuid=gpu[1], util=TRAIN_UTIL[3:] + TRAIN_UTIL[:3], mem_util=58, mem_used=39 << 30, step_ms=500,
                    temp=71, power_mw=498_000, pci="00000000:3B:00.0",
                    processes=[FakeProcess(pid["train1"], used_memory=39 << 30, sm=81)]),
            FakeGpu(uuid=gpu[2], util=INFER_UTIL, mem_util=20, mem_used=(28 << 30) + (300 << 20), step_ms=500, temp=55,
                    power_mw=230_000, pci="00000000:5E:00.0", processes=[
                        FakeProcess(pid["vllm"], used_memory=22 << 30, sm=31),
                        FakeProcess(pid["embed"], used_memory=6 << 30, sm=9)]),
        ]))
        os.environ.update({SCENARIO_ENV: scenario, "MLTOP_CRI_ENDPOINT": node.endpoint,
                           "MLTOP_POD_RESOURCES_SOCKET": kubelet.endpoint})
        app = MltopApp(nvml_lib=lib, interval=0.5)  # (the Docker engine beside it: the header names both)
        async with app.run_test(size=SIZE) as pilot:
            async def until(predicate, timeout=60.0):
                deadline = time.monotonic() + timeout
                while not predicate():
                    if time.monotonic() > deadline:
                        raise RuntimeError("timed out")
                    await pilot.pause(0.1)

            await until(lambda: app.snapshot is not None and app.snapshot.container(crasher) is not None
                        and any(g.sharing for g in app.snapshot.gpus))
            screen = app.screen
            await pilot.pause(8)  # some history in the GPU bars
            await pilot.press("P")
            screen.table.move_to_key(pods["train0"].containers["trainer"])
            await pilot.pause(0.8)
            saved.append(save_svg(app, out_dir, "pods"))
            await until(lambda: screen.table.marker(crasher) in ("warning", "critical"))  # the background doctor
            screen.table.move_to_key(crasher)
            await pilot.press("d")
            await until(lambda: isinstance(app.screen, DiagnosticsScreen) and app.screen.result is not None)
            await pilot.pause(0.6)
            saved.append(save_svg(app, out_dir, "pod-diagnostics"))
    finally:
        for name in ("MLTOP_CRI_ENDPOINT", "MLTOP_POD_RESOURCES_SOCKET"):
            os.environ.pop(name, None)
        for pod in pods.values():
            node.remove_pod(pod)
        node.stop()
        kubelet.stop()
    return saved

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "screenshots"))
    parser.add_argument("--history", type=float, default=30.0, help="seconds of history before capturing")
    parser.add_argument("--keep", action="store_true", help="leave the demo containers running")
    args = parser.parse_args()

    import docker

    client = docker.from_env(timeout=60)
    work = tempfile.mkdtemp(prefix="mltop-screenshots-")
    lib = str(build_fake_nvml(work))
    scenario = os.path.join(work, "scenario.txt")
    os.environ[SCENARIO_ENV] = scenario
    print("starting the demo containers…", flush=True)
    demo = start_demo(client)
    try:
        write_gpu_scenario(scenario, demo)
        print(f"running the dashboard for {args.history:g} s of history…", flush=True)
        saved = asyncio.run(capture(args.out, lib, demo, args.history))
        print("running three agents, a Prometheus and the fleet view…", flush=True)
        saved += asyncio.run(capture_fleet(args.out, lib, scenario, work))
        print("a Kubernetes node: pods in a private containerd, the kubelet's allocations…", flush=True)
        saved += asyncio.run(capture_pods(args.out, lib, work))
    finally:
        if not args.keep:
            for c in client.containers.list(all=True, filters={"label": LABEL}):
                c.remove(force=True)
    for path in saved:
        print(f"  wrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
