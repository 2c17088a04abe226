"""A real containerd with its CRI plugin beside the Docker engine, and pods made the way the kubelet makes
them (labels, cgroup parents, log paths), driven through mltop's own CRI client.

The containerd is private to one pytest session: `containerd config default` with root and state in a
temporary directory, its own socket, an empty CNI conf_dir (pods use the host network, which needs no CNI),
a local busybox-with-`sleep` as the pause image, and restrict_oom_score_adj (no CAP_SYS_RESOURCE here: the
pause container's -998 fails otherwise). Docker's own containerd is never touched. Everything a test starts
is stopped and removed, then the containerd is ended by its PID and the kubepods cgroups it left removed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field

try:
    import pytest
except ImportError:  # in the cgroup v2 guest (tests/vm/v2_driver.py): CriNode alone, without the fixtures
    pytest = None

PAUSE_IMAGE = "mltop-test/pause:1"
NVIDIA_HANDLER = "nvidia"
QOS_PARENT = {"Guaranteed": "/kubepods", "Burstable": "/kubepods/burstable", "BestEffort": "/kubepods/besteffort"}
# the kubelet's systemd driver names a pod's slice after its QoS class and UID (dashes escaped to _); systemd
# nests it by its dashes: kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice
QOS_SLICE = {"Guaranteed": "kubepods", "Burstable": "kubepods-burstable", "BestEffort": "kubepods-besteffort"}


def pod_slice(qos: str, uid: str) -> str:
    """The cgroup_parent the kubelet's systemd driver gives a pod sandbox: the pod's slice name alone."""
    return f"{QOS_SLICE[qos]}-pod{uid.replace('-', '_')}.slice"


def _require(reason: str):
    if os.environ.get("MLTOP_REQUIRE_DOCKER") == "1":
        pytest.fail(f"MLTOP_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(f"no CRI test runtime: {reason}")


def private_config(default_toml: str, tmp: str, systemd_cgroup: bool = False) -> str:
    """`containerd config default` with what a second containerd on this host needs changed; `systemd_cgroup`:
    runc's systemd cgroup driver (`SystemdCgroup = true`), as a cgroup v2 + systemd node's containerd runs."""
    edits = [
        (r"^root = .*$", f'root = "{tmp}/root"'),
        (r"^state = .*$", f'state = "{tmp}/state"'),
        (r"^(\[grpc\]\n(?:  .*\n)*?)  address = .*$", rf'\g<1>  address = "{tmp}/containerd.sock"'),
        (r"^(\s+)restrict_oom_score_adj = .*$", r"\g<1>restrict_oom_score_adj = true"),
        (r"^(\s+)sandbox_image = .*$", rf'\g<1>sandbox_image = "docker.io/{PAUSE_IMAGE}"'),
        (r"^(\s+)conf_dir = .*$", rf'\g<1>conf_dir = "{tmp}/cni"'),
    ]
    text = default_toml
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
        if count != 1:
            raise RuntimeError(f"containerd's default config has no line for {pattern!r}")
    if systemd_cgroup:
        text, count = re.subn(r"^(\s+)SystemdCgroup = false$", r"\g<1>SystemdCgroup = true", text, count=1,
                              flags=re.M)
        if count != 1:
            raise RuntimeError("containerd's default config has no SystemdCgroup line for runc")
    # a runtime handler named `nvidia` (runc underneath: no GPU here), for pods with runtimeClassName: nvidia
    nvidia = f'\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{NVIDIA_HANDLER}]\n' \
             '  runtime_type = "io.containerd.runc.v2"\n'
    if systemd_cgroup:
        nvidia += f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{NVIDIA_HANDLER}.options]\n' \
                  '  SystemdCgroup = true\n'
    return text + nvidia


@dataclass
class ContainerSpec:
    name: str
    command: list[str]
    image: str = "mltop-test/busybox:1"
    memory_limit_bytes: int = 0
    cpu_quota_us: int = 0  # with a 100 ms period
    annotations: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # > 0: a memory-backed emptyDir of this size at /dev/shm (a tmpfs the kubelet mounts in), instead of the
    # sandbox's 64 MiB /dev/shm
    shm_bytes: int = 0


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str
    qos: str
    sandbox_id: str
    log_directory: str
    containers: dict[str, str] = field(default_factory=dict)  # container name -> id
    # what the kubelet would keep to restart a container: the sandbox's config, each container's config
    sandbox_config: object = None
    configs: dict[str, object] = field(default_factory=dict)  # container name -> its newest ContainerConfig


class CriNode:
    """One private containerd; run_pod() makes pods like a kubelet would. `systemd_cgroup`: runc's systemd driver
    and pods in the kubelet's systemd slices (the cgroup v2 guest); `images_tar`: the test images as a `docker
    save` archive, where this host's engine lacks the pause image (the guest's)."""

    def __init__(self, systemd_cgroup: bool = False, images_tar: str | None = None):
        self.systemd_cgroup = systemd_cgroup
        self.images_tar = images_tar
        self.tmp = tempfile.mkdtemp(prefix="mltop-cri-")
        self.socket = f"{self.tmp}/containerd.sock"
        self.endpoint = f"unix://{self.socket}"
        self.state = f"{self.tmp}/state"
        self.log = f"{self.tmp}/containerd.log"
        self.process: subprocess.Popen | None = None
        self.client = None
        self.pods: list[Pod] = []  # still running
        self._all_pods: list[Pod] = []  # ever made: their cgroups are removed at the end
        self.version = None

    # ----------------------------------------------------------------------------- life

    def start(self) -> None:
        default = subprocess.run(["containerd", "config", "default"], capture_output=True, text=True,
                                 check=True).stdout
        os.makedirs(f"{self.tmp}/cni")
        with open(f"{self.tmp}/config.toml", "w") as f:
            f.write(private_config(default, self.tmp, self.systemd_cgroup))
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(["containerd", "--config", f"{self.tmp}/config.toml"],
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        from mltop.probes.cri.client import CriClient, CriError

        self.client = CriClient(self.endpoint, timeout_s=10.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.version = self.client.version()
                break
            except CriError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"containerd did not start: {self._log_tail()}") from None
                time.sleep(0.2)
        self.import_images("mltop-test/busybox:1", PAUSE_IMAGE)

    def import_images(self, *images: str) -> None:
        """`docker save` of the Docker test images (or the archive `images_tar`) into this containerd's k8s.io
        namespace."""
        if self.images_tar:
            saver = subprocess.Popen(["cat", self.images_tar], stdout=subprocess.PIPE)
        else:
            saver = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        done = subprocess.run(["ctr", "--address", self.socket, "-n", "k8s.io", "image", "import", "-"],
                              stdin=saver.stdout, capture_output=True, text=True)
        saver.stdout.close()
        if saver.wait() != 0 or done.returncode != 0:
            raise RuntimeError(f"importing {images} failed: {done.stderr.strip()}")

    def stop(self) -> None:
        for pod in list(self.pods):
            self.remove_pod(pod)
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.systemd_cgroup:  # the pods' slices (their scopes went with their containers)
            slices = [pod_slice(p.qos, p.uid) for p in self._all_pods]
            if slices:
                subprocess.run(["systemctl", "stop", *slices], capture_output=True)
        else:
            self._remove_pod_cgroups()
        subprocess.run(["umount", "-R", self.tmp], capture_output=True)  # nothing, unless a sandbox leaked
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def _remove_pod_cgroups(self) -> None:
        """rmdir the kubepods directories our pods left (empty by now); another session's stay."""
        for root in {os.path.join("/sys/fs/cgroup", d) for d in os.listdir("/sys/fs/cgroup")} | {"/sys/fs/cgroup"}:
            for parent in ("kubepods/burstable", "kubepods/besteffort", "kubepods"):
                base = os.path.join(root, parent)
                if not os.path.isdir(base):
                    continue
                for entry in os.listdir(base):
                    if entry.startswith("pod") and any(entry == f"pod{p.uid}" for p in self._all_pods):
                        _rmdir_tree(os.path.join(base, entry))
            for parent in ("kubepods/burstable", "kubepods/besteffort", "kubepods"):
                try:
                    os.rmdir(os.path.join(root, parent))
                except OSError:
                    pass

    # ----------------------------------------------------------------------------- pods

    def run_pod(self, namespace: str, name: str, containers: list[ContainerSpec], qos: str = "Burstable",
                labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
                runtime_handler: str = "") -> Pod:
        from mltop.probes.cri import runtime_pb2 as pb

        uid = str(uuid.uuid4())
        log_directory = f"{self.tmp}/pods/{namespace}_{name}_{uid}"  # the kubelet's /var/log/pods layout
        pod_labels = {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                      "io.kubernetes.pod.uid": uid, **(labels or {})}
        sandbox_config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            log_directory=log_directory, labels=pod_labels,
            annotations={"kubernetes.io/config.source": "api", **(annotations or {})},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=pod_slice(qos, uid) if self.systemd_cgroup else f"{QOS_PARENT[qos]}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE))),
        )
        sandbox_id = self.client.run_pod_sandbox(sandbox_config, runtime_handler=runtime_handler)
        pod = Pod(namespace, name, uid, qos, sandbox_id, log_directory, sandbox_config=sandbox_config)
        self.pods.append(pod)
        self._all_pods.append(pod)
        for spec in containers:
            resources = pb.LinuxContainerResources(
                memory_limit_in_bytes=spec.memory_limit_bytes,
                cpu_quota=spec.cpu_quota_us, cpu_period=100_000 if spec.cpu_quota_us else 0)
            config = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name=spec.name, attempt=0),
                image=pb.ImageSpec(image=spec.image), command=spec.command,
                labels={**{k: v for k, v in pod_labels.items() if k.startswith("io.kubernetes.pod.")},
                        "io.kubernetes.container.name": spec.name},
                annotations={"io.kubernetes.container.restartCount": "0", **spec.annotations},
                log_path=f"{spec.name}/0.log", linux=pb.LinuxContainerConfig(resources=resources),
                envs=[pb.KeyValue(key=k, value=v) for k, v in spec.env.items()],
                mounts=self._empty_dir_shm(pod, spec),
            )
            cid = self.client.create_container(sandbox_id, config, sandbox_config)
            pod.containers[spec.name] = cid
            pod.configs[spec.name] = config
            self.client.start_container(cid)
        return pod

    def init_pid(self, container_id: str) -> int:
        with open(f"{self.state}/io.containerd.runtime.v2.task/k8s.io/{container_id}/init.pid") as f:
            return int(f.read())

    def remove_pod(self, pod: Pod) -> None:
        from mltop.probes.cri.client import CriError

        for cid in pod.containers.values():
            for call in (self.client.stop_container, self.client.remove_container):
                try:
                    call(cid)
                except CriError:
                    pass  # already gone
        for call in (self.client.stop_pod_sandbox, self.client.remove_pod_sandbox):
            try:
                call(pod.sandbox_id)
            except CriError:
                pass
        if pod in self.pods:
            self.pods.remove(pod)
        shm = f"{self.tmp}/empty-dirs/{pod.uid}"
        if os.path.isdir(shm):  # the pod's memory-backed emptyDirs, as the kubelet tears them down
            for name in os.listdir(shm):
                subprocess.run(["umount", os.path.join(shm, name)], capture_output=True)
            shutil.rmtree(shm, ignore_errors=True)

    def _empty_dir_shm(self, pod: Pod, spec: ContainerSpec) -> list:
        """The CRI mount of a memory-backed emptyDir at /dev/shm, as the kubelet makes it: a tmpfs of the size
        limit under the pod's directory, bind-mounted into the container."""
        from mltop.probes.cri import runtime_pb2 as pb

        if not spec.shm_bytes:
            return []
        path = f"{self.tmp}/empty-dirs/{pod.uid}/{spec.name}-dshm"
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spec.shm_bytes}", "tmpfs", path], check=True)
        return [pb.Mount(container_path="/dev/shm", host_path=path)]

    # ----------------------------------------------------------------------------- restarts

    def wait_exited(self, container_id: str, timeout_s: float = 20.0) -> int:
        """The exit code of a container, once it has exited."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.client.container_status(container_id).status
            if status.state == 2:  # CONTAINER_EXITED
                return status.exit_code
            if time.monotonic() > deadline:
                raise RuntimeError(f"container {container_id[:12]} did not exit in {timeout_s} s")
            time.sleep(0.1)

    def restart_container(self, pod: Pod, name: str, command: list[str] | None = None,
                          env: dict[str, str] | None = None) -> str:
        """What the kubelet does once a pod container has exited under restartPolicy Always/OnFailure: create and
        start a new container of the same name in the same sandbox, attempt n + 1, log file `<name>/<n+1>.log`,
        annotation io.kubernetes.container.restartCount n + 1; the dead one is kept (until the kubelet's garbage
        collection). `command`/`env` replace the spec's (an attempt that behaves otherwise, e.g. still running).
        Returns the new container's id."""
        from mltop.probes.cri import runtime_pb2 as pb

        previous = pod.configs[name]
        attempt = previous.metadata.attempt + 1
        config = pb.ContainerConfig()
        config.CopyFrom(previous)
        config.metadata.attempt = attempt
        config.log_path = f"{name}/{attempt}.log"
        config.annotations["io.kubernetes.container.restartCount"] = str(attempt)
        if command is not None:
            del config.command[:]
            config.command.extend(command)
        if env is not None:
            del config.envs[:]
            config.envs.extend(pb.KeyValue(key=k, value=v) for k, v in env.items())
        cid = self.client.create_container(pod.sandbox_id, config, pod.sandbox_config)
        pod.containers[name] = cid
        pod.configs[name] = config
        self.client.start_container(cid)
        return cid

    def crash_loop(self, pod: Pod, name: str, restarts: int, **last) -> list[str]:
        """`restarts` kubelet restarts of a container that exits each time (each waited for, then restarted);
        `last`: restart_container's command/env for the newest attempt. Returns the ids, oldest first."""
        ids = [pod.containers[name]]
        for n in range(restarts):
            self.wait_exited(ids[-1])
            ids.append(self.restart_container(pod, name, **(last if n == restarts - 1 else {})))
        return ids


    def steady_cpu(self, pod: Pod) -> None:
        """Give a busy pod the CPU it asks for on a loaded machine (cgroup v1 cgroupfs, as tests/cpu_placement.py
        does for Docker): the most CPU shares on every cgroup from kubepods down to the pod. Without it, at load
        10 a 0.5-CPU busy loop got less than its quota and was never throttled (the throttling test measured
        the machine's load). Its quota still caps it."""
        uid_dir = f"pod{pod.uid}"
        for controller in ("cpu,cpuacct", "cpu"):
            root = os.path.join("/sys/fs/cgroup", controller)
            if not os.path.isfile(os.path.join(root, "cpu.shares")):
                continue
            path = root
            for part in (QOS_PARENT[pod.qos].strip("/").split("/") + [uid_dir]):
                path = os.path.join(path, part)
                try:
                    with open(os.path.join(path, "cpu.shares"), "w") as f:
                        f.write("262144")
                except OSError:
                    return
            return

def _rmdir_tree(path: str) -> None:
    for dirpath, dirnames, _ in os.walk(path, topdown=False):
        for d in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def build_pause_image(busybox: str) -> None:
    """The pause image: busybox whose command sleeps (the sandbox holds the pod's namespaces; no registry here)."""
    subprocess.run(["docker", "build", "-q", "-t", PAUSE_IMAGE, "-"], check=True, capture_output=True,
                   input=f'FROM {busybox}\nCMD ["sleep", "2147483647"]\n'.encode())


if pytest is not None:
    @pytest.fixture(scope="session")
    def cri_node(test_images):
        """A private containerd with the test images, for the session; skip (or fail under
        MLTOP_REQUIRE_DOCKER=1) where containerd or root is missing."""
        if shutil.which("containerd") is None or shutil.which("ctr") is None:
            _require("containerd and ctr are not installed (Debian: they come with docker.io)")
        if os.geteuid() != 0:
            _require("a second containerd needs root")
        build_pause_image(test_images["busybox"])
        node = CriNode()
        try:
            node.start()
        except Exception:
            node.stop()
            raise
        yield node
        node.stop()

    @pytest.fixture
    def cri_pods(cri_node):
        """Pods made in one test, removed when it ends."""
        made: list[Pod] = []

        class Maker:
            node = cri_node

            def run(self, *args, **kwargs) -> Pod:
                pod = cri_node.run_pod(*args, **kwargs)
                made.append(pod)
                return pod

        yield Maker()
        for pod in made:
            cri_node.remove_pod(pod)


def run_scenario(make) -> dict[str, Pod]:
    """The issue's scenario: two namespaces, three pods (one with two containers, one Guaranteed with CPU and
    memory limits, one burning CPU), and a pod container whose child is OOM-killed (the container lives on,
    its cgroup's oom_kill counter at 1). `make`: cri_pods.run or CriNode.run_pod."""
    return {
        "trainer": make("ml-team", "trainer", [
            ContainerSpec("main", ["sh", "-c", "echo 'epoch 1 loss [bold]0.5'; exec sleep 600"]),
            # `tail /dev/zero` buffers a line that never ends until the cgroup's limit kills it
            ContainerSpec("loader", ["sh", "-c", "tail /dev/zero; sleep 600"], memory_limit_bytes=32 << 20),
        ], qos="Burstable", labels={"app": "trainer"}, annotations={"team": "vision"}),
        "sizer": make("ml-team", "sizer", [
            ContainerSpec("main", ["sleep", "600"], memory_limit_bytes=128 << 20, cpu_quota_us=50_000),
        ], qos="Guaranteed"),
        "api": make("serving", "api", [
            ContainerSpec("server", ["sh", "-c", "while :; do :; done"], cpu_quota_us=50_000),
        ], qos="BestEffort"),
    }
