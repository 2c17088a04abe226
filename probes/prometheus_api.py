"""A small client for Prometheus's HTTP query API (and what speaks it: Thanos, Mimir, VictoriaMetrics).

Three JSON GETs are all the fleet view needs (`/api/v1/query`, `/api/v1/query_range`, `/-/ready` is not
assumed), so this is the standard library: no client that pulls pandas in. Failures become a
`PrometheusError` whose `kind` and message say what a user can act on: unreachable, refused (HTTP 4xx/5xx
or a query error), timeout, unauthorised, or an answer that is not Prometheus's.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Mapping

TOKEN_ENV = "MLTOP_PROMETHEUS_TOKEN"  # bearer token
USER_ENV = "MLTOP_PROMETHEUS_USER"  # basic auth, with MLTOP_PROMETHEUS_PASSWORD
PASSWORD_ENV = "MLTOP_PROMETHEUS_PASSWORD"
URL_ENV = "MLTOP_PROMETHEUS_URL"


class PrometheusError(Exception):
    """A query that got no answer. `kind`: unreachable | timeout | unauthorized | refused | bad_response."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and the value at the query's time."""

    labels: Mapping[str, str]
    value: float
    time: float


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]  # (unix time, value), oldest first


class PrometheusClient:
    """Instant and range queries against one Prometheus base URL (`http://prom:9090`, or a path prefix)."""

    def __init__(self, url: str, *, timeout: float = 10.0, bearer_token: str | None = None,
                 basic_auth: tuple[str, str] | None = None, ca_file: str | None = None):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"--prometheus {url!r}: expected an http:// or https:// URL, e.g. http://prometheus:9090")
        if parsed.username is not None:  # http://user:password@host: basic auth, and never part of what is shown
            if basic_auth is None and bearer_token is None:
                basic_auth = (urllib.parse.unquote(parsed.username), urllib.parse.unquote(parsed.password or ""))
            netloc = parsed.hostname or ""
            if ":" in netloc:
                netloc = f"[{netloc}]"
            if parsed.port:
                netloc += f":{parsed.port}"
            parsed = parsed._replace(netloc=netloc)
        self.url = urllib.parse.urlunsplit(parsed).rstrip("/")
        self.timeout = timeout
        self._headers = {"Accept": "application/json", "User-Agent": "mltop-fleet"}
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        elif basic_auth:
            pair = f"{basic_auth[0]}:{basic_auth[1]}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._context = ssl.create_default_context(cafile=ca_file) if parsed.scheme == "https" else None
        self.queries = 0  # how many requests this client made (the benchmark reports it)

    @classmethod
    def from_environment(cls, url: str, *, ca_file: str | None = None, timeout: float = 10.0,
                         environ: Mapping[str, str] = os.environ) -> "PrometheusClient":
        """Credentials come from the environment, never the command line (where `ps` would show them)."""
        user = environ.get(USER_ENV)
        basic = (user, environ.get(PASSWORD_ENV, "")) if user else None
        return cls(url, timeout=timeout, bearer_token=environ.get(TOKEN_ENV) or None, basic_auth=basic,
                   ca_file=ca_file)

    @property
    def display_url(self) -> str:
        """The URL as shown in headers and messages (credentials were taken out of it)."""
        return self.url

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data.get("resultType") == "scalar":
            t, v = data["result"]
            return [Sample({}, float(v), float(t))]
        if data.get("resultType") != "vector":
            raise PrometheusError("bad_response", f"{expr}: expected a vector, got {data.get('resultType')!r}")
        return [Sample(item.get("metric", {}), float(item["value"][1]), float(item["value"][0]))
                for item in data.get("result", [])]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        data = self._get("/api/v1/query_range",
                         {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
        if data.get("resultType") != "matrix":
            raise PrometheusError("bad_response", f"{expr}: expected a matrix, got {data.get('resultType')!r}")
        return [RangeSeries(item.get("metric", {}), tuple((float(t), float(v)) for t, v in item.get("values", [])))
                for item in data.get("result", [])]

    def _get(self, path: str, params: dict[str, str]) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self._headers)
        self.queries += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            detail = _error_text(err.read())
            if err.code in (401, 403):
                raise PrometheusError("unauthorized", f"{self.display_url} answered {err.code} {err.reason}: set "
                                      f"{TOKEN_ENV}, or {USER_ENV} and {PASSWORD_ENV}") from None
            if err.code == 503 and "timeout" in detail.lower() or err.code == 504:
                raise PrometheusError("timeout", f"{self.display_url}: the query timed out ({detail or err.reason})"
                                      ) from None
            raise PrometheusError("refused", f"{self.display_url} refused the query ({err.code}: "
                                  f"{detail or err.reason}): {params.get('query', '')}") from None
        except (socket.timeout, TimeoutError):
            raise PrometheusError("timeout", f"{self.display_url} did not answer within {self.timeout:g} s") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise PrometheusError("timeout", f"{self.display_url} did not answer within {self.timeout:g} s"
                                      ) from None
            if isinstance(reason, ssl.SSLError):
                raise PrometheusError("unreachable", f"{self.display_url}: TLS failed ({reason}); "
                                      "give the server's CA with --ca-file") from None
            raise PrometheusError("unreachable", f"cannot reach Prometheus at {self.display_url}: {reason}") from None
        except (ConnectionError, OSError) as err:
            raise PrometheusError("unreachable", f"cannot reach Prometheus at {self.display_url}: {err}") from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise PrometheusError("bad_response", f"{self.display_url}{path} did not answer JSON: is it Prometheus?"
                                  ) from None
        if not isinstance(doc, dict) or doc.get("status") != "success":
            message = doc.get("error", "") if isinstance(doc, dict) else ""
            raise PrometheusError("refused", f"{self.display_url} refused the query: {message}")
        return doc.get("data") or {}


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return str(doc.get("error") or "")
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
