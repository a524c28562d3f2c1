"""
What of a job's settings may be shown: the API, the dashboard, C{karajo
check} and config errors all show URLs and headers through here, so a
password in a URL or a token in a header never reaches a page, a terminal
or a log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "masked_headers", "masked_url"]

MASK = "********"

_SENSITIVE_HEADER = re.compile(
    r"authorization|cookie|token|secret|passw|api[-_]?key|auth", re.IGNORECASE
)


def masked_headers(headers: Iterable[tuple[str, str]]) -> list[str]:
    """C{Name: value} lines, with the values of credential headers masked."""
    return [
        f"{name}: {MASK if _SENSITIVE_HEADER.search(name) else value}"
        for name, value in headers
    ]


# user:password@ after the scheme, for URLs urlsplit refuses; the password
# runs to the last @ before the path, as urlsplit reads it.
_USERINFO_PASSWORD = re.compile(r"(//[^/?#@:]*:)[^/?#]*@")


def masked_url(url: str) -> str:
    """An URL without the password of its userinfo part, even a malformed URL."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
    except ValueError:
        return _USERINFO_PASSWORD.sub(rf"\g<1>{MASK}@", url)
