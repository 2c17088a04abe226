"""A pod container to act in through its CRI runtime: find which endpoint runs it, read its secrets (its
environment, from the verbose ContainerStatus) and run a command in it with ExecSync. What the actions use
where Docker's exec cannot reach (diagnostics/actions/runner.py dispatches on `kind`)."""

from __future__ import annotations

import json
import logging
from typing import Iterable

from ..identity import CONTAINERD, CRIO
from ..model import ContainerSample, Snapshot
from ..redaction import ContainerSecrets
from . import cri_endpoints

log = logging.getLogger(__name__)

CRI_RUNTIMES = (CONTAINERD, CRIO)


class CriContainer:
    """One container on one CRI endpoint; `kind` tells the runner to ExecSync rather than docker exec."""

    kind = "cri"

    def __init__(self, endpoint: str, container_id: str, env: list[str] | None):
        from .client import CriClient

        self.endpoint = endpoint
        self.docker_host = endpoint  # what the runner's messages and locality test read
        self.container_id = container_id
        self.client = CriClient(endpoint)
        self._secrets = ContainerSecrets.from_env(env) if env is not None else ContainerSecrets(
            error="the runtime's ContainerStatus gave no environment")

    def close(self) -> None:
        self.client.close()

    def container_secrets(self, container_id: str) -> ContainerSecrets:
        return self._secrets


def locate(container_id: str) -> tuple[CriContainer | None, str]:
    """The CRI endpoint that runs the container (ContainerStatus answers there), or None and why not."""
    from .client import CriClient, CriError

    tried = []
    for endpoint, _named in cri_endpoints():
        client = CriClient(endpoint)
        try:
            status = client.container_status(container_id, verbose=True)
        except CriError as exc:
            tried.append(f"{endpoint}: {exc.message}")
            continue
        finally:
            client.close()
        return CriContainer(endpoint, container_id, _env_of(status, endpoint)), ""
    return None, "; ".join(tried) or "no CRI endpoint is configured (--cri-endpoint, MLTOP_CRI_ENDPOINT)"


def _env_of(status, endpoint: str) -> list[str] | None:
    """The container's environment from its verbose ContainerStatus (the OCI spec); None when it has none."""
    try:
        info = json.loads(status.info.get("info") or "{}")
        return list(((info.get("runtimeSpec") or {}).get("process") or {}).get("env") or [])
    except (ValueError, AttributeError, RecursionError):
        log.info("no environment in the verbose status of %s at %s", status.status.id[:12], endpoint)
        return None


def secrets_of(endpoints, container_ids) -> dict[str, ContainerSecrets]:
    """The secrets of pod containers (to scrub from their log files by value, as Docker's logs are), from the
    first of `endpoints` whose verbose ContainerStatus knows each; one client per endpoint. A container that no
    endpoint answers for is left out (its text is still redacted by shape)."""
    from .client import CriClient, CriError

    out: dict[str, ContainerSecrets] = {}
    left = list(container_ids)
    for endpoint in endpoints:
        if not left:
            break
        client = CriClient(endpoint)
        try:
            for cid in list(left):
                try:
                    status = client.container_status(cid, verbose=True)
                except CriError as exc:
                    if exc.code == "NOT_FOUND":
                        continue
                    break  # this endpoint does not answer: the next one
                env = _env_of(status, endpoint)
                if env is not None:
                    out[cid] = ContainerSecrets.from_env(env)
                left.remove(cid)
        finally:
            client.close()
    return out


def runs_on_cri(c: ContainerSample) -> bool:
    """A container of a CRI runtime (containerd, CRI-O): its environment and log are not the Docker engine's."""
    return c.runtime in CRI_RUNTIMES


def cri_secrets(snapshot: Snapshot, containers: Iterable[ContainerSample]) -> dict[str, ContainerSecrets]:
    """{id: the container's own secret values} for the containers of a CRI runtime among `containers`, from
    their environment in the verbose ContainerStatus of the endpoints that answered the snapshot (then the
    configured ones); where no endpoint answers for one, why (the report and the dashboard's log pane fail
    closed on it)."""
    ids = [c.id for c in containers if runs_on_cri(c)]
    if not ids:
        return {}
    endpoints = [s.endpoint for s in snapshot.host.sources if s.kind == "cri" and s.ok]
    endpoints += [e for e, _ in cri_endpoints() if e not in endpoints]
    try:
        found = secrets_of(endpoints, ids)
    except Exception as exc:  # grpc missing or broken: fail closed, never raise
        log.info("the CRI runtime cannot be asked for the pods' secrets", exc_info=True)
        found, why = {}, f"{type(exc).__name__}: {exc}"
    else:
        why = (f"no CRI runtime gave its environment (asked {', '.join(endpoints)})" if endpoints
               else "no CRI endpoint is configured (--cri-endpoint, MLTOP_CRI_ENDPOINT)")
    return {cid: found.get(cid) or ContainerSecrets(error=why) for cid in ids}
