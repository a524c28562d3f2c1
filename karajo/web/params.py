"""
Request parameters, read the one way every page and API route reads them.

The raw query string is kept as received (management calls are signed over
its exact bytes); pairs are decoded by L{karajo.payload.parse_pairs}.
"""

from __future__ import annotations

from typing import Any

from karajo.payload import parse_pairs

__all__ = ["parse_pairs", "query_params", "raw_query"]


def raw_query(request: Any) -> bytes:
    """The query string exactly as received (no decoding, no re-encoding)."""
    _, _, query = request.uri.partition(b"?")
    return query


def query_params(request: Any) -> dict[str, str]:
    """The request's query string as pairs."""
    return parse_pairs(raw_query(request))
