"""
A job's description on the dashboard: simple HTML, kept safe.

The description comes from the config and may hold simple markup.  It goes
through C{nh3} (ammonia) with a small allow-list, and the sanitized HTML is
then parsed into L{twisted.web.template} tags (again keeping only the
allow-listed tags and http/https links), so even a sanitizer bug cannot put
raw markup in the page: the template escapes every text and attribute.
"""

from __future__ import annotations

import html.parser
import re
from typing import Any

from twisted.web.template import Tag

__all__ = ["ALLOWED_TAGS", "sanitize_description", "text_of"]

ALLOWED_TAGS = frozenset({"b", "i", "em", "strong", "code", "a", "br", "p", "ul", "ol", "li"})
_VOID = frozenset({"br"})
_SAFE_HREF = re.compile(r"\Ahttps?://", re.IGNORECASE)


class _DescriptionParser(html.parser.HTMLParser):
    """Turn (already sanitized) HTML into template tags, allow-list only."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Tag("")
        self._stack: list[Tag] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            return
        element = Tag(tag)
        if tag == "a":
            href = dict(attrs).get("href") or ""
            if _SAFE_HREF.match(href.strip()):
                element.attributes["href"] = href.strip()
                element.attributes["rel"] = "noopener noreferrer nofollow"
        self._stack[-1].children.append(element)
        if tag not in _VOID:
            self._stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in ALLOWED_TAGS and tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in ALLOWED_TAGS or tag in _VOID:
            return
        for depth in range(len(self._stack) - 1, 0, -1):
            if self._stack[depth].tagName == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(data)


def sanitize_description(text: str) -> Tag:
    """
    A description as template tags: b, i, em, strong, code, a (http/https
    only), br, p, ul, ol, li are kept; other tags are dropped (their text
    stays, except the content of script and style); all text is escaped
    when the page is rendered.
    """
    import nh3

    clean = nh3.clean(
        text or "",
        tags=set(ALLOWED_TAGS),
        attributes={"a": {"href"}},
        url_schemes={"http", "https"},
        link_rel=None,
        strip_comments=True,
    )
    parser = _DescriptionParser()
    parser.feed(clean)
    parser.close()
    return parser.root


def text_of(node: Any) -> str:
    """The text inside a tag tree (what the dashboard's filter searches)."""
    if isinstance(node, str):
        return node
    return "".join(text_of(child) for child in getattr(node, "children", ()))
