"""`mltop serve`: sample every --interval, diagnose every --doctor-interval, serve /metrics and JSON over HTTP."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
import time
from importlib import resources

DEFAULT_PORT = 10140  # see README "mltop serve": Prometheus' 9100-9999 exporter range is fully allocated
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_INTERVAL = 5.0
DEFAULT_DOCTOR_INTERVAL = 300.0  # a doctor run reads every container's logs: ~6 ms of CPU each
EXIT_CANNOT_LISTEN = 2
EXIT_BAD_WEB_CONFIG = 2
EXIT_CANNOT_RECORD = 2  # another mltop records into the same file, or a bad --retention / --max-size

ASSETS = {
    "alert_rules": "alert-rules.yml",
    "scrape_config": "scrape-config.yml",
    "systemd_unit": "mltop-serve.service",
    "daemonset": "daemonset.yaml",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The global --interval defaults to 1 s for the dashboard; an agent samples less often.
    for action in parser._actions:
        if action.dest == "interval":
            action.default = DEFAULT_INTERVAL
            action.help = f"seconds between sweeps (default {DEFAULT_INTERVAL:g}; give it after `serve`)"
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"address to serve on (default {DEFAULT_LISTEN}; a non-loopback address is "
                             "reachable from other hosts and says so at start)")
    parser.add_argument("--web-config", metavar="FILE",
                        help="TLS and basic auth, in the Prometheus exporter-toolkit's web config format "
                             "(tls_server_config, basic_auth_users with bcrypt hashes)")
    parser.add_argument("--expose-snapshot", action="store_true",
                        help="serve /snapshot.json and /findings.json (every container's command, mounts, labels "
                             "and environment) to any client; by default only loopback clients and those that "
                             "pass --web-config's basic auth get them, others 403")
    parser.add_argument("--doctor-interval", type=float, default=DEFAULT_DOCTOR_INTERVAL, metavar="SECONDS",
                        help=f"seconds between doctor runs for mltop_finding (default {DEFAULT_DOCTOR_INTERVAL:g}; "
                             "0 turns the doctor off)")
    parser.add_argument("--node-name", default=None, metavar="NAME",
                        help="the host's name on every series (the Hostname label) and in `mltop fleet` "
                             "(default: $MLTOP_NODE_NAME, else $NODE_NAME as dcgm-exporter reads it, else the "
                             "machine's hostname)")
    from mltop.tui.cli.recording_options import add_record_arguments

    add_record_arguments(parser, retention=True, suppress=True)  # --record PATH, --no-record, --retention, --max-size
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--print-alert-rules", action="store_true",
                       help="print the shipped Prometheus alert rules and exit")
    group.add_argument("--print-scrape-config", action="store_true",
                       help="print an example Prometheus scrape config and exit")
    group.add_argument("--print-systemd-unit", action="store_true",
                       help="print a systemd unit that runs `mltop serve` and exit")
    group.add_argument("--print-daemonset", action="store_true",
                       help="print a Kubernetes DaemonSet that runs the agent on every GPU node, with the "
                            "NetworkPolicy that lets only the monitoring namespace reach it, and exit")
    group.add_argument("--print-grafana-dashboard", action="store_true",
                       help="print mltop's Grafana dashboard (JSON to import: GPUs with GPM, GPU use by container, "
                            "container CPU and memory, findings and Xids) and exit")


def asset_text(key: str) -> str:
    return resources.files("mltop.tui.serve").joinpath("assets", ASSETS[key]).read_text()


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def is_loopback(host: str) -> bool:
    from .http import is_loopback_address

    return host == "localhost" or is_loopback_address(host)


def node_name(args: argparse.Namespace) -> str | None:
    """--node-name, else MLTOP_NODE_NAME, else NODE_NAME (the downward API's spec.nodeName in a DaemonSet)."""
    import os

    for value in (getattr(args, "node_name", None), os.environ.get("MLTOP_NODE_NAME"), os.environ.get("NODE_NAME")):
        if value and value.strip():
            return value.strip()
    return None


def exposure_warning(host: str, tls: bool, auth: bool, expose_snapshot: bool = False) -> str | None:
    """What a start on `host` should warn about: a non-loopback address without TLS or without basic auth."""
    if is_loopback(host) or (tls and auth):
        return None
    missing = " or ".join(what for what, have in (("TLS", tls), ("authentication", auth)) if not have)
    served = "container names and images" + (", commands, labels and environment" if expose_snapshot else "")
    why = {
        "TLS": f"the password and what it serves ({served}) cross the network in clear",
        "authentication": f"anyone who reaches it can read what it serves ({served})",
        "TLS or authentication": f"anyone who reaches it can read what it serves ({served})",
    }[missing]
    return (f"reachable from other hosts without {missing}: {why}; "
            "give --web-config (TLS and basic auth, see README) or restrict it with a firewall")


def main(args: argparse.Namespace) -> int:
    for flag, key in (("print_alert_rules", "alert_rules"), ("print_scrape_config", "scrape_config"),
                      ("print_systemd_unit", "systemd_unit"), ("print_daemonset", "daemonset")):
        if getattr(args, flag, False):
            sys.stdout.write(asset_text(key))
            return 0
    if getattr(args, "print_grafana_dashboard", False):
        from .grafana import dashboard_json

        sys.stdout.write(dashboard_json())
        return 0
    started = time.monotonic()
    # The agent never acts on a container: read-only for the whole process (no exec, no signal, no stop), so
    # the doctor's exec-based checks are skipped with the registry's words, as MLTOP_NO_EXEC does in the
    # shipped manifests.
    import os

    from mltop.diagnostics.actions.registry import READ_ONLY_ENV

    os.environ[READ_ONLY_ENV] = "1"
    logging.basicConfig(level=logging.WARNING, format="mltop serve: %(levelname)s %(name)s: %(message)s")
    try:
        host, port = parse_listen(args.listen)
    except ValueError as err:
        print(f"mltop serve: {err}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN

    from mltop.probes.source import LiveSource
    from mltop.tui.cli import make_sampler, version

    from .front import HttpFront
    from .http import buffered_answer, make_handler, password_check_needed
    from .webconfig import WebConfig, WebConfigError, load_web_config
    from .loop import SweepLoop
    from .metrics import Exposition

    holder: dict[str, SweepLoop] = {}
    exposition = Exposition(lambda: holder["loop"].state, version(), node_name=node_name(args))
    from mltop.tui.cli.recording_options import recorder_health

    from mltop.probes.engine_events import feed_problems

    from .recorder_metrics import RecorderCollector

    exposition.self_registry.register(RecorderCollector(lambda: holder.get("recorder")))
    expose_snapshot = getattr(args, "expose_snapshot", False)
    web = WebConfig(path="")
    if getattr(args, "web_config", None):
        try:
            web = load_web_config(args.web_config)
        except WebConfigError as err:
            print(f"mltop serve: --web-config {args.web_config}: {err}", file=sys.stderr)
            return EXIT_BAD_WEB_CONFIG
    handler = make_handler(lambda: holder["loop"].state, exposition.render, args.interval,
                           extra_health=lambda: "; ".join(filter(None, [recorder_health(holder.get("recorder")),
                                                                        *feed_problems()])) or None,
                           auth=web.auth, expose_snapshot=expose_snapshot)
    try:
        server = HttpFront((host, port), buffered_answer(handler), ssl_context=web.ssl_context,
                           costly=password_check_needed(web.auth))
    except OSError as err:
        why = "address already in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
        print(f"mltop serve: cannot listen on {args.listen}: {why}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN

    silences = _silences(args)
    loop = SweepLoop(LiveSource(lambda: make_sampler(args, container_stats=True)), args.interval,
                     args.doctor_interval, doctor=_doctor_with(silences),
                     on_sweep_seconds=exposition.sweep_seconds.observe)
    holder["loop"] = loop
    from mltop.tui.cli.recording_options import attach_recorder

    recorder, problem = attach_recorder(loop, args)  # on by default; a file another mltop records into: exit
    if problem:
        print(problem, file=sys.stderr)
        server.server_close()
        return EXIT_CANNOT_RECORD
    holder["recorder"] = recorder
    loop.add_listener(lambda snapshot, doctor: _remark(loop, silences))  # a silence added or ended since the run
    loop.add_listener(lambda snapshot, doctor: exposition.refresh())  # render in the sweep thread, not a scrape
    warning = exposure_warning(host, tls=web.ssl_context is not None, auth=web.auth is not None,
                               expose_snapshot=expose_snapshot)
    if warning:
        print(f"mltop serve: listening on {args.listen}: {warning}", file=sys.stderr)
    loop.start()
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bound = server.server_address
    scheme = "https" if web.ssl_context is not None else "http"
    print(f"mltop serve: serving {scheme}://{args.listen.rpartition(':')[0] or bound[0]}:{bound[1]}/metrics "
          f"(sweep every {args.interval:g} s, doctor every {args.doctor_interval:g} s); "
          f"started in {(time.monotonic() - started) * 1000:.0f} ms", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        loop.stop()
        if recorder is not None:
            recorder.close()
    return 0


def _silences(args):
    """The host's silences: those of the recording this agent writes (--record, else the default file), which
    `mltop silence` and the dashboard write too; read even with --no-record."""
    from mltop.diagnostics.silences import SilenceCache
    from mltop.probes.recording import default_history_path
    from mltop.probes.recording.silences import SilenceBook

    return SilenceCache(SilenceBook(getattr(args, "record", None) or default_history_path()))


def _doctor_with(silences):
    def doctor(snapshot, engine, previous=None):
        from mltop.diagnostics.doctor import run_doctor

        return run_doctor(snapshot, engine, previous=previous, silences=silences.current())
    return doctor


def _remark(loop, silences) -> None:
    from mltop.diagnostics.silences import remark

    current = silences.current()
    loop.restate_doctor(lambda result, snapshot: remark(result, current, snapshot, time.time()))
