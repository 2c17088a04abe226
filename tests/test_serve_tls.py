"""`mltop serve --web-config`: TLS and basic auth in the exporter-toolkit format, scraped by the real Prometheus;
401 without (or with wrong) credentials; the warning for a non-loopback address served without them."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import pytest

from serve_helpers import PrometheusServer, ServeProcess, basic_auth, free_port, http_get, wait_until

NO_ENGINE = ("--no-nvml", "--docker-host", "unix:///nonexistent/mltop-test-docker.sock")
USER, PASSWORD = "prometheus", "s3cret-scrape-pass"


def _write_ca_and_server_cert(folder: Path) -> Path:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost; returns the CA's PEM path.
    (`cryptography` comes with docker[ssh]'s paramiko, a dependency of mltop.)"""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mltop test CA")).issuer_name(name("mltop test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("mltop serve")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "tls").mkdir()
    (folder / "tls" / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls" / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.crt"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web-config")
    ca = _write_ca_and_server_cert(folder)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web_config = folder / "web-config.yml"
    # Relative paths: resolved against the file's folder, as exporter-toolkit does.
    web_config.write_text(f"tls_server_config:\n  cert_file: tls/server.crt\n  key_file: tls/server.key\n"
                          f"basic_auth_users:\n  {USER}: {hashed}\n  other: {hashed}\n")
    trust = ssl.create_default_context(cafile=str(ca))
    serve = ServeProcess("--interval", "1", "--doctor-interval", "0", "--web-config", str(web_config), *NO_ENGINE,
                         tls=trust, auth=(USER, PASSWORD))
    try:
        serve.wait_healthy()
        yield dict(serve=serve, ca=ca, trust=trust, folder=folder, web_config=web_config)
    finally:
        serve.stop()


def test_real_prometheus_scrapes_over_tls_with_basic_auth(secured, tmp_path):
    job = (f"    scheme: https\n    tls_config:\n      ca_file: {secured['ca']}\n"
           f"    basic_auth:\n      username: {USER}\n      password: {PASSWORD}\n")
    prometheus = PrometheusServer(tmp_path, [f"127.0.0.1:{secured['serve'].port}"], job_extra=job)
    try:
        up = prometheus.wait_for('up{job="mltop"} == 1', timeout=30, what="a successful scrape over TLS")
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{secured['serve'].port}"
        assert prometheus.wait_for('mltop_build_info{job="mltop"}', timeout=10)
        assert prometheus.query('mltop_engine_up{job="mltop"} == 0')  # what this agent says came through
    finally:
        prometheus.stop()


def test_wrong_or_missing_credentials_get_401_and_plain_http_gets_nothing(secured):
    url = secured["serve"].url + "/metrics"
    trust = secured["trust"]
    code, _ = http_get(url, context=trust)
    assert code == 401
    try:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(url), context=trust, timeout=5)
    except urllib.error.HTTPError as err:
        assert err.headers["WWW-Authenticate"].startswith("Basic ")
    assert http_get(url, context=trust, headers=basic_auth(USER, "wrong"))[0] == 401
    assert http_get(url, context=trust, headers=basic_auth("nobody", PASSWORD))[0] == 401
    assert http_get(url, context=trust, headers={"Authorization": "Basic !!notbase64"})[0] == 401
    assert http_get(url, context=trust, headers={"Authorization": "Bearer " + PASSWORD})[0] == 401
    for path in ("/snapshot.json", "/findings.json", "/healthz", "/", "/nope"):
        assert http_get(secured["serve"].url + path, context=trust)[0] == 401, path
    code, body = http_get(url, context=trust, headers=basic_auth("other", PASSWORD))
    assert code == 200 and b"mltop_build_info" in body
    # Plain HTTP to the TLS port: no HTTP answer at all, let alone the metrics.
    with socket.create_connection(("127.0.0.1", secured["serve"].port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = s.recv(4096)
        except ConnectionError:
            answer = b""
    assert b"mltop_build_info" not in answer and not answer.startswith(b"HTTP/1.0 200")
    # A client that does not trust the agent's CA refuses it.
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        http_get(url, context=ssl.create_default_context(), headers=basic_auth(USER, PASSWORD))


def test_stalled_tls_handshakes_do_not_delay_a_scrape(secured):
    serve = secured["serve"]
    stalled = [socket.create_connection(("127.0.0.1", serve.port), timeout=5,
                                        source_address=(f"127.0.0.{50 + i // 50}", 0)) for i in range(200)]
    try:
        timings = []
        for _ in range(5):
            started = time.monotonic()
            assert serve.get("/healthz", timeout=10)[0] == 200
            timings.append(time.monotonic() - started)
        # A TLS handshake and a bcrypt check remembered from before: well under 100 ms, even on a busy host.
        assert sorted(timings)[2] < 0.1, timings
    finally:
        for s in stalled:
            s.close()


def _start(*args: str, listen: str = "127.0.0.1") -> subprocess.CompletedProcess:
    """Start `mltop serve`, wait for its 'serving' line (or its exit), stop it; its stderr. A port that another
    process took between free_port() and the bind (seen once in a full run) is tried again with another."""
    for _ in range(3):
        done = _start_once(args, listen)
        if "address already in use" not in done.stderr:
            break
    return done


def _start_once(args: tuple[str, ...], listen: str) -> subprocess.CompletedProcess:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mltop.tui.cli", "serve", "--no-record", "--interval", "1",
                             "--doctor-interval", "0", "--listen", f"{listen}:{port}", *NO_ENGINE, *args],
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "serving " in line:
                break
    finally:
        proc.terminate()
        proc.wait(20)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", "".join(lines) + proc.stderr.read())


def test_non_loopback_address_warns_unless_tls_and_basic_auth(secured, tmp_path):
    bare = _start(listen="0.0.0.0")
    assert "reachable from other hosts without TLS or authentication" in bare.stderr and "--web-config" in bare.stderr
    assert "serving http://0.0.0.0:" in bare.stderr
    folder = secured["folder"]
    tls_only = tmp_path / "tls-only.yml"
    tls_only.write_text(f"tls_server_config:\n  cert_file: {folder}/tls/server.crt\n"
                        f"  key_file: {folder}/tls/server.key\n")
    assert "reachable from other hosts without authentication" in _start("--web-config", str(tls_only),
                                                                        listen="0.0.0.0").stderr
    both = _start("--web-config", str(secured["web_config"]), listen="0.0.0.0")
    assert "reachable" not in both.stderr and "serving https://0.0.0.0:" in both.stderr
    assert "reachable" not in _start().stderr  # loopback: nothing to warn about


@pytest.mark.parametrize("text, reason", [
    ("basic_auth_users:\n  prom: not-a-hash\n", "'prom' does not have a bcrypt hash"),
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "cannot load cert_file/key_file"),
    ("tls_server_config:\n  cert_file: a.crt\n", "cert_file and key_file are both required"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
     "cipher_suites not supported"),
    ("basic_auth: {}\n", "unsupported key(s): basic_auth"),
    ("tls_server_config: [\n", "not valid YAML"),
])
def test_a_bad_web_config_stops_the_start_with_its_reason(tmp_path, text, reason):
    config = tmp_path / "web.yml"
    config.write_text(text)
    out = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "serve", "--no-record", "--web-config", str(config),
                          "--listen", f"127.0.0.1:{free_port()}", *NO_ENGINE], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"mltop serve: --web-config {config}: ") and reason in line, line


def test_basic_auth_checks_each_password_and_remembers_only_a_bounded_set_of_digests():
    from mltop.tui.serve.webconfig import BasicAuth

    hashed = bcrypt.hashpw("pä:ss".encode(), bcrypt.gensalt(4))  # a colon in the password: split at the first
    auth = BasicAuth({"u": hashed, "v": bcrypt.hashpw(b"other", bcrypt.gensalt(4))})
    right = basic_auth("u", "pä:ss")["Authorization"]
    assert auth.allows(right) and auth.allows(right)  # the second answer comes from what the first remembered
    assert auth.allows("basic " + right.split()[1])  # the scheme is case-insensitive
    assert not auth.allows(basic_auth("u", "pä:s")["Authorization"])
    assert not auth.allows(basic_auth("v", "pä:ss")["Authorization"])  # another user's hash
    assert not auth.allows(basic_auth("u", "pä:ss")["Authorization"] + "x")
    assert not auth.allows(None) and not auth.allows("") and not auth.allows("Basic")
    for i in range(300):
        assert not auth.allows(basic_auth("u", f"guess-{i}")["Authorization"])
    assert len(auth._refused) == BasicAuth.REFUSED_SIZE and len(auth._verified) == 1
    assert not any(b"guess" in key for key in auth._refused)
    assert auth.known(right) is True  # 300 wrong passwords did not push the right one out
    assert auth.known(basic_auth("u", "guess-299")["Authorization"]) is False
    assert auth.known(basic_auth("u", "never-tried")["Authorization"]) is None  # only a check can tell
