"""`mltop report --since 2h [--record PATH]`: the recorded timeline and figures added to the report."""

from __future__ import annotations

import argparse
import time


def add_since_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="TIME",
                        help="add the recorded timeline and figures from this long ago (2h, 90m) or this time "
                             "(03:12, ISO) until now")
    parser.add_argument("--record", metavar="PATH", dest="record_path",
                        help="the recording to read (default: where mltop records)")


def add_recorded_history(report: dict, args: argparse.Namespace) -> tuple[dict, str | None]:
    """(the report with history, None) or (the report unchanged, why not)."""
    from mltop.diagnostics.report_history import add_history
    from mltop.probes.recording import RecordingStore, default_history_path, parse_when

    path = args.record_path or getattr(args, "record", None) or default_history_path()
    try:
        since = parse_when(args.since)
        store = RecordingStore(path)
    except FileNotFoundError:
        return report, f"no recording at {path}"
    except Exception as exc:
        return report, f"cannot read the recording {path}: {exc}"
    try:
        return add_history(report, store, since, time.time(), selected=args.containers or None), None
    finally:
        store.close()
