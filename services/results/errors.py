"""The errors of the results layer: a store does not hold what was asked for, holds it badly, or
cannot write."""

from __future__ import annotations


class ResultsError(ValueError):
    """A result file is missing or unreadable; the message names the file and what is wrong."""


class ResultsUnwritable(RuntimeError):
    """The store could not write a result (disk full, read-only, no permission); the message names
    the path and the reason, `errno` is the operating system's (ENOSPC for a full disk)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
