"""Every error zeekndm raises on purpose, each carrying where the problem is.

One root (`ZeekNDMError`, itself a `ValueError`) so callers can catch everything we
raise deliberately; one subclass per kind of mistake. The location (file, line, key
path or field) is appended when the error is printed, so a user never has to guess
which file or which key is wrong.
"""

from __future__ import annotations


class ZeekNDMError(ValueError):
    """Base error. `file`, `line` and `key` locate the problem when known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.key = key

    @property
    def location(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
        if self.key:
            where = f"{where} ({self.key})" if where else self.key
        return where

    def __str__(self) -> str:
        where = self.location
        return f"{where}: {self.message}" if where else self.message


class ConfigError(ZeekNDMError):
    """The user's configuration is invalid (unknown key, wrong type, bad value)."""


class ModelError(ZeekNDMError):
    """A detection model definition is invalid."""


class ReaderError(ZeekNDMError):
    """An input cannot be read at all (missing file, unknown format).

    A single malformed line is *not* a ReaderError: it is counted as a bad line and
    reading goes on (see `zeekndm.readers.BadLine`).
    """


class SinkError(ZeekNDMError):
    """An output cannot be used (unreachable at start-up, unsupported server, bad credentials)."""


class ConfigErrors(ConfigError):
    """Several configuration problems collected in one pass (for `check-config`)."""

    def __init__(self, errors: list[ZeekNDMError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid configuration")

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
