"""
Request parameters, read the one way every page and API route reads them.

The raw query string is kept as received (management calls are signed over
its exact bytes); pairs are decoded with the first value of a name winning,
as Go's C{url.Values.Get} does, so scripts written for the original see the
same answers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl


def parse_pairs(raw: bytes) -> dict[str, str]:
    """Urlencoded pairs; the first value of a name wins."""
    out: dict[str, str] = {}
    for name, value in parse_qsl(
        raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace"
    ):
        out.setdefault(name, value)
    return out


def raw_query(request: Any) -> bytes:
    """The query string exactly as received (no decoding, no re-encoding)."""
    _, _, query = request.uri.partition(b"?")
    return query


def query_params(request: Any) -> dict[str, str]:
    """The request's query string as pairs."""
    return parse_pairs(raw_query(request))
