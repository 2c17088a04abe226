"""Redact secrets at the source: environment values with secret-looking names and well-known token shapes.

Redaction happens where data enters mltop (the engine probe, log reads, action output), so no screen,
report or JSON document downstream can hold an unredacted secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

REDACTED = "[REDACTED]"
# What stands in for container text when its secrets could not be read: without them a secret echoed bare
# (a token printed by itself) cannot be recognised, so the text is withheld rather than shown unscrubbed.
SECRETS_UNREADABLE = "not shown: secrets could not be read"

# Name parts that mark an environment variable as secret. Matched on word boundaries of the upper-cased
# name split at "_", "-" and ".", plus a few whole-name patterns (e.g. AWS_SECRET_ACCESS_KEY, HF_TOKEN).
_SECRET_NAME_PARTS = {
    "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "PWD_SECRET", "KEY", "KEYS",
    "APIKEY", "CREDENTIAL", "CREDENTIALS", "CRED", "CREDS", "AUTH", "AUTHORIZATION", "PRIVATE", "SESSION",
    "COOKIE", "SIGNATURE", "CERT", "DSN", "CONNECTION_STRING",
}
_SECRET_NAME_RE = re.compile(
    r"(TOKEN|SECRET|PASSW(OR)?D|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH|SESSION|COOKIE|WEBHOOK)",
    re.IGNORECASE,
)
# Names that contain a secret-looking part but are well known not to be secrets.
_NOT_SECRET_NAMES = {"PWD", "OLDPWD", "PATH", "NVIDIA_DRIVER_CAPABILITIES", "KEYBOARD", "XAUTHORITY"}

# Well-known token shapes, matched anywhere in a value or a line of text.
_TOKEN_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",  # AWS access key id
        r"(?i)(?<=aws_secret_access_key[=: ])[A-Za-z0-9/+=]{40}",  # AWS secret next to its name
        r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
        r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",  # GitHub classic and fine-grained app tokens
        r"\bgithub_pat_[A-Za-z0-9_]{40,}\b",
        r"\bglpat-[A-Za-z0-9_\-]{20,}\b",  # GitLab
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",  # Slack
        r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+",
        r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}\b",  # OpenAI / Anthropic style
        r"\bAIza[0-9A-Za-z_\-]{35}\b",  # Google API key
        r"\bya29\.[0-9A-Za-z_\-]{20,}",  # Google OAuth access token
        r"\bnpm_[A-Za-z0-9]{36}\b",
        r"\bpypi-[A-Za-z0-9_\-]{50,}\b",
        r"\bwandb_[A-Za-z0-9]{20,}\b|\b(?<=WANDB_API_KEY=)[0-9a-f]{40}\b",
        r"\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\b",  # JWT
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
        r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=\-]{16,}",  # Authorization header values
    )
)
# user:password@ in URLs (database DSNs, git remotes)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")
# NAME=value inside free text (commands, logs) where NAME looks secret
_ASSIGNMENT = re.compile(r"(?P<name>\b[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>=|:\s?)(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&]+)")


# `--api-token VALUE` / `-password VALUE` on command lines: a flag with a secret-looking name, then its value
_FLAG_VALUE = re.compile(r"(?P<flag>(?<![\w-])--?[A-Za-z][A-Za-z0-9_.\-]*)(?P<sep>\s+)(?P<value>\"[^\"]*\"|'[^']*'|[^\s\-][^\s]*)")
# "password": "value" in JSON, and 'token': 'value' in Python reprs
_QUOTED_KEY = re.compile(
    r"(?P<key>(?P<q>[\"'])(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P=q)\s*:\s*)(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s,}\]]+)"
)
# Values too short or too common to scrub by value: replacing every "1" or "true" would wreck the text.
_MIN_SCRUB_LEN = 6
_NOT_SCRUBBED = {"true", "false", "none", "null", "yes", "no", "changeme", "default", REDACTED.lower()}


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    if upper in _NOT_SECRET_NAMES:
        return False
    parts = set(re.split(r"[_\-.]", upper))
    if parts & _SECRET_NAME_PARTS:
        return True
    return bool(_SECRET_NAME_RE.search(upper))


def looks_like_token(value: str) -> bool:
    return any(p.search(value) for p in _TOKEN_PATTERNS) or bool(_URL_CREDENTIALS.search(value))


def secret_values(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The raw secrets in unredacted (name, value) pairs, to scrub by value from text that echoes them.

    Whole values of secret-named variables, plus token shapes and URL passwords found in any value. Use it
    on raw inspect data (engine.inspect) right before scrubbing; never keep or show the result.
    """
    found: set[str] = set()
    for name, value in pairs:
        if not value:
            continue
        if is_secret_name(name):
            found.add(value)
        for pattern in _TOKEN_PATTERNS:
            found.update(m.group(0) for m in pattern.finditer(value))
        found.update(m["pw"] for m in _URL_CREDENTIALS.finditer(value))
    return frozenset(v for v in found if len(v) >= _MIN_SCRUB_LEN and v.lower() not in _NOT_SCRUBBED)


def scrub_values(text: str, values: Iterable[str]) -> str:
    """Replace every occurrence of each known secret value (longest first) with the redaction marker."""
    if not text:
        return text
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


@dataclass(frozen=True)
class ContainerSecrets:
    """A container's raw secret values, or why they are unknown. Never shown, never kept beyond one use."""

    values: frozenset[str] = frozenset()
    error: str | None = None  # why the environment could not be read; None when it was

    @property
    def known(self) -> bool:
        return self.error is None

    @classmethod
    def from_env(cls, entries: Iterable[str] | None) -> "ContainerSecrets":
        return cls(secret_values(split_env(entries)))

    def scrub(self, text: str) -> str:
        """Token shapes and secret assignments, then this container's own values wherever they appear."""
        return scrub_values(redact_text(text), self.values)


def redact_tree(value: Any, redact: Callable[[str], str], *, keys: bool = False) -> Any:
    """Every string in nested mappings and sequences through `redact` (mapping keys too when `keys`)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {(redact(str(k)) if keys else k): redact_tree(v, redact, keys=keys) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v, redact, keys=keys) for v in value]
    return value


def redact_value(name: str, value: str) -> str:
    """The value to show for environment variable `name`."""
    if value and is_secret_name(name):
        return REDACTED
    return redact_text(value)


def redact_env(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, redact_value(name, value)) for name, value in pairs)


def split_env(entries: Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """Split Docker's ["NAME=value", ...] into (name, value) pairs."""
    out = []
    for entry in entries or ():
        name, _, value = entry.partition("=")
        out.append((name, value))
    return tuple(out)


def redact_argv(argv: Iterable[str]) -> tuple[str, ...]:
    """Redact a command given as a list: the value after a secret-named flag (`--hf-token`, VALUE) too."""
    out: list[str] = []
    secret_flag = False
    for arg in argv:
        if secret_flag and not arg.startswith("-"):
            out.append(REDACTED)
        else:
            out.append(redact_text(arg))
        secret_flag = arg.startswith("-") and "=" not in arg and is_secret_name(arg.lstrip("-"))
    return tuple(out)


def redact_text(text: str) -> str:
    """Redact token shapes, URL credentials and NAME=value assignments with secret names in free text."""
    if not text:
        return text
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(REDACTED, text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)

    def _assignment(m: re.Match[str]) -> str:
        if is_secret_name(m["name"]) and m["value"] not in ("", REDACTED) and not m["value"].startswith("["):
            return f"{m['name']}{m['sep']}{REDACTED}"
        return m.group(0)

    text = _ASSIGNMENT.sub(_assignment, text)

    def _quoted(m: re.Match[str]) -> str:
        value = m["value"]
        if is_secret_name(m["name"]) and value.strip("\"'") not in ("", REDACTED):
            quote = value[0] if value[:1] in ("\"", "'") else ""
            return f"{m['key']}{quote}{REDACTED}{quote}"
        return m.group(0)

    text = _QUOTED_KEY.sub(_quoted, text)

    def _flag(m: re.Match[str]) -> str:
        if is_secret_name(m["flag"].lstrip("-")) and m["value"] != REDACTED:
            return f"{m['flag']}{m['sep']}{REDACTED}"
        return m.group(0)

    return _FLAG_VALUE.sub(_flag, text)
