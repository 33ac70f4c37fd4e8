"""The log the Azure clients write progress to: Dagster's `context.log`, or anything with the same
`info` and `warning` (tests collect the lines)."""

from __future__ import annotations

from typing import Any, Protocol


class Log(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...
