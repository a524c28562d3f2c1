"""
A reader for the git-config(1) file syntax.

Configuration files written for the original karajo use git-config syntax
(quotes, backslash escapes, continuation lines, comments after values), which
Python's C{configparser} reads differently; parsing it the way git does keeps
those files working unchanged.  The reader knows nothing about karajo's
keys: it only turns text into sections of entries that remember their file
and line, so that the config loader can point at the exact place of a
mistake.

Like git, a header may be followed on the same line by a key
(C{[job "x"] path = /x}).  The deliberate differences from git are listed
in docs/gitconfig.md: more lenient, key names may contain C{_} and a bare
key may be followed by a comment; stricter, a key before the first section
and a NUL character anywhere are errors.  tests/test_gitconfig_differential.py
compares this reader with C{git config --list} over a generated corpus.
"""

from __future__ import annotations

import re
import string

import attrs

from karajo.errors import ConfigError

# git works on bytes with its own ctype table (git-compat-util.h), so only
# ASCII counts as a letter, and white space is exactly space, TAB and CR
# (a CR not before a line break): a vertical tab, a form feed or a
# non-breaking space is part of a value, not space around it.
_LETTERS = frozenset(string.ascii_letters)
_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
_SECTION_CHARS = frozenset(string.ascii_letters + string.digits + "-.")
_SPACE = frozenset(" \t\r")
_END = ("", "\n")
_COMMENT = frozenset("#;")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "b": "\b"}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})
_DECIMAL = re.compile(r"[-+]?[0-9]+")


@attrs.frozen
class Entry:
    """
    One C{key = value} line, with where it came from so that a bad value
    can be reported as C{FILE:LINE}.
    """

    key: str
    value: str | None
    filename: str
    line: int


@attrs.frozen
class Section:
    """
    One C{[header]} occurrence and the entries under it.

    Repeated headers are not merged here: whether a second C{[job "x"]}
    extends the first or is a duplicate to report is the loader's decision.
    """

    name: str
    subsection: str | None
    filename: str
    line: int
    entries: tuple[Entry, ...]


def parse(text: str, filename: str) -> list[Section]:
    """
    Read a whole file's text.

    @param filename: only used to label entries and errors.
    @raise ConfigError: for any syntax error, and never anything else, so
        that a bad file is a clean start-up error rather than a traceback.
    """
    return _Reader(text, filename).read()


def parse_bool(entry: Entry) -> bool:
    """
    Read a boolean the way git does, so that C{key}, C{key = yes} and
    C{key = 1} all mean true.
    """
    if entry.value is None:
        return True
    value = entry.value.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        entry.filename,
        entry.line,
        f"{entry.key}: bad boolean value {entry.value!r}"
        " (expected true/false, yes/no, on/off or 1/0)",
    )


def parse_int(entry: Entry) -> int:
    """
    Read a plain decimal integer.

    Stricter than C{int()}, which would also take C{1_000}, surrounding
    spaces or non-ASCII digits that an operator never means.
    """
    if entry.value is None or not _DECIMAL.fullmatch(entry.value):
        shown = "no value" if entry.value is None else repr(entry.value)
        raise ConfigError(
            entry.filename,
            entry.line,
            f"{entry.key}: bad integer value {shown} (expected a decimal integer)",
        )
    return int(entry.value)


class _Reader:
    """
    A one-pass scanner modelled on git's own C{config.c}.

    Working on a character stream rather than on lines makes continuation
    lines, quotes that span them and a key on a header's line fall out
    naturally, while C{line} always says where the scanner is.
    """

    def __init__(self, text: str, filename: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        # Same number of line breaks, so line numbers are unchanged.
        self._text = text.replace("\r\n", "\n")
        self._filename = filename
        self._pos = 0
        self._line = 1
        self._sections: list[Section] = []
        self._header: tuple[str, str | None, int] | None = None
        self._entries: list[Entry] = []

    def _error(self, reason: str, line: int | None = None) -> ConfigError:
        return ConfigError(
            self._filename, self._line if line is None else line, reason
        )

    def _peek(self) -> str:
        """The next character, or C{""} at the end of the text."""
        return self._text[self._pos : self._pos + 1]

    def _advance(self) -> str:
        char = self._peek()
        self._pos += len(char)
        if char == "\n":
            self._line += 1
        return char

    def read(self) -> list[Section]:
        nul = self._text.find("\0")
        if nul >= 0:
            # A NUL would only fail later and less clearly (in exec()).
            line = self._text.count("\n", 0, nul) + 1
            raise self._error("NUL character in file", line)
        while (char := self._peek()) != "":
            if char == "\n" or char in _SPACE:
                self._advance()
            elif char in _COMMENT:
                self._skip_comment()
            elif char == "[":
                self._read_header()
            elif char in _LETTERS:
                self._read_entry()
            else:
                raise self._error(
                    f"unexpected character {char!r}"
                    " (expected a [section], a key or a comment)"
                )
        self._close_section()
        return self._sections

    def _skip_comment(self) -> None:
        while self._peek() not in _END:
            self._advance()

    def _close_section(self) -> None:
        if self._header is not None:
            name, subsection, line = self._header
            self._sections.append(
                Section(
                    name, subsection, self._filename, line, tuple(self._entries)
                )
            )
        self._entries = []

    def _read_header(self) -> None:
        line = self._line
        self._advance()  # "["
        name = ""
        subsection = None
        while True:
            char = self._peek()
            if char == "]":
                self._advance()
                break
            if char in _END:
                raise self._error("section header has no closing ']'")
            if char in _SPACE:
                subsection = self._read_subsection()
                break
            if char not in _SECTION_CHARS:
                raise self._error(f"invalid character {char!r} in section name")
            name += self._advance().lower()
        if not name:
            raise self._error("empty section name")
        self._close_section()
        self._header = (name, subsection, line)

    def _read_subsection(self) -> str:
        while self._peek() in _SPACE:
            self._advance()
        if self._peek() != '"':
            raise self._error(
                "bad section header: expected ']' or a quoted subsection name"
            )
        self._advance()
        subsection = ""
        while (char := self._peek()) != '"':
            if char in _END:
                raise self._error("unterminated subsection name")
            if char == "\\":
                # As in git: \" and \\ escape, any other backslash is dropped.
                self._advance()
                if self._peek() in _END:
                    raise self._error("unterminated subsection name")
            subsection += self._advance()
        self._advance()  # closing quote
        if self._peek() != "]":
            raise self._error("expected ']' after subsection name")
        self._advance()
        return subsection

    def _read_entry(self) -> None:
        line = self._line
        if self._header is None:
            raise self._error("key outside of any [section]")
        key = ""
        while self._peek() in _KEY_CHARS:
            key += self._advance().lower()
        while self._peek() in (" ", "\t"):
            self._advance()
        char = self._peek()
        value = None
        if char == "=":
            self._advance()
            value = self._read_value()
        elif char in _COMMENT:
            self._skip_comment()
        elif char not in _END:
            raise self._error(
                f"invalid character {char!r} after key {key!r} (expected '=')"
            )
        self._entries.append(Entry(key, value, self._filename, line))

    def _read_value(self) -> str:
        """
        Follow git's C{parse_value}: unquoted white space is trimmed at
        both ends and each unquoted space, TAB or lone CR inside is one
        space (git's t1300: C{big SP TAB TAB SP blue} reads as C{big},
        four spaces, C{blue}); quotes are dropped and keep what they
        enclose as written; escapes and continuation lines work both
        inside and outside quotes.
        """
        value: list[str] = []
        trim_to = 0
        quoted = False
        while (char := self._peek()) not in _END:
            self._advance()
            if char in _SPACE and not quoted:
                if not trim_to:
                    trim_to = len(value)
                if value:
                    value.append(" ")
                continue
            if char in _COMMENT and not quoted:
                self._skip_comment()
                break
            trim_to = 0
            if char == "\\":
                escaped = self._peek()
                if escaped == "\n":
                    self._advance()
                    continue
                if escaped == "":
                    continue
                if escaped not in _ESCAPES:
                    raise self._error(f"invalid escape '\\{escaped}' in value")
                value.append(_ESCAPES[self._advance()])
            elif char == '"':
                quoted = not quoted
            else:
                value.append(char)
        if quoted:
            raise self._error("unterminated quote in value")
        if trim_to:
            del value[trim_to:]
        return "".join(value)
