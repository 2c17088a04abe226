"""A small client for Prometheus's HTTP query API (and what speaks it: Thanos, Mimir, VictoriaMetrics).

Two JSON GETs are all the fleet view needs (`/api/v1/query`, `/api/v1/query_range`; `/-/ready` is not
assumed), so this is the standard library: no client that pulls pandas in. Each request is bounded
(prometheus_http.py: one deadline, a size cap, same-origin redirects); failures become a `PrometheusError`
whose `kind` and message say what a user can act on: unreachable, refused (HTTP 4xx/5xx or a query error),
timeout, unauthorised, redirected, too_large, truncated, or an answer that is not Prometheus's (bad_response).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Mapping

from . import prometheus_http
from .prometheus_http import DEFAULT_MAX_BYTES, SERVER_TEXT_CHARS, PrometheusError, server_text

__all__ = ["PrometheusClient", "PrometheusError", "RangeSeries", "Sample"]

TOKEN_ENV = "MLTOP_PROMETHEUS_TOKEN"  # bearer token
USER_ENV = "MLTOP_PROMETHEUS_USER"  # basic auth, with MLTOP_PROMETHEUS_PASSWORD
PASSWORD_ENV = "MLTOP_PROMETHEUS_PASSWORD"
URL_ENV = "MLTOP_PROMETHEUS_URL"


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
                 basic_auth: tuple[str, str] | None = None, ca_file: str | None = None,
                 max_answer_bytes: int = DEFAULT_MAX_BYTES):
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
        self.timeout = timeout  # seconds for a whole request: connect, headers and body
        self.max_answer_bytes = max_answer_bytes
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
                         max_answer_bytes: int = DEFAULT_MAX_BYTES,
                         environ: Mapping[str, str] = os.environ) -> "PrometheusClient":
        """Credentials come from the environment, never the command line (where `ps` would show them)."""
        user = environ.get(USER_ENV)
        basic = (user, environ.get(PASSWORD_ENV, "")) if user else None
        return cls(url, timeout=timeout, bearer_token=environ.get(TOKEN_ENV) or None, basic_auth=basic,
                   ca_file=ca_file, max_answer_bytes=max_answer_bytes)

    @property
    def display_url(self) -> str:
        """The URL as shown in headers and messages (credentials were taken out of it)."""
        return self.url

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        try:
            if data.get("resultType") == "scalar":
                t, v = data["result"]
                return [Sample({}, float(v), float(t))]
            if data.get("resultType") != "vector":
                raise PrometheusError("bad_response", f"{self.display_url}: {expr}: expected a vector, got "
                                      f"{server_text(repr(data.get('resultType')), 40)}")
            return [Sample(_labels(item), float(item["value"][1]), float(item["value"][0]))
                    for item in _result(data)]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
            raise self._misshapen(expr, err) from None

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        data = self._get("/api/v1/query_range",
                         {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
        if data.get("resultType") != "matrix":
            raise PrometheusError("bad_response", f"{self.display_url}: {expr}: expected a matrix, got "
                                  f"{server_text(repr(data.get('resultType')), 40)}")
        try:
            return [RangeSeries(_labels(item), tuple((float(t), float(v)) for t, v in item.get("values", [])))
                    for item in _result(data)]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
            raise self._misshapen(expr, err) from None

    def _misshapen(self, expr: str, err: Exception) -> PrometheusError:
        return PrometheusError("bad_response", f"{self.display_url}: the answer to {expr} is not shaped as "
                               f"Prometheus's ({server_text(f'{type(err).__name__}: {err}', 120)}): is it "
                               "Prometheus?")

    def _get(self, path: str, params: dict[str, str]) -> dict:
        """The `data` of one successful API answer, read under the deadline and the size cap."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        self.queries += 1
        try:
            body = prometheus_http.get(url, self._headers, timeout=self.timeout, max_bytes=self.max_answer_bytes,
                                   context=self._context, shown=self.display_url)
        except prometheus_http.HttpStatus as err:
            raise self._status_error(err, params) from None
        try:
            doc = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise PrometheusError("bad_response", f"{self.display_url}{path}: the answer is not UTF-8 text: is it "
                                  "Prometheus?") from None
        except (ValueError, RecursionError):
            raise PrometheusError("bad_response", f"{self.display_url}{path} did not answer JSON: is it Prometheus?"
                                  ) from None
        if not isinstance(doc, dict) or doc.get("status") != "success":
            message = doc.get("error", "") if isinstance(doc, dict) else ""
            raise PrometheusError("refused", f"{self.display_url} refused the query: {server_text(message)}")
        data = doc.get("data") or {}
        if not isinstance(data, dict):
            raise PrometheusError("bad_response", f"{self.display_url}{path}: its `data` is not an object: is it "
                                  "Prometheus?")
        return data

    def _status_error(self, err: prometheus_http.HttpStatus, params: Mapping[str, str]) -> PrometheusError:
        detail = _error_text(err.body)
        if err.code in (401, 403):
            return PrometheusError("unauthorized", f"{self.display_url} answered {err.code} {err.reason}: set "
                                   f"{TOKEN_ENV}, or {USER_ENV} and {PASSWORD_ENV}")
        if err.code == 503 and "timeout" in detail.lower() or err.code == 504:
            return PrometheusError("timeout", f"{self.display_url}: the query timed out ({detail or err.reason})")
        return PrometheusError("refused", f"{self.display_url} refused the query ({err.code}: "
                               f"{detail or err.reason}): {params.get('query', '')}")


def _result(data: Mapping) -> list:
    result = data.get("result", [])
    if not isinstance(result, list):
        raise TypeError(f"result is {type(result).__name__}, not a list")
    return result


def _labels(item: Mapping) -> dict[str, str]:
    labels = item.get("metric", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise TypeError("a series' labels are not strings")
    return labels


def _error_text(body: bytes) -> str:
    """Prometheus's `error` from an error answer's JSON, else the start of its text; cut, as the server wrote it."""
    try:
        doc = json.loads(body)
        return server_text(doc.get("error") or "") if isinstance(doc, dict) else ""
    except (ValueError, RecursionError):
        return server_text(body[:SERVER_TEXT_CHARS * 4].decode("utf-8", "replace"))
