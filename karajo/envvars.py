"""
A command job's own environment variables: the C{env} lines of a C{[job]},
the lines of its C{env_file}, and the rule that joins them.

Pure (no Twisted, no karajo service): the config loader and L{karajo.validate}
use it, and whatever runs commands takes the result.

Values are secrets (tokens, passwords): nothing here ever puts a value in
an error or a warning.  Messages name the file, the line and the variable's
name, and only a name that I{is} a valid name: the text before C{=} of a
malformed line may be half a pasted token.

Precedence, as systemd's C{EnvironmentFile=} then C{Environment=}: the
C{env_file} is read first, the C{env} lines after it, and a later
assignment of a name wins (so an C{env} line overrides the file).  The
C{KARAJO_*} names are reserved for what karajo sets itself and may not be
assigned at all.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable

from attrs import frozen

from karajo.errors import ConfigError

__all__ = [
    "RESERVED_PREFIX",
    "Assignment",
    "is_valid_name",
    "merge",
    "parse_assignment",
    "parse_env_text",
    "read_env_file",
]

#: Names karajo sets itself (KARAJO_JOB_ID, KARAJO_TRIGGER, ...).
RESERVED_PREFIX = "KARAJO_"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Permission bits that let someone other than the owner read the file.
_READABLE_BY_OTHERS = stat.S_IRGRP | stat.S_IROTH


@frozen
class Assignment:
    """One C{NAME=VALUE}, with where it was written (for warnings)."""

    name: str
    value: str
    filename: str
    line: int | None


def is_valid_name(name: str) -> bool:
    """Letters, digits and C{_}, not starting with a digit (POSIX's rule)."""
    return _NAME.fullmatch(name) is not None


def _check_name(name: str, filename: str, line: int | None, what: str) -> None:
    if not is_valid_name(name):
        # The text is not shown: it may be part of a value.
        raise ConfigError(
            filename, line,
            f"{what}: the text before '=' is not a variable name "
            "(letters, digits and _, not starting with a digit)",
        )
    if name.startswith(RESERVED_PREFIX):
        raise ConfigError(
            filename, line, f"{what}: {name} is reserved (karajo sets the {RESERVED_PREFIX}* names)"
        )


def parse_assignment(text: str, filename: str, line: int | None, what: str = "env") -> Assignment:
    """
    One C{env = NAME=VALUE} line of the config: the value is everything
    after the first C{=}, as the config file gave it (git-config has already
    handled its quotes and escapes).
    """
    name, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(filename, line, f"{what}: expected NAME=VALUE (no '=')")
    name = name.strip()
    _check_name(name, filename, line, what)
    return Assignment(name, value, filename, line)


def _unquote(value: str) -> str:
    """
    A value wholly in matching single or double quotes loses them; nothing
    inside is interpreted (no escapes, no C{$} expansion), so what is
    between the quotes is the value byte for byte.
    """
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_env_text(text: str, filename: str) -> list[Assignment]:
    """
    The lines of an C{env_file}: C{NAME=VALUE}; blank lines and lines whose
    first non-blank character is C{#} are skipped; whitespace around the
    name and the value is dropped; a value wholly in quotes loses them.  A
    C{#} after a value is part of it.
    """
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        if not sep:
            raise ConfigError(filename, number, "env_file: expected NAME=VALUE (no '=')")
        name = name.strip()
        _check_name(name, filename, number, "env_file")
        out.append(Assignment(name, _unquote(value.strip()), filename, number))
    return out


def read_env_file(path: str, filename: str = "<code>", line: int | None = None) -> list[Assignment]:
    """
    Read an C{env_file} (blocking: done while the config loads, so a reload
    reads it again).  It must exist, be a regular file, and be readable by
    its owner only: a file that its group or anyone else may read is
    refused, since whoever can read it has the job's secrets.

    A problem with the file as a whole is reported at C{filename:line}, the
    C{env_file} key that names it; a bad line at the file's own line.

    @raise ConfigError: missing, not a regular file, readable by group or
        others, unreadable, not UTF-8, or a malformed line.
    """
    def fail(reason: str) -> ConfigError:
        return ConfigError(filename, line, f"env_file: {path}: {reason}")

    try:
        # Non-blocking: a FIFO put there must not hang the load.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as e:
        raise fail(e.strerror or str(e)) from None
    # Checked on the open file: what is read is what was checked.
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise fail("not a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_mode & _READABLE_BY_OTHERS:
            raise fail(
                f"readable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o}); it holds "
                "secrets: chmod 600, owned by the user karajo runs as"
            )
        try:
            raw = f.read()
        except OSError as e:
            raise fail(e.strerror or str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, raw[: e.start].count(b"\n") + 1, "env_file: not valid UTF-8") from None
    return parse_env_text(text, path)


def merge(
    *groups: Iterable[Assignment], warnings: list[str] | None = None
) -> tuple[tuple[str, str], ...]:
    """
    Join assignments in order, a later one of a name winning (pass the
    C{env_file}'s first, then the C{env} lines).  A name given twice in the
    same group is worth a warning (one of them is a mistake); a name of
    the file set again by an C{env} line is the documented override and
    is not.  Returns C{(name, value)} pairs sorted by name.
    """
    values: dict[str, str] = {}
    for group in groups:
        seen: dict[str, Assignment] = {}
        for item in group:
            first = seen.get(item.name)
            if first is not None and warnings is not None:
                warnings.append(
                    f"{_where(item)}: {item.name} is set again (first at {_where(first)}); "
                    "the later value is used"
                )
            seen.setdefault(item.name, item)
            values[item.name] = item.value
    return tuple(sorted(values.items()))


def _where(item: Assignment) -> str:
    if item.line is None:
        return item.filename
    return f"{item.filename}:{item.line}"
