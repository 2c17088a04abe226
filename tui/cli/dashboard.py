"""`mltop` with no subcommand: the live dashboard, made by `make_dashboard_app` with its start-up tuning."""

from __future__ import annotations

import argparse
from typing import Any


def make_dashboard_app(app_class: Any = None, **options: Any):
    """The live dashboard as `mltop` starts it: the process-wide start-up tuning first (the collector off until
    the first full frame, the open-file limit raised while there is one thread: tui/startup.py), then the app,
    then its first sweep, waited for up to FIRST_SWEEP_WAIT_S before Textual starts. Constructing an MltopApp
    (a test, a replay) does none of this. `app_class`: MltopApp or a subclass (tests/bench_tui.py)."""
    from mltop.tui.startup import FIRST_SWEEP_WAIT_S, StartupTuning

    tuning = StartupTuning().begin()
    if app_class is None:
        from mltop.tui.app import MltopApp

        app_class = MltopApp
    try:
        app = app_class(tuning=tuning, **options)
    except BaseException:
        tuning.settle(running=False)
        raise
    app.start_first_sweep(FIRST_SWEEP_WAIT_S)
    return app


def main(args: argparse.Namespace) -> int:
    from mltop.probes.recording import default_history_path as default_record_path

    app = make_dashboard_app(
        docker_host=args.docker_host,
        nvml_lib=args.nvml_lib,
        nvml=not args.no_nvml,
        interval=args.interval,
        sysfs_root=args.sysfs_root,
        record=None if args.no_record else (args.record or default_record_path()),
        silences=args.record or default_record_path(),  # `mltop silence` writes there, recording or not
    )
    app.run()
    return app.return_code or 0
