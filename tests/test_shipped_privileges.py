"""What we ship runs the agent with the least it needs (issue 27, point 7): `mltop serve --print-daemonset`,
parsed as Kubernetes would read it. (The image's side, run with only the kept capabilities against a real
engine, is tests/test_serve_agent.py.)"""

from __future__ import annotations

import subprocess
import sys

import yaml

KEPT_CAPABILITIES = {"SYS_PTRACE", "DAC_READ_SEARCH"}


def _printed() -> tuple[str, dict[str, dict]]:
    done = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "serve", "--print-daemonset"],
                          capture_output=True, text=True, check=True, timeout=60)
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), [d["kind"] for d in docs]
    return done.stdout, by_kind


def _agent(daemonset: dict) -> dict:
    (agent,) = daemonset["spec"]["template"]["spec"]["containers"]
    return agent


def test_the_daemonset_agent_never_execs():
    _, docs = _printed()
    env = {e["name"]: e.get("value") for e in _agent(docs["DaemonSet"])["env"]}
    assert env["MLTOP_NO_EXEC"] == "1"


def test_the_daemonset_keeps_only_the_capabilities_it_uses_each_with_its_reason():
    text, docs = _printed()
    security = _agent(docs["DaemonSet"])["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == KEPT_CAPABILITIES
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert "privileged" not in security
    lines = text.splitlines()
    for capability in KEPT_CAPABILITIES:  # the comment just above each kept one says why
        (at,) = [i for i, line in enumerate(lines) if line.strip() == f"- {capability}"]
        assert lines[at - 1].strip().startswith("#"), capability


def test_the_daemonset_runs_under_the_runtimes_seccomp_profile_without_a_token():
    _, docs = _printed()
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert _agent(docs["DaemonSet"])["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


def test_only_the_monitoring_namespace_reaches_the_agents_port():
    _, docs = _printed()
    daemonset, policy = docs["DaemonSet"], docs["NetworkPolicy"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["namespace"] == daemonset["metadata"]["namespace"]
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    (port,) = _agent(daemonset)["ports"]
    assert rule["ports"] == [{"port": port["name"], "protocol": "TCP"}]
    assert policy["spec"]["egress"] == []  # the agent opens no connection: nothing out
