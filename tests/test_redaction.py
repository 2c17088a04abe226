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
    redact_contained,
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


# Each pattern redaction used to miss, with a look-alike that must stay as written.
MISSED = [
    ("INFO:root:token=tk-8f3a9c2e71 ready", "tk-8f3a9c2e71", "INFO:root:step=100 loss=0.31 lr=1e-4"),
    ("mysql -u root -pHunt3r2pw db", "Hunt3r2pw", "mkdir -p /data/out && ssh -p 22 host"),
    ("mysql -u root -p Hunt3r2pw db", "Hunt3r2pw", "python -u train.py -p 5"),
    ("/usr/bin/mysqldump -pHunt3r2pw runs", "Hunt3r2pw", "rsync -p -e ssh src dst"),
    ("sshpass -p Hunt3r2pw ssh -p 2222 host", "Hunt3r2pw", "ssh -p 2222 host"),
    ("redis-cli -a Hunt3r2pw ping", "Hunt3r2pw", "tar -a -cf out.tar.gz dir"),
    ("curl -u alice:Wonderl4nd https://api.internal/v1", "Wonderl4nd", "docker run -u 1000:1000 img"),
    ("curl -ualice:Wonderl4nd https://api.internal/v1", "Wonderl4nd", "curl -u alice https://api.internal/v1"),
    ("REDIS_URL=redis://:Hunt3r2pw@cache:6379/0", "Hunt3r2pw", "REDIS_URL=redis://cache:6379/0"),
    ("Authorization: token 0123456789abcdef0123456789abcdef01234567", "0123456789abcdef",
     "the token 0123456789abcdef0123456789abcdef01234567 embedding row"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI",
     "region = us-east-1"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Signature=d34db33fc4f3&X-Amz-Date=20240101T000000Z", "d34db33fc4f3",
     "https://b.s3.amazonaws.com/k?X-Amz-Date=20240101T000000Z&versionId=3"),
    ("https://acct.blob.core.windows.net/c/f?sv=2021-08-06&sr=b&sig=abcDEF%2Bxyz%3D", "abcDEF%2Bxyz",
     "https://example.org/plot?page=2&sigma=0.5&signal=on"),
]


@pytest.mark.parametrize("text, secret, look_alike", MISSED, ids=[t[0][:28] for t in MISSED])
def test_once_missed_patterns_are_redacted_and_look_alikes_are_not(text, secret, look_alike):
    assert secret not in redact_text(text) and REDACTED in redact_text(text)
    assert redact_text(look_alike) == look_alike


def test_program_password_flags_in_a_command_list():
    assert redact_argv(["mysql", "-u", "root", "-pHunt3r2pw"]) == ("mysql", "-u", "root", f"-p{REDACTED}")
    assert redact_argv(["sshpass", "-p", "pw123456", "ssh", "-p", "22", "h"]) == (
        "sshpass", "-p", REDACTED, "ssh", "-p", "22", "h")
    assert redact_argv(["curl", "-u", "u:pass1234", "https://x"]) == ("curl", "-u", f"u:{REDACTED}", "https://x")
    assert redact_argv(["mkdir", "-p", "/data/out"]) == ("mkdir", "-p", "/data/out")


@pytest.mark.parametrize("escape", ["\x1b[0m", "\x1b]0;title\x07", "\x1b[1;31m", "\x9b4m"])
def test_an_escape_sequence_inside_a_token_does_not_hide_it(escape):
    token = TOKENS["hugging face"]
    split = token[:10] + escape + token[10:]
    for out in (redact_text(f"login {split} ok"), redact_contained(f"login {split} ok", 4096)):
        assert token[10:] not in out and REDACTED in out and "\x1b" not in out


def test_container_text_is_cut_at_the_cap_with_an_ellipsis_and_a_secret_at_the_cut_is_still_redacted():
    token = TOKENS["github classic"]
    text = "x" * 90 + " " + token + " tail"
    out = redact_contained(text, 100)
    assert len(out) == 100 and out.endswith("…") and token[:8] not in out
    assert redact_contained("a." * 20000, 4096).endswith("…") and len(redact_contained("a." * 20000, 4096)) == 4096
    assert redact_contained("short line", 4096) == "short line"
    argv = redact_argv(["python", "-c", "y" * 10000, "--flag"], cap=200)
    assert sum(map(len, argv)) <= 200 and argv[-1].endswith("…")
