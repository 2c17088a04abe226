"""The kubelet's pod-resources API (v1.PodResourcesLister/List): which devices each pod container was given.

It names pods and containers, not pod UIDs or container ids: the join is on namespace, pod and container
name. grpc is imported only when a socket exists or the user named one (the CRI client's rule)."""

from __future__ import annotations

import logging
import os
import stat

from ..model import GpuAllocation, SourceStatus
from . import normalise_endpoint, socket_path

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
ENV_VAR = "MLTOP_POD_RESOURCES_SOCKET"
DISABLED = ("none", "off", "")
KIND = "pod-resources"

# (namespace, pod, container) -> the GPUs allocated to it
Allocations = dict[tuple[str, str, str], tuple[GpuAllocation, ...]]


def is_gpu_resource(resource_name: str) -> bool:
    """NVIDIA's device plugin: nvidia.com/gpu, nvidia.com/mig-<profile>, renamed shared GPUs nvidia.com/gpu.shared."""
    return resource_name.startswith("nvidia.com/")


def parse_device_id(resource_name: str, device_id: str) -> GpuAllocation:
    """`GPU-<uuid>` (a whole GPU), `GPU-<uuid>::<n>` (time-slicing replica n), `MIG-<uuid>` (a MIG device)."""
    uuid, replica = device_id, None
    head, sep, tail = device_id.rpartition("::")
    if sep and tail.isdigit():
        uuid, replica = head, int(tail)
    mig = uuid.startswith("MIG-") or resource_name.startswith("nvidia.com/mig-")
    return GpuAllocation(resource_name, device_id, uuid, replica, mig)


def allocations_from_response(response) -> Allocations:
    out: Allocations = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            found = [parse_device_id(d.resource_name, device_id)
                     for d in container.devices if is_gpu_resource(d.resource_name) for device_id in d.device_ids]
            if found:
                out[(pod.namespace, pod.name, container.name)] = tuple(found)
    return out


class PodResourcesSource:
    """One kubelet socket: --pod-resources-socket, else $MLTOP_POD_RESOURCES_SOCKET (`none` turns it off), else
    the kubelet's default path. list() never raises: a kubelet that does not answer is a status."""

    def __init__(self, cli_value: str | None = None, timeout_s: float = 2.0):
        named = cli_value if cli_value is not None else os.environ.get(ENV_VAR)
        self.disabled = named is not None and named.strip().lower() in DISABLED
        self.named = named is not None and not self.disabled
        self.endpoint = normalise_endpoint(named.strip() if self.named else DEFAULT_SOCKET)
        self.timeout_s = timeout_s
        self._channel = None
        self._stub = None
        self._said: str | None = None  # the last trouble logged: said once, not every sweep

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None

    def _socket_exists(self) -> bool:
        try:
            return stat.S_ISSOCK(os.stat(socket_path(self.endpoint) or "").st_mode)
        except OSError:
            return False

    def list(self, pods_seen: bool) -> tuple[SourceStatus | None, Allocations]:
        """(its status, the allocations). No status at all where nobody named a socket, none exists and no pod
        container was seen (a host without Kubernetes); without the socket and with pods, one status says so."""
        if self.disabled:
            return None, {}
        if not self._socket_exists():
            if not (self.named or pods_seen):
                return None, {}
            return self._trouble("unreachable", f"No kubelet pod-resources socket at {socket_path(self.endpoint)}"
                                 ": the GPUs allocated to pods are not known (point --pod-resources-socket at it)")
        import grpc

        from .podresources_pb2 import ListPodResourcesRequest
        from .podresources_pb2_grpc import PodResourcesListerStub

        if self._stub is None:
            self._channel = grpc.insecure_channel(self.endpoint, options=[("grpc.enable_retries", 0)])
            self._stub = PodResourcesListerStub(self._channel)
        try:
            response = self._stub.List(ListPodResourcesRequest(), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
            if "permission denied" in details.lower():
                return self._trouble("permission_denied", f"Permission denied on {socket_path(self.endpoint)}: "
                                     "run mltop as root to see the GPUs allocated to pods")
            return self._trouble("unreachable", f"The kubelet's pod-resources API at {socket_path(self.endpoint)} "
                                 f"did not answer ({details.strip()[:160]})")
        self._said = None
        allocations = allocations_from_response(response)
        return SourceStatus(KIND, self.endpoint, "ok", None, "kubelet", None, len(allocations)), allocations

    def _trouble(self, status: str, message: str) -> tuple[SourceStatus, Allocations]:
        if message != self._said:
            log.warning("%s", message)
            self._said = message
        return SourceStatus(KIND, self.endpoint, status, message), {}
