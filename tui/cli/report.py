"""`mltop report -o FILE [--format json|md|html] [CONTAINER ...]`: run the doctor, write a redacted report."""

from __future__ import annotations

import argparse
import logging
import sys

from .common import make_sampler

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CANNOT_WRITE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("containers", nargs="*", metavar="CONTAINER",
                        help="container names or id prefixes to include (default: all)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="where to write the report; .json, .md or .html picks the format")
    parser.add_argument("--format", choices=("json", "md", "html"),
                        help="report format (default: from the file extension)")
    parser.add_argument("--mode", type=_file_mode, default=0o600, metavar="OCTAL",
                        help="the report's permissions (default 600: only you can read it; 644 to share it)")
    parser.add_argument("--log-lines", type=int, default=100, metavar="LINES",
                        help="log lines per container in the report (default 100; 0 for none)")
    parser.add_argument("--no-doctor", action="store_true", help="leave the doctor's findings out")
    from mltop.tui.cli.report_options import add_since_arguments

    add_since_arguments(parser)


def _file_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file mode: give octal digits, such as 600 or 644")
    return mode


def main(args: argparse.Namespace) -> int:
    from mltop.diagnostics.report import build_report, format_for_path, write_report

    try:
        fmt = format_for_path(args.output, args.format)
    except ValueError as err:
        print(f"mltop report: {err}", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    from mltop.diagnostics.doctor import DoctorResult, SkippedCheck, run_doctor
    from mltop.probes.history import History

    sampler = make_sampler(args)
    try:
        previous, snapshot = sampler.sweep_pair(args.interval)
        if args.no_doctor:
            doctor = DoctorResult((), (SkippedCheck("doctor", "left out with --no-doctor"),))
        else:
            try:
                doctor = run_doctor(snapshot, sampler.engine, containers=args.containers or None,
                                    previous=previous)
            except Exception as exc:  # the report is most needed when something is broken: write it anyway
                log.exception("the doctor failed; the report is written without it")
                doctor = DoctorResult((), (SkippedCheck("doctor", f"the doctor failed: {type(exc).__name__}: {exc}"),))
        history = History(2)  # the two sweeps: the same series, under the same names, as the dashboard's report
        history.record(previous)
        history.record(snapshot)
        report = build_report(snapshot, sampler.engine, doctor, None, history,
                              containers=args.containers or None, log_lines=args.log_lines)
    finally:
        sampler.close()
    if getattr(args, "since", None):
        from mltop.tui.cli.report_options import add_recorded_history

        report, problem = add_recorded_history(report, args)
        if problem:
            print(f"mltop report: {problem} (the report has no history)", file=sys.stderr)
    try:
        path = write_report(args.output, fmt, report=report, mode=args.mode)
    except OSError as err:
        print(f"mltop report: cannot write {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    if report["missing_containers"]:
        print("mltop report: not found: " + ", ".join(report["missing_containers"]), file=sys.stderr)
    if snapshot.host.engine_down:
        print(f"mltop report: {snapshot.host.engine.error} (the report says so)", file=sys.stderr)
    if snapshot.host.no_container_source:
        print(f"mltop report: {snapshot.host.no_container_source}", file=sys.stderr)
    print(path)
    return EXIT_OK
