"""`mltop kill CONTAINER PID [--signal NAME] [--yes]`, `mltop stop CONTAINER`, `mltop restart CONTAINER`.

The same checks as the dashboard's `k` (diagnostics/actions/acts.py): the action registry's rules (--read-only,
MLTOP_READ_ONLY), the PID's cgroup and start time read again right before the signal, a pod container refused
with what to run instead. Without --yes the command asks y/N on a terminal, and refuses when stdin is none
(a script must say --yes) rather than wait. The act is recorded in the timeline (the recording --record names,
default where the dashboard and the agent record) when no other mltop holds that file.

Exit status: 0 when the act had its effect (the process exited; the container stopped or restarted), 1 when it
was refused, failed or the process still runs, 3 when the container or the PID is unknown.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..sanitize import escaped
from .common import make_sampler

EXIT_DONE = 0
EXIT_NOT_DONE = 1
EXIT_UNKNOWN = 3


def _command(parser: argparse.ArgumentParser) -> str:
    return parser.prog.split()[-1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mltop.diagnostics.actions.acts import SIGNAL_NAMES, WAIT_S

    command = _command(parser)
    parser.set_defaults(act=command)
    parser.add_argument("container", metavar="CONTAINER",
                        help="container name or id prefix; a pod container as NAMESPACE/POD/CONTAINER")
    if command == "kill":
        parser.add_argument("pid", type=int, metavar="PID", help="the host PID of one of its processes")
        parser.add_argument("--signal", default="TERM", metavar="NAME",
                            help=f"the signal (default TERM; {', '.join(SIGNAL_NAMES)}, any name or number)")
        parser.add_argument("--wait", type=float, default=WAIT_S, metavar="SECONDS",
                            help=f"how long to watch the process exit (default {WAIT_S:g})")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask (needed without a terminal)")
    from .recording_options import add_record_arguments

    add_record_arguments(parser, suppress=True)  # where the act is recorded: the dashboard's and agent's file
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _confirm(question: str) -> bool | None:
    """True/False from the terminal; None when stdin is no terminal (nobody to ask)."""
    if not sys.stdin.isatty():
        return None
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        return sys.stdin.readline().strip().lower() in ("y", "yes")
    except (EOFError, OSError):
        return False


def _record(args: argparse.Namespace, outcome) -> str | None:
    """Hand the outcome to the timeline; None when recorded, else why not."""
    from mltop.probes.recording import Recorder
    from mltop.probes.recording.recorder import RecorderLocked

    if getattr(args, "no_record", False):
        return "--no-record: not recorded in the timeline"
    recorder = Recorder(getattr(args, "record", None), docker_host=args.docker_host, watch_engine=False)
    try:
        recorder.start()
    except RecorderLocked:
        return (f"not recorded in the timeline: another mltop (a dashboard or `mltop serve`) records into "
                f"{recorder.path}; the engine's own kill/stop/die events are recorded there")
    if not recorder.status.ok:
        return f"not recorded in the timeline: {recorder.status.message}"
    recorder.add_event(outcome.event())
    recorder.close()
    return None


def main(args: argparse.Namespace) -> int:
    from mltop.diagnostics.actions import acts
    from mltop.diagnostics.actions.registry import RESTART_CONTAINER, SIGNAL_PROCESS, STOP_CONTAINER, refusal

    prog = f"mltop {args.act}"
    work = {"kill": SIGNAL_PROCESS, "stop": STOP_CONTAINER, "restart": RESTART_CONTAINER}[args.act]
    refused = refusal(work)  # the registry first: nothing is sampled when it refuses
    if refused:
        print(f"{prog}: refused — {refused}", file=sys.stderr)
        return EXIT_NOT_DONE
    if args.act == "kill":
        try:
            signal = acts.signal_name(args.signal)
        except ValueError as err:
            print(f"{prog}: {err}", file=sys.stderr)
            return EXIT_UNKNOWN
    sampler = make_sampler(args)
    try:
        snapshot = sampler.sweep()
        if snapshot.host.engine_down and not snapshot.containers:
            print(f"{prog}: {snapshot.host.engine.error}", file=sys.stderr)
            return EXIT_UNKNOWN
        container = snapshot.container(args.container)
        if container is None:
            names = ", ".join(c.name for c in snapshot.containers) or "none"
            print(f"{prog}: no container named or id-prefixed {escaped(args.container)!r} (containers: "
                  f"{escaped(names)})", file=sys.stderr)
            return EXIT_UNKNOWN
        if args.act == "kill":
            process = next((p for p in container.processes if p.host_pid == args.pid), None)
            if process is None:
                pids = ", ".join(str(p.host_pid) for p in container.processes) or "none visible"
                print(f"{prog}: host PID {args.pid} is not a process of {escaped(container.name)} (its host PIDs: "
                      f"{pids})", file=sys.stderr)
                return EXIT_UNKNOWN
            question = f"Send SIG{signal} to {escaped(acts.describe_process(container, process))}?"
        else:
            question = f"{args.act.capitalize()} container {escaped(container.name)}?"
        if not args.yes:
            answer = _confirm(question)
            if answer is None:
                print(f"{prog}: refused — stdin is not a terminal, so nobody can confirm: {question} Pass --yes "
                      "to act without asking.", file=sys.stderr)
                return EXIT_NOT_DONE
            if not answer:
                print(f"{prog}: not confirmed; nothing done", file=sys.stderr)
                return EXIT_NOT_DONE
        if args.act == "kill":
            outcome = acts.signal_process(container, process, signal, wait_s=max(args.wait, 0.0))
        else:
            outcome = acts.stop_container(container, sampler.engine, restart=args.act == "restart")
    finally:
        sampler.close()
    unrecorded = _record(args, outcome)
    if args.json:
        json.dump({**outcome.to_json(), "recorded": unrecorded is None}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{prog}: {outcome.status} — {escaped(outcome.message)}")
    if unrecorded:
        print(f"{prog}: {unrecorded}", file=sys.stderr)
    return EXIT_DONE if outcome.done else EXIT_NOT_DONE
