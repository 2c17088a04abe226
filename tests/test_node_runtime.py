"""The node's side of GPUs for pods: CRI-O's runtime configuration (crio.conf and crio.conf.d written to a temporary
directory and read as CRI-O reads them), CDI devices on a pod under the default runc (a real pod in the private
containerd), and the kubelet's device-plugins directory (real unix sockets: a listening device plugin, a stale
socket file nobody listens on, the kubelet's registration socket).

No CRI-O runs on these machines: the CRI-O path of k8s.gpu_runtime is judged on a snapshot whose pod container's
runtime is cri-o (tests/builders.py), with the real configuration files. No kubelet runs either: the
device-plugins directory is a temporary one that the tests fill with real sockets."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import builders as b
import pytest
from cri_harness import NVIDIA_HANDLER, ContainerSpec
from fakenvml import FakeGpu, FakeScenario

GPU_UUID = "GPU-a0000000-0000-0000-0000-00000000000a"
GPU_ENV = {"NVIDIA_VISIBLE_DEVICES": GPU_UUID}  # as NVIDIA's device plugin sets it (envvar strategy)
CDI_ANNOTATION = {"cdi.k8s.io/nvidia-device-plugin_main": "nvidia.com/gpu=0"}  # its cdi-annotations strategy

# A CRI-O main config as packages ship it, and the drop-in `nvidia-ctk runtime configure --runtime=crio` writes
# (NVIDIA/nvidia-container-toolkit cmd/nvidia-ctk/runtime/configure: /etc/crio/crio.conf.d/99-nvidia.toml)
CRIO_CONF = """[crio]
[crio.runtime]
default_runtime = "runc"

[crio.runtime.runtimes.runc]
runtime_path = "/usr/bin/runc"
runtime_type = "oci"
"""
CRIO_10 = """[crio.runtime]
default_runtime = "crun"

[crio.runtime.runtimes.crun]
runtime_path = "/usr/bin/crun"
"""
NVIDIA_DROP_IN = """[crio]
  [crio.runtime]
    [crio.runtime.runtimes]
      [crio.runtime.runtimes.nvidia]
        runtime_path = "/usr/bin/nvidia-container-runtime"
        runtime_type = "oci"
"""
# nvidia-ctk-installer's oci-nvidia-hook.json (cmd/nvidia-ctk-installer/container/runtime/crio)
NVIDIA_HOOK = json.dumps({"version": "1.0.0", "hook": {"path": "/usr/bin/nvidia-container-runtime-hook",
                                                       "args": ["nvidia-container-runtime-hook", "prestart"]},
                          "when": {"always": True, "commands": [".*"]}, "stages": ["prestart"]})


def crio_node(tmp_path, *drop_ins: tuple[str, str], main: str | None = CRIO_CONF) -> str:
    """/etc/crio as a temporary directory: crio.conf (unless main is None) and crio.conf.d/<name> files."""
    root = tmp_path / "crio"
    (root / "crio.conf.d").mkdir(parents=True)
    (root / "hooks.d").mkdir()
    if main is not None:
        (root / "crio.conf").write_text(main.replace("[crio.runtime]\n", f'[crio.runtime]\nhooks_dir = ["{root}/hooks.d"]\n', 1))
    for name, text in drop_ins:
        (root / "crio.conf.d" / name).write_text(text)
    return str(root / "crio.conf")


# --------------------------------------------------------------------------- reading CRI-O's configuration


def test_crio_drop_ins_are_read_in_lexical_order_and_later_files_win(tmp_path):
    from mltop.probes.cri.node_config import read_crio_runtimes

    path = crio_node(tmp_path, ("99-nvidia.toml", NVIDIA_DROP_IN), ("10-crio.conf", CRIO_10))
    node = read_crio_runtimes(path)
    d = os.path.dirname(path)
    assert node.error is None and node.engine == "cri-o"
    assert node.files == (path, f"{d}/crio.conf.d/10-crio.conf", f"{d}/crio.conf.d/99-nvidia.toml")
    assert node.runtimes == ("runc", "crun", "nvidia")
    assert node.default_runtime == "crun"  # 10-crio.conf overrides crio.conf; 99-nvidia.toml sets none
    assert node.nvidia_hooks == ()
    # only drop-ins, no crio.conf (as recent CRI-O packages ship it): still read; neither: not a CRI-O node
    assert read_crio_runtimes(crio_node(tmp_path / "only", ("10-crio.conf", CRIO_10), main=None)).runtimes == ("crun",)
    assert read_crio_runtimes(str(tmp_path / "nowhere" / "crio.conf")) is None


def test_a_broken_or_unreadable_crio_drop_in_is_an_error_that_names_the_file(tmp_path):
    from mltop.probes.cri.node_config import read_crio_runtimes

    path = crio_node(tmp_path, ("50-broken.conf", "[crio.runtime\ndefault_runtime = 'nvidia'\n"))
    node = read_crio_runtimes(path)
    assert node.runtimes == () and node.default_runtime is None
    assert node.error.startswith(f"{os.path.dirname(path)}/crio.conf.d/50-broken.conf: TOMLDecodeError")
    os.remove(f"{os.path.dirname(path)}/crio.conf.d/50-broken.conf")
    os.symlink("/nonexistent/crio-drop-in.conf", f"{os.path.dirname(path)}/crio.conf.d/60-gone.conf")
    assert read_crio_runtimes(path).error.endswith("60-gone.conf: FileNotFoundError: No such file or directory")


# --------------------------------------------------------------------------- k8s.gpu_runtime on a CRI-O pod


def crio_pod(name: str = "trainer", *, handler: str | None = None, env=GPU_ENV, annotations=None, runtime="cri-o"):
    from mltop.probes.model import KubernetesInfo

    return b.container(f"ml-team/{name}/main", runtime=runtime,
                       kubernetes=KubernetesInfo("ml-team", name, "uid-" + name, "main", "Burstable"),
                       config_overrides=dict(runtime=handler, env=tuple(env.items()), annotations=annotations or {},
                                             labels={"io.kubernetes.pod.name": name}))


def judged(snapshot, **probe):
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.host_facts import HostProbe

    result = run_doctor(snapshot, None, host=HostProbe(**probe))
    return {(f.code, f.container): f for f in result.findings}, result


def test_a_crio_node_without_nvidia_runtime_gets_nvidia_ctk_for_crio(tmp_path):
    path = crio_node(tmp_path, ("10-crio.conf", CRIO_10))
    found, _ = judged(b.snapshot([crio_pod()]), crio_config=path, device_plugins_dir=str(tmp_path / "no-kubelet"))
    f = found[("k8s.gpu_runtime", "ml-team/trainer/main")]
    text = "\n".join(f.evidence)
    assert f"CRI-O runtimes: runc, crun; default crun — {path}, {os.path.dirname(path)}/crio.conf.d/10-crio.conf" in text
    assert f"env NVIDIA_VISIBLE_DEVICES={GPU_UUID}" in text and "no NVIDIA OCI hook in" in text
    assert "`sudo nvidia-ctk runtime configure --runtime=crio && sudo systemctl restart crio`" in f.fix
    assert "runtimeClassName: nvidia" in f.fix and "--runtime=containerd" not in f.fix


def test_crio_with_nvidia_ctks_drop_in_asks_only_for_runtime_class_name(tmp_path):
    path = crio_node(tmp_path, ("10-crio.conf", CRIO_10), ("99-nvidia.toml", NVIDIA_DROP_IN))
    found, _ = judged(b.snapshot([crio_pod(), crio_pod("withrt", handler="nvidia"), crio_pod("cpu", env={})]),
                      crio_config=path, device_plugins_dir=str(tmp_path / "no-kubelet"))
    f = found[("k8s.gpu_runtime", "ml-team/trainer/main")]
    assert "CRI-O runtimes: runc, crun, nvidia; default crun" in "\n".join(f.evidence)
    assert f.fix.startswith("Set `runtimeClassName: nvidia` in the pod spec") and "nvidia-ctk" not in f.fix
    # the look-alikes: the same pod with runtimeClassName nvidia, a pod that asks for no GPU
    assert [k for k in found if k[0] == "k8s.gpu_runtime"] == [("k8s.gpu_runtime", "ml-team/trainer/main")]


def test_crio_defaulting_to_nvidia_or_running_its_oci_hook_is_silent(tmp_path):
    snap = b.snapshot([crio_pod()])
    # what `nvidia-ctk runtime configure --runtime=crio --set-as-default` writes
    as_default = crio_node(tmp_path / "default", ("99-nvidia.toml", '[crio.runtime]\ndefault_runtime = "nvidia"\n'
                                                  '[crio.runtime.runtimes.nvidia]\n'
                                                  'runtime_path = "/usr/bin/nvidia-container-runtime"\n'))
    assert not [k for k in judged(snap, crio_config=as_default)[0] if k[0] == "k8s.gpu_runtime"]
    hooked = crio_node(tmp_path / "hook")
    (tmp_path / "hook" / "crio" / "hooks.d" / "oci-nvidia-hook.json").write_text(NVIDIA_HOOK)
    assert not [k for k in judged(snap, crio_config=hooked)[0] if k[0] == "k8s.gpu_runtime"]


def test_the_check_reads_the_config_of_the_runtime_that_runs_the_pod(tmp_path):
    """containerd on the same machine defaults to nvidia: a CRI-O pod is judged on CRI-O's config, and the other
    way round; a broken CRI-O drop-in is evidence, not a crash."""
    containerd = tmp_path / "config.toml"
    containerd.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
                          '  default_runtime_name = "nvidia"\n'
                          '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n'
                          '  runtime_type = "io.containerd.runc.v2"\n')
    crio = crio_node(tmp_path)
    snap = b.snapshot([crio_pod("oncrio"), crio_pod("oncontainerd", runtime="containerd")])
    found, _ = judged(snap, crio_config=crio, containerd_config=str(containerd))
    assert [k for k in found if k[0] == "k8s.gpu_runtime"] == [("k8s.gpu_runtime", "ml-team/oncrio/main")]
    broken = crio_node(tmp_path / "broken", ("50-broken.conf", "default_runtime = = 1\n"))
    found, _ = judged(snap, crio_config=broken, containerd_config=str(containerd))
    text = "\n".join(found[("k8s.gpu_runtime", "ml-team/oncrio/main")].evidence)
    assert f"could not read {broken}: " in text and "50-broken.conf: TOMLDecodeError" in text


def test_a_pod_under_runc_with_nvidia_cdi_devices_is_silent(cri_node, tmp_path):
    """A real pod under the default runc that asks for NVIDIA's CDI device by the device plugin's annotation (the
    runtime injects it: no NVIDIA runtime needed), beside the same pod without it, which fires."""
    from mltop.probes.sampler import ProbeOptions, Sampler

    cdi = CDI_ANNOTATION
    pods = [cri_node.run_pod("ml-team", "cdipod", [ContainerSpec("main", ["sleep", "600"], env=GPU_ENV,
                                                                 annotations=cdi)]),
            cri_node.run_pod("ml-team", "nocdi", [ContainerSpec("main", ["sleep", "600"], env=GPU_ENV)])]
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=cri_node.endpoint, watch_events=False))
    try:
        snap = sampler.sweep()
        from mltop.diagnostics.doctor import run_doctor
        from mltop.probes.host_facts import HostProbe

        assert snap.container("ml-team/cdipod/main").config.cdi_devices == ("nvidia.com/gpu=0",)
        result = run_doctor(snap, sampler.engine, containers=["ml-team/cdipod/main", "ml-team/nocdi/main"],
                            host=HostProbe(containerd_config=f"{cri_node.tmp}/config.toml",
                                           device_plugins_dir=str(tmp_path / "no-kubelet")))
        assert [(f.code, f.container) for f in result.findings if f.code == "k8s.gpu_runtime"] == [
            ("k8s.gpu_runtime", "ml-team/nocdi/main")]
    finally:
        sampler.close()
        for pod in pods:
            cri_node.remove_pod(pod)


def test_cdi_devices_come_from_the_cri_request_and_the_annotations():
    """containerd 1.6 here has no CDI: the kubelet's CRI `CDI_devices` (as a CDI-enabled runtime's verbose status
    echoes the request) is read from the JSON shape alone; annotations from the real pod above."""
    from mltop.probes.cri.source import cdi_devices_of

    annotations = {"cdi.k8s.io/nvidia-device-plugin_main": "nvidia.com/gpu=0, nvidia.com/gpu=1", "team": "a=b"}
    request = {"CDI_devices": [{"name": "nvidia.com/gpu=1"}, {"name": "vendor.com/fpga=2"}]}
    assert cdi_devices_of(annotations, request) == ("nvidia.com/gpu=0", "nvidia.com/gpu=1", "vendor.com/fpga=2")
    assert cdi_devices_of({"team": "a"}, None) == ()


# --------------------------------------------------------------------------- k8s.device_plugin_missing


class PluginServer:
    """A process listening on a unix socket the way a device plugin's gRPC server does (accepts, then is idle)."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.accepted = 0
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.connected.set()
            conn.close()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def kubelet_dir(tmp_path, *, kubelet: bool = True) -> str:
    """/var/lib/kubelet/device-plugins: the kubelet's registration socket and its checkpoint file."""
    d = tmp_path / "device-plugins"
    d.mkdir(parents=True)
    (d / "kubelet_internal_checkpoint").write_text("{}")
    if kubelet:
        PluginServer(str(d / "kubelet.sock"))  # listens for the test's life (a daemon thread)
    return str(d)


def stale_socket(path: str) -> None:
    """A socket file left behind by a plugin that died: bound, then closed without unlinking."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    s.close()


@pytest.fixture(scope="module")
def gpu_pod(cri_node):
    """Real pods meant for GPUs (the device plugin's env with runtimeClassName nvidia; with its CDI annotation under
    the default runc) and a CPU pod."""
    pods = {"gpu": cri_node.run_pod("ml-team", "gpujob", [ContainerSpec("main", ["sleep", "600"], env=GPU_ENV)],
                                    runtime_handler=NVIDIA_HANDLER),
            "cdi": cri_node.run_pod("ml-team", "cdijob", [ContainerSpec("main", ["sleep", "600"], env=GPU_ENV,
                                                                        annotations=CDI_ANNOTATION)]),
            "cpu": cri_node.run_pod("ml-team", "cpujob", [ContainerSpec("main", ["sleep", "600"])])}
    yield pods
    for pod in pods.values():
        cri_node.remove_pod(pod)


def sweep(cri_node, nvml_lib: str | None = None):
    from mltop.probes.sampler import ProbeOptions, Sampler

    sampler = Sampler(ProbeOptions(nvml=nvml_lib is not None, nvml_lib=nvml_lib, cri_endpoint=cri_node.endpoint,
                                   watch_events=False))
    try:
        return sampler.sweep()
    finally:
        sampler.close()


def plugin_finding(snap, directory: str, containers=None):
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.host_facts import HostProbe

    result = run_doctor(snap, None, containers=containers, host=HostProbe(device_plugins_dir=directory))
    found = [f for f in result.findings if f.code == "k8s.device_plugin_missing"]
    return (found[0] if found else None), result


def test_a_node_with_gpu_pods_and_no_device_plugin_socket_fires(cri_node, gpu_pod, tmp_path):
    d = kubelet_dir(tmp_path)
    snap = sweep(cri_node)
    finding, _ = plugin_finding(snap, d)
    assert finding is not None and finding.severity == "warning" and finding.container is None
    text = "\n".join(finding.evidence)
    assert f"{d} holds: kubelet.sock, kubelet_internal_checkpoint" in text
    assert "kubelet.sock is there: a kubelet runs on this node" in text
    assert "no nvidia*.sock: NVIDIA's device plugin serves no resource here" in text
    assert f"ml-team/gpujob/main: env NVIDIA_VISIBLE_DEVICES={GPU_UUID}" in text
    assert "ml-team/gpujob/main: runtime handler nvidia (runtimeClassName)" in text
    assert "ml-team/cdijob/main: CDI devices nvidia.com/gpu=0" in text
    assert "cpujob" not in text
    assert "helm upgrade -i nvdp nvdp/nvidia-device-plugin --namespace nvidia-device-plugin" in finding.fix
    assert "nvidia/gpu-operator" in finding.fix
    assert f"`kubectl describe node {snap.host.hostname} | grep nvidia.com/gpu`" in finding.fix


def test_a_listening_nvidia_plugin_socket_is_silent_and_a_stale_one_fires(cri_node, gpu_pod, tmp_path):
    d = kubelet_dir(tmp_path)
    plugin = PluginServer(os.path.join(d, "nvidia-gpu.sock"))
    snap = sweep(cri_node)
    try:
        finding, result = plugin_finding(snap, d)
        assert finding is None, finding
        assert plugin.connected.wait(10)  # the probe connected to it
        assert not [s for s in result.checks_skipped if s.check == "k8s.device_plugin_missing"]
    finally:
        plugin.close()  # the plugin dies; its socket file stays
    assert os.path.exists(os.path.join(d, "nvidia-gpu.sock"))
    finding, _ = plugin_finding(snap, d)
    assert finding is not None
    assert finding.title.startswith("NVIDIA's device plugin socket is there but nobody listens")
    assert f"{d}/nvidia-gpu.sock: nobody listens (connection refused)" in "\n".join(finding.evidence)
    assert "kubectl -n <ns> delete pod <pod>" in finding.fix and "--previous" in finding.fix
    # a stale MIG socket beside a listening one for nvidia.com/gpu: the node still has a plugin serving
    stale_socket(os.path.join(d, "nvidia-mig-1g.10gb.sock"))
    os.remove(os.path.join(d, "nvidia-gpu.sock"))
    plugin = PluginServer(os.path.join(d, "nvidia-gpu.sock"))
    try:
        assert plugin_finding(snap, d)[0] is None
    finally:
        plugin.close()


def test_gpus_seen_by_nvml_on_a_kubelet_node_without_gpu_pods_fire(cri_node, nvml_scenario, tmp_path):
    """No pod asks for a GPU (those that do stay Pending, invisible to CRI), but NVML sees the node's GPUs."""
    lib = nvml_scenario(FakeScenario(gpus=[FakeGpu(uuid=GPU_UUID)]))
    d = kubelet_dir(tmp_path)
    stale_socket(os.path.join(d, "nvidia-gpu.sock"))
    snap = sweep(cri_node, lib)
    finding, _ = plugin_finding(snap, d, containers=["no-such-container"])
    assert finding is not None
    assert f"1 GPU(s) on this node: GPU 0 ({GPU_UUID}) — NVML" in "\n".join(finding.evidence)


def test_no_kubelet_directory_or_nothing_asking_for_gpus_is_silent(cri_node, gpu_pod, tmp_path):
    snap = sweep(cri_node)
    finding, result = plugin_finding(snap, str(tmp_path / "not-a-node"))
    assert finding is None and not [s for s in result.checks_skipped if s.check == "k8s.device_plugin_missing"]
    # a kubelet node, no GPU per NVML (no NVML here), only the CPU pod: nothing asks for a GPU
    without_gpu_pod = b.replace(snap, containers=tuple(c for c in snap.containers
                                                       if c.kubernetes is None or c.kubernetes.pod == "cpujob"))
    assert [c.name for c in without_gpu_pod.containers if c.kubernetes is not None] == ["ml-team/cpujob/main"]
    assert plugin_finding(without_gpu_pod, kubelet_dir(tmp_path))[0] is None
    # GPUs (per NVML) but no kubelet.sock and no pod container: not a node (a leftover directory); the same
    # host with the kubelet's socket fires
    no_pods = b.replace(snap, containers=tuple(c for c in snap.containers if c.kubernetes is None), gpus=(b.gpu(0),))
    assert plugin_finding(no_pods, kubelet_dir(tmp_path / "leftover", kubelet=False))[0] is None
    assert plugin_finding(no_pods, kubelet_dir(tmp_path / "node"))[0] is not None


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to the user nobody, which needs root")
def test_a_device_plugins_directory_mltop_may_not_list_is_a_skip_reason(tmp_path):
    """Read as an unprivileged user (nobody, in a forked child): the directory is there but cannot be listed."""
    from mltop.diagnostics.checks.base import CheckContext, Thresholds
    from mltop.diagnostics.doctor import judge
    from mltop.probes.cri.device_plugins import DevicePluginsDir, read_device_plugins
    from mltop.probes.host_facts import HostFacts

    top = tempfile.mkdtemp(prefix="mltop-kubelet-")  # /tmp/pytest-of-root is root's only: nobody must reach d
    try:
        os.chmod(top, 0o755)
        d = kubelet_dir(pathlib.Path(top), kubelet=False)
        os.chmod(d, 0o700)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover (the child)
            try:
                os.setgid(65534)
                os.setuid(65534)
                os.write(write_end, json.dumps(dataclasses.asdict(read_device_plugins(d))).encode())
            except BaseException as exc:
                os.write(write_end, repr(exc).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as f:
            text = f.read()
        os.waitpid(child, 0)
    finally:
        shutil.rmtree(top)
    seen = DevicePluginsDir(**json.loads(text))
    assert seen.error == "PermissionError: Permission denied" and not seen.entries and not seen.kubelet_socket
    snap = b.snapshot([crio_pod()], gpus=[b.gpu(0)])
    result = judge(CheckContext(snap, snap.containers, {}, HostFacts(device_plugins=seen), Thresholds()))
    assert not [f for f in result.findings if f.code == "k8s.device_plugin_missing"]
    (skip,) = [s for s in result.checks_skipped if s.check == "k8s.device_plugin_missing"]
    assert skip.reason == f"could not list the kubelet's device-plugins directory {d}: PermissionError: Permission denied"


def test_mltop_doctor_shows_the_missing_device_plugin_and_exits_1(cri_node, gpu_pod, nvml_scenario, tmp_path):
    """The command line on a kubelet node whose GPU NVML sees (the simulated library) and a CPU pod: a stale
    plugin socket is a warning (exit 1); a listening one leaves the node clean (exit 0)."""
    lib = nvml_scenario(FakeScenario(gpus=[FakeGpu(uuid=GPU_UUID)]))
    d = kubelet_dir(tmp_path)
    stale_socket(os.path.join(d, "nvidia-gpu.sock"))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def doctor():
        return subprocess.run([sys.executable, "-m", "mltop.tui.cli", "doctor", "--interval", "0.25", "--nvml-lib",
                               lib, "--cri-endpoint", cri_node.endpoint, "--device-plugins-dir", d,
                               "ml-team/cpujob/main"], capture_output=True, text=True, timeout=120, cwd=repo)

    warn = doctor()
    assert warn.returncode == 1, warn.stdout + warn.stderr
    out = warn.stdout
    assert "WARNING   k8s.device_plugin_missing  NVIDIA's device plugin socket is there but nobody listens" in out
    assert f"{d}/nvidia-gpu.sock: nobody listens (connection refused)" in out
    assert out.index("\nhost\n") < out.index("k8s.device_plugin_missing")
    os.remove(os.path.join(d, "nvidia-gpu.sock"))
    plugin = PluginServer(os.path.join(d, "nvidia-gpu.sock"))
    try:
        ok = doctor()
    finally:
        plugin.close()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "no findings: ml-team/cpujob/main" in ok.stdout and "k8s.device_plugin_missing" not in ok.stdout
