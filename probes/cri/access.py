"""A pod container to act in through its CRI runtime: find which endpoint runs it, read its secrets (its
environment, from the verbose ContainerStatus) and run a command in it with ExecSync. What the actions use
where Docker's exec cannot reach (diagnostics/actions/runner.py dispatches on `kind`)."""

from __future__ import annotations

import json
import logging
from typing import Iterable

from ..identity import CONTAINERD, CRIO
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
        return CriContainer(endpoint, container_id, _env_of(status, container_id, endpoint)), ""
    return None, "; ".join(tried) or NO_ENDPOINT


NO_ENDPOINT = "no CRI endpoint is configured (--cri-endpoint, MLTOP_CRI_ENDPOINT)"
_ENDPOINT_DOWN = ("unreachable", "permission_denied", "no_cri")  # not worth asking again for the next container


def _env_of(status, container_id: str, endpoint: str) -> list[str] | None:
    """The container's environment (["NAME=value", ...]) from the OCI spec in a verbose ContainerStatus."""
    try:
        info = json.loads(status.info.get("info") or "{}")
        return list(((info.get("runtimeSpec") or {}).get("process") or {}).get("env") or [])
    except (ValueError, AttributeError):
        log.info("no environment in the verbose status of %s at %s", container_id[:12], endpoint)
        return None


def secrets_of(container_ids: Iterable[str]) -> dict[str, ContainerSecrets]:
    """Each container's own secret values from its environment in the verbose ContainerStatus, for text it
    prints (a report's log tails); one channel per endpoint, and an endpoint that does not answer is not asked
    again. A container no endpoint knows gets a ContainerSecrets that says why (`known` False: fail closed)."""
    from .client import CriClient, CriError

    wanted = list(dict.fromkeys(container_ids))
    found: dict[str, ContainerSecrets] = {}
    tried: dict[str, list[str]] = {cid: [] for cid in wanted}
    for endpoint, _named in cri_endpoints() if wanted else ():
        left = [cid for cid in wanted if cid not in found]
        if not left:
            break
        client = CriClient(endpoint)
        try:
            for n, cid in enumerate(left):
                try:
                    status = client.container_status(cid, verbose=True)
                except CriError as exc:
                    if exc.status in _ENDPOINT_DOWN:
                        for other in left[n:]:
                            tried[other].append(f"{endpoint}: {exc.message}")
                        break
                    tried[cid].append(f"{endpoint}: {exc.message}")
                    continue
                env = _env_of(status, cid, endpoint)
                found[cid] = ContainerSecrets.from_env(env) if env is not None else ContainerSecrets(
                    error="the runtime's ContainerStatus gave no environment")
        finally:
            client.close()
    for cid in wanted:
        if cid not in found:
            found[cid] = ContainerSecrets(error="; ".join(tried[cid]) or NO_ENDPOINT)
    return found
