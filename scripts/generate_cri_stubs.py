"""Generate probes/cri/runtime_pb2.py and runtime_pb2_grpc.py from probes/cri/runtime.proto (the CRI), and
podresources_pb2.py and podresources_pb2_grpc.py from podresources.proto (the kubelet's pod-resources API),
with grpcio-tools.

    python scripts/generate_cri_stubs.py            # rewrite the committed stubs
    python scripts/generate_cri_stubs.py OUT_DIR    # write them to OUT_DIR instead (the test compares)

The stubs are committed rather than generated at install: users need no protoc (grpcio-tools is a 2.5 MB
wheel with a C++ compiler of protos in it), and `pip install -e .` stays a plain copy. The proto is mapped to
the import path mltop/probes/cri so that runtime_pb2_grpc.py imports its messages from the package, not as a
top-level `runtime_pb2`. After a grpcio-tools upgrade, regenerate and raise the floors of grpcio and protobuf
in pyproject.toml to the versions the new stubs check for (GRPC_GENERATED_VERSION, and the protobuf gencode
version in runtime_pb2.py).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CRI_DIR = os.path.join(HERE, os.pardir, "probes", "cri")
PROTOS = ("runtime.proto", "podresources.proto")
STUBS = tuple(f"{proto[:-len('.proto')]}{suffix}" for proto in PROTOS for suffix in ("_pb2.py", "_pb2_grpc.py"))


def generate(out_dir: str) -> list[str]:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main([
            "grpc_tools.protoc",
            f"--proto_path=mltop/probes/cri={os.path.normpath(CRI_DIR)}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(f"mltop/probes/cri/{proto}" for proto in PROTOS),
        ])
        if code != 0:
            raise SystemExit(f"protoc failed ({code})")
        written = []
        for name in STUBS:
            target = os.path.join(out_dir, name)
            shutil.copyfile(os.path.join(tmp, "mltop", "probes", "cri", name), target)
            written.append(target)
    return written


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(CRI_DIR)
    for path in generate(out):
        print(path)
