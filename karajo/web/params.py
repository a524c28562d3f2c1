"""
Request parameters, read the one way every page and API route reads them:
the query string, a management call's body, integer parameters.

The raw query string and the raw body are kept as received, since
signatures are checked over their exact bytes; the pairs and fields in
them are decoded by L{karajo.payload} (the first value of a name wins),
the same reader the replay guard uses.  A malformed parameter is an
L{InvalidParameter}, which the API answers with C{400
ERR_INVALID_PARAMETER}.
"""

from __future__ import annotations

import re
from typing import Any, overload

from karajo.payload import json_object, parse_pairs, payload_fields
from karajo.web.envelope import dumps
from karajo.web.errors import InvalidParameter

__all__ = ["body", "body_params", "int_param", "parse_pairs", "query_params", "raw_query"]

_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)


def raw_query(request: Any) -> bytes:
    """The query string exactly as received (no decoding, no re-encoding)."""
    _, _, query = request.uri.partition(b"?")
    return query


def query_params(request: Any) -> dict[str, str]:
    """The request's query string as pairs."""
    return parse_pairs(raw_query(request))


@overload
def body(request: Any) -> bytes: ...
@overload
def body(request: Any, limit: int) -> bytes | None: ...
def body(request: Any, limit: int | None = None) -> bytes | None:
    """
    The raw request body (the site's size cap is L{karajo.web.limits}), or
    C{None} when it is longer than C{limit} bytes: a route with a smaller
    cap reads no more than C{limit + 1} bytes of it.
    """
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    if limit is None:
        return content.read()
    data = content.read(limit + 1)
    return None if len(data) > limit else data


def _media_type(request: Any) -> bytes:
    value = request.getHeader(b"content-type") or b""
    return value.split(b";", 1)[0].strip().lower()


def body_params(request: Any, raw: bytes) -> dict[str, str]:
    """
    A management call's signed body (a form, or a JSON object, which some
    clients send) as strings; the bytes decide which, as for the replay
    guard (L{payload_fields}).
    """
    if _media_type(request) == b"application/json" and json_object(raw) is None:
        raise InvalidParameter("the body is not a JSON object")
    return {
        str(k): (v if isinstance(v, str) else dumps(v))
        for k, v in payload_fields(raw).items()
        if not isinstance(v, (dict, list))
    }


def int_param(value: str | None, name: str, minimum: int, default: int | None = None) -> int:
    """
    A decimal parameter of at most 18 digits, at least C{minimum};
    C{default} when absent or empty (missing is an error without one).
    """
    if value is None or value == "":
        if default is not None:
            return default
        raise InvalidParameter(f"missing {name}")
    if not _DIGITS.fullmatch(value) or int(value) < minimum:
        kind = "a positive integer" if minimum > 0 else "a non-negative integer"
        raise InvalidParameter(f"{name} must be {kind}")
    return int(value)
