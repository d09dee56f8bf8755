"""One problem in a config: the key, the bad value and the fix."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    fix: str
    error: bool = True

    def __str__(self) -> str:
        kind = "error" if self.error else "warning"
        return f"{kind}: {self.key}={show(self.value)}: {self.fix}"


def show(value: Any) -> str:
    return str(value.value) if hasattr(value, "value") else str(value)
