"""User-facing errors: each names what is wrong, where, and how to fix it."""

from __future__ import annotations

from pathlib import Path


class DistilrankError(Exception):
    """Base class for mistakes a user can fix; the CLI prints these without a traceback."""


class DataError(DistilrankError):
    """Bad input data, located by file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.hint = hint
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "")
        parts = [f"{where}: " if where else ""]
        if field is not None:
            parts.append(f"field '{field}': ")
        parts.append(message)
        if hint:
            parts.append(f" ({hint})")
        super().__init__("".join(parts))


class ConfigError(DistilrankError):
    """An invalid or absurd configuration value."""


class MissingExtraError(DistilrankError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this feature needs the package '{package}'; install it with "
            f"`pip install 'distilrank[{extra}]'`"
        )
