"""
L{karajo.gitconfig} against git itself: a generated corpus of config files
is read by both, and every file both accept must give the same entries.

Files only one side accepts must be one of the deliberate differences listed
in L{DELIBERATE} (documented in docs/gitconfig.md); anything else fails.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from karajo.errors import ConfigError
from karajo.gitconfig import parse

SEED = 20261204
FILES = 2400

_KEY_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_KEY_REST = _KEY_FIRST + "0123456789-"
_WORDS = ["echo", "hello", "true", "false", "yes", "no", "on", "off", "1", "0", "x",
          "/usr/bin/env", "a=b", "--flag", "é", "ü€", "$HOME", "'single'", "[x]", "]",
          "a.b", "http://h/p?q=1&r", "%s", "{}", "\u00a0", "*/5", "@"]
_SPACES = [" ", "  ", "\t", " \t ", "\t\t", "\r", " \r ", "\v", "\f"]
_ESCAPES = ["\\\\", '\\"', "\\n", "\\t", "\\b"]


class _Generator:
    """
    Random config files from one seeded C{random.Random}: mostly well-formed,
    with every lexical feature of git-config, and now and then something git
    or karajo refuses.  C{features} collects the deliberate differences
    (L{STRICTER}, L{LENIENT}) put into the current file.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.features: set[str] = set()

    def value_part(self) -> str:
        """One piece of a value: words, blanks, quotes, escapes, a continuation."""
        rng = self.rng
        kind = rng.choices(
            ["word", "space", "quoted", "escape", "continuation", "comment", "bad_escape",
             "lone_quote"],
            weights=[40, 25, 15, 8, 5, 4, 0.3, 0.3],
        )[0]
        if kind == "word":
            return rng.choice(_WORDS)
        if kind == "space":
            return rng.choice(_SPACES)
        if kind == "quoted":
            inner = "".join(rng.choice(_WORDS + _SPACES + _ESCAPES + ["#", ";", "\\\n"])
                            for _ in range(rng.randint(0, 4)))
            return f'"{inner}"'
        if kind == "escape":
            return rng.choice(_ESCAPES)
        if kind == "continuation":
            return "\\\n" + rng.choice(["", " ", "\t", "  x"])
        if kind == "comment":
            return rng.choice([" #", " ;", "#", ";"]) + rng.choice(["", " c", ' "', " \\"])
        if kind == "bad_escape":
            return rng.choice(["\\x", "\\0", "\\ ", "\\a"])
        return '"'

    def value(self) -> str:
        if self.rng.random() < 0.1:
            return self.rng.choice(["true", "false", "yes", "no", "on", "off", "1", "0", "", "TRUE"])
        return "".join(self.value_part() for _ in range(self.rng.randint(0, 6)))

    def key(self) -> str:
        rng = self.rng
        key = rng.choice(_KEY_FIRST) + "".join(
            rng.choice(_KEY_REST) for _ in range(rng.randint(0, 8))
        )
        if rng.random() < 0.005:
            key += "_x"
            self.features.add("key_underscore")
        return key

    def entry(self) -> str:
        rng = self.rng
        key = self.key()
        if rng.random() < 0.08:  # a bare key: boolean true
            tail = rng.choice(["", " ", "\t", "\t "])
            if rng.random() < 0.05:
                tail += rng.choice(["# c", "; c"])
                self.features.add("bare_key_comment")
            return key + tail
        before = rng.choice(["", " ", "\t", " \t"])
        after = rng.choice(["", " ", "  ", "\t"])
        return f"{key}{before}={after}{self.value()}"

    def subsection(self) -> str:
        pieces = ["job", "Test job", "a b", "x", "MiXeD", "é", '\\"', "\\\\", "\\x",
                  "\t", "#", ";", "[", "]", "=", ".", "\r", " "]
        return "".join(self.rng.choice(pieces) for _ in range(self.rng.randint(0, 4)))

    def header(self) -> str:
        rng = self.rng
        name = rng.choice(["karajo", "Job", "job.http", "notif", "a", "b-c", "core", "X9",
                           "a.b.c", ".", "user"])
        if rng.random() < 0.5:
            header = f'[{name}{rng.choice([" ", "  ", chr(9)])}"{self.subsection()}"]'
        else:
            header = f"[{name}]"
        if rng.random() < 0.01:
            header = rng.choice(["[a", "[]", "[a b]", "[a_b]", '[a "x" ]', '[a "x'])
        tail = rng.choices(
            ["", " # c", " ; c", " " + self.entry(), "\t"], weights=[70, 8, 8, 10, 4]
        )[0]
        return rng.choice(["", " ", "\t"]) + header + tail

    def line(self) -> str:
        rng = self.rng
        kind = rng.choices(
            ["entry", "header", "blank", "comment", "junk"], weights=[60, 12, 10, 15, 0.3]
        )[0]
        if kind == "entry":
            return rng.choice(["", "", "\t", "  ", " \t"]) + self.entry()
        if kind == "header":
            return self.header()
        if kind == "blank":
            return rng.choice(["", " ", "\t", "\r", " \t\r "])
        if kind == "comment":
            body = "".join(rng.choice(_WORDS + _SPACES + ['"', "\\", "[", "="])
                           for _ in range(rng.randint(0, 4)))
            if rng.random() < 0.01:
                body += "\0"
                self.features.add("nul")
            return rng.choice(["", " ", "\t"]) + rng.choice(["#", ";"]) + body
        return rng.choice(["1 = x", "= x", "!", "k : v", "ke y = v", "\vk = v"])

    def file(self) -> tuple[str, frozenset[str]]:
        """
        One file's text and the deliberate differences it contains.
        """
        rng = self.rng
        self.features = set()
        lines = []
        if rng.random() < 0.02:
            lines.append(self.entry())
            self.features.add("key_before_section")
        lines.append(self.header())
        lines += [self.line() for _ in range(rng.randint(0, 12))]
        if rng.random() < 0.3:
            lines.append(self.header())
            lines += [self.line() for _ in range(rng.randint(0, 5))]
        newline = rng.choices(["\n", "\r\n", "mixed"], weights=[80, 12, 8])[0]
        text = ""
        for line in lines:
            text += line + (rng.choice(["\n", "\r\n"]) if newline == "mixed" else newline)
        if rng.random() < 0.1:
            text = text.rstrip("\r\n")  # no final line break
        if rng.random() < 0.03:
            text = "\ufeff" + text
        if rng.random() < 0.02:
            text += "[z]\nk = v\\"  # a backslash right at the end of the file
        return text, frozenset(self.features)


def generate_corpus(seed: int, count: int) -> list[tuple[str, frozenset[str]]]:
    generator = _Generator(seed)
    return [generator.file() for _ in range(count)]


# ---------------------------------------------------------------------------
# Both readers, as lists of (full key, value) like `git config --list`.

Listing = list[tuple[str, str | None]]


def ours(text: str) -> Listing | ConfigError:
    try:
        sections = parse(text, "f")
    except ConfigError as e:
        return e
    result: Listing = []
    for section in sections:
        prefix = section.name if section.subsection is None else (
            f"{section.name}.{section.subsection}"
        )
        result += [(f"{prefix}.{entry.key}", entry.value) for entry in section.entries]
    return result


def gits(path: str, env: dict[str, str]) -> Listing | str:
    """
    C{git config --file PATH --null --list}: C{key\\nvalue\\0} per entry,
    C{key\\0} for a bare key; on an error, git's message.
    """
    run = subprocess.run(
        ["git", "config", "--file", path, "--null", "--list"],
        capture_output=True, env=env, check=False,
    )
    if run.returncode != 0:
        return run.stderr.decode("utf-8", "replace").strip() or f"exit {run.returncode}"
    result: Listing = []
    for record in run.stdout.split(b"\0")[:-1]:
        key, newline, value = record.partition(b"\n")
        result.append((key.decode(), value.decode() if newline else None))
    return result


# ---------------------------------------------------------------------------
# Deliberate differences, each documented in docs/gitconfig.md.  The
# generator marks the files it puts one into; a file that only one side
# accepts must carry a mark of the right kind, anything else fails.

# Files git accepts and karajo refuses (stricter).
STRICTER = {
    "nul": "a NUL character anywhere (git allows it in comments and cuts a value at it)",
    "key_before_section": "a key before the first [section] (git lists it as 'key')",
}
# Files karajo accepts and git refuses (more lenient).
LENIENT = {
    "key_underscore": "'_' in a key name (karajo's own keys are written with it)",
    "bare_key_comment": "a comment after a bare key ('flag # why')",
}


class GitDifferentialTests(SynchronousTestCase):
    """
    The reader agrees with C{git config --list} over a generated corpus.
    """

    def setUp(self) -> None:
        if shutil.which("git") is None:
            raise SkipTest("git is not installed")
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.tmp,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "LC_ALL": "C",
        }

    def test_corpus(self) -> None:
        """
        Over 2,400 generated files: where both accept, the entries (full
        key, value or none) are identical in order; where both refuse, they
        name the same line; where only one side accepts, the file shows one
        of the documented deliberate differences.
        """
        corpus = generate_corpus(SEED, FILES)
        counts = {"same": 0, "both refuse": 0, "stricter": 0, "lenient": 0}
        for i, (text, features) in enumerate(corpus):
            path = os.path.join(self.tmp, f"{i}.conf")
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            mine, theirs = ours(text), gits(path, self.env)
            where = f"file {i} {sorted(features)}: {text!r}\nkarajo: {mine!r}\ngit: {theirs!r}"
            if isinstance(mine, list) and isinstance(theirs, list):
                self.assertEqual(mine, theirs, where)
                counts["same"] += 1
            elif isinstance(mine, ConfigError) and isinstance(theirs, str):
                # Both name the same line, unless a deliberate difference
                # made one of them stop earlier.
                if not features:
                    self.assertIn(f"bad config line {mine.line} ", theirs, where)
                counts["both refuse"] += 1
            elif isinstance(mine, ConfigError):
                self.assertTrue(features & STRICTER.keys(), where)
                counts["stricter"] += 1
            else:
                self.assertTrue(features & LENIENT.keys(), where)
                counts["lenient"] += 1
        # The corpus must mostly be files both read, or it tests little.
        self.assertGreater(counts["same"], FILES * 3 // 4, counts)
        for kind in counts:
            self.assertGreater(counts[kind], 0, counts)
