"""`mltop fleet --prometheus URL [--json]`: every GPU host that a Prometheus scrapes `mltop serve` on.

Prometheus is the distributed engine: this command queries it (instant queries that aggregate per host, range
queries for a host's graphs) and never contacts a host. Exit codes: 0 shown, 3 Prometheus could not be read
(unreachable, refused, timed out, unauthorised), 4 it holds no mltop series.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_PROMETHEUS = 3
EXIT_NO_TARGETS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", metavar="URL", default=None,
                        help="the Prometheus (or Thanos, Mimir, VictoriaMetrics) that scrapes `mltop serve` "
                             "(default: $MLTOP_PROMETHEUS_URL). Credentials from the environment: "
                             "$MLTOP_PROMETHEUS_TOKEN (bearer), or $MLTOP_PROMETHEUS_USER and "
                             "$MLTOP_PROMETHEUS_PASSWORD (basic auth)")
    parser.add_argument("--ca-file", metavar="PATH", default=None,
                        help="CA certificate(s) to verify an https:// Prometheus with")
    parser.add_argument("--json", action="store_true",
                        help="print the fleet as one JSON document (hosts with their GPUs, GPU containers and "
                             "findings, the top GPU consumers, findings by code) and exit")
    parser.add_argument("--lookback", default="1h", metavar="DURATION",
                        help="how long a host whose agent stopped stays listed, as down (default 1h; a "
                             "Prometheus duration)")
    parser.add_argument("--refresh", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between refreshes of the view (default 5)")
    parser.add_argument("--query-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="give up on a Prometheus query after this long, connect, headers and body "
                             "together (default 10)")
    parser.add_argument("--max-answer-mib", type=float, default=64.0, metavar="MIB",
                        help="give up on a Prometheus answer larger than this (default 64 MiB)")


def make_reader(args: argparse.Namespace, *, top: int = 50):
    from mltop.probes.fleet import FleetReader
    from mltop.probes.prometheus_api import URL_ENV, PrometheusClient

    url = args.prometheus or os.environ.get(URL_ENV)
    if not url:
        raise ValueError(f"give the Prometheus to read: --prometheus URL or ${URL_ENV}")
    client = PrometheusClient.from_environment(url, ca_file=args.ca_file, timeout=args.query_timeout,
                                               max_answer_bytes=int(args.max_answer_mib * 2**20))
    return FleetReader(client, lookback=args.lookback, top=top)


def run_view(reader, args: argparse.Namespace) -> int:
    """The fleet view; `enter` on a host leaves it for the dashboard on that host (read from Prometheus, every
    screen mltop has, nothing that acts), and quitting that dashboard comes back to the fleet."""
    from mltop.probes.fleet_host import PrometheusHostSource
    from mltop.tui.app import MltopApp
    from mltop.tui.fleet.app import FleetApp, FleetView

    view, snapshot = FleetView(), None
    while True:
        fleet = FleetApp(reader, refresh_s=args.refresh, view=view, snapshot=snapshot)
        host = fleet.run()
        if host is None:
            return fleet.return_code or 0
        snapshot = fleet.snapshot
        source = PrometheusHostSource(reader.client, host.job, host.instance, host.hostname)
        MltopApp(docker_host=source.act_command, interval=args.refresh, source=source).run()


def main(args: argparse.Namespace) -> int:
    from mltop.probes.fleet import NO_TARGETS
    from mltop.probes.prometheus_api import PrometheusError
    from mltop.tui.sanitize import printable  # a server's text in our messages: shown, never obeyed

    try:
        reader = make_reader(args, top=100_000 if args.json else 50)
    except ValueError as err:
        print(f"mltop fleet: {err}", file=sys.stderr)
        return 2
    if not args.json:
        return run_view(reader, args)
    try:
        snapshot = reader.read()
    except PrometheusError as err:
        print(f"mltop fleet: {printable(err)}", file=sys.stderr)
        return EXIT_PROMETHEUS
    from mltop.tui.fleet.document import fleet_to_json

    sys.stdout.write(json.dumps(fleet_to_json(snapshot), indent=2 if sys.stdout.isatty() else None) + "\n")
    if not snapshot.hosts:
        print(f"mltop fleet: {NO_TARGETS}", file=sys.stderr)
        return EXIT_NO_TARGETS
    for error in snapshot.errors:
        print(f"mltop fleet: {printable(error)}", file=sys.stderr)
    return 0
