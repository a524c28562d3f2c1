"""
Client text as it may appear in a log line.

Whatever a client sends (a path, a header, a user name) is escaped and
cut short before it is logged: a raw escape sequence in a log line can
rewrite an operator's terminal, and a raw newline can forge a whole line.
One helper, so that every log call that carries client text escapes it
the same way.
"""

from __future__ import annotations

__all__ = ["LIMIT", "client_text"]

#: Most characters of client text a log line carries (before escaping).
LIMIT = 200


def client_text(value: bytes | str | None, limit: int = LIMIT) -> str:
    """
    C{value} cut to C{limit} characters, with every control, non-ASCII and
    backslash character written as a Python escape (C{\\x1b}, C{\\n},
    C{\\u202e}, C{\\\\}): the result is printable ASCII only, and tells
    apart every input (an escaped backslash cannot pose as an escape).
    Bytes are read as latin-1, which maps every byte.
    """
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    cut = value[:limit]
    text = cut.encode("unicode_escape").decode("ascii")
    return text + "..." if len(value) > limit else text
