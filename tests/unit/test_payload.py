"""
Tests for L{karajo.payload}: what the bytes of a request say.

The signature is checked on these same bytes, so the reader must be total
(never raise on untrusted input) and decide by the bytes alone.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from karajo.payload import json_object, parse_pairs, payload_fields


class ParsePairsTests(SynchronousTestCase):
    def test_first_value_wins(self) -> None:
        """As Go's url.Values.Get: the first value of a repeated name."""
        self.assertEqual(parse_pairs(b"a=1&a=2&b=3"), {"a": "1", "b": "3"})

    def test_blank_values_kept(self) -> None:
        """C{b=} and a bare C{c} are names with empty values, not dropped."""
        self.assertEqual(parse_pairs(b"b=&c"), {"b": "", "c": ""})

    def test_decoding(self) -> None:
        """Percent-escapes are UTF-8, C{+} is a space."""
        self.assertEqual(parse_pairs(b"e=%C3%A9&g=a+b"), {"e": "\u00e9", "g": "a b"})

    def test_never_raises(self) -> None:
        """
        Bad escapes stay as written, escapes of invalid UTF-8 become U+FFFD,
        and raw non-ASCII bytes are read as latin-1.
        """
        self.assertEqual(
            parse_pairs(b"d=%zz&f=%e9&\xe9=x\xff"),
            {"d": "%zz", "f": "\ufffd", "\u00e9": "x\u00ff"},
        )

    def test_empty(self) -> None:
        self.assertEqual(parse_pairs(b""), {})


class JsonObjectTests(SynchronousTestCase):
    def test_object(self) -> None:
        self.assertEqual(json_object(b'{"a": [1, 2]}'), {"a": [1, 2]})

    def test_bom_and_whitespace(self) -> None:
        """A UTF-8 byte order mark and leading whitespace are allowed."""
        self.assertEqual(json_object(b'\xef\xbb\xbf {"a":1}'), {"a": 1})
        self.assertEqual(json_object(b' \n\t{"a":1}'), {"a": 1})

    def test_not_an_object(self) -> None:
        """Arrays, scalars, broken or trailing text: None."""
        for body in (b"[1]", b"1", b'"x"', b"null", b"{bad", b'{"a":1} x', b"", b"a=1"):
            self.assertIsNone(json_object(body), body)

    def test_deep_nesting(self) -> None:
        """Nesting deeper than the parser's recursion limit is None, not an exception."""
        self.assertIsNone(json_object(b'{"a":' * 100_000))
        self.assertIsNone(json_object(b"{" + b"[" * 100_000 + b"]" * 100_000 + b"}"))


class PayloadFieldsTests(SynchronousTestCase):
    def test_json_body(self) -> None:
        self.assertEqual(
            payload_fields(b'{"_karajo_epoch": 1700000000, "x": "y"}'),
            {"_karajo_epoch": 1700000000, "x": "y"},
        )

    def test_urlencoded_body(self) -> None:
        self.assertEqual(
            payload_fields(b"_karajo_epoch=1700000000&x=y"),
            {"_karajo_epoch": "1700000000", "x": "y"},
        )

    def test_other_json_read_as_pairs(self) -> None:
        """
        A body that is JSON but not an object is read as urlencoded, like any
        other non-object: one name, the whole body, with no value.
        """
        self.assertEqual(payload_fields(b"[1]"), {"[1]": ""})
        self.assertEqual(payload_fields(b'{"a":1} trailing'), {'{"a":1} trailing': ""})

    def test_empty_and_none(self) -> None:
        self.assertEqual(payload_fields(b""), {})
        self.assertEqual(payload_fields(None), {})  # type: ignore[arg-type]

    def test_byte_containers(self) -> None:
        """A bytearray or memoryview body reads like bytes."""
        self.assertEqual(payload_fields(bytearray(b'{"x":2}')), {"x": 2})
        self.assertEqual(payload_fields(memoryview(b"x=2")), {"x": "2"})
