"""`mltop run nvidia-smi|py-spy|device-check CONTAINER`: one action, its output streamed as it arrives.

Exit status: 0 when the action ran (ok), 1 when it failed, timed out, is unavailable in that container or is
refused (--no-exec / MLTOP_NO_EXEC=1: the action registry's rules, asked before anything is sampled),
3 when the container is unknown or the engine unreachable, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..sanitize import escaped
from .common import make_sampler

EXIT_OK = 0
EXIT_ACTION_FAILED = 1
EXIT_CANNOT_RUN = 3
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mltop.diagnostics.actions import ACTIONS

    parser.add_argument("action", choices=[a.name for a in ACTIONS],
                        help="; ".join(f"{a.name}: {a.summary}" for a in ACTIONS))
    parser.add_argument("container", metavar="CONTAINER",
                        help="container name or id prefix; a pod container as NAMESPACE/POD/CONTAINER (or its "
                             "container name alone where no other pod container has it)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of streaming")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="stop the action after this long (defaults: "
                             + ", ".join(f"{a.name} {a.timeout_s:g}s" for a in ACTIONS) + ")")
    parser.add_argument("--pid", type=int, metavar="HOSTPID",
                        help="py-spy: the host PID of the process to dump (default: the busiest Python process)")
    parser.add_argument("--all", action="store_true", dest="all_processes",
                        help="py-spy: dump every Python process of the container")


def main(args: argparse.Namespace) -> int:
    from mltop.diagnostics.actions import OK, PY_SPY, ActionRun, refusal

    if args.timeout is not None and args.timeout <= 0:
        print("mltop run: --timeout must be positive", file=sys.stderr)
        return EXIT_CANNOT_RUN
    refused = refusal(args.action)  # the registry's rules; ActionRun asks again where it starts
    if refused:
        print(f"mltop run: {args.action} refused — {refused}", file=sys.stderr)
        return EXIT_ACTION_FAILED
    sampler = make_sampler(args)
    try:
        # py-spy picks the busiest process, which needs CPU rates: two sweeps. The others need one.
        snapshot = sampler.sweep_pair(args.interval)[1] if args.action == PY_SPY and args.pid is None \
            else sampler.sweep()
        if snapshot.host.engine_down:
            print(f"mltop run: {snapshot.host.engine.error}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        container = snapshot.container(args.container)
        if container is None:  # a pod container by its own name, where only one pod container has it
            named = [c for c in snapshot.containers
                     if c.kubernetes is not None and c.kubernetes.container == args.container]
            container = named[0] if len(named) == 1 else None
        if container is None:
            names = ", ".join(c.name for c in snapshot.containers) or "none"
            print(f"mltop run: no container named or id-prefixed {escaped(args.container)!r} (containers: "
                  f"{escaped(names)})", file=sys.stderr)
            if snapshot.host.no_container_source:
                print(f"mltop run: {snapshot.host.no_container_source}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        def show(line: str) -> None:
            sys.stdout.write(escaped(line) + "\n")
            sys.stdout.flush()

        run = ActionRun(args.action, snapshot, container, sampler.engine, timeout_s=args.timeout,
                        on_line=None if args.json else show, pid=args.pid, all_processes=args.all_processes)
        run.start()
        try:
            while run.wait(0.2) is None:
                pass
        except KeyboardInterrupt:
            run.cancel()
            run.wait(10)
        result = run.result
    finally:
        sampler.close()
    if result is None:
        print("mltop run: the action did not end after being cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif result.status != OK or result.explanation:
        print(f"\nmltop run: {args.action} in {escaped(result.container)}: {result.status}"
              + (f" — {escaped(result.explanation)}" if result.explanation else ""), file=sys.stderr)
    if result.status == "cancelled":
        return EXIT_INTERRUPTED
    return EXIT_OK if result.status == OK else EXIT_ACTION_FAILED
