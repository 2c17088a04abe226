"""The node's side of GPUs for pods: the container runtime's configuration (containerd's or CRI-O's runtime
handlers, CDI, NVIDIA's OCI hook) and the kubelet's device plugin sockets. Fixes are in a pod spec's, kubectl's,
helm's and nvidia-ctk's terms."""

from __future__ import annotations

from mltop.probes.cri.node_config import CRIO, CRIO_BUILTIN_DEFAULT, NodeRuntimes
from mltop.probes.host_facts import HostFacts
from mltop.probes.model import ContainerSample

from ..findings import WARNING, Finding, evidence
from .base import CheckContext, CheckSkipped, _cfg_source, container_check, host_check
from .kubernetes import _asks_for_gpus

RUNTIME_CLASS = ("`runtimeClassName: nvidia` in the pod spec, with the RuntimeClass `{apiVersion: node.k8s.io/v1, "
                 "kind: RuntimeClass, metadata: {name: nvidia}, handler: nvidia}`")
# what `nvidia-ctk runtime configure` takes and which service to restart, by probes.identity's runtime names
_CTK = {CRIO: ("crio", "crio"), "containerd": ("containerd", "containerd")}


def _nvidia(name: str | None) -> bool:
    return bool(name) and "nvidia" in name.lower()


def _nvidia_cdi(c: ContainerSample) -> tuple[str, ...]:
    return tuple(d for d in c.config.cdi_devices if "nvidia.com/" in d)


def node_runtimes_of(host: HostFacts, c: ContainerSample) -> NodeRuntimes | None:
    """The configuration of the runtime that runs `c`: CRI-O's for a CRI-O container, containerd's otherwise."""
    return host.crio if c.runtime == CRIO else host.containerd


def _default_of(node: NodeRuntimes) -> str:
    if node.default_runtime:
        return node.default_runtime
    return CRIO_BUILTIN_DEFAULT if node.engine == CRIO else "runc"


@container_check("k8s.gpu_runtime")
def check_pod_gpu_runtime(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """k8s.gpu_runtime: a pod container meant to get GPUs runs under a runtime handler that is not NVIDIA's (the
    default runc or crun, no runtimeClassName), without CDI devices, and the node's runtime (containerd or CRI-O,
    whichever runs the pod) neither defaults to NVIDIA's nor runs NVIDIA's OCI hook: the toolkit never runs, so
    the GPUs it was given are not in it."""
    k = c.kubernetes
    if k is None or not c.running:
        return []
    handler = c.config.runtime or ""
    if _nvidia(handler):
        return []
    asks = _asks_for_gpus(c)
    if not asks or _nvidia_cdi(c):  # CDI: the runtime itself puts the devices in, under runc too
        return []
    node = node_runtimes_of(ctx.host, c)
    if node is not None and not node.error and (_nvidia(node.default_runtime) or node.nvidia_hooks):
        return []  # every pod runs with NVIDIA's runtime, or with its OCI hook (CRI-O)
    engine = CRIO if c.runtime == CRIO else "containerd"
    label = "CRI-O" if engine == CRIO else "containerd"
    ctk, service = _CTK[engine]
    ev = asks + [evidence(f"the pod's runtime handler is {handler or 'the default (no runtimeClassName)'}; "
                          "no CDI device asked for", f"CRI PodSandbox of {k.namespace}/{k.pod}, {_cfg_source(c)}")]
    configure = (f"`sudo nvidia-ctk runtime configure --runtime={ctk} && sudo systemctl restart {service}`")
    if node is None:
        option = "--crio-config" if engine == CRIO else "--containerd-config"
        ev.append(evidence(f"no {label} configuration here (not visible to mltop: {option})", "mltop doctor"))
        fix = (f"Set {RUNTIME_CLASS}; the node's {label} must define a handler `nvidia` (NVIDIA Container "
               f"Toolkit: {configure})")
    elif node.error:
        ev.append(evidence(f"could not read {node.path}: {node.error}", ", ".join(node.files)))
        fix = f"Set {RUNTIME_CLASS}; check that {node.path} (or a drop-in) defines a runtime `nvidia`"
    else:
        ev.append(evidence(f"{node.label} runtimes: {', '.join(node.runtimes) or 'none defined'}; default "
                           f"{_default_of(node)}", ", ".join(node.files)))
        if node.engine == CRIO:
            ev.append(evidence(f"no NVIDIA OCI hook in {', '.join(node.hooks_dirs) or 'no hooks_dir'}",
                               "CRI-O hooks_dir"))
        if any(_nvidia(r) for r in node.runtimes):
            fix = f"Set {RUNTIME_CLASS}"
        else:
            fix = f"Register NVIDIA's runtime with {label} on the node: {configure}, then set {RUNTIME_CLASS}"
    return [Finding("k8s.gpu_runtime", WARNING, c.name,
                    "Meant to get GPUs but runs without NVIDIA's runtime: its GPUs are not in the container",
                    tuple(ev), fix)]


# --------------------------------------------------------------------------- the device plugin

_MAX_PODS_NAMED = 5


def _pod_gpu_asks(c: ContainerSample) -> list[str]:
    """Why a pod container is meant to get NVIDIA GPUs: an allocation or the plugin's env (_asks_for_gpus), the
    nvidia runtime handler, or NVIDIA CDI devices."""
    ev = _asks_for_gpus(c)
    if _nvidia(c.config.runtime):
        ev.append(evidence(f"runtime handler {c.config.runtime} (runtimeClassName)", "CRI PodSandbox"))
    cdi = _nvidia_cdi(c)
    if cdi:
        ev.append(evidence(f"CDI devices {', '.join(cdi)}", _cfg_source(c)))
    return ev


@host_check("k8s.device_plugin_missing")
def check_device_plugin_missing(ctx: CheckContext) -> list[Finding]:
    """k8s.device_plugin_missing: a Kubernetes node (the kubelet's kubelet.sock, or pod containers) where NVML
    sees GPUs or a pod container asks for them, and no NVIDIA device plugin listens on an nvidia*.sock in the
    kubelet's device-plugins directory: the kubelet advertises no nvidia.com/gpu, so pods requesting one stay
    Pending, and a plugin that died leaves its socket file with nobody listening."""
    dp = ctx.host.device_plugins
    if dp is None:  # no such directory here: not a node, or not visible to mltop
        return []
    if dp.error:
        raise CheckSkipped(f"could not list the kubelet's device-plugins directory {dp.path}: {dp.error}")
    pods = [c for c in ctx.configured_containers() if c.kubernetes is not None and c.running]
    if not dp.kubelet_socket and not pods:
        return []
    if dp.listening_nvidia:
        return []
    asks: list[str] = []
    if ctx.snapshot.gpus:
        gpus = ", ".join(f"GPU {g.index} ({g.uuid})" for g in ctx.snapshot.gpus)
        asks.append(evidence(f"{len(ctx.snapshot.gpus)} GPU(s) on this node: {gpus}", "NVML"))
    asking = [(c, ev) for c in pods for ev in [_pod_gpu_asks(c)] if ev]
    for c, ev in asking[:_MAX_PODS_NAMED]:
        asks += [f"{c.name}: {line}" for line in ev]
    if len(asking) > _MAX_PODS_NAMED:
        asks.append(evidence(f"and {len(asking) - _MAX_PODS_NAMED} more pod container(s) meant to get GPUs",
                             "CRI ContainerStatus"))
    if not asks:
        return []
    ev = [evidence(f"{dp.path} holds: {', '.join(dp.entries) or 'nothing'}", "the kubelet's device-plugins directory")]
    if dp.kubelet_socket:
        ev.append(evidence("kubelet.sock is there: a kubelet runs on this node", dp.path))
    else:
        ev.append(evidence(f"no kubelet.sock, but {len(pods)} pod container(s) run here", "CRI ListContainers"))
    stale = [s for s in dp.nvidia_sockets if not s.listening]
    for s in stale:
        ev.append(evidence(f"{s.path}: {s.why_not}", "connect() on the socket"))
    if not stale:
        ev.append(evidence("no nvidia*.sock: NVIDIA's device plugin serves no resource here", dp.path))
    node = ctx.snapshot.host.hostname
    check = (f"`kubectl describe node {node} | grep nvidia.com/gpu` shows no `nvidia.com/gpu` (or 0) in Capacity "
             "and Allocatable until a plugin registers; pods requesting it stay Pending with `Insufficient "
             "nvidia.com/gpu`")
    if stale:
        title = "NVIDIA's device plugin socket is there but nobody listens: the kubelet offers no nvidia.com/gpu"
        fix = (f"Restart the plugin's pod on this node: find it with `kubectl get pods -A -o wide --field-selector "
               f"spec.nodeName={node} | grep nvidia-device-plugin`, read why it died with `kubectl -n <ns> logs "
               "<pod> --previous`, then `kubectl -n <ns> delete pod <pod>` (its DaemonSet starts a new one, which "
               f"creates the socket again); {check}")
    else:
        title = "No NVIDIA device plugin on this node: the kubelet offers no nvidia.com/gpu to the scheduler"
        fix = ("Deploy NVIDIA's device plugin: `helm repo add nvdp https://nvidia.github.io/k8s-device-plugin && "
               "helm upgrade -i nvdp nvdp/nvidia-device-plugin --namespace nvidia-device-plugin --create-namespace` "
               "(or `kubectl create -f https://raw.githubusercontent.com/NVIDIA/k8s-device-plugin/v0.17.1/"
               "deployments/static/nvidia-device-plugin.yml`), or the GPU Operator, which deploys it with the "
               "toolkit: `helm repo add nvidia https://helm.ngc.nvidia.com/nvidia && helm install --wait "
               "--generate-name -n gpu-operator --create-namespace nvidia/gpu-operator`; if one is deployed, see "
               f"why its DaemonSet has no running pod here: `kubectl get pods -A -o wide --field-selector "
               f"spec.nodeName={node} | grep nvidia-device-plugin` (a nodeSelector or taint, an image pull); {check}")
    return [Finding("k8s.device_plugin_missing", WARNING, None, title, tuple(ev + asks), fix)]
