"""
Exceptions shared by the configuration layers.

A config problem must point the operator at the exact place to fix, so every
L{ConfigError} carries the file and line it comes from and renders as
C{FILE:LINE: reason}.
"""

from __future__ import annotations


class ConfigError(Exception):
    """
    A configuration file (or code-built environment) is not acceptable.

    C{str(err)} is C{FILE:LINE: reason}, or C{FILE: reason} when no line
    applies (for example a missing file).
    """

    def __init__(self, filename: str, line: int | None, reason: str) -> None:
        self.filename = filename
        self.line = line
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.filename}: {self.reason}"
        return f"{self.filename}:{self.line}: {self.reason}"
