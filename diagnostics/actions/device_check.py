"""The framework device check: the container's own Python runs device_check_script.py and says what it sees."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Mapping

from .context import ActionContext
from .results import FAILED, OK, UNAVAILABLE, ActionOutcome, Finished, end_if_interrupted, require_running


DEVICE_CHECK_SCRIPT = "device_check_script.py"
DEVICE_CHECK_LABEL = "<mltop device_check.py>"


def device_check_source() -> str:
    """The in-container script's text (package data, so it is there in a wheel or a zip too)."""
    return resources.files(__package__).joinpath(DEVICE_CHECK_SCRIPT).read_text(encoding="utf-8")


def _parse_check_json(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except (ValueError, RecursionError):  # the container's stdout: not JSON, or nested past the parser
                return None
            return doc if isinstance(doc, dict) else None
    return None


def _yes_no(value: Any) -> str:
    return "?" if value is None else ("yes" if value else "no")


def summarize_device_check(doc: Mapping[str, Any]) -> list[str]:
    """Readable lines for the check's JSON document."""
    lines = []
    py = doc.get("python") or {}
    lines.append(f"Python {py.get('version', '?')} ({py.get('executable', '?')})")
    driver = doc.get("cuda_driver") or {}
    if driver.get("loadable"):
        lines.append(f"CUDA driver library: libcuda.so.1 loads, CUDA {driver.get('version') or '?'}")
    else:
        lines.append(f"CUDA driver library: not loadable ({driver.get('error') or 'no reason given'})")
    nodes = doc.get("device_nodes") or []
    lines.append("NVIDIA device nodes: " + (", ".join(f"/dev/{n}" for n in nodes) if nodes else "none"))
    for module, fw in (doc.get("frameworks") or {}).items():
        name = fw.get("name", module)
        if not fw.get("installed"):
            lines.append(f"{name}: not installed")
            continue
        if not fw.get("imported"):
            lines.append(f"{name}: installed but the check failed")
        else:
            cuda = fw.get("built_with_cuda") or "none (CPU-only build)"
            names = ", ".join(fw.get("device_names") or []) or "-"
            lines.append(f"{name} {fw.get('version')}: built with CUDA {cuda}; sees a GPU: "
                         f"{_yes_no(fw.get('gpu_available'))}; devices: {fw.get('device_count')} ({names}); "
                         f"a small tensor lands on: {fw.get('tensor_device')}")
        for err in fw.get("errors") or []:
            lines.append(f"  error: {err}")
        for warning in fw.get("warnings") or []:
            lines.append(f"  warning: {warning}")
    return lines


def run_device_check(run: ActionContext) -> ActionOutcome:
    container = run.container
    assert container is not None
    require_running(container)
    script = device_check_source()
    outcome = None
    tried = []
    for exe in ("python3", "python"):
        outcome = run.exec_in_container([exe, "-c", script], capture_stdout=True,
                                        shown_as=[exe, "-c", DEVICE_CHECK_LABEL])
        end_if_interrupted(outcome, "The device check")
        tried.append(exe)
        if not outcome.not_found:
            break
        run.emit(f"{exe}: not found in the container")
    assert outcome is not None
    if outcome.not_found:
        raise Finished(UNAVAILABLE, f"No Python in {container.name}: neither python3 nor python is on its PATH "
                                     "(the engine answered \"executable file not found\"). The device check runs "
                                     "the container's own Python, so there is nothing to check here.",
                        outcome.exit_code)
    if outcome.error:
        raise Finished(FAILED, f"docker exec failed: {outcome.error}")
    doc = _parse_check_json(outcome.stdout)
    if doc is None:
        for line in outcome.stdout.splitlines():
            run.emit(line)
        raise Finished(FAILED, f"{tried[-1]} exited with status {outcome.exit_code} without the check's result; "
                                "its output is above (the check needs Python 3.6 or newer).", outcome.exit_code)
    if run.lines:
        run.emit("")
    for line in summarize_device_check(doc):
        run.emit(line)
    installed = doc.get("installed") or []
    explanation = None
    if not installed:
        explanation = (f"No ML framework is installed for {tried[-1]} in {container.name}: none of PyTorch, "
                       "TensorFlow, JAX or CuPy can be imported, so nothing can be placed on a GPU.")
    else:
        notes = []
        for module in installed:
            fw = doc["frameworks"][module]
            if fw.get("imported") and not fw.get("built_with_cuda") and module in ("torch", "cupy", "jax"):
                notes.append(f"{fw['name']} is a CPU-only build: it cannot use a GPU whatever the container "
                             "is given; install a CUDA build.")
            elif fw.get("imported") and fw.get("built_with_cuda") and not fw.get("gpu_available"):
                notes.append(f"{fw['name']} was built with CUDA {fw['built_with_cuda']} but sees no GPU.")
            elif not fw.get("imported"):
                notes.append(f"{fw['name']} is installed but its check failed: "
                             + "; ".join(fw.get("errors") or ["no error text"]))
        explanation = " ".join(notes) or None
    return OK, explanation, outcome.exit_code, doc

