"""Secrets typed into a launch (a token, key or password in an override or a cluster.setup line) never reach
the run dir's files: redact() writes `***` in their place; a shell script keeps a reference to an environment
variable instead (env_indirect()), whose value reaches the job through the environment sbatch passes on.

Pure: text and config in, text and config out.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

REDACTED = "***"
#: a name component that marks a secret: HF_TOKEN, WANDB_API_KEY, +hub.token, db_password, AWS_SECRET_ACCESS_KEY
_SECRET_PART = r"(?:api[_-]?key|access[_-]?key|token|key|secret|password|passwd|pwd|credentials?|auth)"
_SECRET_NAME = re.compile(rf"(?:^|[._-]){_SECRET_PART}(?:$|[._-])", re.I)
_VALUE = r"""(?:'[^']*'|"[^"]*"|[^\s'";&|,]+)"""
#: NAME=value (an override, an export, an env assignment) and --flag value / --flag=value
_ASSIGN = re.compile(rf"(?P<name>[A-Za-z_+][\w.+-]*)=(?P<value>{_VALUE})")
_FLAG = re.compile(rf"(?P<name>--?[A-Za-z][\w-]*)(?P<sep>[= ])(?P<value>{_VALUE})")
#: scheme://user:password@host
_URL = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)(?P<value>[^\s@/]+)(?=@)", re.I)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.lstrip("+-")))


def _spans(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, name, value) of each secret value in text, name None for a URL password."""
    out = []
    for m in _ASSIGN.finditer(text):
        if is_secret_name(m["name"]):
            out.append((m.start("value"), m.end("value"), m["name"].lstrip("+"), m["value"]))
    for m in _FLAG.finditer(text):
        if is_secret_name(m["name"]) and not any(s <= m.start("value") < e for s, e, _, _ in out):
            out.append((m.start("value"), m.end("value"), m["name"].lstrip("-"), m["value"]))
    for m in _URL.finditer(text):
        out.append((m.start("value"), m.end("value"), "", m["value"]))
    return sorted(out)


def _replace(text: str, repl) -> str:
    pieces, last = [], 0
    for i, (start, end, name, value) in enumerate(_spans(text)):
        pieces += [text[last:start], repl(i, name, value)]
        last = end
    return "".join(pieces) + text[last:]


def redact(text: str) -> str:
    """text with every secret value written as ***."""
    return _replace(text, lambda i, name, value: REDACTED)


def redact_config(node: Any, key: str = "") -> Any:
    """A config (dicts, lists, strings) with secret values redacted: values of secret-named keys, and secrets
    inside strings (cluster.setup lines, ...)."""
    if isinstance(node, Mapping):
        return {k: redact_config(v, str(k)) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [redact_config(v) for v in node]
    if isinstance(node, str):
        return REDACTED if key and is_secret_name(key) and node else redact(node)
    return node


def env_indirect(script: str) -> tuple[str, dict[str, str]]:
    """A shell script whose secret values are references to environment variables, and those variables'
    values: `export HF_TOKEN=abc` -> `export HF_TOKEN="${HF_TOKEN}"` with {HF_TOKEN: abc}; other places
    (`--token abc`, a URL password) get LAUNCHER_SECRET_<n>."""
    env: dict[str, str] = {}

    def repl(i: int, name: str, value: str) -> str:
        var = name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"LAUNCHER_SECRET_{i}"
        if env.get(var, value) != value:
            var = f"LAUNCHER_SECRET_{i}"
        env[var] = value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value
        return f'"${{{var}}}"'

    return _replace(script, repl), env
