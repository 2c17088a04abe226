"""The framework device-placement check, run by a container's own Python; prints one JSON document.

mltop never imports this module: it reads this file's text and runs `python3 -c <text>` inside the
container (argv, no shell), so it must stay self-contained, use only the standard library, and keep to
syntax old Pythons accept (3.6). Each framework is checked in a forked child, so that a framework that
crashes, hangs or grabs the GPU on import cannot take the others or the report down with it; the parent
never imports a framework. Everything a framework prints goes to stderr; stdout carries only the JSON.
"""

import ctypes
import importlib.util
import json
import os
import platform
import select
import signal
import sys
import time
import traceback
import warnings

SCHEMA = 1
FRAMEWORKS = (
    ("torch", "PyTorch"),
    ("tensorflow", "TensorFlow"),
    ("jax", "JAX"),
    ("cupy", "CuPy"),
)
CHILD_TIMEOUT_S = float(os.environ.get("MLTOP_DEVICE_CHECK_TIMEOUT", "90"))
ENV_NAMES = (
    "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VISIBLE_DEVICES", "NVIDIA_REQUIRE_CUDA",
    "CUDA_VERSION", "LD_LIBRARY_PATH", "PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "XLA_PYTHON_CLIENT_PREALLOCATE",
)


def _error_text(exc):
    text = "%s: %s" % (type(exc).__name__, exc)
    return text.strip()[:2000]


def _warnings_text(caught):
    out = []
    for w in caught:
        message = str(w.message).strip()
        if message and message not in out:
            out.append(message[:1000])
    return out[:10]


# --------------------------------------------------------------------------- per framework (in a child)


def check_torch(result):
    import torch

    result["version"] = str(torch.__version__)
    result["built_with_cuda"] = getattr(torch.version, "cuda", None)
    result["built_with_rocm"] = getattr(torch.version, "hip", None)
    try:
        result["cudnn"] = torch.backends.cudnn.version()
    except Exception as exc:
        result["cudnn"] = None
        result["errors"].append("cudnn: " + _error_text(exc))
    result["gpu_available"] = bool(torch.cuda.is_available())
    result["device_count"] = int(torch.cuda.device_count()) if result["gpu_available"] else 0
    names = []
    for i in range(result["device_count"]):
        try:
            cap = torch.cuda.get_device_capability(i)
            names.append("%s (sm_%d%d)" % (torch.cuda.get_device_name(i), cap[0], cap[1]))
        except Exception as exc:
            result["errors"].append("device %d: %s" % (i, _error_text(exc)))
    result["device_names"] = names
    if result["gpu_available"]:
        try:
            result["arch_list"] = list(torch.cuda.get_arch_list())
        except Exception:
            pass
    device = "cuda" if result["gpu_available"] else "cpu"
    tensor = torch.ones(4, device=device)
    result["tensor_device"] = str(tensor.device)
    # A kernel launch, not just an allocation: "no kernel image is available" shows up only here.
    result["tensor_op_ok"] = float((tensor * 2).sum().item()) == 8.0


def check_tensorflow(result):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow as tf

    result["version"] = str(tf.__version__)
    try:
        info = tf.sysconfig.get_build_info()
        result["built_with_cuda"] = info.get("cuda_version")
        result["cudnn"] = info.get("cudnn_version")
        result["cuda_build"] = bool(info.get("is_cuda_build"))
    except Exception as exc:
        result["errors"].append("build info: " + _error_text(exc))
    gpus = tf.config.list_physical_devices("GPU")
    result["gpu_available"] = bool(gpus)
    result["device_count"] = len(gpus)
    names = []
    for gpu in gpus:
        try:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(str(details.get("device_name") or gpu.name))
        except Exception:
            names.append(str(gpu.name))
    result["device_names"] = names
    tensor = tf.constant([1.0, 2.0, 3.0, 4.0])
    result["tensor_device"] = str(tensor.device)
    result["tensor_op_ok"] = float(tf.reduce_sum(tensor * 2).numpy()) == 20.0


def check_jax(result):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp

    result["version"] = str(jax.__version__)
    try:
        import jaxlib

        result["jaxlib"] = str(getattr(jaxlib, "__version__", None) or jaxlib.version.__version__)
    except Exception:
        pass
    try:
        from jax._src.lib import cuda_versions

        if cuda_versions is not None:
            version = cuda_versions.cuda_runtime_build_version()
            result["built_with_cuda"] = "%d.%d" % (version // 1000, (version % 1000) // 10)
    except Exception:
        result.setdefault("built_with_cuda", None)
    result["default_backend"] = str(jax.default_backend())
    try:
        gpus = jax.devices("gpu")
    except Exception as exc:
        gpus = []
        result["gpu_error"] = _error_text(exc)
    result["gpu_available"] = bool(gpus)
    result["device_count"] = len(gpus)
    result["device_names"] = [str(getattr(d, "device_kind", d)) for d in gpus]
    tensor = jnp.ones(4)
    devices = tensor.devices() if hasattr(tensor, "devices") else {tensor.device()}
    result["tensor_device"] = ", ".join(sorted(str(d) for d in devices))
    result["tensor_op_ok"] = float((tensor * 2).sum()) == 8.0


def check_cupy(result):
    import cupy

    result["version"] = str(cupy.__version__)
    try:
        version = cupy.cuda.runtime.runtimeGetVersion()
        result["built_with_cuda"] = "%d.%d" % (version // 1000, (version % 1000) // 10)
    except Exception as exc:
        result["built_with_cuda"] = None
        result["errors"].append("runtime version: " + _error_text(exc))
    count = cupy.cuda.runtime.getDeviceCount()  # raises CUDARuntimeError when there is no usable GPU
    result["gpu_available"] = count > 0
    result["device_count"] = int(count)
    names = []
    for i in range(count):
        name = cupy.cuda.runtime.getDeviceProperties(i).get("name")
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    result["device_names"] = names
    tensor = cupy.ones(4)
    result["tensor_device"] = "cuda:%d" % tensor.device.id
    result["tensor_op_ok"] = float((tensor * 2).sum()) == 8.0


CHECKS = {"torch": check_torch, "tensorflow": check_tensorflow, "jax": check_jax, "cupy": check_cupy}


def run_one(module):
    result = {"installed": True, "imported": False, "version": None, "built_with_cuda": None,
              "gpu_available": None, "device_count": None, "device_names": [], "tensor_device": None,
              "errors": [], "warnings": []}
    started = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            CHECKS[module](result)
            result["imported"] = True
        except Exception as exc:
            result["imported"] = module in sys.modules and result["version"] is not None
            result["errors"].append(_error_text(exc))
            result["traceback"] = traceback.format_exc()[-3000:]
    result["warnings"] = _warnings_text(caught)
    result["seconds"] = round(time.time() - started, 2)
    return result


# --------------------------------------------------------------------------- the parent


def _in_child(module, timeout_s):
    """Fork, run one framework's check in the child, return its result dict (or why it has none)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.dup2(2, 1)  # whatever the framework prints must not mix with the JSON on stdout
        try:
            payload = json.dumps(run_one(module), default=str).encode()
        except BaseException as exc:
            payload = json.dumps({"installed": True, "imported": False, "errors": [_error_text(exc)]}).encode()
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view):]
        os._exit(0)
    os.close(write_fd)
    chunks = []
    deadline = time.time() + timeout_s
    timed_out = False
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return {"installed": True, "imported": False,
                "errors": ["the check did not finish within %d s (import or device init hangs)" % timeout_s]}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return {"installed": True, "imported": False,
                "errors": ["the check crashed with signal %s (for example a segfault in the framework's "
                           "native libraries)" % name]}
    try:
        return json.loads(b"".join(chunks).decode("utf-8", "replace"))
    except ValueError:
        return {"installed": True, "imported": False, "errors": ["the check produced no result"]}


def cuda_driver():
    """Whether libcuda.so.1 (the driver library the toolkit injects) loads, and its CUDA version."""
    out = {"loadable": False, "version": None, "error": None}
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        out["error"] = str(exc)
        return out
    out["loadable"] = True
    version = ctypes.c_int(0)
    try:
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
            out["version"] = "%d.%d" % (version.value // 1000, (version.value % 1000) // 10)
    except Exception as exc:
        out["error"] = _error_text(exc)
    return out


def main():
    try:
        os.setpgid(0, 0)  # so that mltop can end this check and its children together on cancel
    except OSError:
        pass
    doc = {
        "schema": SCHEMA,
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "env": dict((name, os.environ[name]) for name in ENV_NAMES if name in os.environ),
        "device_nodes": sorted(n for n in os.listdir("/dev") if n.startswith("nvidia")) if os.path.isdir("/dev") else [],
        "cuda_driver": cuda_driver(),
        "frameworks": {},
    }
    for module, label in FRAMEWORKS:
        try:
            installed = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            installed = False
        if not installed:
            doc["frameworks"][module] = {"name": label, "installed": False}
            continue
        sys.stderr.write("mltop device check: %s ...\n" % label)
        sys.stderr.flush()
        result = _in_child(module, CHILD_TIMEOUT_S)
        result["name"] = label
        doc["frameworks"][module] = result
    doc["installed"] = [m for m, _ in FRAMEWORKS if doc["frameworks"][m].get("installed")]
    sys.stdout.write(json.dumps(doc, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
