"""Driver and CUDA checks: the engine answers, NVML and the kernel module agree, the host driver runs the CUDA
the container needs."""

from __future__ import annotations

import re

from mltop.probes.model import ContainerSample

from .. import cuda_compat
from ..findings import CRITICAL, WARNING, Finding, evidence
from .base import (CheckContext, CheckSkipped, _cfg_source, _line, _log_evidence, _matches, by_runtime,
                   container_check, host_check)


# --------------------------------------------------------------------------- engine and driver (host)


@host_check("engine")
def check_engine(ctx: CheckContext) -> list[Finding]:
    engine = ctx.snapshot.host.engine
    if not ctx.snapshot.host.engine_down:  # answering, or absent where a CRI runtime answers
        return []
    return [Finding(
        "engine.unreachable", CRITICAL, None, "The Docker engine did not answer: containers cannot be checked",
        (evidence(f"engine status {engine.status}: {engine.error}", f"Docker API at {engine.docker_host}"),),
        "Start or reach the engine: `sudo systemctl start docker`, or point --docker-host / DOCKER_HOST at it",
    )]


def _driver_file_evidence(ctx: CheckContext) -> list[str]:
    facts = ctx.host
    if facts.driver_version_line is None:
        return [evidence("absent (no NVIDIA kernel module loaded)", facts.driver_version_file)]
    return [evidence(repr(_line(facts.driver_version_line)), facts.driver_version_file)]


def gpu_requesters(ctx: CheckContext) -> list[ContainerSample]:
    """Containers that reach GPUs by their configuration (requests, runtime, device nodes, privileged)."""
    return [c for c in ctx.configured_containers() if ctx.snapshot.gpu_access(c)]


@host_check("driver")
def check_driver(ctx: CheckContext) -> list[Finding]:
    """driver.nvml_mismatch, driver.not_loaded, gpu.lost, driver.nvml_timeout from NVML's state."""
    nvml = ctx.snapshot.host.nvml
    source = f"NVML ({nvml.library_path or 'libnvidia-ml.so.1'})"
    if nvml.status == "disabled":
        raise CheckSkipped("NVML disabled (--no-nvml)")
    if nvml.status == "version_mismatch":
        ev = [evidence(f"nvmlInit: {nvml.error}", source)] + _driver_file_evidence(ctx)
        lib = nvml.library_path
        real = ctx.host.nvml_library_realpath
        if lib and real:
            if real != lib:
                ev.append(evidence(f"{lib} -> {real}", "library symlink (its suffix is the library version)"))
        return [Finding(
            "driver.nvml_mismatch", CRITICAL, None,
            "NVML: driver/library version mismatch (driver upgraded without a reboot)", tuple(ev),
            "Reboot the host, or reload the kernel modules: `sudo rmmod nvidia_uvm nvidia_drm nvidia_modeset "
            "nvidia && sudo modprobe nvidia`",
        )]
    if nvml.status in ("driver_not_loaded", "library_not_found"):
        wanting = gpu_requesters(ctx)
        if not wanting:
            return []  # a host without GPUs and no container asking for one is fine
        ev = [evidence(f"NVML status {nvml.status}: {nvml.error}", source)] + _driver_file_evidence(ctx)
        ev += [evidence(f"{c.name} requests GPUs ({'; '.join(ctx.snapshot.gpu_access(c))})", _cfg_source(c))
               for c in wanting[:5]]
        return [Finding(
            "driver.not_loaded", CRITICAL, None,
            "Containers ask for GPUs but the NVIDIA driver is not loaded or its library is missing", tuple(ev),
            "Load the driver: `sudo modprobe nvidia`; if that fails rebuild it for the running kernel "
            "(`sudo dkms autoinstall`) or reinstall the NVIDIA driver",
        )]
    if nvml.status == "gpu_lost":
        return [Finding(
            "gpu.lost", CRITICAL, None, "A GPU has fallen off the bus",
            (evidence(f"NVML status gpu_lost: {nvml.error}", source),),
            "Check `sudo dmesg | grep -i xid` for Xid 79; reset the GPU (`sudo nvidia-smi -r -i N`) or reboot",
        )]
    if nvml.status == "timeout":
        return [Finding(
            "driver.nvml_timeout", WARNING, None, "NVML did not answer in time: the driver may be hung",
            (evidence(f"NVML status timeout: {nvml.error}", source),),
            "Check `sudo dmesg | grep -i xid` and whether nvidia-smi hangs (D state); a reboot clears a hung driver",
        )]
    if not nvml.ok:
        raise CheckSkipped(f"NVML unavailable ({nvml.status}): {nvml.error}")
    return []


# --------------------------------------------------------------------------- CUDA version


_TOO_OLD_LOG = re.compile(
    r"CUDA driver version is insufficient for CUDA runtime version|"
    r"The NVIDIA driver on your system is too old|unsatisfied condition: cuda\s*>=\s*[\d.]+", re.IGNORECASE)
_UNSATISFIED = re.compile(r"unsatisfied condition: cuda\s*>=\s*([\d.]+)")


def _cuda_needs(ctx: CheckContext, c: ContainerSample) -> tuple[cuda_compat.CudaNeed | None, str, list[str]]:
    """(the newest CUDA the container needs, who needs it, evidence of each need).

    need = max(image CUDA, framework CUDA): the image's env says what its toolkit wants, and pip wheels bring
    their own CUDA runtime, which the device check reads from each imported framework (`built_with_cuda`).
    """
    candidates: list[tuple[cuda_compat.Version, str, str]] = []  # (version, who, where it was read)
    ev: list[str] = []
    image = cuda_compat.cuda_need(c.config.env_value)
    if image is not None:
        candidates.append((image.version, "The image", image.source))
        ev.append(evidence(f"needs CUDA {cuda_compat.format_version(image.version)}: {image.source}",
                           _cfg_source(c)))
    for module, fw in ctx.imported_frameworks(c):
        built = cuda_compat.parse_version(fw.get("built_with_cuda"))
        if built is None:
            continue  # a CPU-only build needs no driver
        who = f"{module} {fw.get('version')}"
        source = f"{who} built with CUDA {fw.get('built_with_cuda')}"
        candidates.append((built, who, source))
        ev.append(evidence(f"needs CUDA {cuda_compat.format_version(built)}: {source}", ctx.framework_source(c)))
    if not candidates:
        return None, "The image", ev
    version, who, source = max(candidates, key=lambda n: cuda_compat.cuda_major_minor(n[0]))  # ties: the image
    if image is not None and who == "The image":
        return image, who, ev
    # A wheel newer than the image: the image's forward-compatibility exceptions (cuda-compat) cover only its
    # own CUDA, so none apply.
    return cuda_compat.CudaNeed(version, source), who, ev


@container_check("driver.cuda_too_new")
def check_cuda_version(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """driver.cuda_too_new: the image or a framework in it needs a newer CUDA than the host driver supports."""
    need, who, need_ev = _cuda_needs(ctx, c)
    error = c.config.error or ""
    start_refused = _UNSATISFIED.search(error)
    log_hits = _matches(ctx.log_lines(c), _TOO_OLD_LOG)
    if need is None and not start_refused and not log_hits:
        return []
    nvml = ctx.snapshot.host.nvml
    host_cuda = cuda_compat.parse_version(nvml.cuda_driver_version) if nvml.ok else None
    host_driver = cuda_compat.parse_version(nvml.driver_version) if nvml.ok else None
    ev: list[str] = list(need_ev)
    if host_cuda is not None:
        ev.append(evidence(f"host driver {nvml.driver_version} supports CUDA up to {nvml.cuda_driver_version}",
                           "NVML nvmlSystemGetDriverVersion / nvmlSystemGetCudaDriverVersion_v2"))
    if start_refused:
        ev.append(evidence(by_runtime(c, f"State.Error {error!r}", lambda k: f"status message {error!r}"),
                           _cfg_source(c)))
    ev += _log_evidence(ctx, c, log_hits)

    verdict = None
    if need is not None and host_cuda is not None:
        verdict = cuda_compat.judge(need, host_cuda, host_driver)
    if verdict is None and (start_refused or log_hits):
        # The runtime or the framework already said so, even where NVML cannot tell us the host's CUDA.
        version = cuda_compat.parse_version(start_refused.group(1)) if start_refused else \
            (need.version if need else None)
        verdict = cuda_compat.Verdict(CRITICAL, "the container runtime or framework refused the driver",
                                      cuda_compat.minimum_driver(version) if version else None)
    if verdict is None:
        if need is not None and host_cuda is None:
            raise CheckSkipped(f"the host's CUDA version is unknown: NVML {nvml.status}")
        return []
    wanted = cuda_compat.format_version(need.version) if need else (start_refused.group(1) if start_refused else "?")
    if verdict.minimum_driver:
        ev.append(evidence(f"CUDA {wanted} needs driver >= {verdict.minimum_driver}", cuda_compat.SOURCE))
    ev.append(evidence(verdict.reason, "CUDA compatibility rules"))
    disabled = c.config.env_value("NVIDIA_DISABLE_REQUIRE")
    if disabled:
        ev.append(evidence(by_runtime(c, "Config.Env", lambda k: "env") + f" NVIDIA_DISABLE_REQUIRE={disabled} "
                           "(the start-time check is off, the failure comes at CUDA init)", _cfg_source(c)))
    driver = f">= {verdict.minimum_driver}" if verdict.minimum_driver else f"supporting CUDA {wanted}"
    host_txt = by_runtime(c, "the host", lambda k: "the node")
    host_txt = f"{host_txt}'s CUDA {nvml.cuda_driver_version}" if host_cuda else f"{host_txt} driver"
    supported = nvml.cuda_driver_version or by_runtime(c, "the host supports", lambda k: "the node supports")
    node = ctx.snapshot.host.hostname
    return [Finding(
        "driver.cuda_too_new", verdict.severity, c.name,
        f"{who} needs CUDA {wanted}, newer than {host_txt}", tuple(ev),
        by_runtime(c, f"Upgrade the host driver to {driver}, or use an image/wheel built for CUDA {supported}",
                   lambda k: f"Run container `{k.container}` from an image built for CUDA {supported} (it runs "
                             f"{c.image}; NVIDIA's CUDA images carry the CUDA version in their tag): change "
                             f"`image` in its Deployment/StatefulSet/Job, e.g. `kubectl -n {k.namespace} set image "
                             f"deployment/<its deployment> {k.container}=<image built for CUDA {supported}>` (its "
                             f"owner: `{k.yaml}`, metadata.ownerReferences)"
                             + (", or pip wheels built for it" if who != "The image" else "")
                             + f"; or upgrade the node's driver to {driver} (`kubectl drain {node} "
                             "--ignore-daemonsets` first)"),
    )]


