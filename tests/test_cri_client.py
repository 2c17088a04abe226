"""probes/cri: the committed stubs are what runtime.proto generates; endpoints are found as documented; an
endpoint that is no CRI runtime (Docker's own containerd, CRI plugin disabled) is "no_cri", not an alarm;
and grpc is imported only when an endpoint exists."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mltop.probes.cri import DEFAULT_ENDPOINTS, cri_endpoints, normalise_endpoint

REPO = Path(__file__).resolve().parent.parent
CRI_DIR = REPO / "probes" / "cri"
# Docker's own containerd (Docker 20.10 starts one under /var/run/docker; Debian's packaged docker.io uses the
# system containerd at /run/containerd, CRI plugin disabled in both)
DOCKER_CONTAINERD = ("/var/run/docker/containerd/containerd.sock", "/run/containerd/containerd.sock")


def test_committed_stubs_match_the_proto(tmp_path):
    """The stubs describe exactly runtime.proto and podresources.proto (the descriptor, whatever grpcio-tools made
    them); and with the grpcio-tools that generated them, they are byte for byte what it generates."""
    pytest.importorskip("grpc_tools")
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import generate_cri_stubs
    finally:
        sys.path.pop(0)
    generate_cri_stubs.generate(str(tmp_path))
    from grpc_tools import protoc

    from google.protobuf import descriptor_pb2

    from mltop.probes.cri import podresources_pb2, runtime_pb2, runtime_pb2_grpc

    for proto, module in (("runtime", runtime_pb2), ("podresources", podresources_pb2)):
        descriptor_set = tmp_path / f"{proto}.desc"
        assert protoc.main(["protoc", f"--proto_path=mltop/probes/cri={CRI_DIR}",
                            f"--descriptor_set_out={descriptor_set}", f"mltop/probes/cri/{proto}.proto"]) == 0
        fresh = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file[0]
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        _drop_json_names(fresh)  # protoc puts them in a descriptor set; Python gencode leaves them out
        assert fresh == committed, f"probes/cri/{proto}_pb2.py is stale: run python scripts/generate_cri_stubs.py"
    import grpc_tools

    generated_by = runtime_pb2_grpc.GRPC_GENERATED_VERSION
    tools_version = getattr(grpc_tools, "__version__", None) or _dist_version("grpcio-tools")
    if tools_version == generated_by:
        for name in generate_cri_stubs.STUBS:
            assert (tmp_path / name).read_text() == (CRI_DIR / name).read_text(), name


def _drop_json_names(file_proto) -> None:
    def visit(messages):
        for message in messages:
            for f in message.field:
                f.ClearField("json_name")
            visit(message.nested_type)
    visit(file_proto.message_type)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def test_the_wire_names_are_the_published_protocol():
    from mltop.probes.cri import runtime_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["RuntimeService"]
    assert service.full_name == "runtime.v1.RuntimeService"
    fields = {f.name: f.number for f in pb.ContainerStatus.DESCRIPTOR.fields}
    assert (fields["exit_code"], fields["labels"], fields["annotations"], fields["log_path"]) == (7, 12, 13, 15)
    assert {f.name: f.number for f in pb.LinuxPodSandboxConfig.DESCRIPTOR.fields}["cgroup_parent"] == 1
    assert pb.NamespaceMode.Value("NODE") == 2


def test_endpoints_named_by_option_or_environment(monkeypatch):
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", "/tmp/x.sock")
    assert cri_endpoints() == (("unix:///tmp/x.sock", True),)
    assert cri_endpoints("unix:///run/k3s/containerd/containerd.sock") == (
        ("unix:///run/k3s/containerd/containerd.sock", True),)
    assert cri_endpoints("none") == ()
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", "off")
    assert cri_endpoints() == ()
    assert normalise_endpoint("unix:/run/a.sock") == "unix:///run/a.sock"


def test_default_endpoints_are_the_sockets_that_exist(monkeypatch):
    monkeypatch.delenv("MLTOP_CRI_ENDPOINT", raising=False)
    expected = tuple((f"unix://{p}", False) for p in DEFAULT_ENDPOINTS if os.path.exists(p))
    assert cri_endpoints() == expected


def _docker_containerd() -> str:
    for path in DOCKER_CONTAINERD:
        if os.path.exists(path):
            return path
    if os.environ.get("MLTOP_REQUIRE_DOCKER") == "1":
        pytest.fail("no Docker containerd socket")
    pytest.skip("no Docker containerd socket here")


def test_dockers_containerd_is_no_cri_not_an_alarm():
    from mltop.probes.cri.client import CriClient, CriError

    path = _docker_containerd()
    client = CriClient(f"unix://{path}")
    try:
        with pytest.raises(CriError) as raised:
            client.version()
    finally:
        client.close()
    assert raised.value.status == "no_cri", raised.value.message
    assert raised.value.code == "UNIMPLEMENTED"
    assert "CRI plugin disabled" in raised.value.message


def test_missing_socket_and_a_socket_that_speaks_no_grpc(tmp_path):
    from mltop.probes.cri.client import CriClient, CriError

    client = CriClient(f"unix://{tmp_path}/absent.sock", timeout_s=1.0)
    with pytest.raises(CriError) as raised:
        client.version()
    client.close()
    assert raised.value.status == "unreachable" and "does not exist" in raised.value.message
    # a listening socket that accepts and closes: not a runtime
    path = str(tmp_path / "mute.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    client = CriClient(f"unix://{path}", timeout_s=1.0)
    try:
        with pytest.raises(CriError) as raised:
            client.version()
    finally:
        client.close()
        server.close()
    assert raised.value.status == "unreachable"


def test_grpc_is_imported_only_for_an_endpoint():
    """Importing the probes (and finding no endpoint) does not import grpc or protobuf."""
    code = ("import sys; import mltop.probes.sampler, mltop.probes.cri as cri; cri.cri_endpoints('none'); "
            "print(sorted(m for m in sys.modules if m.startswith(('grpc', 'google.protobuf'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
