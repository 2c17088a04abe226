"""`mltop snapshot --json`: one snapshot (two sweeps --interval apart, so rates are real) as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from .common import make_sampler


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (the only format for now)")


def main(args: argparse.Namespace) -> int:
    from mltop.probes.model import snapshot_to_json

    sampler = make_sampler(args)
    try:
        previous, snapshot = sampler.sweep_pair(args.interval)
    finally:
        sampler.close()
    doc = snapshot_to_json(snapshot)
    from mltop.diagnostics.workload import classify_all

    workloads = classify_all(snapshot, previous=previous)  # additive: "workload" per container, null when it uses no GPU
    for c_doc in doc["containers"]:
        c_doc["workload"] = workloads[c_doc["id"]].to_json() if c_doc["id"] in workloads else None
    # Indented for a person at a terminal; one line for a pipe or a file, which the C encoder writes several
    # times faster (Python's json indents only in pure Python): `| jq .` shows it indented.
    sys.stdout.write(json.dumps(doc, indent=2 if sys.stdout.isatty() else None) + "\n")
    for source in snapshot.host.sources[1:]:  # a CRI runtime that should answer and does not
        if not source.ok and not source.quiet:
            print(f"mltop: {source.error}", file=sys.stderr)
    if snapshot.host.engine_down:
        print(f"mltop: {snapshot.host.engine.error}", file=sys.stderr)
        return 3
    if snapshot.host.no_container_source:  # asked for on purpose: said, and no failure (the host and GPUs are read)
        print(f"mltop: {snapshot.host.no_container_source}", file=sys.stderr)
    return 0
