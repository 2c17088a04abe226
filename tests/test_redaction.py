"""Secrets never leave mltop: names that look secret, well-known token shapes, URL passwords, secret flags on
command lines, quoted keys in JSON, and the containers' own secret values wherever they are echoed."""

from __future__ import annotations

import uuid

import pytest

from mltop.diagnostics.report import redact_document
from mltop.probes.redaction import (
    REDACTED,
    is_secret_name,
    looks_like_token,
    redact_argv,
    redact_env,
    redact_text,
    scrub_values,
    secret_values,
)


def _hex(n: int) -> str:
    return (uuid.uuid4().hex * 4)[:n]


TOKENS = {
    "aws access key id": "AKIA" + "ABCDEFGHIJKLMNOP",
    "hugging face": "hf_" + _hex(34),
    "github classic": "ghp_" + _hex(36),
    "github fine-grained": "github_pat_" + _hex(60),
    "gitlab": "glpat-" + _hex(20),
    "slack bot": "xoxb-123456789012-1234567890123-" + _hex(24),
    "slack webhook": "https://hooks.slack.com/services/T000/B000/" + _hex(24),
    "openai": "sk-proj-" + _hex(40),
    "google api key": "AIza" + _hex(35),
    "npm": "npm_" + _hex(36),
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_token_shapes_are_redacted_anywhere_in_text(kind):
    token = TOKENS[kind]
    line = f"2024-05-01 INFO connecting with {token} now"
    assert looks_like_token(token)
    out = redact_text(line)
    assert token not in out and REDACTED in out
    assert out.startswith("2024-05-01 INFO connecting with ")  # the rest of the line stays readable


def test_url_password_is_redacted_but_user_and_host_stay():
    out = redact_text("DATABASE_URL=postgres://trainer:pa55-w0rd@db.internal:5432/runs")
    assert "pa55-w0rd" not in out
    assert f"postgres://trainer:{REDACTED}@db.internal:5432/runs" in out


@pytest.mark.parametrize("text, secret", [
    ("python train.py --hf-token abc123secret --lr 0.1", "abc123secret"),
    ("python serve.py --api-key 'k e y' --port 80", "k e y"),
    ("tool -password hunter2hunter2", "hunter2hunter2"),
    ("tool --db-password=hunter2hunter2", "hunter2hunter2"),
])
def test_secret_flags_on_command_lines_are_redacted(text, secret):
    out = redact_text(text)
    assert secret not in out and REDACTED in out


def test_quoted_keys_in_json_and_reprs_are_redacted():
    out = redact_text('{"password": "hunter2hunter2", "user": "bob", "api_key": "a\\"b", "n": 3}')
    assert "hunter2hunter2" not in out and 'a\\"b' not in out
    assert '"user": "bob"' in out and '"n": 3' in out
    assert "s3cr3t" not in redact_text("{'token': 's3cr3t', 'epoch': 2}")


@pytest.mark.parametrize("text", [
    "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
    "ls --color auto",
    "nvidia-smi --query-gpu=name,memory.used --format=csv",
    "PATH=/usr/local/bin:/usr/bin",
    "epoch 3 loss=0.1234 lr=0.001",
    "https://pypi.org/simple/torch/",
])
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == text


@pytest.mark.parametrize("name, secret", [
    ("HF_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True), ("GITHUB_TOKEN", True), ("DB_PASSWORD", True),
    ("MYSQL_ROOT_PASSWD", True), ("OPENAI_API_KEY", True), ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("WANDB_API_KEY", True), ("SLACK_WEBHOOK_URL", True), ("BASIC_AUTH", True),
    ("PATH", False), ("PWD", False), ("NVIDIA_DRIVER_CAPABILITIES", False), ("CUDA_VISIBLE_DEVICES", False),
    ("HOSTNAME", False), ("DATABASE_URL", False), ("KEYBOARD", False),
])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_env_values_are_redacted_by_name_or_shape():
    slack = "xoxb-123456789012-1234567890123-" + _hex(24)
    env = dict(redact_env([("DB_PASSWORD", "plainpw"), ("NOTIFY", slack), ("LR", "0.1"), ("EMPTY_TOKEN", "")]))
    assert env == {"DB_PASSWORD": REDACTED, "NOTIFY": REDACTED, "LR": "0.1", "EMPTY_TOKEN": ""}


def test_known_secret_values_are_scrubbed_even_without_a_shape():
    bare = _hex(30) + "/+Q"
    url_pw = "pw-" + _hex(10)
    values = secret_values([("AWS_SECRET_ACCESS_KEY", bare), ("DATABASE_URL", f"mysql://u:{url_pw}@h/db"),
                            ("DEBUG", "1"), ("API_TOKEN", "true"), ("SHORT_PASSWORD", "abc")])
    assert values == {bare, url_pw}  # short and boolean-looking values are not scrubbed by value
    text = f"echo {bare}; password {url_pw} in the middle"
    assert scrub_values(text, values) == f"echo {REDACTED}; password {REDACTED} in the middle"
    assert redact_text(f"aws {bare}") == f"aws {bare}"  # what only the value scrub can catch


def test_a_private_key_block_is_redacted_whole():
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + _hex(40) + "\n" + _hex(40) + "\n-----END RSA PRIVATE KEY-----"
    out = redact_text(f"key:\n{block}\nafter")
    assert "MIIEow" not in out and out.endswith("after")


def test_redact_document_walks_keys_lists_and_values():
    token = "ghp_" + _hex(36)
    doc = {"a": [token, {"k": f"x {token}"}], token: 1, "n": 2, "none": None}
    out = redact_document(doc, secrets={"plain-secret-value"})
    assert token not in repr(out)
    assert out["n"] == 2 and out["none"] is None
    assert redact_document({"log": "got plain-secret-value"}, {"plain-secret-value"}) == {"log": f"got {REDACTED}"}


def test_argv_values_after_secret_flags_are_redacted():
    argv = ["python", "train.py", "--hub-token", "s3cr3t-value", "--epochs", "3", "--api-key=abc123", "-v"]
    assert redact_argv(argv) == ("python", "train.py", "--hub-token", REDACTED, "--epochs", "3",
                                 f"--api-key={REDACTED}", "-v")
