"""Redact secrets at the source: environment values with secret-looking names and well-known token shapes.

Redaction happens where data enters mltop (the engine probe, log reads, action output), so no screen,
report or JSON document downstream can hold an unredacted secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from .text import ELLIPSIS, JUDGE_MARGIN, VALUE_CAP, strip_escapes

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

# Well-known token shapes, matched anywhere in a value or a line of text. Every pattern is linear: a shape
# that opens with a run-class character may only start where a run starts (the lookbehind), so a long run
# such as "sk-sk-sk-…" or "eyJ-eyJ-…" is scanned once, not once from each of its positions.
_RUN_START = r"(?<![A-Za-z0-9_\-])"
# Each shape with the cues (lower case) one of which its text must hold: a substring test is far cheaper than
# a regex pass, so a line is searched only for the shapes it could hold.
_TOKENS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (cues, re.compile(p))
    for cues, p in (
        (("akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa"),
         r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),  # AWS access key id
        (("aws_secret_access_key",), r"(?i)(?<=aws_secret_access_key[=: ])[A-Za-z0-9/+=]{40}"),  # next to its name
        (("hf_",), _RUN_START + r"hf_[A-Za-z0-9]{30,}\b"),  # Hugging Face
        (("gh",), _RUN_START + r"gh[pousr]_[A-Za-z0-9]{36,}\b"),  # GitHub classic and fine-grained app tokens
        (("github_pat_",), _RUN_START + r"github_pat_[A-Za-z0-9_]{40,}\b"),
        (("glpat-",), _RUN_START + r"glpat-[A-Za-z0-9_\-]{20,}"),  # GitLab
        (("xox",), _RUN_START + r"xox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack
        (("hooks.slack.com",), r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
        (("sk-",), _RUN_START + r"sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}"),  # OpenAI / Anthropic style
        (("aiza",), _RUN_START + r"AIza[0-9A-Za-z_\-]{35}\b"),  # Google API key
        (("ya29.",), _RUN_START + r"ya29\.[0-9A-Za-z_\-]{20,}"),  # Google OAuth access token
        (("npm_",), _RUN_START + r"npm_[A-Za-z0-9]{36}\b"),
        (("pypi-",), _RUN_START + r"pypi-[A-Za-z0-9_\-]{50,}"),
        (("wandb_",), _RUN_START + r"wandb_[A-Za-z0-9]{20,}\b|\b(?<=WANDB_API_KEY=)[0-9a-f]{40}\b"),
        (("eyj",), _RUN_START + r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"),  # JWT
        (("-----begin",), r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
        (("bearer", "basic"),
         r"(?i)(?<![A-Za-z0-9_\-])(?:bearer|basic)\s+[A-Za-z0-9._~+/=\-]{16,}"),  # Authorization values
    )
)
_TOKEN_PATTERNS: tuple[re.Pattern[str], ...] = tuple(pattern for _, pattern in _TOKENS)


def _token_patterns(text: str) -> list[re.Pattern[str]]:
    """The token shapes whose cues `text` holds."""
    low = text.lower()
    return [pattern for cues, pattern in _TOKENS if any(cue in low for cue in cues)]


# `Authorization: <scheme> <value>` (any scheme: token, Bearer, Basic, Digest): the name kept, the rest gone.
_AUTH_HEADER = re.compile(
    r"(?i)(?P<head>(?<![A-Za-z0-9_\-])(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?P<value>(?:[A-Za-z]+[ \t]+)?[^\s\"',;]+)"
)
# A signed URL's signature in its query: `sig=` (Azure SAS) is too short a name to judge anywhere else.
# (X-Amz-Signature, X-Goog-Signature, Signature and X-Amz-Security-Token are secret names: see below.)
_URL_SIG = re.compile(r"(?i)(?P<head>[?&]sig=)(?P<value>[^&\s\"'#]+)")
# [user]:password@ in URLs (database DSNs, git remotes, `redis://:password@host`). The scheme starts where
# a run of scheme characters starts, so "ab.ab.ab.…" is one try, not one per letter.
_URL_CREDENTIALS = re.compile(
    r"(?<![a-zA-Z0-9+.\-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
# NAME=value, NAME = value, NAME: value inside free text (commands, logs, INI files). Only the name and its
# separator are matched; the value is read after it, and only for a secret name. The name is the whole run
# of name characters before the separator (a run is tried once, where it starts), and a match never
# swallows the rest of the line, so `INFO:root:token=…` is judged at each of its separators.
_NAME_SEP = re.compile(r"(?<![A-Za-z0-9_.\-])(?P<name>[A-Za-z0-9_.\-]+)(?P<sep>[ \t]*=[ \t]*|:[ \t]?)")
_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'|[^\s,;&]+")
# `--api-token VALUE` / `-password VALUE` on command lines: a flag with a secret-looking name, then its value.
# A flag starts where a run of flag characters starts (not inside `a.-b.-c`).
_FLAG_VALUE = re.compile(
    r"(?P<flag>(?<![\w.\-])--?[A-Za-z][A-Za-z0-9_.\-]*)(?P<sep>\s+)(?P<value>\"[^\"]*\"|'[^']*'|[^\s\-]\S*)")
# "password": "value" in JSON, and 'token': 'value' in Python reprs
_QUOTED_KEY = re.compile(
    r"(?P<key>(?P<q>[\"'])(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P=q)\s*:\s*)(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s,}\]]+)"
)
# A cheap first look at a name before the full judgement: no secret name lacks all of these.
_SECRET_HINT = re.compile(
    r"TOKEN|SECRET|PASS|PWD|KEY|CRED|AUTH|PRIVATE|SESSION|COOKIE|SIGNATURE|CERT|DSN|CONNECTION|WEBHOOK",
    re.IGNORECASE)
# Values too short or too common to scrub by value: replacing every "1" or "true" would wreck the text.
_MIN_SCRUB_LEN = 6
_NOT_SCRUBBED = {"true", "false", "none", "null", "yes", "no", "changeme", "default", REDACTED.lower()}


def is_secret_name(name: str) -> bool:
    if not _SECRET_HINT.search(name):
        return False
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
        judged = strip_escapes(value[: VALUE_CAP + JUDGE_MARGIN])  # what of the value is ever shown, and more
        for pattern in _token_patterns(judged):
            found.update(m.group(0) for m in pattern.finditer(judged))
        found.update(m["pw"] for m in _URL_CREDENTIALS.finditer(judged))
    return frozenset(v for v in found if len(v) >= _MIN_SCRUB_LEN and v.lower() not in _NOT_SCRUBBED
                     and v not in REDACTED)


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

    def scrub(self, text: str, cap: int | None = None) -> str:
        """Token shapes and secret assignments, then this container's own values wherever they appear; with
        `cap`, as container text entering mltop (`redact_contained`: judged and cut to `cap`)."""
        if cap is not None:
            return redact_contained(text, cap, self.values)
        return _judged_twice(text, lambda t: scrub_values(_redact_plain(t), self.values)) if text else text


MAX_TREE_DEPTH = 64  # deeper than any document mltop writes: what is below is cut to `…`


def redact_tree(value: Any, redact: Callable[[str], str], *, keys: bool = False, _depth: int = 0) -> Any:
    """Every string in nested mappings and sequences through `redact` (mapping keys too when `keys`);
    containers nested deeper than MAX_TREE_DEPTH become `…` (no recursion limit for hostile input to hit)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (Mapping, list, tuple)) and _depth >= MAX_TREE_DEPTH:
        return ELLIPSIS
    if isinstance(value, Mapping):
        return {(redact(str(k)) if keys else k): redact_tree(v, redact, keys=keys, _depth=_depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v, redact, keys=keys, _depth=_depth + 1) for v in value]
    return value


def redact_value(name: str, value: str, cap: int | None = None) -> str:
    """The value to show for environment variable (or label) `name`; with `cap`, judged and cut to it."""
    if value and is_secret_name(name):
        return REDACTED
    return redact_contained(value, cap) if cap is not None else redact_text(value)


def redact_env(pairs: Iterable[tuple[str, str]], cap: int | None = None) -> tuple[tuple[str, str], ...]:
    return tuple((name, redact_value(name, value, cap)) for name, value in pairs)


def split_env(entries: Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """Split Docker's ["NAME=value", ...] into (name, value) pairs."""
    out = []
    for entry in entries or ():
        name, _, value = entry.partition("=")
        out.append((name, value))
    return tuple(out)


# Password flags that only some programs give (`mysql -psecret`, `sshpass -p secret`, `curl -u user:pass`):
# a short flag like `-p` is a port for ssh and "make parents" for mkdir, so it is judged by the program it
# follows in the same command (a word whose basename is the program, up to the next `;`, `|`, `&` or line
# break). "password" flags take the whole value, attached (`-psecret`) or as the next word; "credentials"
# flags take `user:password` and lose what follows the first colon. A program with no rule (ssh) ends the
# rule of the one before it (`sshpass -p pw ssh -p 22 host`: the port stays).
_PROGRAM_RULES: dict[str, tuple[str, frozenset[str]] | None] = {
    **{name: ("password", frozenset({"-p"})) for name in (
        "mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlcheck", "mysqlshow", "mysqlslap", "mysqlpump",
        "mysqlsh", "mariadb", "mariadb-dump", "mariadb-admin", "sshpass", "mongo", "mongosh", "mongodump",
        "mongorestore", "mongoexport", "mongoimport", "mongostat", "mongotop")},
    "redis-cli": ("password", frozenset({"-a"})),
    "curl": ("credentials", frozenset({"-u", "-U", "--user", "--proxy-user"})),
    **{name: None for name in ("ssh", "scp", "sftp", "rsync", "mkdir", "python", "python3", "docker", "kubectl")},
}
_PROGRAM = re.compile(r"(?<![\w.\-])(?P<prog>" + "|".join(
    re.escape(name) for name in sorted(_PROGRAM_RULES, key=len, reverse=True)) + r")(?![\w.\-])")
_RULED_PROGRAM = re.compile(r"(?<![\w.\-])(?:" + "|".join(
    re.escape(name) for name in sorted(_PROGRAM_RULES, key=len, reverse=True) if _PROGRAM_RULES[name])
    + r")(?![\w.\-])")
_SEGMENT = re.compile(r"[^\n;|&]+")
_WORD = re.compile(r"(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s\"'])+|[\"']")


def _program_rule(word: str) -> tuple[bool, tuple[str, frozenset[str]] | None]:
    """(whether `word` names a program with or without a rule, that rule)."""
    name = word.strip("\"'").rsplit("/", 1)[-1]
    return (name in _PROGRAM_RULES), _PROGRAM_RULES.get(name)


def _program_secrets(words: Sequence[str]) -> dict[int, str]:
    """Replacements, by index, for the words of one command that a program's own password flags mark."""
    out: dict[int, str] = {}
    rule = None
    for i, word in enumerate(words):
        named, word_rule = _program_rule(word)
        if named:
            rule = word_rule
            continue
        if rule is None or i in out:
            continue
        kind, flags = rule
        following = words[i + 1] if i + 1 < len(words) else None
        if word in flags:
            if following is None or following.startswith(("-", REDACTED)):
                continue
            out[i + 1] = REDACTED if kind == "password" else _credentials(following)
            continue
        short = next((f for f in flags if len(f) == 2 and word.startswith(f) and len(word) > 2), None)
        if short is None and kind == "credentials":
            short = next((f + "=" for f in flags if word.startswith(f + "=")), None)
        if short is not None and word[len(short):] and not word[len(short):].startswith(REDACTED):
            out[i] = short + (REDACTED if kind == "password" else _credentials(word[len(short):]))
    return out


def _credentials(value: str) -> str:
    """`user:password` with the password redacted (quotes kept); a bare user is no secret (curl prompts)."""
    user, colon, password = value.partition(":")
    if not colon or not password or password.strip("\"'").startswith(REDACTED):
        return value
    quote = value[0] if value[:1] in ("\"", "'") and value.endswith(value[0]) else ""
    return f"{user}:{REDACTED}{quote}"


def _redact_program_flags(text: str) -> str:
    """`_program_secrets` on each command of free text that names one of the programs."""
    if not _RULED_PROGRAM.search(text):  # the common case: none of the programs with password flags
        return text
    out: list[str] = []
    last = 0
    for segment in _SEGMENT.finditer(text):
        program = _PROGRAM.search(text, segment.start(), segment.end())
        if program is None:
            continue
        words = list(_WORD.finditer(text, program.start(), segment.end()))
        for index, replacement in sorted(_program_secrets([w.group(0) for w in words]).items()):
            out.append(text[last:words[index].start()])
            out.append(replacement)
            last = words[index].end()
    out.append(text[last:])
    return "".join(out)


def redact_argv(argv: Iterable[str], cap: int | None = None) -> tuple[str, ...]:
    """Redact a command given as a list: the value after a secret-named flag (`--hf-token`, VALUE) too, and
    the program's own password flags (`mysql`, `-psecret`). Escape sequences are removed first. With `cap`:
    judged within `cap` characters in all and a margin, and cut to `cap` (the cut argument ends with `…`)."""
    args: list[str] = []
    judged_cut = False
    total = 0
    for arg in argv:
        arg = strip_escapes(arg)
        if cap is not None and total + len(arg) > cap + JUDGE_MARGIN:
            args.append(arg[: max(cap + JUDGE_MARGIN - total, 0)])
            judged_cut = True
            break
        args.append(arg)
        total += len(arg)
    out: list[str] = []
    secret_flag = False
    for arg in args:
        if secret_flag and arg and not arg.startswith("-"):
            out.append(REDACTED)
        else:
            out.append(redact_text(arg))
        secret_flag = arg.startswith("-") and "=" not in arg and is_secret_name(arg.lstrip("-"))
    for index, replacement in _program_secrets(out).items():
        out[index] = replacement
    if cap is None:
        return tuple(out)
    shown: list[str] = []
    total = 0
    for arg in out:
        if total + len(arg) > cap or (judged_cut and len(shown) == len(out) - 1):
            shown.append(arg[: max(cap - total - 1, 0)] + ELLIPSIS)
            break
        shown.append(arg)
        total += len(arg)
    return tuple(shown)


def _redact_assignments(text: str) -> str:
    """NAME=value (and NAME = value, NAME: value) with a secret name: the value redacted."""
    out: list[str] = []
    last = 0
    for m in _NAME_SEP.finditer(text):
        if m.start() < last or not is_secret_name(m["name"]):
            continue
        value = _VALUE.match(text, m.end())
        if value is None or value.group(0).startswith("["):  # [REDACTED] already, or a list
            continue
        out.append(text[last:m.end()])
        out.append(REDACTED)
        last = value.end()
    out.append(text[last:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Redact token shapes, URL credentials, NAME=value assignments with secret names, secret-named flags'
    values and programs' password flags in free text, judged as it came and with its escape sequences removed
    (`_judged_twice`: an escape inside a token hides it from every pattern). Linear: no pattern here
    backtracks over a run twice."""
    if not text:
        return text
    return _judged_twice(text, _redact_plain)


def _judged_twice(text: str, redact: Callable[[str], str]) -> str:
    """`redact` on the text as it came, then on it with its escape sequences removed: an escape inside a token
    hides the token from the first look; one that swallows a token's first character (ESC, space, "h" is a
    whole sequence) hides it from the second. When the second finds nothing more, the text keeps its escapes
    (a screen removes them, a report writes them out, visible and inert); otherwise it comes without."""
    raw = redact(text)
    plain = strip_escapes(raw)
    if plain is raw:  # no escapes: the common case
        return raw
    redacted = redact(plain)
    return raw if redacted == plain else redacted


def _redact_plain(text: str) -> str:
    low = text.lower()  # cues first: a substring test is far cheaper than a pass of a pattern
    for pattern in _token_patterns(text):
        text = pattern.sub(REDACTED, text)
    if "authorization" in low:
        text = _AUTH_HEADER.sub(lambda m: m.group(0) if m["value"].startswith(REDACTED) else m["head"] + REDACTED,
                                text)
    if "sig=" in low:
        text = _URL_SIG.sub(lambda m: m["head"] + REDACTED, text)  # [REDACTED] again: the same
    if "://" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    if "=" in text or ":" in text:
        text = _redact_assignments(text)

    def _quoted(m: re.Match[str]) -> str:
        value = m["value"]
        if is_secret_name(m["name"]) and value.strip("\"'") and not value.strip("\"'").startswith(REDACTED):
            quote = value[0] if value[:1] in ("\"", "'") else ""
            return f"{m['key']}{quote}{REDACTED}{quote}"
        return m.group(0)

    if "'" in text or '"' in text:
        text = _QUOTED_KEY.sub(_quoted, text)

    def _flag(m: re.Match[str]) -> str:
        if is_secret_name(m["flag"].lstrip("-")) and not m["value"].startswith(REDACTED):
            return f"{m['flag']}{m['sep']}{REDACTED}"
        return m.group(0)

    if "-" in text:
        text = _FLAG_VALUE.sub(_flag, text)
    return _redact_program_flags(text)


def redact_contained(text: str, cap: int, secrets: Iterable[str] = ()) -> str:
    """Container text as it enters mltop: judged within `cap` characters and a margin (a secret the cut falls
    in is recognised whole), as it came and with its escape sequences removed (`_judged_twice`), redacted,
    scrubbed of the container's own secret `secrets`, and cut to `cap` with `…`. Linear in `text`; what is
    judged is bounded by `cap`."""
    if not text:
        return text
    judged_cut = len(text) > cap + JUDGE_MARGIN
    judged = text[: cap + JUDGE_MARGIN] if judged_cut else text
    redacted = _judged_twice(judged, lambda t: scrub_values(_redact_plain(t), secrets))
    if judged_cut or len(redacted) > cap:
        return redacted[: max(cap - 1, 0)] + ELLIPSIS
    return redacted
