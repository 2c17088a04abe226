"""The recorder's command-line options, shared by the dashboard and `mltop serve`:
--record PATH, --no-record, --retention 7d, --max-size 500MB."""

from __future__ import annotations

import argparse


def add_record_arguments(parser: argparse.ArgumentParser, retention: bool = False, suppress: bool = False) -> None:
    """`suppress`: for a subcommand's parser, so that `mltop --record X serve` keeps X (the top-level parser
    has these options too and a subparser's defaults would overwrite them)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--record", metavar="PATH", default=default,
                        help="record sweeps and events into this SQLite file (default: "
                             "/var/lib/mltop/history.db as root, else $XDG_STATE_HOME/mltop/history.db)")
    parser.add_argument("--no-record", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="do not record")
    if retention:
        parser.add_argument("--retention", default="7d", metavar="AGE",
                            help="keep recorded history this long (default 7d; 90m, 12h, 2w)")
        parser.add_argument("--max-size", default="500MB", metavar="SIZE",
                            help="keep the recording under this size, oldest dropped first (default 500MB)")


def recorder_from_args(args: argparse.Namespace, docker_host: str | None = None):
    """A started Recorder per the options, or None with --no-record. Raises RecorderLocked (say it and exit,
    or go on without recording) and ValueError for a bad --retention / --max-size."""
    from mltop.probes.recording import Recorder, parse_duration, parse_size

    if getattr(args, "no_record", False):
        return None
    retention_s = parse_duration(getattr(args, "retention", "7d"))
    max_bytes = parse_size(getattr(args, "max_size", "500MB"))
    return Recorder(args.record, retention_s=retention_s, max_bytes=max_bytes,
                    docker_host=docker_host).start()


def attach_recorder(loop, args: argparse.Namespace, prog: str = "mltop serve"):
    """For `mltop serve`: start the recorder per the options and register it on the sweep loop
    (`loop.add_listener`). Returns (recorder or None, exit message or None): a file another mltop records
    into, or a bad --retention / --max-size, is a message to print before exiting 2; a read-only path or
    full disk is only a warning (printed here) and serving goes on."""
    import sys

    from mltop.probes.recording import RecorderLocked

    try:
        recorder = recorder_from_args(args, getattr(args, "docker_host", None))
    except RecorderLocked as err:
        return None, f"{prog}: {err}"
    except ValueError as err:
        return None, f"{prog}: {err}"
    if recorder is None:
        return None, None
    if not recorder.status.ok:
        print(f"{prog}: {recorder.status.message}; serving without recording", file=sys.stderr)
    else:
        print(f"{prog}: recording into {recorder.path}", file=sys.stderr)
    recorder.attach(loop)
    return recorder, None


def recorder_health(recorder) -> str | None:
    """The recorder's line for /healthz (None when not recording): its state, what it wrote, dropped and
    failed, and its last problem (a full disk, a value it could not encode)."""
    if recorder is None:
        return None
    status = recorder.status
    line = (f"recorder {status.state} ({status.summary()}): {status.sweeps} sweeps and {status.events} events "
            f"written, {status.dropped} dropped, {status.failed} failed")
    if status.message:
        line += f"; last problem: {status.message}"
    return line
