"""`mltop report -o FILE [--format json|md|html] [CONTAINER ...]`: run the doctor, write a redacted report."""

from __future__ import annotations

import argparse
import sys
import time

EXIT_OK = 0
EXIT_CANNOT_WRITE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("containers", nargs="*", metavar="CONTAINER",
                        help="container names or id prefixes to include (default: all)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="where to write the report; .json, .md or .html picks the format")
    parser.add_argument("--format", choices=("json", "md", "html"),
                        help="report format (default: from the file extension)")
    parser.add_argument("--log-lines", type=int, default=100, metavar="LINES",
                        help="log lines per container in the report (default 100; 0 for none)")
    parser.add_argument("--no-doctor", action="store_true", help="leave the doctor's findings out")
    from .report_options import add_since_arguments

    add_since_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from mltop.diagnostics.report import build_report, format_for_path, write_report
    from mltop.tui.cli import make_sampler

    try:
        fmt = format_for_path(args.output, args.format)
    except ValueError as err:
        print(f"mltop report: {err}", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    sampler = make_sampler(args)
    findings: tuple = ()
    skipped: list = []
    try:
        previous = sampler.sweep()
        time.sleep(max(args.interval, 0.05))
        snapshot = sampler.sweep()
        if args.no_doctor:
            skipped.append(("doctor", "left out with --no-doctor"))
        else:
            try:
                from mltop.diagnostics.doctor import run_doctor

                result = run_doctor(snapshot, sampler.engine, containers=args.containers or None,
                                    previous=previous)
                findings, skipped = result.findings, list(result.checks_skipped)
            except Exception as exc:  # the report is most needed when something is broken: write it anyway
                skipped.append(("doctor", f"the doctor failed: {type(exc).__name__}: {exc}"))
        report = build_report(snapshot, sampler.engine, findings, skipped, None,
                              containers=args.containers or None, history=[previous, snapshot],
                              log_lines=args.log_lines)
    finally:
        sampler.close()
    if getattr(args, "since", None):
        from .report_options import add_recorded_history

        report, problem = add_recorded_history(report, args)
        if problem:
            print(f"mltop report: {problem} (the report has no history)", file=sys.stderr)
    try:
        path = write_report(args.output, fmt, report=report)
    except OSError as err:
        print(f"mltop report: cannot write {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    if report["missing_containers"]:
        print("mltop report: not found: " + ", ".join(report["missing_containers"]), file=sys.stderr)
    if not snapshot.host.engine.ok:
        print(f"mltop report: {snapshot.host.engine.error} (the report says so)", file=sys.stderr)
    print(path)
    return EXIT_OK
