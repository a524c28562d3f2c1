"""
Tests for L{karajo.gitconfig}.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from karajo.errors import ConfigError
from karajo.gitconfig import Entry, Section, parse, parse_bool, parse_int


def _values(text: str) -> list[str | None]:
    """The values of every entry of a one-section text, in order."""
    [section] = parse(text, "f.conf")
    return [entry.value for entry in section.entries]


def _value(line: str) -> str | None:
    """The value of one entry line put under a section header."""
    [value] = _values("[s]\n" + line)
    return value


class ParseTests(SynchronousTestCase):
    """
    Tests for L{parse} on well-formed text.
    """

    def test_empty(self) -> None:
        """
        Empty text, blank lines and comment lines give no sections.
        """
        self.assertEqual(parse("", "f"), [])
        self.assertEqual(parse("\n  \n# one\n\t; two\n", "f"), [])

    def test_sections(self) -> None:
        """
        Each header gives a L{Section} in file order, with its name lower-cased
        and the file and line of the header.
        """
        sections = parse("[KaraJo]\nname = x\n\n[Notif]\n", "main.conf")
        self.assertEqual(
            sections,
            [
                Section(
                    "karajo",
                    None,
                    "main.conf",
                    1,
                    (Entry("name", "x", "main.conf", 2),),
                ),
                Section("notif", None, "main.conf", 4, ()),
            ],
        )

    def test_repeatedHeadersNotMerged(self) -> None:
        """
        A header that appears twice gives two sections; merging is the
        caller's decision.
        """
        sections = parse('[job "a"]\nk = 1\n[job "a"]\nk = 2\n', "f")
        self.assertEqual([s.line for s in sections], [1, 3])
        self.assertEqual([s.entries[0].value for s in sections], ["1", "2"])

    def test_subsectionCaseAndSpaces(self) -> None:
        """
        A subsection keeps its case and its spaces; the section name is still
        lower-cased.
        """
        [section] = parse('[JOB "Test job  Success"]\n', "f")
        self.assertEqual(section.name, "job")
        self.assertEqual(section.subsection, "Test job  Success")

    def test_dottedSection(self) -> None:
        """
        C{[job.http "x"]} is section C{job.http}, subsection C{x}.
        """
        [section] = parse('[job.http "x"]\n', "f")
        self.assertEqual((section.name, section.subsection), ("job.http", "x"))

    def test_subsectionEscapes(self) -> None:
        """
        In a subsection C{\\"} and C{\\\\} escape, and a backslash before any
        other character is dropped, as git does.
        """
        [section] = parse('[job "a \\" b \\\\ c \\t"]', "f")
        self.assertEqual(section.subsection, 'a " b \\ c t')

    def test_whitespaceBeforeSubsection(self) -> None:
        """
        Any amount of blank space may separate the name from the subsection.
        """
        [section] = parse('[job \t "x"]', "f")
        self.assertEqual(section.subsection, "x")

    def test_commentAfterHeader(self) -> None:
        """
        A comment may follow a header on the same line.
        """
        sections = parse('[a] # one\n[b "x"] ; two\n', "f")
        self.assertEqual(
            [(s.name, s.entries) for s in sections], [("a", ()), ("b", ())]
        )

    def test_keyAfterHeader(self) -> None:
        """
        As in git, a key may follow a header on the same line.
        """
        [section] = parse("[a] k = v\n", "f")
        self.assertEqual(section.entries, (Entry("k", "v", "f", 1),))

    def test_keysCaseInsensitive(self) -> None:
        """
        Keys are lower-cased, so that the loader finds them in any case.
        """
        [section] = parse("[a]\nHTTP_Url = x\n", "f")
        self.assertEqual(section.entries, (Entry("http_url", "x", "f", 2),))

    def test_underscoreAndDashInKey(self) -> None:
        """
        Keys may contain digits, C{-} and C{_} (the latter beyond git, for
        karajo's key names).
        """
        [section] = parse("[a]\nnotif_on-success2 = x\n", "f")
        self.assertEqual(section.entries[0].key, "notif_on-success2")

    def test_multiValued(self) -> None:
        """
        A repeated key keeps every value, in file order, with its own line.
        """
        [section] = parse("[a]\ncommand = one\nx = y\nCommand = two\n", "f")
        self.assertEqual(
            section.entries,
            (
                Entry("command", "one", "f", 2),
                Entry("x", "y", "f", 3),
                Entry("command", "two", "f", 4),
            ),
        )

    def test_noEntries(self) -> None:
        """
        A header with nothing under it is a section without entries.
        """
        [section] = parse("[a]\n", "f")
        self.assertEqual(section.entries, ())

    def test_bareKey(self) -> None:
        """
        A key without C{=} has the value C{None}, which L{parse_bool} reads as
        true; a comment may follow it.
        """
        self.assertEqual(_values("[a]\nhttp_insecure\nb ; c\nd\t# e"), [None] * 3)
        self.assertTrue(parse_bool(Entry("http_insecure", None, "f", 2)))

    def test_emptyValue(self) -> None:
        """
        A key with C{=} and nothing after it has the empty string as value.
        """
        self.assertEqual(_values("[a]\nk =\nl = # c\nm=\"\""), ["", "", ""])

    def test_whitespace(self) -> None:
        """
        Blank space around C{=} and around the value is dropped; inside the
        value each unquoted space, TAB or lone CR is one space, as git reads
        it.
        """
        self.assertEqual(_value("  name\t=   My \t server  \t"), "My   server")
        self.assertEqual(_value("k = a\rb\r"), "a b")

    def test_gitInternalWhitespace(self) -> None:
        """
        git's own t1300 cases ("internal whitespace" and its neighbours).
        """
        cases = {
            "sparse = big \t\t blue": "big    blue",
            "sparseAndTail = big \t\t blue ": "big    blue",
            'sparseAndTailQuoted = "big \t\t blue "': "big \t\t blue ",
            "sparseAndBiggerTail = big \t\t blue \t \t": "big    blue",
            'sparseAndBiggerTailQuoted = "big \t\t blue \t \t"': "big \t\t blue \t \t",
            "annotated = big blue\t# to be discarded": "big blue",
        }
        for line, expected in cases.items():
            self.assertEqual(_value(line), expected, line)

    def test_quotedWhitespaceKept(self) -> None:
        """
        Inside quotes a TAB or a lone CR stays as written.
        """
        self.assertEqual(_value('k = "a\t\rb" \t'), "a\t\rb")

    def test_otherControlsAreNotSpace(self) -> None:
        """
        A vertical tab or a form feed is no white space to git: it is kept
        in a value, even at its end, and cannot start a line.
        """
        self.assertEqual(_value("k = a\vb\f"), "a\vb\f")
        error = self.assertRaises(ConfigError, parse, "[a]\n\fk = v\n", "f")
        self.assertEqual(error.line, 2)

    def test_quotes(self) -> None:
        """
        Double quotes are removed and protect C{#}, C{;} and blank space at
        either end of the value.
        """
        self.assertEqual(_value('command = echo "a;b"'), "echo a;b")
        self.assertEqual(_value('command = echo "#1"'), "echo #1")
        self.assertEqual(_value('k = "  x  "'), "  x  ")
        self.assertEqual(_value('k = a" b "c'), "a b c")

    def test_inlineComments(self) -> None:
        """
        Outside quotes, C{#} and C{;} start a comment that ends the value.
        """
        self.assertEqual(_value("command = echo a # hi"), "echo a")
        self.assertEqual(_value("command = echo a;b"), "echo a")
        self.assertEqual(_value('k = "a" ; "b'), "a")

    def test_escapes(self) -> None:
        """
        C{\\"}, C{\\\\}, C{\\n}, C{\\t} and C{\\b} are escapes both inside
        and outside quotes.
        """
        expected = 'q"s\\n\nt\tb\b'
        self.assertEqual(_value('k = q\\"s\\\\n\\nt\\tb\\b'), expected)
        self.assertEqual(_value('k = "q\\"s\\\\n\\nt\\tb\\b"'), expected)

    def test_escapedSpaceIsKept(self) -> None:
        """
        An escaped tab at the end of a value is not trimmed.
        """
        self.assertEqual(_value("k = a\\t  "), "a\t")

    def test_continuation(self) -> None:
        """
        A backslash at the end of a line joins the next line to the value,
        and the entry keeps the line it started on.
        """
        [section] = parse("[a]\nk = one \\\ntwo \\\n three\nl = x\n", "f")
        self.assertEqual(
            section.entries,
            (Entry("k", "one two  three", "f", 2), Entry("l", "x", "f", 5)),
        )

    def test_continuationInQuotes(self) -> None:
        """
        A continuation also works inside quotes, which then span lines.
        """
        self.assertEqual(_values('[a]\nk = "one \\\n  two" three'), ["one   two three"])

    def test_backslashAtEndOfFile(self) -> None:
        """
        A backslash that ends the file continues onto nothing.
        """
        self.assertEqual(_value("k = a\\"), "a")

    def test_crlf(self) -> None:
        """
        C{\\r\\n} line endings are read like C{\\n}, including after a
        continuation backslash.
        """
        [section] = parse("[a]\r\nk = v  \r\nl = x\\\r\ny\r\n", "f")
        self.assertEqual(
            section.entries, (Entry("k", "v", "f", 2), Entry("l", "xy", "f", 3))
        )

    def test_bom(self) -> None:
        """
        A UTF-8 byte order mark at the start is ignored.
        """
        [section] = parse("\ufeff[a]\nk = v\n", "f")
        self.assertEqual((section.name, section.line), ("a", 1))

    def test_nonAsciiValue(self) -> None:
        """
        Values may hold any non-ASCII text, including a no-break space,
        which is not blank space to git.
        """
        self.assertEqual(_value("k = é\u00a0"), "é\u00a0")


class ParseErrorTests(SynchronousTestCase):
    """
    Tests for L{parse} on malformed text: every problem is a L{ConfigError}
    naming the file and line.
    """

    def assertError(self, text: str, line: int, reason: str) -> None:
        """
        Parsing C{text} fails at C{line} with a reason that contains C{reason}.
        """
        error = self.assertRaises(ConfigError, parse, text, "bad.conf")
        self.assertEqual((error.filename, error.line), ("bad.conf", line))
        self.assertIn(reason, error.reason)

    def test_message(self) -> None:
        """
        The error reads C{FILE:LINE: reason}.
        """
        error = self.assertRaises(ConfigError, parse, "[a]\n!", "x.conf")
        self.assertTrue(str(error).startswith("x.conf:2: "), str(error))

    def test_entryBeforeSection(self) -> None:
        """
        A key before any header is an error, also a bare key.
        """
        self.assertError("# c\n\nname = x\n[a]\n", 3, "outside of any [section]")
        self.assertError("flag\n", 1, "outside of any [section]")

    def test_invalidEscape(self) -> None:
        """
        A backslash before any character but C{"}, C{\\}, C{n}, C{t}, C{b}
        or a line break is an invalid escape, inside quotes or not.
        """
        self.assertError("[a]\nk = C:\\dir\n", 2, "invalid escape")
        self.assertError('[a]\nk = x\\\n "\\0"\n', 3, "invalid escape")

    def test_unterminatedQuote(self) -> None:
        """
        A quote still open at the end of the value is an error on the
        value's last line.
        """
        self.assertError('[a]\nk = "abc\nl = x"\n', 2, "unterminated quote")
        self.assertError('[a]\nk = "abc\\\ndef\n', 3, "unterminated quote")
        self.assertError('[a]\nk = "abc', 2, "unterminated quote")

    def test_badHeaders(self) -> None:
        """
        Headers that git refuses are errors on their line.
        """
        cases = [
            ("[a", "no closing ']'"),
            ("[a\nk = v", "no closing ']'"),
            ("[]", "empty section name"),
            ('[ "x"]', "empty section name"),
            ("[a b]", "quoted subsection"),
            ("[ a ]", "quoted subsection"),
            ("[a ]", "quoted subsection"),
            ("[a_b]", "invalid character '_'"),
            ("[a=b]", "invalid character '='"),
            ('[a"x"]', "invalid character '\"'"),
            ('[a "x" ]', "expected ']'"),
            ('[a "x"', "expected ']'"),
            ('[a "x', "unterminated subsection"),
            ('[a "x\\', "unterminated subsection"),
            ('[a "x\ny"]', "unterminated subsection"),
        ]
        for header, reason in cases:
            with self.subTest(header=header):
                self.assertError(f"# one\n\n{header}\n", 3, reason)

    def test_badKeys(self) -> None:
        """
        A key must start with a letter and contain only letters, digits,
        C{-} and C{_}, followed by C{=}, a comment or the end of the line.
        """
        cases = [
            ("1key = x", "unexpected character '1'"),
            ("_key = x", "unexpected character '_'"),
            ("-key = x", "unexpected character '-'"),
            ("clé = x", "invalid character 'é'"),
            ("http.url = x", "invalid character '.'"),
            ("two words = x", "invalid character 'w'"),
            ("key : x", "invalid character ':'"),
            ("= x", "unexpected character '='"),
            ('"key" = x', "unexpected character '\"'"),
            ("]", "unexpected character ']'"),
        ]
        for line, reason in cases:
            with self.subTest(line=line):
                self.assertError(f"[a]\nk = v\n{line}\nl = w\n", 3, reason)

    def test_nul(self) -> None:
        """
        A NUL character is refused wherever it is, since no command or
        header can carry it.
        """
        self.assertError("[a]\n\nk = \0\n", 3, "NUL")
        self.assertError("[a]\n# \0\n", 2, "NUL")

    def test_lineAfterContinuation(self) -> None:
        """
        Line numbers stay right after values that span several lines.
        """
        self.assertError("[a]\nk = a\\\nb\\\nc\n\n!\n", 6, "unexpected")


class ParseBoolTests(SynchronousTestCase):
    """
    Tests for L{parse_bool}.
    """

    def test_true(self) -> None:
        """
        A bare key, true, yes, on and 1, in any case, are true.
        """
        for value in [None, "true", "TRUE", "yes", "Yes", "on", "ON", "1"]:
            with self.subTest(value=value):
                self.assertIs(parse_bool(Entry("k", value, "f", 1)), True)

    def test_false(self) -> None:
        """
        false, no, off, 0 and the empty string, in any case, are false.
        """
        for value in ["false", "False", "no", "NO", "off", "Off", "0", ""]:
            with self.subTest(value=value):
                self.assertIs(parse_bool(Entry("k", value, "f", 1)), False)

    def test_bad(self) -> None:
        """
        Anything else is a L{ConfigError} at the entry's file and line that
        names the key.
        """
        for value in ["2", "y", "enabled", " true", "truee"]:
            with self.subTest(value=value):
                error = self.assertRaises(
                    ConfigError, parse_bool, Entry("http_insecure", value, "j.conf", 7)
                )
                self.assertEqual((error.filename, error.line), ("j.conf", 7))
                self.assertIn("http_insecure: bad boolean value", error.reason)

    def test_fromParse(self) -> None:
        """
        Booleans read back from a file work as expected.
        """
        [section] = parse("[a]\nx\ny = Off\nz = \"yes\" # c\n", "f")
        self.assertEqual([parse_bool(e) for e in section.entries], [True, False, True])


class ParseIntTests(SynchronousTestCase):
    """
    Tests for L{parse_int}.
    """

    def test_valid(self) -> None:
        """
        Decimal integers, with an optional sign, are read.
        """
        for value, expected in [("0", 0), ("5", 5), ("007", 7), ("-3", -3), ("+4", 4)]:
            with self.subTest(value=value):
                self.assertEqual(parse_int(Entry("k", value, "f", 1)), expected)

    def test_invalid(self) -> None:
        """
        Anything else, including a bare key and what C{int()} alone would
        accept, is a L{ConfigError} at the entry's place.
        """
        for value in [None, "", "x", "1.5", "1_000", "0x10", " 1", "1k", "٣", "-"]:
            with self.subTest(value=value):
                error = self.assertRaises(
                    ConfigError, parse_int, Entry("log_retention", value, "j.conf", 4)
                )
                self.assertEqual((error.filename, error.line), ("j.conf", 4))
                self.assertIn("log_retention: bad integer value", error.reason)


_FRAGMENTS = st.sampled_from(
    ["[", "]", '"', "\\", "=", "#", ";", "\n", "\r\n", " ", "\t", "a", "B", "z9",
     "_", "-", ".", "job", "\ufeff", "\0", "é", "n", "t"]
)


class ParsePropertyTests(SynchronousTestCase):
    """
    Whatever the input, L{parse} returns sections or raises L{ConfigError}
    with a line inside the text.
    """

    def check(self, text: str) -> None:
        """
        C{text} parses, or fails with a L{ConfigError} whose line is between
        1 and the number of line breaks plus one.
        """
        last_line = text.count("\n") + 1
        try:
            sections = parse(text, "p.conf")
        except ConfigError as error:
            self.assertIsInstance(error.line, int)
            self.assertTrue(1 <= error.line <= last_line, (error.line, text))
            self.assertEqual(error.filename, "p.conf")
            return
        for section in sections:
            self.assertTrue(section.name)
            self.assertEqual(section.name, section.name.lower())
            self.assertTrue(1 <= section.line <= last_line)
            for entry in section.entries:
                self.assertTrue(1 <= entry.line <= last_line)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.text())
    def test_anyText(self, text: str) -> None:
        """
        Arbitrary text never raises anything but L{ConfigError}.
        """
        self.check(text)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.lists(_FRAGMENTS, max_size=40).map("".join))
    def test_configLikeText(self, text: str) -> None:
        """
        Text built from the characters that matter to the syntax never
        raises anything but L{ConfigError}.
        """
        self.check(text)
