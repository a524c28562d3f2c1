"""L{karajo.logtext.client_text}: client text in a log line is printable ASCII, cut short."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from karajo.logtext import LIMIT, client_text


class ClientTextTests(SynchronousTestCase):
    def test_terminal_escapes_and_newlines(self) -> None:
        """An escape sequence or a newline cannot reach the log raw."""
        self.assertEqual(client_text(b"evil\x1b[31m\r\nfake"), "evil\\x1b[31m\\r\\nfake")
        self.assertEqual(client_text("a\u202eb\\"), "a\\u202eb\\\\")

    def test_cut_short(self) -> None:
        """Long text is cut to the limit and marked as cut."""
        self.assertEqual(client_text(b"x" * 1000), "x" * LIMIT + "...")
        self.assertEqual(client_text("abcdef", 3), "abc...")
        self.assertEqual(client_text("abc", 3), "abc")
        self.assertEqual(client_text(None), "")

    @given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
    def test_always_printable_ascii(self, value: bytes | str) -> None:
        text = client_text(value)
        self.assertTrue(text.isascii() and (text == "" or text.isprintable()), text)
