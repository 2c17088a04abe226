"""`mltop` with no subcommand: the live dashboard."""

from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    from mltop.probes.recording import default_history_path as default_record_path
    from mltop.tui.app import MltopApp

    app = MltopApp(
        docker_host=args.docker_host,
        nvml_lib=args.nvml_lib,
        nvml=not args.no_nvml,
        interval=args.interval,
        record=None if args.no_record else (args.record or default_record_path()),
    )
    app.run()
    return app.return_code or 0
