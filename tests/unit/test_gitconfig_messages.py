"""
The exact words and line of every syntax error of L{karajo.gitconfig}:
an operator reads them as C{FILE:LINE: reason}, and the other tests only
look for a fragment of each.  Written against C{parse}, C{parse_int} and
C{parse_bool} only (the reader's internals may change).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from karajo.errors import ConfigError
from karajo.gitconfig import Entry, parse, parse_bool, parse_int


class SyntaxMessageTests(SynchronousTestCase):
    def assertMessage(self, text: str, message: str) -> None:
        error = self.assertRaises(ConfigError, parse, text, "f.conf")
        self.assertEqual(str(error), message)

    def test_nul(self) -> None:
        """A NUL anywhere, even first, is reported at the line of the first one."""
        self.assertMessage("\0[a]\n", "f.conf:1: NUL character in file")
        self.assertMessage("\n\0", "f.conf:2: NUL character in file")
        self.assertMessage("[a]\n\nk=1\0\n\0\n", "f.conf:3: NUL character in file")

    def test_unexpected_character(self) -> None:
        self.assertMessage(
            "[a]\n!",
            "f.conf:2: unexpected character '!' (expected a [section], a key or a comment)",
        )

    def test_headers(self) -> None:
        self.assertMessage("[a", "f.conf:1: section header has no closing ']'")
        self.assertMessage("[]", "f.conf:1: empty section name")
        self.assertMessage(
            "[a x]", "f.conf:1: bad section header: expected ']' or a quoted subsection name"
        )
        self.assertMessage('[a "x"', "f.conf:1: expected ']' after subsection name")

    def test_unterminated_subsection(self) -> None:
        """At the end of the line, and after a trailing backslash."""
        self.assertMessage('[a "x', "f.conf:1: unterminated subsection name")
        self.assertMessage('[a "x\n"]', "f.conf:1: unterminated subsection name")
        self.assertMessage('[a "x\\', "f.conf:1: unterminated subsection name")
        self.assertMessage('[a "x\\\n"]', "f.conf:1: unterminated subsection name")

    def test_key_outside_section(self) -> None:
        self.assertMessage("\nk = 1", "f.conf:2: key outside of any [section]")

    def test_unterminated_quote(self) -> None:
        self.assertMessage('[a]\nk = "abc', "f.conf:2: unterminated quote in value")


class ValueMessageTests(SynchronousTestCase):
    def test_int(self) -> None:
        """A missing value says so; a bad one is quoted."""
        for value, shown in ((None, "no value"), ("x", "'x'"), ("", "''"), ("1 0", "'1 0'")):
            error = self.assertRaises(ConfigError, parse_int, Entry("n", value, "f.conf", 3))
            self.assertEqual(
                str(error), f"f.conf:3: n: bad integer value {shown} (expected a decimal integer)"
            )

    def test_bool(self) -> None:
        error = self.assertRaises(ConfigError, parse_bool, Entry("b", "maybe", "f.conf", 4))
        self.assertEqual(
            str(error),
            "f.conf:4: b: bad boolean value 'maybe' (expected true/false, yes/no, on/off or 1/0)",
        )
