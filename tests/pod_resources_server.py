"""The kubelet's pod-resources API for tests: a real grpcio server on a unix socket answering
v1.PodResourcesLister/List from a table the test sets ((namespace, pod, container) -> [(resource, [device ids])]),
spoken through the project's own stubs. There is no kubelet on these machines; this is its socket's stand-in."""

from __future__ import annotations

import os
import tempfile
from concurrent import futures


class PodResourcesServer:
    def __init__(self, path: str | None = None):
        import grpc

        from mltop.probes.cri import podresources_pb2 as pb
        from mltop.probes.cri import podresources_pb2_grpc as pb_grpc

        self.tmp = None
        if path is None:
            self.tmp = tempfile.mkdtemp(prefix="mltop-kubelet-")
            path = os.path.join(self.tmp, "kubelet.sock")
        self.path = path
        self.endpoint = f"unix://{path}"
        self.allocations: dict[tuple[str, str, str], list[tuple[str, list[str]]]] = {}
        self.calls = 0
        server = self

        class Lister(pb_grpc.PodResourcesListerServicer):
            def List(self, request, context):  # noqa: N802 (the gRPC method's name)
                server.calls += 1
                pods: dict[tuple[str, str], pb.PodResources] = {}
                for (namespace, pod, container), devices in sorted(server.allocations.items()):
                    entry = pods.setdefault((namespace, pod), pb.PodResources(name=pod, namespace=namespace))
                    entry.containers.append(pb.ContainerResources(name=container, devices=[
                        pb.ContainerDevices(resource_name=resource, device_ids=ids,
                                            topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=0)]))
                        for resource, ids in devices], cpu_ids=[0, 1]))
                return pb.ListPodResourcesResponse(pod_resources=list(pods.values()))

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_PodResourcesListerServicer_to_server(Lister(), self._server)
        self._server.add_insecure_port(self.endpoint)
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()
        if self.tmp is not None:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)
