"""NCCL: collective timeouts and NCCL errors in a rank's log, and NCCL environment that does not fit the host."""

from __future__ import annotations

from mltop.probes.model import ContainerSample

from ..findings import CRITICAL, WARNING, Finding, evidence
from ..nccl_log import scan
from .base import CheckContext, _cfg_source, _line, _log_evidence, by_runtime, container_check

STACKS_HINT = "`mltop doctor --stacks {name}` (and the other ranks' containers) names the rank whose stack differs"


def _env_fix(c: ContainerSample, name: str, value: str, why: str) -> str:
    """Set (or unset, with value "") one environment variable of the container, in its runtime's terms."""
    def docker() -> str:
        if not value:
            return f"Recreate the container without `-e {name}` (an existing container's environment cannot change); {why}"
        return f"Recreate the container with `-e {name}={value}` (an existing container's environment cannot change); {why}"

    def pod(t) -> str:
        if not value:
            return (f"Remove `{name}` from container `{t.container}`'s `env` in the pod's spec (in its Deployment/Job: "
                    f"a pod's env cannot be edited in place); {why}")
        return (f"Set it in the pod's spec (in its Deployment/Job), e.g. "
                f"{t.in_spec(f'env: [{{name: {name}, value: {value!r}}}]')}; {why}")

    return by_runtime(c, docker(), pod)


def _env_evidence(c: ContainerSample, name: str) -> str | None:
    value = c.config.env_value(name)
    if value is None:
        return None
    label = "env" if c.kubernetes is not None else "Config.Env"
    return evidence(f"{label} {name}={value}", _cfg_source(c))


@container_check("nccl.log")
def check_nccl_log(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """nccl.timeout (a collective the watchdog gave up on) and nccl.error (NCCL failed or warns)."""
    found = scan(ctx.log_lines(c))
    out = []
    if found.timeouts:
        last = found.timeouts[-1]
        what = " ".join(filter(None, [last.op, f"SeqNum={last.seq}" if last.seq is not None else None]))
        rank = f"rank {last.rank}" if last.rank is not None else "a rank"
        limit = f" after {last.timeout_ms / 1000:g} s" if last.timeout_ms is not None else ""
        ev = _log_evidence(ctx, c, [t.line for t in found.timeouts])
        ev += [x for x in (_env_evidence(c, "NCCL_P2P_DISABLE"), _env_evidence(c, "NCCL_IB_DISABLE")) if x]
        out.append(Finding(
            "nccl.timeout", CRITICAL, c.name,
            f"NCCL collective {what or '(unnamed)'} timed out on {rank}{limit}: another rank never joined it",
            tuple(ev),
            "A collective times out on the ranks that reached it, while one rank is elsewhere (stuck in data "
            "loading, a different code path, dead, or on a broken link): " + STACKS_HINT.format(name=c.name)
            + "; " + _env_fix(c, "NCCL_DEBUG", "INFO", "NCCL then logs the transport each rank chose and where "
                              "it failed. Raising `timeout=` in init_process_group only hides a stuck rank"),
        ))
    failures = [e for e in found.errors if e.failure]
    if failures or (found.errors and not found.timeouts):
        severity = CRITICAL if failures else WARNING
        marks = sorted({e.mark for e in found.errors})
        ev = _log_evidence(ctx, c, [e.line for e in found.errors])
        ev += [x for x in (_env_evidence(c, "NCCL_SOCKET_IFNAME"), _env_evidence(c, "NCCL_IB_DISABLE"),
                           _env_evidence(c, "NCCL_P2P_DISABLE")) if x]
        out.append(Finding(
            "nccl.error", severity, c.name,
            f"NCCL {'failed' if failures else 'warns'} ({', '.join(_line(m, 60) for m in marks)})",
            tuple(ev),
            "`unhandled system error` and ncclSystemError are mostly the network (an interface or HCA the "
            "container cannot use, a peer that died first: read the first failing rank's log), "
            "ncclInternalError a version mismatch between ranks' NCCL builds; "
            + _env_fix(c, "NCCL_DEBUG", "INFO", "NCCL then says which call failed and why (NCCL_DEBUG_SUBSYS=INIT,NET "
                       "narrows it)"),
        ))
    return out


def interface_matches(spec: str, interfaces: tuple[str, ...]) -> tuple[str, ...]:
    """The interfaces NCCL would consider under NCCL_SOCKET_IFNAME=`spec`: a comma-separated list of name
    prefixes; `=` first for exact names; `^` first to exclude those named (and keep the rest)."""
    spec = spec.strip()
    exclude = spec.startswith("^")
    if exclude:
        spec = spec[1:]
    exact = spec.startswith("=")
    if exact:
        spec = spec[1:]
    names = [n.strip() for n in spec.split(",")[:64] if n.strip()]

    def named(interface: str) -> bool:
        return any(interface == n if exact else interface.startswith(n) for n in names)

    return tuple(i for i in interfaces if named(i) != exclude)


@container_check("nccl.environment")
def check_nccl_environment(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """nccl.socket_ifname_missing and nccl.ib_disabled: NCCL settings that do not fit this container or host."""
    out = []
    spec = c.config.env_value("NCCL_SOCKET_IFNAME")
    interfaces = ctx.interfaces.get(c.id)
    if spec and interfaces is not None and not interface_matches(spec, interfaces):
        exclude = spec.strip().startswith("^")
        usable = [i for i in interfaces if i != "lo"] or list(interfaces)
        out.append(Finding(
            "nccl.socket_ifname_missing", CRITICAL, c.name,
            f"NCCL_SOCKET_IFNAME={spec} {'excludes every' if exclude else 'names no'} interface the container has: "
            "NCCL cannot open its bootstrap socket",
            (_env_evidence(c, "NCCL_SOCKET_IFNAME") or "",
             evidence(f"interfaces {', '.join(interfaces) or 'none'}", f"/proc/{c.pid}/net/dev (the container's "
                      "network namespace)")),
            _env_fix(c, "NCCL_SOCKET_IFNAME", usable[0] if usable else "", "NCCL matches it as name prefixes "
                     "(`=eth0` exact, `^docker,lo` to exclude); the interface must exist in the container's own "
                     "network namespace (host networking sees the host's)"),
        ))
    if c.config.env_value("NCCL_IB_DISABLE") == "1":
        active = [p for p in ctx.snapshot.infiniband if p.active]
        if active:
            ev = [_env_evidence(c, "NCCL_IB_DISABLE") or "",
                  *(evidence(f"{p.name} {p.state} {p.rate!r} link_layer {p.link_layer}",
                             f"/sys/class/infiniband/{p.device}/ports/{p.port}") for p in active[:8])]
            p2p = _env_evidence(c, "NCCL_P2P_DISABLE")
            if p2p and c.config.env_value("NCCL_P2P_DISABLE") == "1":
                ev.append(p2p + " (and GPU peer-to-peer is off too: every transfer goes through host memory)")
            out.append(Finding(
                "nccl.ib_disabled", WARNING, c.name,
                f"NCCL_IB_DISABLE=1 on a host with {len(active)} active InfiniBand/RoCE port(s): NCCL falls back "
                "to TCP sockets, many times slower across nodes",
                tuple(ev),
                _env_fix(c, "NCCL_IB_DISABLE", "", "and pass the HCAs in (`--device /dev/infiniband` and "
                         "`--cap-add IPC_LOCK` for Docker, the RDMA device plugin's resource for a pod)"),
            ))
    return out
