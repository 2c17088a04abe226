"""nvidia-smi in the container; when it is missing or fails, why (in plain words) and the host's NVML view."""

from __future__ import annotations

from typing import Sequence

from mltop.probes.model import ContainerSample, GpuSample, HostInfo, Snapshot

from ..one_line import one_line
from .context import ActionContext
from .results import FAILED, OK, UNAVAILABLE, ActionOutcome, Finished, end_if_interrupted, require_running

SMI_TYPES = {"compute": "C", "graphics": "G", "mps": "M+C"}  # nvidia-smi's Type column (M+C: an MPS client)


def run_nvidia_smi(run: ActionContext) -> ActionOutcome:
    container = run.container
    assert container is not None
    require_running(container)
    outcome = run.exec_in_container(["nvidia-smi"])
    end_if_interrupted(outcome, "nvidia-smi")
    if outcome.error and not outcome.not_found:
        how = "CRI exec" if container.kubernetes is not None else "docker exec"
        raise Finished(FAILED, f"{how} failed: {outcome.error}")
    if not outcome.not_found and outcome.exit_code == 0:
        return OK, None, 0, {}
    if outcome.not_found:
        explanation = explain_missing_nvidia_smi(container, run.snapshot.host)
        status = UNAVAILABLE  # the engine's own "executable file not found" line stays above as evidence
    else:
        explanation = explain_nvidia_smi_failure(outcome.text, outcome.exit_code)
        status = FAILED
    if run.lines:
        run.emit("")
    view = host_gpu_view(run.snapshot, container)
    for line in view.splitlines():
        run.emit(line)
    gpus = [g.index for g in container_gpus(run.snapshot, container)]
    return status, explanation, outcome.exit_code, {"fallback": "host_nvml", "gpu_indices": gpus}


def _gpu_capabilities(container: ContainerSample) -> tuple[set[str] | None, str]:
    """The driver capabilities the toolkit will honour for this container, and where that came from."""
    cfg = container.config
    for request in cfg.device_requests:
        if request.driver in ("", "nvidia"):
            caps = {c for group in request.capabilities for c in group} - {"gpu"}
            if caps:
                return caps, "the device request's capabilities"
    env = cfg.env_value("NVIDIA_DRIVER_CAPABILITIES")
    if env is None or not env.strip():
        return None, "NVIDIA_DRIVER_CAPABILITIES (unset: the toolkit's default is utility,compute)"
    return {c.strip() for c in env.split(",") if c.strip()}, f"NVIDIA_DRIVER_CAPABILITIES={env}"


def _uses_nvidia_runtime(container: ContainerSample, host: HostInfo) -> bool:
    runtime = container.config.runtime
    return runtime == "nvidia" or (not runtime and host.default_runtime == "nvidia")


def explain_missing_nvidia_smi(container: ContainerSample, host: HostInfo) -> str:
    """Why the NVIDIA Container Toolkit did not put nvidia-smi into this container, in plain words."""
    cfg = container.config
    has_request = any(r.driver in ("", "nvidia", "cdi") for r in cfg.device_requests)
    nvidia_runtime = _uses_nvidia_runtime(container, host)
    visible = cfg.env_value("NVIDIA_VISIBLE_DEVICES")
    toolkit_present = "nvidia" in host.runtimes or bool(host.cdi_spec_dirs)
    if not has_request and not nvidia_runtime:
        text = (f"nvidia-smi is not in {container.name} because it was started without GPUs: it has no GPU "
                "device request (--gpus), does not use the nvidia runtime and names no CDI device. The NVIDIA "
                "Container Toolkit injects nvidia-smi and the driver libraries only into containers that ask "
                "for GPUs. Recreate it with `--gpus all` (Compose: deploy.resources.reservations.devices with "
                "capabilities: [gpu]).")
        if not toolkit_present:
            runtimes = ", ".join(host.runtimes) or "none"
            text += (f" This engine lists no nvidia runtime (runtimes: {runtimes}) and no CDI spec directory, "
                     "so there may be no GPU runtime on this host at all: install nvidia-container-toolkit and "
                     "run `sudo nvidia-ctk runtime configure --runtime=docker`, then restart dockerd.")
        return text
    if nvidia_runtime and not has_request and (visible is None or visible.strip().lower() in ("", "void", "none")):
        shown = "unset" if visible is None else f"{visible!r}"
        return (f"{container.name} uses the nvidia runtime, but NVIDIA_VISIBLE_DEVICES is {shown}, so the "
                "toolkit injects no GPU and no driver utilities. Set NVIDIA_VISIBLE_DEVICES=all (or GPU "
                "indices/UUIDs), or use `--gpus all`.")
    caps, source = _gpu_capabilities(container)
    if caps is not None and not caps & {"utility", "all"}:
        wanted = ",".join(sorted(caps | {"utility"}))
        return (f"{container.name} asks for GPUs, but its driver capabilities ({source}) do not include "
                "`utility`: the toolkit mounts nvidia-smi and libnvidia-ml.so only with the utility "
                f"capability. Set NVIDIA_DRIVER_CAPABILITIES={wanted} (or all), or "
                f"`--gpus 'all,\"capabilities={wanted}\"'`.")
    return (f"{container.name} asks for GPUs with the utility capability ({source}), yet nvidia-smi is not "
            "on its PATH: the toolkit's hook did not inject it. Check on the host that "
            "`nvidia-container-cli -d /dev/tty info` finds nvidia-smi, and with CDI that the spec lists it "
            "(`nvidia-ctk cdi list`; regenerate with `nvidia-ctk cdi generate`). The toolkit mounts it at "
            "/usr/bin/nvidia-smi, so a PATH without /usr/bin hides it too.")


def explain_nvidia_smi_failure(text: str, exit_code: int | None) -> str:
    """Known nvidia-smi failure messages, explained."""
    lowered = text.lower()
    if "failed to initialize nvml: unknown error" in lowered:
        return ("nvidia-smi runs but NVML cannot open the GPUs (\"Failed to initialize NVML: Unknown Error\"): "
                "the container lost access to the GPU device nodes, typically after `systemctl daemon-reload` "
                "on a host with the systemd cgroup driver. Restarting the container restores access; to stop it "
                "recurring use CDI, or the workaround in the NVIDIA Container Toolkit's troubleshooting guide.")
    if "driver/library version mismatch" in lowered:
        return ("The NVIDIA driver was upgraded on the host but the old kernel module is still loaded "
                "(\"Driver/library version mismatch\"): reboot the host, or unload and reload the nvidia "
                "modules when no process uses the GPUs.")
    if "couldn't communicate with the nvidia driver" in lowered:
        return ("nvidia-smi cannot reach the NVIDIA kernel driver: it is not loaded on the host (check "
                "`lsmod | grep nvidia` and `dmesg | grep NVRM` there).")
    if "no devices were found" in lowered:
        return ("nvidia-smi finds no GPU in the container: no device node was passed in. Check the GPU "
                "request (--gpus, NVIDIA_VISIBLE_DEVICES) and that the GPUs are present on the host.")
    return f"nvidia-smi exited with status {exit_code}; its output is above."


def _assigned_gpu_ids(container: ContainerSample, host: HostInfo) -> tuple[bool, set[str]]:
    """(all GPUs?, specific GPU indices/UUIDs) the container was given, from its config."""
    ids: set[str] = set()
    everything = False
    for request in container.config.device_requests:
        if request.driver in ("", "nvidia"):
            if request.count == -1:
                everything = True
            ids.update(request.device_ids)
        elif request.driver == "cdi":
            for device in request.device_ids:
                if device.startswith("nvidia.com/gpu="):
                    value = device.split("=", 1)[1]
                    everything = everything or value == "all"
                    ids.add(value)
    if _uses_nvidia_runtime(container, host):
        visible = (container.config.env_value("NVIDIA_VISIBLE_DEVICES") or "").strip()
        if visible.lower() == "all":
            everything = True
        elif visible.lower() not in ("", "void", "none"):
            ids.update(v.strip() for v in visible.split(","))
    return everything, ids


def container_gpus(snapshot: Snapshot, container: ContainerSample) -> list[GpuSample]:
    """The host GPUs this container is given (by its config) or uses (by its processes)."""
    everything, ids = _assigned_gpu_ids(container, snapshot.host)
    used = {g.index for g in container.gpus}
    out = []
    for gpu in snapshot.gpus:
        if (everything or gpu.index in used or str(gpu.index) in ids or gpu.uuid in ids
                or any(p.container_id == container.id for p in gpu.processes)):
            out.append(gpu)
    return out


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value // (1024 * 1024)}MiB"


def _num(value: float | None, unit: str, digits: int = 0) -> str:
    return "N/A" if value is None else f"{value:.{digits}f}{unit}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(cells: Sequence[str], align: Sequence[int]) -> str:
        parts = [c.rjust(w) if i in align else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(parts) + " |"

    return [rule, fmt(headers, ()), rule.replace("-", "="), *(fmt(r, right) for r in rows), rule]


def host_gpu_view(snapshot: Snapshot, container: ContainerSample) -> str:
    """nvidia-smi-like text of the host's NVML view, restricted to this container's GPUs and processes."""
    host = snapshot.host
    if not host.nvml.ok:
        return (f"The host's NVML view is not available either ({host.nvml.status}: "
                f"{host.nvml.error or 'no reason given'}), so there are no GPU figures to show.")
    gpus = container_gpus(snapshot, container)
    title = (f"Host NVML view for {container.name} — driver {host.nvml.driver_version or '?'}, "
             f"CUDA {host.nvml.cuda_driver_version or '?'} (from the host, not from inside the container)")
    if not gpus:
        return (f"{title}\nNo GPU is assigned to or used by {container.name} "
                f"(the host has {len(snapshot.gpus)} GPU{'s' if len(snapshot.gpus) != 1 else ''}).")
    rows = []
    for g in gpus:
        power = (f"{_num(g.power_w, 'W')} / {_num(g.power_limit_w, 'W')}"
                 if g.power_w is not None or g.power_limit_w is not None else "N/A")
        rows.append([str(g.index), g.name, g.pci_bus_id or "N/A", _num(g.utilization_percent, "%"),
                     _num(g.temperature_c, "C"), f"{_mib(g.memory_used_bytes)} / {_mib(g.memory_total_bytes)}",
                     power, ",".join(g.throttle_reasons) or "-"])
    lines = [title, *_table(["GPU", "Name", "Bus-Id", "Util", "Temp", "Memory-Usage", "Pwr:Usage/Cap",
                             "Throttle"], rows, right=(0, 3, 4, 5))]
    by_pid = {p.host_pid: p for p in container.processes}
    proc_rows = []
    for g in gpus:
        for p in g.processes:
            if p.container_id != container.id:
                continue
            sample = by_pid.get(p.host_pid)
            name = (sample.cmdline if sample else None) or p.name or "?"
            proc_rows.append([str(g.index), str(p.host_pid),
                              str(sample.container_pid) if sample and sample.container_pid else "?",
                              SMI_TYPES.get(p.type, "C"), _mib(p.gpu_memory_bytes),
                              _num(p.sm_percent, "%"), one_line(name, 60)])
    lines.append(f"Processes of {container.name} on these GPUs:")
    if proc_rows:
        lines += _table(["GPU", "Host PID", "Ctr PID", "Type", "GPU Memory", "SM", "Process"], proc_rows,
                        right=(0, 1, 2, 4, 5))
    else:
        lines.append("  none (the container runs nothing on a GPU right now)")
    others = sorted({p.container_name or f"host PID {p.host_pid}" for g in gpus for p in g.processes
                     if p.container_id != container.id})
    if others:
        lines.append("Also on these GPUs: " + ", ".join(others))
    return "\n".join(lines)

