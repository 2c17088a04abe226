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
        _, snapshot = sampler.sweep_pair(args.interval)
    finally:
        sampler.close()
    json.dump(snapshot_to_json(snapshot), sys.stdout, indent=2)
    sys.stdout.write("\n")
    if not snapshot.host.engine.ok:
        print(f"mltop: {snapshot.host.engine.error}", file=sys.stderr)
        return 3
    return 0
