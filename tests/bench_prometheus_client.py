"""What the fleet's Prometheus client costs and how it holds against a hostile server, in figures.

    .venv/bin/python tests/bench_prometheus_client.py        # this worktree's client
    PYTHONPATH=/path/to/other/checkout python tests/bench_prometheus_client.py   # another's, to compare

Prints: the wall time a server trickling 8 bytes every 0.5 s (for at most 30 s) holds a `timeout=5` query; the
peak RSS of a fresh process reading a 400 MiB answer; the client CPU per query of a 1 MiB and a 1 KiB answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from misbehaving_http import MisbehavingServer, answer, vector  # noqa: E402


def trickle(conn, request):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        conn.sendall(b'{"aaaaa"')
        time.sleep(0.5)


def huge(conn, request):
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
                 b'{"status":"success","data":{"resultType":"vector","result":[')
    item = json.dumps({"metric": {"job": "x" * 200}, "value": [1, "1"]}).encode() + b","
    block = item * ((1 << 20) // len(item))
    for _ in range(400):
        conn.sendall(block)
    conn.sendall(json.dumps({"metric": {}, "value": [1, "1"]}).encode() + b"]}}")


def main() -> None:
    from mltop.probes.prometheus_api import PrometheusClient

    print(f"client: {sys.modules['mltop.probes.prometheus_api'].__file__}")
    server = MisbehavingServer(trickle)
    start = time.monotonic()
    try:
        PrometheusClient(server.url, timeout=5).query("up")
        outcome = "answered"
    except Exception as err:
        outcome = f"{type(err).__name__}: {getattr(err, 'kind', '')} {str(err)[:80]}"
    print(f"trickle, timeout=5: {time.monotonic() - start:.1f} s wall ({outcome})")
    server.close()

    server = MisbehavingServer(huge)
    script = ("import resource\nfrom mltop.probes.prometheus_api import PrometheusClient\n"
              f"c = PrometheusClient({server.url!r}, timeout=120)\n"
              "try:\n    r = f'{len(c.query(\"up\"))} rows'\nexcept Exception as e:\n"
              "    r = f'{type(e).__name__}: {getattr(e, \"kind\", \"\")}'\n"
              "print(r, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    print(f"400 MiB answer: peak RSS {out.stdout.split()[-1] if out.stdout else '?'} MiB ({out.stdout.strip()}"
          f"{out.stderr.strip()[-200:]})")
    server.close()

    for rows, label in ((4000, "1 MiB"), (4, "1 KiB")):
        body = vector(*(({"job": "j", "instance": f"h{i}:9400", "x": "y" * 180}, i) for i in range(rows)))
        server = MisbehavingServer(lambda conn, request, body=body: answer(conn, body))
        client = PrometheusClient(server.url)
        n = 200 if rows < 100 else 30
        cpu = time.process_time()
        for _ in range(n):
            client.query("up")
        print(f"{label} answer ({len(body) / 1024:.0f} KiB): {(time.process_time() - cpu) / n * 1000:.2f} ms "
              "client CPU per query")
        server.close()


if __name__ == "__main__":
    main()
