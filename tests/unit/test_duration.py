"""
Tests for L{karajo.duration}.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from karajo.duration import format_duration, parse_duration, to_nanoseconds

# Go's limits, truncated to the microseconds a timedelta holds.
_MAX = timedelta(microseconds=(2**63 - 1) // 1000)
_MIN = -_MAX

VALID = [
    ("0", timedelta(0)),
    ("-0", timedelta(0)),
    ("+0", timedelta(0)),
    ("0s", timedelta(0)),
    ("90s", timedelta(seconds=90)),
    ("1m", timedelta(minutes=1)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("5m0s", timedelta(minutes=5)),
    ("300ms", timedelta(milliseconds=300)),
    ("-1s", timedelta(seconds=-1)),
    ("+1s", timedelta(seconds=1)),
    ("1.5h", timedelta(hours=1, minutes=30)),
    ("1.s", timedelta(seconds=1)),
    (".5s", timedelta(milliseconds=500)),
    ("0.5m", timedelta(seconds=30)),
    ("1h0.5m", timedelta(hours=1, seconds=30)),
    ("007s", timedelta(seconds=7)),
    ("2h45m30s", timedelta(hours=2, minutes=45, seconds=30)),
    ("1s1s", timedelta(seconds=2)),
    ("30m2h", timedelta(hours=2, minutes=30)),
    ("-1m30s", timedelta(seconds=-90)),
    ("10us", timedelta(microseconds=10)),
    ("10\u00b5s", timedelta(microseconds=10)),
    ("10\u03bcs", timedelta(microseconds=10)),
    ("1000ns", timedelta(microseconds=1)),
    ("1999ns", timedelta(microseconds=1)),
    ("-1999ns", timedelta(microseconds=-1)),
    ("1.0000005s", timedelta(seconds=1)),
    ("0.333333333333333333333333333h", timedelta(seconds=1199, microseconds=999999)),
    ("48h", timedelta(days=2)),
    ("2562047h47m16.854775807s", _MAX),
    ("-2562047h47m16.854775808s", _MIN),
]

INVALID = [
    "",
    "-",
    "+",
    "1",
    "-1",
    "10",
    ".",
    ".s",
    "-.s",
    "s",
    "1.",
    "1x",
    "1S",
    "1H",
    "1 s",
    " 1s",
    "1s ",
    "1h 30m",
    "1.5.5s",
    "1e3s",
    "--1s",
    "+-1s",
    "0s0",
    "1s5",
    "1d",
    "one second",
    "1\u0663s",  # an Arabic-Indic digit
    "2562047h47m16.854775808s",
    "-2562047h47m16.854775809s",
    "300y",
    "9223372036854775808ns",
    "99999999999999999999999999h",
    # under 1us would read as zero, which means something else
    "999ns",
    "1ns",
    "-1ns",
    "0.5us",
    "9" * 5000 + "s",
]

FORMATTED = [
    (timedelta(0), "0s"),
    (timedelta(hours=1, minutes=30), "1h30m0s"),
    (timedelta(minutes=5), "5m0s"),
    (timedelta(seconds=90), "1m30s"),
    (timedelta(milliseconds=300), "300ms"),
    (timedelta(milliseconds=1500), "1.5s"),
    (timedelta(seconds=-1), "-1s"),
    (timedelta(microseconds=1), "1\u00b5s"),
    (timedelta(microseconds=1500), "1.5ms"),
    (timedelta(microseconds=-999), "-999\u00b5s"),
    (timedelta(hours=1), "1h0m0s"),
    (timedelta(hours=1, seconds=1), "1h0m1s"),
    (timedelta(days=2, microseconds=10), "48h0m0.00001s"),
    (timedelta(hours=-26, minutes=-3, seconds=-4.5), "-26h3m4.5s"),
    (_MAX, "2562047h47m16.854775s"),
]

NANOSECONDS = [
    (timedelta(0), 0),
    (timedelta(microseconds=1), 1_000),
    (timedelta(seconds=30), 30_000_000_000),
    (timedelta(minutes=5), 300_000_000_000),
    (timedelta(seconds=-1), -1_000_000_000),
    (timedelta(days=1, microseconds=1), 86_400_000_001_000),
    (_MAX, 9_223_372_036_854_775_000),
]


class ParseDurationTests(SynchronousTestCase):
    """
    Tests for L{parse_duration}.
    """

    def test_valid(self) -> None:
        """
        Everything Go's C{time.ParseDuration} accepts is read to the
        microsecond, truncating what is finer.
        """
        for text, expected in VALID:
            with self.subTest(text=text):
                self.assertEqual(parse_duration(text), expected)

    def test_invalid(self) -> None:
        """
        What Go refuses, including durations beyond its 292 years, raises
        L{ValueError} quoting the input.
        """
        for text in INVALID:
            with self.subTest(text=text[:30]):
                error = self.assertRaises(ValueError, parse_duration, text)
                self.assertIn(repr(text), str(error))

    def test_messages(self) -> None:
        """
        The message says what is wrong.
        """
        cases = [
            ("1", "missing unit"),
            ("5d", "unknown unit 'd'"),
            ("300y", "unknown unit 'y'"),
            ("1e3s", "unknown unit 'e'"),
            ("", "invalid duration"),
            ("9223372036854775808ns", "out of range"),
        ]
        for text, reason in cases:
            with self.subTest(text=text):
                error = self.assertRaises(ValueError, parse_duration, text)
                self.assertIn(reason, str(error))

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.text())
    def test_anyText(self, text: str) -> None:
        """
        Arbitrary text gives a L{timedelta} or a L{ValueError}, nothing else.
        """
        try:
            result = parse_duration(text)
        except ValueError:
            return
        self.assertIsInstance(result, timedelta)

    @settings(max_examples=300, deadline=None, database=None)
    @given(
        st.lists(
            st.sampled_from(
                ["-", "+", ".", "0", "1", "9", "99999999999", "s", "m", "h",
                 "ms", "us", "\u00b5s", "ns", "x", " "]
            ),
            max_size=12,
        ).map("".join)
    )
    def test_durationLikeText(self, text: str) -> None:
        """
        Text made of duration pieces gives a L{timedelta} within Go's range
        or a L{ValueError}, never an C{OverflowError}.
        """
        try:
            result = parse_duration(text)
        except ValueError:
            return
        self.assertTrue(_MIN <= result <= _MAX, text)


class FormatDurationTests(SynchronousTestCase):
    """
    Tests for L{format_duration}.
    """

    def test_format(self) -> None:
        """
        Durations print as Go's C{Duration.String()} prints them.
        """
        for td, expected in FORMATTED:
            with self.subTest(td=td):
                self.assertEqual(format_duration(td), expected)

    def test_goNormalForm(self) -> None:
        """
        Reading then printing gives Go's normal form of the input.
        """
        cases = [("90s", "1m30s"), ("1.5h", "1h30m0s"), ("0", "0s"), ("-0", "0s")]
        for text, expected in cases:
            with self.subTest(text=text):
                self.assertEqual(format_duration(parse_duration(text)), expected)

    def test_roundTripTable(self) -> None:
        """
        Every printed duration reads back to the same value.
        """
        for td, text in FORMATTED:
            with self.subTest(text=text):
                self.assertEqual(parse_duration(text), td)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.timedeltas(min_value=_MIN, max_value=_MAX))
    def test_roundTrip(self, td: timedelta) -> None:
        """
        Any duration within Go's range reads back from its printed form.
        """
        self.assertEqual(parse_duration(format_duration(td)), td)


class ToNanosecondsTests(SynchronousTestCase):
    """
    Tests for L{to_nanoseconds}.
    """

    def test_table(self) -> None:
        """
        Durations become exact integer nanoseconds, as Go's JSON encoder
        writes them.
        """
        for td, expected in NANOSECONDS:
            with self.subTest(td=td):
                self.assertEqual(to_nanoseconds(td), expected)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.timedeltas(min_value=_MIN, max_value=_MAX))
    def test_fitsInt64(self, td: timedelta) -> None:
        """
        Any duration within Go's range is an int64 of nanoseconds that
        divides back to the same microseconds.
        """
        ns = to_nanoseconds(td)
        self.assertIsInstance(ns, int)
        self.assertTrue(-(2**63) <= ns < 2**63)
        self.assertEqual(timedelta(microseconds=ns // 1000), td)
