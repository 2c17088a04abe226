"""`mltop silence add|list|remove|set-healthy`: findings already known (ticketed, being repaired) stop paging.

    mltop silence add gpu.xid gpu:0 --for 2h --reason "OPS-12: board swap tonight"
    mltop silence add shm.too_small research/llama-train-0 --for 1d --reason "fixed in the next image"
    mltop silence list [--json] [--all]
    mltop silence remove gpu.xid gpu:0
    mltop silence set-healthy gpu:0 --reason "reset after Xid 79"

A TARGET is a container name, namespace/pod (its every container), gpu:N or gpu:UUID; none: the code host-wide. The
silences live in the host's recording (--recording PATH, else where `mltop serve` and the dashboard record), which
the doctor, the agent and the dashboard read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..sanitize import escaped

EXIT_BAD = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = argparse.ArgumentParser(add_help=False)  # every verb takes it, before or after its arguments
    where.add_argument("--recording", metavar="PATH", dest="recording_path",
                       help="the recording that holds the silences (default: where `mltop serve` and the dashboard "
                            "record, /var/lib/mltop/history.db as root, else $XDG_STATE_HOME/mltop/history.db)")
    from .common import add_common

    add_common(where, suppress=True)  # --nvml-lib for set-healthy, wherever it is written
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", parents=[where], help="silence a finding code for a target (or host-wide) for a while")
    add.add_argument("code", metavar="CODE", help="the finding's code as `mltop doctor` shows it (gpu.xid)")
    add.add_argument("target", metavar="TARGET", nargs="?",
                     help="a container name, namespace/pod, gpu:N or gpu:UUID (default: host-wide)")
    add.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                     help="how long: 90s, 15m, 2h, 1d, 1w")
    add.add_argument("--reason", required=True, metavar="TEXT", help="why: who knows about it, which ticket")
    listing = verbs.add_parser("list", parents=[where], help="the silences and GPU health marks, active first")
    listing.add_argument("--json", action="store_true", help="print them as a JSON list")
    listing.add_argument("--all", action="store_true", help="show expired silences too")
    remove = verbs.add_parser("remove", parents=[where], help="lift a silence (or a GPU's health mark)")
    remove.add_argument("code", metavar="CODE")
    remove.add_argument("target", metavar="TARGET", nargs="?")
    healthy = verbs.add_parser("set-healthy", parents=[where], help="after a repair: a GPU's older Xid and ECC errors no longer raise")
    healthy.add_argument("target", metavar="gpu:N", help="gpu:N or gpu:UUID")
    healthy.add_argument("--reason", default="set healthy after a repair", metavar="TEXT")


def _book(args: argparse.Namespace):
    from mltop.probes.recording.silences import SilenceBook

    from .doctor_recording import silences_path

    return SilenceBook(silences_path(args) or "")


def main(args: argparse.Namespace) -> int:
    book = _book(args)
    try:
        if args.verb == "add":
            from mltop.probes.recording.silences import silence_seconds

            seconds = silence_seconds(args.duration)
            s = book.add(args.code, args.target, time.time() + seconds, args.reason)
            print(f"silenced {s.code} for {escaped(s.target_words)} until {_when(s.until)}: {escaped(s.reason)}")
            return 0
        if args.verb == "remove":
            if not book.remove(args.code, args.target):
                print(f"mltop silence: no silence on {escaped(args.code)} for {escaped(args.target or 'host-wide')}",
                      file=sys.stderr)
                return 1
            print(f"removed the silence on {escaped(args.code)} for {escaped(args.target or 'host-wide')}")
            return 0
        if args.verb == "set-healthy":
            s = book.set_healthy(args.target, args.reason, detail=_gpu_now(args, args.target))
            print(f"{escaped(s.target)} set healthy from {_when(s.since)}: older Xid and ECC errors no longer "
                  f"raise ({escaped(s.reason)}); `mltop silence remove gpu.healthy_since {escaped(s.target)}` undoes it")
            return 0
        return _list(book, args)
    except ValueError as err:
        print(f"mltop silence: {err}", file=sys.stderr)
        return EXIT_BAD
    except BrokenPipeError:  # `mltop silence list | head`: the command line's own handling
        raise
    except Exception as exc:  # a locked, read-only or foreign file
        print(f"mltop silence: cannot use {book.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD


def _gpu_now(args: argparse.Namespace, target: str) -> dict | None:
    """The GPU's UUID and ECC counts as NVML reads them now: the mark's baseline (None without NVML here: the
    doctor then finds the GPU by its number, and only Xids are judged from the mark on)."""
    from mltop.diagnostics.silences import ECC_FIELDS, gpu_of
    from mltop.probes.recording.silences import check_target

    from .common import make_sampler

    if getattr(args, "no_nvml", False):
        return None
    sampler = make_sampler(argparse.Namespace(docker_host="none", no_nvml=False,
                                              nvml_lib=getattr(args, "nvml_lib", None),
                                              sysfs_root=getattr(args, "sysfs_root", "/sys")))
    try:
        g = gpu_of(check_target(target), sampler.sweep().gpus)
    finally:
        sampler.close()
    if g is None:
        raise ValueError(f"no {target} on this host (NVML lists the GPUs it sees: `nvidia-smi -L`)")
    ecc = {f: getattr(g, f) for f in ECC_FIELDS if isinstance(getattr(g, f, None), int)}
    return {"uuid": g.uuid, "index": g.index, "ecc": {**ecc, "remapped_rows_failed": bool(g.remapped_rows_failed)}}


def _when(t: float | None) -> str:
    from mltop.probes.units import local_time

    return "removed" if t is None else local_time(t)


def _list(book, args: argparse.Namespace) -> int:
    from mltop.probes.recording.source import format_duration

    now = time.time()
    silences = sorted(book.all(), key=lambda s: (not s.active(now), s.code, s.target))
    if not args.all:
        silences = [s for s in silences if s.active(now)]
    if args.json:
        json.dump([s.to_json(now) for s in silences], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not silences:
        print(f"no silences in {book.path}", file=sys.stderr)
        return 0
    rows = [("CODE", "TARGET", "UNTIL", "LEFT", "REASON")]
    for s in silences:
        left = "expired" if not s.active(now) else "-" if s.until is None else format_duration(s.until - now)
        rows.append((s.code, s.target_words, _when(s.until), left, s.reason))
    widths = [max(len(escaped(r[i])) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(escaped(v).ljust(w) for v, w in zip(r[:4], widths)) + "  " + escaped(r[4]))
    return 0
