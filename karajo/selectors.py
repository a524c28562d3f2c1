"""
What one value of a webhook request is, by a selector, and the trigger
rules that compare such values (docs/configuration.md, "Trigger rules"
and "Payload variables").

A selector names one value of a request: C{header:Header-Name} (the
header, its name in any case), C{form:field} (a field of a urlencoded
body), or a dotted path into a JSON object body (C{ref},
C{repository.full_name}, C{commits.0.id}: an integer step indexes an
array).  Whether a body is JSON or a form is decided by its bytes
(L{karajo.payload}), never by the unsigned C{Content-Type}.

A value is text: a string as it is, a number, boolean or null as its JSON
text, an object or array as compact JSON, and an absent value (no such
header, field or path; a body of the other kind) is the empty string.

Pure (no Twisted): the config checks parse selectors and rules, the API
evaluates rules and the command's environment is built from selectors.
Everything here takes untrusted bytes and never raises on them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from karajo.payload import json_object, looks_like_json_object, parse_pairs

__all__ = [
    "OPERATORS",
    "Request",
    "Rule",
    "Selector",
    "SelectorError",
    "first_failed",
    "json_text",
    "parse_rule",
    "parse_selector",
    "walk",
]

#: The operators of a rule: equal, not equal, Python regular expression
#: searched anywhere in the value.
OPERATORS = ("==", "!=", "~")

#: An HTTP header name (RFC 9110 token).
_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER = "header:"
_FORM = "form:"


class SelectorError(ValueError):
    """A selector or rule that cannot be used; the message says why."""


@frozen
class Request:
    """
    What a selector reads: the request's headers (name -> value, as
    L{karajo.model.TriggerRequest} holds them) and its raw body.  The body
    is parsed at most once per request, whatever the number of selectors.
    """

    headers: Mapping[str, str] = field(factory=dict)
    body: bytes = b""
    _parsed: dict[str, Any] = field(factory=dict, init=False, eq=False, repr=False)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def document(self) -> Any:
        """The body as a JSON object, or None (read once)."""
        if "json" not in self._parsed:
            self._parsed["json"] = json_object(self.body)
        return self._parsed["json"]

    def form(self) -> dict[str, str]:
        """The body's urlencoded fields; none when the body is a JSON object."""
        if "form" not in self._parsed:
            self._parsed["form"] = (
                {} if looks_like_json_object(self.body) else parse_pairs(self.body)
            )
        return self._parsed["form"]


@frozen
class Selector:
    """One parsed selector: C{kind} is C{header}, C{form} or C{json}."""

    kind: str
    name: str = ""
    path: tuple[str, ...] = ()
    text: str = ""

    def value(self, request: Request) -> str:
        """The selected value as text; absent is the empty string."""
        if self.kind == "header":
            return request.header(self.name) or ""
        if self.kind == "form":
            return request.form().get(self.name, "")
        found, value = walk(request.document(), self.path)
        return json_text(value) if found else ""

    def __str__(self) -> str:
        return self.text


def parse_selector(text: str) -> Selector:
    """
    @raise SelectorError: an empty selector, a header name that is not a
        token, an empty form field, a JSON path with an empty step or
        with whitespace.
    """
    if text.startswith(_HEADER):
        name = text[len(_HEADER):]
        if not _HEADER_TOKEN.fullmatch(name):
            raise SelectorError(f"{text!r}: {name!r} is not a header name")
        return Selector("header", name=name, text=text)
    if text.startswith(_FORM):
        name = text[len(_FORM):]
        if not name:
            raise SelectorError(f"{text!r}: form: needs a field name")
        return Selector("form", name=name, text=text)
    if not text:
        raise SelectorError("empty selector")
    if any(c.isspace() for c in text):
        raise SelectorError(f"{text!r}: a selector has no whitespace")
    steps = tuple(text.split("."))
    if "" in steps:
        raise SelectorError(f"{text!r}: a JSON path has an empty step")
    return Selector("json", path=steps, text=text)


def walk(document: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    """
    Follow C{path} into a parsed JSON value: a step is an object's member,
    or, on an array, an index (digits only, from 0).  Returns whether the
    path exists and the value there.
    """
    current = document
    for step in path:
        if isinstance(current, dict):
            if step not in current:
                return False, None
            current = current[step]
        elif isinstance(current, list):
            if not (step.isascii() and step.isdigit()):
                return False, None
            index = int(step)
            if index >= len(current):
                return False, None
            current = current[index]
        else:
            return False, None
    return True, current


#: C{json.dumps(value, separators=(",", ":"), ensure_ascii=False)}
#: without a new encoder made per call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_text(value: Any) -> str:
    """
    A string as it is; anything else as compact JSON text.  An integer,
    a boolean and null are spelled directly (as C{json} spells them): a
    rule or payload variable reads one on every request.
    """
    if isinstance(value, str):
        return value
    kind = type(value)
    try:
        if kind is int:
            return int.__repr__(value)
        if kind is bool:
            return "true" if value else "false"
        if value is None:
            return "null"
        return _encode(value)
    except (ValueError, RecursionError):
        return ""


@frozen
class Rule:
    """C{SELECTOR OP VALUE}: one trigger rule, as written (L{__str__})."""

    selector: Selector
    op: str
    value: str
    pattern: re.Pattern[str] | None = field(default=None, eq=False)

    def holds(self, request: Request) -> bool:
        actual = self.selector.value(request)
        if self.op == "==":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        return self.pattern.search(actual) is not None

    def __str__(self) -> str:
        return f"{self.selector} {self.op} {self.value}".rstrip()


def parse_rule(text: str) -> Rule:
    """
    C{SELECTOR OP VALUE}, separated by whitespace; the value is the rest
    of the text (it may hold spaces; it may be empty, which an absent
    value equals).

    @raise SelectorError: no operator, an unknown one, a bad selector or
        regular expression.
    """
    parts = text.strip().split(None, 2)
    if len(parts) < 2:
        raise SelectorError(f"{text.strip()!r}: expected SELECTOR OP VALUE")
    selector = parse_selector(parts[0])
    op = parts[1]
    if op not in OPERATORS:
        raise SelectorError(f"{op!r} is not an operator (one of {', '.join(OPERATORS)})")
    value = parts[2] if len(parts) > 2 else ""
    pattern = None
    if op == "~":
        try:
            pattern = re.compile(value)
        except re.error as e:
            raise SelectorError(f"{value!r} is not a regular expression: {e}") from None
    return Rule(selector, op, value, pattern)


def first_failed(rules: tuple[Rule, ...], request: Request) -> Rule | None:
    """The first rule that does not hold for C{request}, or None when all hold."""
    for rule in rules:
        if not rule.holds(request):
            return rule
    return None
