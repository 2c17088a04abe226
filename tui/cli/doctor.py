"""`mltop doctor [CONTAINER ...]`: findings by container, most severe first; exit 0 ok, 1 warning, 2 critical."""

from __future__ import annotations

import argparse
import json
import sys

from ..sanitize import escaped
from .common import make_sampler

EXIT_CANNOT_DIAGNOSE = 3  # unknown container or bad combination of options (argparse itself uses 2)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mltop.diagnostics.checks import Thresholds

    parser.add_argument("containers", nargs="*", metavar="CONTAINER",
                        help="container names or id prefixes to check (default: all, and the host)")
    parser.add_argument("--json", action="store_true",
                        help="print {schema_version, findings, checks_skipped} as JSON")
    parser.add_argument("--io-test", metavar="PATH",
                        help="time a direct read of PATH inside each named container "
                             "(dd if=PATH of=/dev/null bs=1M iflag=direct) and report MB/s")
    parser.add_argument("--io-test-max-mb", type=int, default=256, metavar="MIB",
                        help="read at most this many MiB in --io-test (default 256)")
    parser.add_argument("--framework-check", action="store_true",
                        help="first run the framework device check (as `mltop run device-check`) in each "
                             "running container diagnosed: the container's own Python imports PyTorch, "
                             "TensorFlow, JAX and CuPy and says which CUDA each was built with and whether it "
                             "sees a GPU, so driver.cuda_too_new and gpu.not_visible judge the frameworks too, "
                             "not only the image (seconds to minutes per container; a check that cannot run is "
                             "listed under checks skipped)")
    parser.add_argument("--stacks", action="store_true",
                        help="which rank is stuck: dump every Python process of the containers with py-spy, group "
                             "them by identical stack and name the ranks whose stack differs from the rest (rank "
                             "from the process's RANK/LOCAL_RANK); exit 0 when all agree, 1 when some differ")
    parser.add_argument("--log-tail", type=int, default=200, metavar="LINES",
                        help="recent log lines read per container for log-based checks (default 200)")
    from .doctor_recording import add_recording_arguments

    add_recording_arguments(parser)  # --recording PATH, --no-recording: k8s.gpu_allocated_unused's window
    from mltop.diagnostics.workload import WorkloadThresholds

    group = parser.add_argument_group("thresholds (heuristics; the evidence names the one that fired)")
    for name, kind, default, help_text in Thresholds.options() + WorkloadThresholds.options():
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"threshold_{name}", type=kind, default=default,
                           metavar=kind.__name__.upper(),
                           help=f"{help_text} (default {default})".replace("%", "%%"))


def thresholds_from_args(args: argparse.Namespace):
    from mltop.diagnostics.checks import Thresholds

    values = {name: getattr(args, f"threshold_{name}", default) for name, _, default, _ in Thresholds.options()}
    return Thresholds(**values)


def workload_thresholds_from_args(args: argparse.Namespace):
    from mltop.diagnostics.workload import WorkloadThresholds

    return WorkloadThresholds(**{name: getattr(args, f"threshold_{name}", default)
                                 for name, _, default, _ in WorkloadThresholds.options()})




def render_text(result, snapshot) -> str:
    from mltop.diagnostics.findings import SEVERITY_LABEL, count_by_severity

    engine = "docker off" if snapshot.host.engine.status == "disabled" else f"engine {escaped(snapshot.host.docker_host)}"
    lines = [f"mltop doctor: host {escaped(snapshot.host.hostname)}, {engine}, "
             f"{len(result.containers_checked)} container(s) checked"]
    groups: dict[str | None, list] = {}
    for f in result.findings:  # already host first, worst containers first, most severe first
        groups.setdefault(f.container, []).append(f)
    for container, findings in groups.items():
        lines.append("")
        lines.append("host" if container is None else f"container {escaped(container)}")
        width = max(len(f.code) for f in findings)
        for f in findings:
            label = "silenced" if f.silenced is not None else SEVERITY_LABEL[f.severity]
            lines.append(f"  {label:<8}  {f.code:<{width}}  {escaped(f.title)}")
            pad = " " * 12
            if f.silenced is not None:
                from mltop.diagnostics.silences import silence_words

                lines.append(f"{pad}silenced: {escaped(silence_words(f.silenced))} ({f.severity}, not counted)")
            for i, item in enumerate(f.evidence):
                lines.append(f"{pad}{'evidence: ' if i == 0 else ' ' * 10}{escaped(item)}")
            lines.append(f"{pad}fix:      {escaped(f.fix)}")
    clean = [n for n in result.containers_checked if n not in groups]
    if clean:
        lines.append("")
        lines.append(f"no findings: {', '.join(escaped(n) for n in clean)}")
    if result.checks_skipped:
        lines.append("")
        lines.append("checks skipped:")
        for s in result.checks_skipped:
            lines.append(f"  {s.check}: {escaped(s.reason)}")
    counts = count_by_severity(f.severity for f in result.findings if f.silenced is None)
    silenced = sum(1 for f in result.findings if f.silenced is not None)
    lines.append("")
    lines.append(f"{counts['critical']} critical, {counts['warning']} warning, {counts['info']} info"
                 f"{f', {silenced} silenced' if silenced else ''} -> exit {result.exit_code}")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    from mltop.diagnostics.doctor import run_doctor

    if args.io_test and not args.containers:
        print("mltop doctor: --io-test needs at least one CONTAINER to read in", file=sys.stderr)
        return EXIT_CANNOT_DIAGNOSE
    if args.stacks:
        return _stacks(args)
    sampler = make_sampler(args)
    try:
        # Two sweeps, so that rates are real and counters (throttling, OOM kills) can be seen rising.
        previous, snapshot = sampler.sweep_pair(args.interval)
        thresholds = thresholds_from_args(args)
        from .doctor_recording import recorded_allocations, recorded_silences

        snapshot, history, unknown = recorded_allocations(args, snapshot, previous, thresholds.gpu_alloc_unused_s)
        result = run_doctor(
            snapshot,
            sampler.engine,
            containers=args.containers or None,
            thresholds=thresholds,
            io_test=args.io_test,
            previous=previous,
            log_tail=args.log_tail,
            io_test_max_mb=args.io_test_max_mb,
            framework_check=args.framework_check,
            no_exec=getattr(args, "no_exec", False),
            workload_thresholds=workload_thresholds_from_args(args),
            allocation_history=history,
            allocation_unknown=unknown,
            silences=recorded_silences(args),
        )
    finally:
        sampler.close()
    if result.missing and not snapshot.host.engine_down:  # with the engine down, its finding says why
        names = ", ".join(escaped(m) for m in result.missing)
        print(f"mltop doctor: no container named or id-prefixed {names}", file=sys.stderr)
        return EXIT_CANNOT_DIAGNOSE
    if snapshot.host.no_container_source:
        print(f"mltop doctor: {snapshot.host.no_container_source}", file=sys.stderr)
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(result, snapshot))
    return result.exit_code


def _stacks(args: argparse.Namespace) -> int:
    """`mltop doctor --stacks`: the stack groups of the containers' Python processes."""
    from mltop.diagnostics.actions.stacks import collect_stacks, render

    sampler = make_sampler(args)
    try:
        snapshot = sampler.sweep()
    finally:
        sampler.close()
    selected, missing = snapshot.select(args.containers or None)
    if missing:
        print(f"mltop doctor: no such container: {', '.join(escaped(m) for m in missing)}", file=sys.stderr)
        return EXIT_CANNOT_DIAGNOSE
    report = collect_stacks(selected)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(escaped(line) for line in render(report).splitlines()))
    return 1 if report.outliers else 0
