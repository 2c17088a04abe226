"""The `mltop` command line: the dashboard by default, and headless subcommands for scripts.

Each subcommand is a module with `add_arguments(parser)` and `main(args) -> int`, registered in
SUBCOMMANDS by a factory that imports it only when that command's options are built or it runs. A command
is one line there: a module of this package has a factory below; `serve`, a package of its own, is named
by `_elsewhere_in_tui("serve.command")`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Callable

from .common import add_common, make_sampler
from .logging_setup import configure_logging


def _snapshot() -> ModuleType:
    from . import snapshot
    return snapshot


def _doctor() -> ModuleType:
    from . import doctor
    return doctor


def _report() -> ModuleType:
    from . import report
    return report


def _run() -> ModuleType:
    from . import run
    return run


def _events() -> ModuleType:
    from . import events
    return events


def _acts() -> ModuleType:
    from . import acts
    return acts


def _replay() -> ModuleType:
    from . import replay
    return replay


def _fleet() -> ModuleType:
    from . import fleet
    return fleet


def _silence() -> ModuleType:
    from . import silence
    return silence


def _elsewhere_in_tui(module: str) -> Callable[[], ModuleType]:
    """The factory of a command module outside this package: mltop.tui.<module>, imported when used."""
    return lambda: importlib.import_module(f"mltop.tui.{module}")


# name: (factory returning a module with add_arguments(parser) and main(args), help)
SUBCOMMANDS: dict[str, tuple[Callable[[], ModuleType], str]] = {
    "snapshot": (_snapshot, "print one snapshot (two sweeps --interval apart, so rates are real)"),
    "doctor": (_doctor, "diagnose containers and the host; exit 0 ok, 1 warning, 2 critical"),
    "report": (_report, "write a diagnostic report (json, md or html)"),
    "run": (_run, "run an action in a container: nvidia-smi, py-spy or device-check"),
    "kill": (_acts, "send a signal to one process of a container (checked against its cgroup and start time)"),
    "stop": (_acts, "stop a Docker container through the engine (a pod container: what to run instead)"),
    "restart": (_acts, "restart a Docker container through the engine (a pod container: what to run instead)"),
    "events": (_events, "print the recorded event timeline (engine, GPU, findings)"),
    "replay": (_replay, "open the dashboard on a recording: step and jump through time"),
    "silence": (_silence, "silence a known finding for a while, list or remove silences, set a GPU healthy after "
                          "a repair (shared by the doctor, the agent and the dashboard)"),
    "fleet": (_fleet, "every host that a Prometheus scrapes `mltop serve` on: hosts, top GPU consumers, "
                      "findings (read-only)"),
    "serve": (_elsewhere_in_tui("serve.command"),
              "serve /metrics for Prometheus, /snapshot.json, /findings.json, /healthz"),
}


def version() -> str:
    from importlib import metadata  # (10 ms of import: only when asked)

    try:
        return metadata.version("mltop")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class _VersionAction(argparse.Action):
    """--version, with the version looked up only when asked."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(message=f"mltop {version()}\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given `argv`, only the subcommands named in it get their own options (a
    subcommand is always a word of its own), so `mltop snapshot` does not import the doctor's checks just to
    describe its options (a fifth of the command's CPU at 500 containers, issue 11)."""
    named = None if argv is None else set(argv)
    parser = argparse.ArgumentParser(
        prog="mltop",
        description="GPU-aware container monitor and diagnostics for ML workloads. "
                    "With no subcommand, opens the live dashboard.",
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and exit")
    add_common(parser, suppress=False)
    from mltop.tui.cli.recording_options import add_record_arguments

    add_record_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (factory, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_common(p, suppress=True)
        if named is None or name in named:
            factory().add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.interval < 0.25:
        parser.error("--interval must be at least 0.25 seconds")
    try:
        configure_logging(args.log_file, to_stderr=args.command is not None)
    except OSError as err:
        print(f"mltop: cannot log to {err.filename or args.log_file}: {err.strerror or err}", file=sys.stderr)
        return 2
    if args.no_exec:  # one policy for the whole process: the action registry refuses every exec and attach
        import os

        from mltop.diagnostics.actions.registry import NO_EXEC_ENV

        os.environ[NO_EXEC_ENV] = "1"
    if args.read_only:  # likewise: no exec, no signal, no stop (the registry's read-only rule)
        import os

        from mltop.diagnostics.actions.registry import READ_ONLY_ENV

        os.environ[READ_ONLY_ENV] = "1"
    if args.cri_endpoint is not None:  # likewise: every sampler of the process asks this endpoint
        import os

        from mltop.probes.cri import ENV_VAR

        os.environ[ENV_VAR] = args.cri_endpoint
    if args.containerd_config is not None:  # the doctor's HostProbe reads it wherever it runs
        import os

        from mltop.probes.cri.node_config import ENV_VAR as CONTAINERD_CONFIG_ENV

        os.environ[CONTAINERD_CONFIG_ENV] = args.containerd_config
    if args.crio_config is not None:  # likewise CRI-O's crio.conf (and the crio.conf.d next to it)
        import os

        from mltop.probes.cri.node_config import CRIO_ENV_VAR

        os.environ[CRIO_ENV_VAR] = args.crio_config
    if args.device_plugins_dir is not None:  # likewise the kubelet's device-plugins directory
        import os

        from mltop.probes.cri.device_plugins import ENV_VAR as DEVICE_PLUGINS_ENV

        os.environ[DEVICE_PLUGINS_ENV] = args.device_plugins_dir
    if args.pod_resources_socket is not None:  # likewise for the kubelet's pod-resources API
        import os

        from mltop.probes.cri.podresources import ENV_VAR as POD_RESOURCES_ENV

        os.environ[POD_RESOURCES_ENV] = args.pod_resources_socket
    try:
        if args.command is None:
            from . import dashboard

            return dashboard.main(args)
        return int(SUBCOMMANDS[args.command][0]().main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mltop snapshot --json | head`
        return 0


__all__ = ["SUBCOMMANDS", "build_parser", "main", "make_sampler", "version"]
