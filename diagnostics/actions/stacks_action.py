"""The `stacks` action: py-spy dumps of every Python process of the container and of the other ranks of its job,
grouped by stack, naming the ranks whose stack differs (diagnostics/stacks.py; `mltop doctor --stacks`)."""

from __future__ import annotations

from mltop.probes.model import ContainerSample, Snapshot

from .context import ActionContext
from .results import FAILED, OK, ActionOutcome, require_running

# Environment that names one distributed job: its ranks share the values (torchrun/elastic, Slurm, MPI launchers)
JOB_VARIABLES = (("MASTER_ADDR", "MASTER_PORT"), ("TORCHELASTIC_RUN_ID",), ("SLURM_JOB_ID",))
JOB_LABELS = ("training.kubeflow.org/job-name", "jobset.sigs.k8s.io/jobset-name")


def _job_key(c: ContainerSample) -> tuple | None:
    for names in JOB_VARIABLES:
        values = tuple(c.config.env_value(n) for n in names)
        if all(values):
            return names + values
    for label in JOB_LABELS:
        value = (c.config.labels or {}).get(label) or (c.config.pod_labels or {}).get(label)
        if value:
            return (label, value)
    return None


def job_containers(snapshot: Snapshot, c: ContainerSample) -> list[ContainerSample]:
    """`c` and the running containers of the same job (the same launcher variables or job label), `c` first."""
    key = _job_key(c)
    if key is None:
        return [c]
    return [c] + [o for o in snapshot.containers if o.id != c.id and o.running and _job_key(o) == key]


def run_stacks(run: ActionContext) -> ActionOutcome:
    from .stacks import collect_stacks, render

    container = run.container
    assert container is not None
    require_running(container)
    chosen = job_containers(run.snapshot, container)
    run.emit(f"== stacks of the Python processes of {', '.join(c.name for c in chosen)}")
    report = collect_stacks(chosen, run.py_spy)
    for line in render(report).splitlines():
        run.emit(line)
    data = report.to_json()
    if not report.groups:
        return FAILED, "no stack could be dumped: " + " ".join(s.error or "" for s in report.failed[:1]
                                                               ) + " ".join(report.notes[:2]), None, data
    return OK, None, 0, data
