"""NVIDIA Container Toolkit checks: the engine can hand GPUs to containers, and keeps them after a reload."""

from __future__ import annotations

import re

from mltop.probes.host_facts import TOOLKIT_BINARIES
from mltop.probes.model import ContainerSample

from ..findings import CRITICAL, WARNING, Finding, evidence
from .base import CheckContext, _cfg_source, _log_evidence, _matches, by_runtime, container_check, host_check


def toolkit_injected(ctx: CheckContext, c: ContainerSample) -> bool:
    """The NVIDIA Container Toolkit gives this container its GPUs (a request, or the nvidia runtime)."""
    # (a pod runs under its sandbox's runtime handler: the Docker engine's default runtime is not its)
    runtime = c.config.runtime or (ctx.snapshot.host.default_runtime if c.kubernetes is None else None) or ""
    return c.config.requests_gpus or runtime.startswith("nvidia")


@host_check("gpu.dev_char")
def check_dev_char_links(ctx: CheckContext) -> list[Finding]:
    """gpu.dev_char_missing: systemd cgroup driver without /dev/char/195:* (GPUs vanish on daemon-reload)."""
    host = ctx.snapshot.host
    if host.cgroup_driver != "systemd":
        return []
    # Only GPUs the toolkit injected vanish: --device nodes and --privileged are in the engine's own cgroup rules.
    gpu_running = [c for c in ctx.configured_containers() if c.running and toolkit_injected(ctx, c)]
    if not gpu_running:
        return []
    links = ctx.host.nvidia_char_links
    if links:
        return []
    found = "directory absent" if links is None else "no 195:* entries"
    ev = [
        evidence("CgroupDriver systemd", "docker info"),
        evidence(f"{ctx.host.dev_char_dir}: {found}", "host filesystem"),
    ] + [evidence(f"{c.name} runs with GPUs", _cfg_source(c)) for c in gpu_running[:5]]
    return [Finding(
        "gpu.dev_char_missing", WARNING, None,
        "GPU containers will lose their GPUs at the next `systemctl daemon-reload` "
        "(NVML: Unknown Error inside them)",
        tuple(ev),
        "`sudo nvidia-ctk system create-dev-char-symlinks --create-all` (and enable the udev rule), "
        "or start GPU containers through CDI (`--device nvidia.com/gpu=all`)"
        + ("; for pods, let the device plugin hand GPUs through CDI (`--device-list-strategy=cdi-cri`)"
           if any(c.kubernetes is not None for c in gpu_running) else ""),
    )]


# --------------------------------------------------------------------------- toolkit


_TOOLKIT_ERROR = re.compile(
    r"could not select device driver|unknown or invalid runtime name: nvidia|"
    r"failed to discover GPU vendor from CDI|unresolvable CDI devices", re.IGNORECASE)


@container_check("toolkit")
def check_toolkit(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """toolkit.missing / toolkit.not_registered for containers that ask for GPUs."""
    if c.kubernetes is not None:
        # A pod's runtime handler is the node runtime's, not the engine's (Docker's runtimes say nothing of it): a
        # handler the runtime lacks makes no sandbox at all; one that is not NVIDIA's is k8s.gpu_runtime's matter.
        return []
    error = c.config.error or ""
    failed = bool(_TOOLKIT_ERROR.search(error))
    if not c.config.requests_gpus and not failed:
        return []
    host = ctx.snapshot.host
    runtimes = host.runtimes
    has_runtime = "nvidia" in runtimes
    binaries = {name: ctx.host.toolkit_binaries.get(name) for name in TOOLKIT_BINARIES}
    specs, cdi_dirs = list(ctx.host.cdi_gpu_specs), list(ctx.host.cdi_dirs)
    wants_runtime = c.config.runtime == "nvidia"
    wants_cdi = any(r.driver == "cdi" for r in c.config.device_requests)
    hook = binaries["nvidia-container-runtime-hook"]

    # What this container's way of asking needs, and whether the host has it.
    if wants_cdi:
        served = bool(specs)
    elif wants_runtime:
        served = has_runtime
    else:  # --gpus: dockerd registers its nvidia driver at start-up when it finds the hook binary
        served = bool(hook or has_runtime or specs)
    if served and not failed:
        return []

    ev = []
    if c.config.device_requests:
        reqs = "; ".join(
            f"Driver={r.driver!r} Count={r.count} DeviceIDs={list(r.device_ids)} "
            f"Capabilities={[list(x) for x in r.capabilities]}" for r in c.config.device_requests)
        ev.append(evidence(f"HostConfig.DeviceRequests {reqs}", _cfg_source(c)))
    if c.config.runtime:
        ev.append(evidence(f"HostConfig.Runtime {c.config.runtime}", _cfg_source(c)))
    if error:
        ev.append(evidence(f"State.Error {error!r} (ExitCode {c.config.exit_code})", _cfg_source(c)))
    ev.append(evidence(f"Runtimes {', '.join(runtimes) or 'none'} (default {host.default_runtime})", "docker info"))
    for name, where in binaries.items():
        ev.append(evidence(f"{name}: {where or 'not found'}", "host PATH lookup"))
    ev.append(evidence(f"CDI specs for nvidia.com/gpu: {', '.join(specs) or 'none'}",
                       f"CDI directories {', '.join(cdi_dirs)}"))

    installed = any(binaries.values()) or bool(specs)
    if not installed:
        return [Finding(
            "toolkit.missing", CRITICAL, c.name,
            "The container asks for GPUs but the NVIDIA Container Toolkit is not installed", tuple(ev),
            "Install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker && "
            "sudo systemctl restart docker` (or CDI: `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` "
            "and run with `--device nvidia.com/gpu=all`)",
        )]
    if wants_cdi and not specs:
        fix = "Generate the CDI spec: `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
    elif wants_cdi:
        fix = ('Enable CDI in the engine (Docker 25-27): add `"features": {"cdi": true}` to '
               "/etc/docker/daemon.json and `sudo systemctl restart docker`")
    else:
        fix = ("Register the toolkit with the engine and restart it: `sudo nvidia-ctk runtime configure "
               "--runtime=docker && sudo systemctl restart docker` (dockerd looks for the hook only at start-up)")
    return [Finding(
        "toolkit.not_registered", CRITICAL, c.name,
        "The NVIDIA Container Toolkit is installed but the engine does not use it "
        "(dockerd started before the install, or no runtime configured)",
        tuple(ev), fix,
    )]




_NVML_LOST = re.compile(r"Failed to initialize NVML: Unknown Error", re.IGNORECASE)


@container_check("nvml.lost_in_container")
def check_nvml_lost(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """nvml.lost_in_container: "Failed to initialize NVML: Unknown Error" inside a container that had its GPUs
    (device access lost after a systemd `daemon-reload` under the systemd cgroup driver / cgroup v2)."""
    hits = _matches(ctx.log_lines(c), _NVML_LOST)
    framework_notes = []
    for module, fw in ctx.imported_frameworks(c):
        for note in [*(fw.get("errors") or ()), *(fw.get("warnings") or ())]:
            if _NVML_LOST.search(str(note)):
                framework_notes.append(evidence(f"{module} said {str(note)[:300]!r}", ctx.framework_source(c)))
    if not hits and not framework_notes:
        return []
    if not ctx.snapshot.gpu_access(c):
        return []  # it never had GPUs: gpu.not_visible speaks for it
    host = ctx.snapshot.host
    ev = _log_evidence(ctx, c, hits) + framework_notes
    ev += ctx.gpu_access_evidence(c)
    ev.append(evidence(f"CgroupDriver {host.cgroup_driver}, cgroup v{host.cgroup_version}", "docker info"))
    links = ctx.host.nvidia_char_links
    ev.append(evidence(f"{ctx.host.dev_char_dir}: " + ("absent" if links is None else
                                                       f"{len(links)} 195:* entries"), "host filesystem"))
    if host.nvml.ok:
        ev.append(evidence(f"the host's NVML answers ({len(ctx.snapshot.gpus)} GPU(s))", "NVML on the host"))
    return [Finding(
        "nvml.lost_in_container", WARNING, c.name,
        "The container lost access to its GPUs (NVML: Unknown Error) while the host still sees them",
        tuple(ev),
        by_runtime(c, f"Recreate the container (`docker restart {c.name}` is not enough with --gpus under systemd: "
                      "`docker rm -f` and run again); prevent it with `sudo nvidia-ctk system create-dev-char-symlinks "
                      "--create-all`, or start GPU containers through CDI (`--device nvidia.com/gpu=all`)",
                   lambda k: f"Recreate the pod: `{k.delete}` (its controller starts a new one with its GPUs; a "
                             "container restart in the same pod is not enough); prevent it on the node with `sudo "
                             "nvidia-ctk system create-dev-char-symlinks --create-all`, or let the device plugin "
                             "hand GPUs through CDI (`--device-list-strategy=cdi-cri`)"),
    )]
