"""The `mltop` command line: the dashboard by default, and headless subcommands for scripts."""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata

SUBCOMMANDS = {
    # name: (module under mltop.tui, help)
    "snapshot": (None, "print one snapshot (two sweeps --interval apart, so rates are real)"),
    "doctor": ("cmd_doctor", "diagnose containers and the host; exit 0 ok, 1 warning, 2 critical"),
    "report": ("cmd_report", "write a diagnostic report (json, md or html)"),
    "run": ("cmd_run", "run an action in a container: nvidia-smi, py-spy or device-check"),
}


def version() -> str:
    try:
        return metadata.version("mltop")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before or after the subcommand (`mltop --docker-host X doctor` and the reverse)."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--docker-host", metavar="URL", default=default(None),
                        help="Docker engine endpoint (default: $DOCKER_HOST or unix:///var/run/docker.sock; "
                             "ssh://user@host works)")
    parser.add_argument("--nvml-lib", metavar="PATH", default=default(None),
                        help="alternate libnvidia-ml.so.1 (default: $MLTOP_NVML_LIB, then the system's; "
                             "WSL keeps it in /usr/lib/wsl/lib)")
    parser.add_argument("--no-nvml", action="store_true", default=default(False),
                        help="do not load NVML at all")
    parser.add_argument("--interval", type=float, metavar="SECONDS", default=default(1.0),
                        help="refresh / sampling interval in seconds (default 1, minimum 0.25)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mltop",
        description="GPU-aware container monitor and diagnostics for ML workloads. "
                    "With no subcommand, opens the live dashboard.",
    )
    parser.add_argument("--version", action="version", version=f"mltop {version()}")
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(p, suppress=True)
        if module is None:
            p.add_argument("--json", action="store_true", help="print JSON (the only format for now)")
        else:
            _command_module(module).add_arguments(p)
    return parser


def _command_module(name: str):
    import importlib

    return importlib.import_module(f"mltop.tui.{name}")


def make_sampler(args: argparse.Namespace):
    from mltop.probes.sampler import ProbeOptions, Sampler

    return Sampler(ProbeOptions(docker_host=args.docker_host, nvml=not args.no_nvml, nvml_lib=args.nvml_lib))


def take_snapshot(sampler, interval: float):
    """Two sweeps `interval` apart, so that rates (CPU %, I/O, network) are real."""
    sampler.sweep()
    time.sleep(max(interval, 0.05))
    return sampler.sweep()


def cmd_snapshot(args: argparse.Namespace) -> int:
    from mltop.probes.model import snapshot_to_json

    sampler = make_sampler(args)
    try:
        snapshot = take_snapshot(sampler, args.interval)
    finally:
        sampler.close()
    doc = snapshot_to_json(snapshot)
    from mltop.diagnostics.workload import classify_all

    workloads = classify_all(snapshot)  # additive: "workload" per container, null when it uses no GPU
    for c_doc in doc["containers"]:
        c_doc["workload"] = workloads[c_doc["id"]].to_json() if c_doc["id"] in workloads else None
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if not snapshot.host.engine.ok:
        print(f"mltop: {snapshot.host.engine.error}", file=sys.stderr)
        return 3
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from mltop.tui.app import MltopApp

    app = MltopApp(
        docker_host=args.docker_host,
        nvml_lib=args.nvml_lib,
        nvml=not args.no_nvml,
        interval=args.interval,
    )
    app.run()
    return app.return_code or 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.interval < 0.25:
        parser.error("--interval must be at least 0.25 seconds")
    try:
        if args.command is None:
            return cmd_dashboard(args)
        if args.command == "snapshot":
            return cmd_snapshot(args)
        return int(_command_module(SUBCOMMANDS[args.command][0]).main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mltop snapshot --json | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
