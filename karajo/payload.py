"""
What the bytes of a request say: urlencoded pairs, or the fields of a
signed body.

One reader for the API, the web UI and the replay guard, so that a
signature check and the code acting on the request never disagree about
what a body holds.
"""

from __future__ import annotations

import codecs
import json
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["json_object", "looks_like_json_object", "parse_pairs", "payload_fields"]


def parse_pairs(raw: bytes) -> dict[str, str]:
    """
    Urlencoded pairs; the first value of a name wins, as Go's
    C{url.Values.Get} does, so scripts written for the original see the
    same answers.  Never raises: latin-1 maps every byte, and bad
    percent-escapes are replaced.
    """
    out: dict[str, str] = {}
    for name, value in parse_qsl(
        raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace"
    ):
        out.setdefault(name, value)
    return out


def looks_like_json_object(body: bytes) -> bool:
    """
    Whether C{body} starts like a JSON object: C{{} after an optional UTF-8
    byte order mark and whitespace.  Such a body is read as JSON or not at
    all (see L{karajo.replay.extract_epoch}).
    """
    # json.loads accepts a UTF-8 byte order mark before the object, too.
    return body.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"{")


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or C{None} when it is not one."""
    if not looks_like_json_object(body):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def payload_fields(body: bytes) -> dict[str, Any]:
    """
    The top-level fields of a signed body: its members when the body is a
    JSON object, else its urlencoded pairs.

    Only the bytes decide, never the C{Content-Type} header: the header is
    not signed, so a replayer could otherwise change what the same signed
    bytes say (hide their epoch, say).  Never raises: the body is untrusted.
    """
    body = bytes(body or b"")
    document = json_object(body)
    return document if document is not None else parse_pairs(body)
