"""`mltop doctor --recording PATH`: the history k8s.gpu_allocated_unused needs, read from a recording.

The check fires when a pod container's allocated GPU has gone unused for gpu_alloc_unused_s (600 s by default);
the doctor's own two sweeps see a second. `mltop serve` and the dashboard record by default into
default_history_path() (the agent's file on a node: /var/lib/mltop/history.db as root), each sweep with every
allocation's in_use and unused_since, so the doctor reads that file when it exists, or the one --recording
names. Without one, the check is listed under checks skipped with how to get a window, not silent.
"""

from __future__ import annotations

import argparse


def add_recording_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--recording", metavar="PATH", dest="recording_path",
                       help="the recording that tells since when each pod container's allocated GPUs went unused "
                            "(k8s.gpu_allocated_unused) (default: where `mltop serve` and the dashboard record, "
                            "/var/lib/mltop/history.db as root, else $XDG_STATE_HOME/mltop/history.db, if there)")
    group.add_argument("--no-recording", action="store_true",
                       help="read no recording: k8s.gpu_allocated_unused is then skipped for lack of a window")


def recorded_allocations(args: argparse.Namespace, snapshot, previous, window_s: float):
    """(snapshot, allocation_history, allocation_unknown) for run_doctor: the snapshot with each unused pod GPU
    allocation's unused_since carried back from the recording, where that came from, and per container id why
    there is no history. Nothing is read when no pod container leaves an allocated GPU unused."""
    from mltop.probes.recording import RecordingStore, default_history_path
    from mltop.probes.recording.allocation_history import waiting_allocations, with_recorded_allocations

    waiting = waiting_allocations(snapshot)
    if not waiting:
        return snapshot, None, {}
    seen = snapshot.taken_at - (previous.taken_at if previous is not None else snapshot.taken_at)
    need = (f"it needs the GPUs' use over gpu_alloc_unused_s={window_s:g} s (this run saw {seen:.1f} s)")
    how = ("run `mltop serve --record PATH` (or the dashboard) on this node and pass --recording PATH "
           "(without --recording the doctor reads where they record by default)")
    if getattr(args, "no_recording", False):
        return snapshot, None, {c.id: f"--no-recording: {need}; {how}" for c in waiting}
    named = getattr(args, "recording_path", None) or getattr(args, "record", None)
    path = named or default_history_path()
    try:
        store = RecordingStore(path)
    except FileNotFoundError:
        where = "" if named else " (where `mltop serve` and the dashboard record by default)"
        return snapshot, None, {c.id: f"no recording at {path}{where}: {need}; {how}" for c in waiting}
    except Exception as exc:
        return snapshot, None, {c.id: f"cannot read the recording {path} ({type(exc).__name__}: {exc}): {need}; {how}"
                                for c in waiting}
    try:
        first_t = previous.taken_at if previous is not None else snapshot.taken_at
        found = with_recorded_allocations(snapshot, store, first_t)
    finally:
        store.close()
    return found.snapshot, found.source, found.unknown


def silences_path(args: argparse.Namespace) -> str | None:
    """Where the host's silences are: the recording --recording (or --record) names, else the default one; None with
    --no-recording."""
    from mltop.probes.recording import default_history_path

    if getattr(args, "no_recording", False):
        return None
    return getattr(args, "recording_path", None) or getattr(args, "record", None) or default_history_path()


def recorded_silences(args: argparse.Namespace) -> list:
    """The silences and GPU health marks of the host's recording (none without one, or one that cannot be read:
    the doctor then judges as if none were set, and says why on stderr)."""
    import sys

    from mltop.probes.recording.silences import SilenceBook

    path = silences_path(args)
    if path is None:
        return []
    try:
        return SilenceBook(path).all()
    except Exception as exc:
        print(f"mltop doctor: cannot read the silences in {path} ({type(exc).__name__}: {exc}); none applied",
              file=sys.stderr)
        return []
