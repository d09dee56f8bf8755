"""One problem in a config: the key, the bad value and the fix."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launcher.secrets import REDACTED, is_secret_name, redact


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    fix: str
    error: bool = True

    def __str__(self) -> str:
        kind = "error" if self.error else "warning"
        # a secret typed into a bad key is not echoed to the terminal either
        value = REDACTED if is_secret_name(self.key) and self.value else redact(show(self.value))
        return f"{kind}: {self.key}={value}: {self.fix}"


def show(value: Any) -> str:
    return str(value.value) if hasattr(value, "value") else str(value)
