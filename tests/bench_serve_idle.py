"""Scrape latency of `mltop serve`, idle and while N idle half-open connections are held open against it.

    python tests/bench_serve_idle.py                      # 0 and 500 idle connections, 30 scrapes each
    python tests/bench_serve_idle.py --idle 0 8 500 1000 --python /usr/bin/python3   # another install's mltop
    python tests/bench_serve_idle.py --tls      # over TLS with basic auth (--web-config), as Prometheus would

Idle connections come from 127.0.0.2.. (50 per address, under the per-client cap), a third silent, a third
having sent `GET /metrics HTTP/1.1` only, a third stopped inside their headers; scrapes come from 127.0.0.1
on the engine this host runs. Prints median, 90th percentile and max per load; a scrape that takes over 10 s
counts as 10 s.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_helpers import ServeProcess  # noqa: E402

PARTIAL = (b"", b"GET /metrics HTTP/1.1\r\n", b"GET /metrics HTTP/1.1\r\nHost: agent\r\nAccept: te")


def scrape(url: str, timeout: float = 10.0, context=None, headers=None) -> float:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout,
                                    context=context) as r:
            r.read()
    except (urllib.error.URLError, OSError):
        return timeout
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, nargs="+", default=[0, 500])
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose mltop to run")
    parser.add_argument("--tls", action="store_true", help="serve and scrape over TLS with basic auth")
    args = parser.parse_args()
    extra, tls, auth = (), None, None
    if args.tls:
        import ssl
        import tempfile

        import bcrypt
        from test_serve_tls import _write_ca_and_server_cert

        folder = Path(tempfile.mkdtemp(prefix="mltop-bench-tls-"))
        ca = _write_ca_and_server_cert(folder)
        hashed = bcrypt.hashpw(b"bench", bcrypt.gensalt(10)).decode()
        (folder / "web.yml").write_text("tls_server_config:\n  cert_file: tls/server.crt\n  key_file: tls/server.key\n"
                                        f"basic_auth_users:\n  bench: {hashed}\n")
        extra, tls, auth = ("--web-config", str(folder / "web.yml")), ssl.create_default_context(cafile=str(ca)), \
            ("bench", "bench")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    serve = ServeProcess("--interval", "5", "--doctor-interval", "0", "--no-nvml", "--no-record", *extra,
                         python=args.python, tls=tls, auth=auth)
    try:
        serve.wait_healthy(60)
        url = serve.url + "/metrics"
        size = len(serve.get("/metrics", timeout=10)[1])
        print(f"mltop serve ({args.python}{', TLS and basic auth' if args.tls else ''}), /metrics {size} bytes, "
              f"{args.scrapes} scrapes per load")
        print(f"{'idle connections':>17} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}")
        for n in args.idle:
            idle = []
            try:
                for i in range(n):
                    s = socket.create_connection(("127.0.0.1", serve.port), timeout=5,
                                                 source_address=(f"127.0.0.{2 + i // 50}", 0))
                    if PARTIAL[i % 3]:
                        s.sendall(PARTIAL[i % 3])
                    idle.append(s)
                time.sleep(0.5)
                timings = sorted(scrape(url, context=tls, headers=serve.headers) for _ in range(args.scrapes))
            finally:
                for s in idle:
                    s.close()
            p90 = timings[min(len(timings) - 1, int(len(timings) * 0.9))]
            print(f"{n:>17} {statistics.median(timings) * 1000:>10.1f} {p90 * 1000:>8.1f} "
                  f"{timings[-1] * 1000:>8.1f}", flush=True)
            time.sleep(6)  # let the agent's deadline close what is left before the next load
    finally:
        serve.stop()


if __name__ == "__main__":
    main()
