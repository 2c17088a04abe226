"""A small gRPC client of runtime.v1.RuntimeService (containerd's CRI plugin, CRI-O) over a unix socket."""

from __future__ import annotations

import grpc

from . import runtime_pb2 as pb
from .runtime_pb2_grpc import RuntimeServiceStub
from . import socket_path

# the CRI version string a client states in VersionRequest (kubelet sends its API version)
CRI_API_VERSION = "v1"
# the largest answer taken (an ExecSync's whole output): 16 MiB, over grpc's 4 MiB default
MAX_MESSAGE = 16 << 20


class CriError(Exception):
    """The endpoint did not answer as a CRI runtime; `status` says how, the message in words a user can act on.

    status: "unreachable" (no socket, refused, timed out), "permission_denied", "no_cri" (the socket answers
    gRPC but has no CRI: Docker's own containerd, whose CRI plugin is disabled), "error" (anything else)."""

    def __init__(self, status: str, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code  # the gRPC status code's name, e.g. "NOT_FOUND"


def explain_rpc_error(exc: grpc.RpcError, endpoint: str, method: str) -> CriError:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    name = code.name if code is not None else None
    path = socket_path(endpoint) or endpoint
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return CriError("no_cri", f"{path} answers gRPC but not the CRI (runtime.v1.RuntimeService/{method} "
                        "is not implemented: a containerd with its CRI plugin disabled, as Docker runs its own)",
                        name)
    if code == grpc.StatusCode.UNAVAILABLE:
        lowered = details.lower()
        if "permission denied" in lowered:
            return CriError("permission_denied", f"Permission denied on {path}: run mltop as root, or give "
                            "your user access to the runtime's socket", name)
        if "no such file" in lowered:
            return CriError("unreachable", f"No CRI runtime at {path} (the socket does not exist)", name)
        return CriError("unreachable", f"The CRI runtime at {path} did not answer ({details.strip()[:160]})", name)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CriError("unreachable", f"The CRI runtime at {path} did not answer in time ({method})", name)
    return CriError("error", f"CRI {method} at {path}: {name}: {details.strip()[:300]}", name)


class CriClient:
    """One channel to one CRI endpoint; every call has a deadline and raises CriError, never grpc's errors."""

    def __init__(self, endpoint: str, timeout_s: float = 2.0):
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        # (one connection; no retries of our own: a sweep that fails tries again at the next one)
        self._channel = grpc.insecure_channel(endpoint, options=[("grpc.enable_retries", 0),
                                                                 ("grpc.max_receive_message_length", MAX_MESSAGE)])
        self._stub = RuntimeServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request, timeout_s: float | None = None):
        try:
            return getattr(self._stub, method)(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise explain_rpc_error(exc, self.endpoint, method) from None

    # ----------------------------------------------------------------------------- reading

    def version(self) -> pb.VersionResponse:
        return self._call("Version", pb.VersionRequest(version=CRI_API_VERSION))

    def list_pod_sandboxes(self) -> list[pb.PodSandbox]:
        return list(self._call("ListPodSandbox", pb.ListPodSandboxRequest()).items)

    def list_containers(self) -> list[pb.Container]:
        return list(self._call("ListContainers", pb.ListContainersRequest()).containers)

    def container_status(self, container_id: str, verbose: bool = True) -> pb.ContainerStatusResponse:
        return self._call("ContainerStatus", pb.ContainerStatusRequest(container_id=container_id, verbose=verbose))

    def pod_sandbox_status(self, sandbox_id: str, verbose: bool = False) -> pb.PodSandboxStatusResponse:
        return self._call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id,
                                                                          verbose=verbose))

    def exec_sync_future(self, container_id: str, argv: list[str], timeout_s: int):
        """ExecSync as a gRPC future (cancel() ends the call; the runtime kills an exec past its `timeout`).
        Raises grpc's errors from .result(): explain them with explain_rpc_error."""
        request = pb.ExecSyncRequest(container_id=container_id, cmd=list(argv), timeout=int(timeout_s))
        return self._stub.ExecSync.future(request, timeout=timeout_s + 10.0)

    # ----------------------------------------------------------------------------- acting (the tests' kubelet)

    def run_pod_sandbox(self, config: pb.PodSandboxConfig, runtime_handler: str = "") -> str:
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        return self._call("RunPodSandbox", request, timeout_s=max(self.timeout_s, 60.0)).pod_sandbox_id

    def create_container(self, sandbox_id: str, config: pb.ContainerConfig,
                         sandbox_config: pb.PodSandboxConfig) -> str:
        request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config,
                                            sandbox_config=sandbox_config)
        return self._call("CreateContainer", request, timeout_s=max(self.timeout_s, 60.0)).container_id

    def start_container(self, container_id: str) -> None:
        self._call("StartContainer", pb.StartContainerRequest(container_id=container_id),
                   timeout_s=max(self.timeout_s, 60.0))

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        self._call("StopContainer", pb.StopContainerRequest(container_id=container_id, timeout=timeout),
                   timeout_s=max(self.timeout_s, timeout + 30.0))

    def remove_container(self, container_id: str) -> None:
        self._call("RemoveContainer", pb.RemoveContainerRequest(container_id=container_id),
                   timeout_s=max(self.timeout_s, 30.0))

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self._call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id),
                   timeout_s=max(self.timeout_s, 30.0))

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self._call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
                   timeout_s=max(self.timeout_s, 30.0))
