"""`mltop serve --web-config FILE`: TLS and basic auth from a file in the Prometheus exporter-toolkit's format
(the one node_exporter's --web.config.file reads), so one file serves every exporter on a host:

    tls_server_config:
      cert_file: server.crt      # relative paths are relative to the file's folder, as exporter-toolkit does
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: clients.crt
      min_version: TLS12                              # optional (TLS12 by default), max_version too
    basic_auth_users:
      prometheus: $2y$10$...     # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n', or Python's bcrypt)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

# A password nobody has: an unknown user still costs one bcrypt check, so timing does not tell users apart.
_DUMMY_HASH = b"$2b$10$kyRh/i/U47ocmLNZ7PpEl.8Pm8rHcrxN8mttlDkEP1UYjBZmZ.U3e"
_BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# exporter-toolkit's client_auth_type -> what Python's ssl can do (it cannot ask for an unverified cert)
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
# exporter-toolkit keys this agent does not implement: refused by name instead of silently ignored
_TLS_UNSUPPORTED = {"cert", "key", "client_ca", "cipher_suites", "curve_preferences",
                    "prefer_server_cipher_suites", "client_allowed_sans"}


class WebConfigError(ValueError):
    """The --web-config file cannot be used; the message says why, in one line."""


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes. A bcrypt check costs tens of ms on
    purpose, and Prometheus sends the same credentials every scrape: each verdict is remembered by a keyed
    digest of (user, password, hash), never the password. Passwords that passed and passwords that failed are
    remembered apart, so a flood of wrong ones cannot push the right one out. One check runs at a time (as
    exporter-toolkit's bcrypt mutex); the front (front.py) asks `known()` first and sends a request whose
    verdict is not known to its own small, bounded queue."""

    VERIFIED_SIZE = 64
    REFUSED_SIZE = 256
    MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; Go's bcrypt (exporter-toolkit) refuses longer ones too

    def __init__(self, users: dict[str, bytes]):
        self.users = dict(users)
        self._key = os.urandom(32)  # the digests mean nothing outside this process
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._refused: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._check = threading.Lock()

    def credentials(self, header: str | None) -> tuple[str, bytes] | None:
        """(user, password) from the header, or None when it cannot carry a valid password: missing, another
        scheme, bad base64, not UTF-8, no colon, a password past 72 bytes. Never raises."""
        if not header or len(header) > 1024:
            return None
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
            return None
        user, sep, password = decoded.partition(":")
        secret = password.encode()
        if not sep or not user or len(secret) > self.MAX_PASSWORD_BYTES:
            return None
        return user, secret

    def _digest(self, user: str, password: bytes) -> bytes:
        target = self.users.get(user, _DUMMY_HASH)
        return hmac.new(self._key, b"\0".join((user.encode(), password, target)), hashlib.sha256).digest()

    def known(self, header: str | None) -> bool | None:
        """The verdict when it costs no bcrypt check (a refused header, a remembered verdict); None when only a
        check can tell."""
        creds = self.credentials(header)
        if creds is None:
            return False
        key = self._digest(*creds)
        with self._lock:
            if key in self._verified:
                self._verified.move_to_end(key)
                return True
            if key in self._refused:
                return False
        return None

    def allows(self, header: str | None) -> bool:
        verdict = self.known(header)
        if verdict is not None:
            return verdict
        user, password = self.credentials(header)
        hashed = self.users.get(user)
        import bcrypt

        with self._check:
            try:
                # An unknown user still costs one check, so timing does not tell users apart.
                ok = bcrypt.checkpw(password, hashed if hashed is not None else _DUMMY_HASH) and hashed is not None
            except ValueError:  # a hash bcrypt will not read: no password matches it
                ok = False
        key = self._digest(user, password)
        with self._lock:
            cache, size = (self._verified, self.VERIFIED_SIZE) if ok else (self._refused, self.REFUSED_SIZE)
            cache[key] = None
            while len(cache) > size:
                cache.popitem(last=False)
        return ok


@dataclass
class WebConfig:
    path: str
    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth | None = None
    users: tuple[str, ...] = field(default=())


def load_web_config(path: str) -> WebConfig:
    """Read and check the file now, so a mistake stops `mltop serve` at start with its reason."""
    try:
        import yaml
    except ImportError:  # pragma: no cover (a dependency of mltop)
        raise WebConfigError("PyYAML is not installed (pip install pyyaml)") from None
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as err:
        raise WebConfigError(f"cannot read it: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise WebConfigError(f"not valid YAML: {' '.join(str(err).split())}") from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise WebConfigError("expected a mapping with tls_server_config and/or basic_auth_users")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise WebConfigError(f"unsupported key(s): {', '.join(sorted(map(str, unknown)))} "
                             "(mltop serve reads tls_server_config and basic_auth_users)")
    folder = os.path.dirname(os.path.abspath(path))
    config = WebConfig(path=path)
    if doc.get("tls_server_config") is not None:
        config.ssl_context = _tls_context(doc["tls_server_config"], folder)
    users = doc.get("basic_auth_users")
    if users is not None:
        if not isinstance(users, dict):
            raise WebConfigError("basic_auth_users: expected a mapping of user: bcrypt hash")
        hashes = {}
        for user, hashed in users.items():
            if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
                raise WebConfigError(f"basic_auth_users: {str(user)!r} does not have a bcrypt hash ($2y$...)")
            hashes[str(user)] = hashed.encode()
        if hashes:
            config.auth = BasicAuth(hashes)
            config.users = tuple(hashes)
    return config


def _tls_context(section, folder: str) -> ssl.SSLContext:
    if not isinstance(section, dict):
        raise WebConfigError("tls_server_config: expected a mapping with cert_file and key_file")
    refused = set(section) & _TLS_UNSUPPORTED
    if refused:
        raise WebConfigError(f"tls_server_config: {', '.join(sorted(refused))} not supported by mltop serve")
    unknown = set(section) - _TLS_KEYS
    if unknown:
        raise WebConfigError(f"tls_server_config: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    if not section.get("cert_file") or not section.get("key_file"):
        raise WebConfigError("tls_server_config: cert_file and key_file are both required")

    def resolve(key: str) -> str:
        return os.path.join(folder, os.path.expanduser(str(section[key])))

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = _TLS_VERSIONS[section.get("min_version") or "TLS12"]
        if section.get("max_version"):
            context.maximum_version = _TLS_VERSIONS[section["max_version"]]
    except KeyError as err:
        raise WebConfigError(f"tls_server_config: unknown TLS version {err.args[0]!r} "
                             f"(one of {', '.join(_TLS_VERSIONS)})") from None
    try:
        context.load_cert_chain(resolve("cert_file"), resolve("key_file"))
    except (OSError, ssl.SSLError) as err:
        raise WebConfigError(f"tls_server_config: cannot load cert_file/key_file: "
                             f"{getattr(err, 'strerror', None) or err}") from None
    auth_type = section.get("client_auth_type") or "NoClientCert"
    if auth_type not in _CLIENT_AUTH:
        raise WebConfigError(f"tls_server_config: client_auth_type {auth_type!r} not supported "
                             f"(one of {', '.join(_CLIENT_AUTH)})")
    context.verify_mode = _CLIENT_AUTH[auth_type]
    if section.get("client_ca_file"):
        try:
            context.load_verify_locations(resolve("client_ca_file"))
        except (OSError, ssl.SSLError) as err:
            raise WebConfigError(f"tls_server_config: cannot load client_ca_file: "
                                 f"{getattr(err, 'strerror', None) or err}") from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise WebConfigError(f"tls_server_config: client_auth_type {auth_type} needs client_ca_file")
    return context
