"""`mltop events [--since 2h] [--container NAME] [--json] [--record PATH]`: the recorded event timeline."""

from __future__ import annotations

import argparse
import json
import sys

from ..sanitize import escaped

EXIT_NO_RECORDING = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default="2h", metavar="TIME",
                        help="from this long ago (90s, 15m, 2h, 7d) or this time (03:12, ISO); default 2h")
    parser.add_argument("--until", metavar="TIME", help="up to this time (default: now)")
    parser.add_argument("--container", metavar="NAME", help="only this container (name, id or id prefix)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of events")
    parser.add_argument("--record", metavar="PATH", dest="record_path",
                        help="the recording to read (default: where mltop records)")


def main(args: argparse.Namespace) -> int:
    from mltop.probes.recording import RecordingStore, default_history_path, parse_when

    path = args.record_path or getattr(args, "record", None) or default_history_path()
    try:
        since = parse_when(args.since)
        until = parse_when(args.until) if args.until else None
    except ValueError as err:
        print(f"mltop events: {err}", file=sys.stderr)
        return EXIT_NO_RECORDING
    try:
        store = RecordingStore(path)
    except FileNotFoundError:
        print(f"mltop events: no recording at {path} (record with `mltop serve` or the dashboard)",
              file=sys.stderr)
        return EXIT_NO_RECORDING
    except Exception as exc:
        print(f"mltop events: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_NO_RECORDING
    try:
        events = store.events(since=since, until=until, container=args.container)
    finally:
        store.close()
    if args.json:
        json.dump([e.to_json() for e in events], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from mltop.diagnostics.events import event_summary
    from mltop.probes.units import local_time

    for e in events:
        when = local_time(e.t)
        who = escaped(e.container) if e.container else "host"
        print(f"{when}  {e.source:<7}  {e.kind:<14}  {who:<24}  {escaped(event_summary(e))}")
    if not events:
        print(f"no events recorded since {local_time(since)}",
              file=sys.stderr)
    return 0
