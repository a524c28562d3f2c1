"""
Taking the secrets the config named by C{$VAR} out of the daemon's own
environment once they are read.

Jobs never inherit the daemon's environment (L{karajo.process.command_env}),
but a job running as the daemon's user can read C{/proc/$PPID/environ}.
Removing a variable from C{os.environ} is not enough for that: on Linux
C{/proc/PID/environ} shows the process's I{initial} environment block (the
strings the kernel put on the stack at exec), whatever C{unsetenv} did
since.  So the values are also overwritten with NUL bytes in that block,
found from the C{env_start}/C{env_end} fields of C{/proc/self/stat}.

What this cannot do: a same-user job can still read the 0600 config files,
and with ptrace rights (no Yama C{ptrace_scope} >= 1) the daemon's memory.
Run jobs as another user for that (docs/security.md).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable, MutableMapping

__all__ = ["scrub_environment"]


def scrub_environment(
    names: Iterable[str], environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """
    Remove C{names} from C{environ} (the process's own, by default, which
    also blanks their values in its initial environment block); returns
    the names that were there.  Never raises over the initial block: when
    it cannot be reached (not Linux, an old kernel), only C{os.environ}
    is cleaned.
    """
    own = environ is None
    env = os.environ if environ is None else environ
    removed = sorted(name for name in set(names) if env.pop(name, None) is not None)
    if own and removed:
        _blank_initial_block(removed)
    return removed


def _initial_block() -> tuple[int, int] | None:
    """Where the initial environment block lies: C{(env_start, env_end)}."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()
        # Fields 50 and 51 of proc(5); the list starts at field 3.
        start, end = int(fields[47]), int(fields[48])
    except (OSError, ValueError, IndexError):
        return None
    return (start, end) if 0 < start < end else None


def _blank_initial_block(names: Iterable[str]) -> None:
    """
    Overwrite the values of C{NAME=value} entries for C{names} with NUL
    bytes in the initial block.  Only entries already removed from the C
    library's C{environ} (by C{os.environ.pop}'s C{unsetenv}) are touched,
    so no live pointer sees its string change.
    """
    where = _initial_block()
    if where is None:
        return
    start, end = where
    try:
        with open("/proc/self/environ", "rb") as f:
            block = f.read()
    except OSError:
        return
    # /proc/self/environ is exactly the bytes from env_start to env_end.
    block = block[: end - start]
    prefixes = tuple(name.encode("utf-8", "surrogateescape") + b"=" for name in names)
    offset = 0
    for entry in block.split(b"\0"):
        if entry.startswith(prefixes):
            value_at = entry.index(b"=") + 1
            ctypes.memset(start + offset + value_at, 0, len(entry) - value_at)
        offset += len(entry) + 1
