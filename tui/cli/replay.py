"""`mltop replay [PATH] [--at TIME]`: the dashboard on recorded data (every screen; REPLAY in the header)."""

from __future__ import annotations

import argparse
import sys

EXIT_NO_RECORDING = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", metavar="PATH",
                        help="the recording (default: where mltop records: /var/lib/mltop/history.db as root, "
                             "else $XDG_STATE_HOME/mltop/history.db)")
    parser.add_argument("--at", metavar="TIME",
                        help="start at this time: 03:12, 2026-11-29T03:12:30, unix seconds, or 2h (ago; from "
                             "the end of the recording). Default: the last sweep")


def open_source(path: str | None, at: str | None):
    """(RecordingSource, None) or (None, why not)."""
    from mltop.probes.recording import RecordingSource, default_history_path, parse_when

    path = path or default_history_path()
    try:
        source = RecordingSource(path)
    except FileNotFoundError:
        return None, f"no recording at {path} (record with `mltop serve` or by running the dashboard)"
    except Exception as exc:  # not an mltop file, newer schema, empty
        return None, f"cannot replay {path}: {exc}"
    if at:
        try:
            when = parse_when(at, now=source.last_time if at.strip()[-1:].isalpha() else None)
        except ValueError as err:
            source.close()
            return None, str(err)
        source.seek(when)
    return source, None


def main(args: argparse.Namespace) -> int:
    source, error = open_source(args.path, args.at)
    if source is None:
        print(f"mltop replay: {error}", file=sys.stderr)
        return EXIT_NO_RECORDING
    from mltop.tui.app import MltopApp

    app = MltopApp(docker_host=args.docker_host, interval=args.interval, source=source)
    app.run()
    return app.return_code or 0
