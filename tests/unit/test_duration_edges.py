"""
The edges of L{karajo.duration}: the int64 limit itself, fractions longer
than any unit needs, and the unit boundaries of printing.  Expected values
are written out, not computed from the module's constants.
"""

from __future__ import annotations

from datetime import timedelta

from twisted.trial.unittest import SynchronousTestCase

from karajo.duration import format_duration, parse_duration


class Int64LimitTests(SynchronousTestCase):
    """Go's Duration is an int64 of nanoseconds: exactly its range is accepted."""

    def test_largest(self) -> None:
        """2**63-1 ns is accepted, truncated to microseconds."""
        self.assertEqual(
            parse_duration("9223372036854775807ns"), timedelta(microseconds=9223372036854775)
        )
        self.assertEqual(
            parse_duration("+9223372036854775807ns"), timedelta(microseconds=9223372036854775)
        )

    def test_smallest(self) -> None:
        """-2**63 ns is accepted (one more than the largest positive)."""
        self.assertEqual(
            parse_duration("-9223372036854775808ns"), timedelta(microseconds=-9223372036854775)
        )

    def test_one_beyond(self) -> None:
        """One nanosecond further on either side is out of range."""
        for text in ("9223372036854775808ns", "-9223372036854775809ns"):
            with self.assertRaises(ValueError) as caught:
                parse_duration(text)
            self.assertIn("out of range", str(caught.exception))

    def test_largest_in_other_units(self) -> None:
        """The limit holds in bigger units and summed over several parts."""
        self.assertEqual(
            parse_duration("2562047h47m16.854775807s"),
            timedelta(microseconds=9223372036854775),
        )
        with self.assertRaises(ValueError):
            parse_duration("2562047h47m16.854775808s")
        with self.assertRaises(ValueError):
            parse_duration("2562048h")

    def test_leading_zeros_do_not_count(self) -> None:
        """Zeros before the digits do not push a value out of range."""
        self.assertEqual(
            parse_duration("0000000000009223372036854775807ns"),
            timedelta(microseconds=9223372036854775),
        )
        self.assertEqual(parse_duration("00000000000000000000001s"), timedelta(seconds=1))

    def test_twenty_digits_refused(self) -> None:
        """A whole part longer than int64 is refused at once, as out of range."""
        with self.assertRaises(ValueError) as caught:
            parse_duration("10000000000000000000ns")
        self.assertIn("out of range", str(caught.exception))


class LongFractionTests(SynchronousTestCase):
    """Fraction digits beyond a nanosecond are dropped (truncated), never a crash."""

    def test_many_nines(self) -> None:
        """0.999... of a second truncates to 999999 us, not 1 s."""
        self.assertEqual(parse_duration("0." + "9" * 40 + "s"), timedelta(microseconds=999999))

    def test_hour_fraction(self) -> None:
        """The 13th fraction digit of an hour is still a nanosecond-scale value."""
        # 0.0000000002777... h = 1000.08 ns -> 1 us
        self.assertEqual(parse_duration("0.00000000027778h"), timedelta(microseconds=1))

    def test_huge_fraction(self) -> None:
        """
        Thousands of fraction digits (more than int() reads from a string by
        default) are accepted and truncated.
        """
        self.assertEqual(parse_duration("1." + "5" * 5000 + "s"), timedelta(microseconds=1555555))
        self.assertEqual(parse_duration("1." + "0" * 5000 + "1s"), timedelta(seconds=1))

    def test_tiny_nonzero_fraction(self) -> None:
        """A fraction that is zero after truncation is zero, not 'under 1us'."""
        self.assertEqual(parse_duration("0." + "0" * 30 + "1h"), timedelta(0))


class UnitBoundaryTests(SynchronousTestCase):
    """Printing switches units exactly where Go's Duration.String() does."""

    def test_boundaries(self) -> None:
        for td, expected in [
            (timedelta(microseconds=1), "1\u00b5s"),
            (timedelta(microseconds=999), "999\u00b5s"),
            (timedelta(milliseconds=1), "1ms"),
            (timedelta(microseconds=1001), "1.001ms"),
            (timedelta(microseconds=999999), "999.999ms"),
            (timedelta(seconds=1), "1s"),
            (timedelta(seconds=59), "59s"),
            (timedelta(seconds=60), "1m0s"),
            (timedelta(seconds=3599), "59m59s"),
            (timedelta(hours=1), "1h0m0s"),
            (timedelta(milliseconds=-1), "-1ms"),
            (timedelta(seconds=-1), "-1s"),
            (timedelta(microseconds=-1), "-1\u00b5s"),
            (timedelta(microseconds=9223372036854775), "2562047h47m16.854775s"),
        ]:
            self.assertEqual(format_duration(td), expected, td)


class GrammarEdgeTests(SynchronousTestCase):
    """Corners of Go's grammar and the exact words of a refusal."""

    def test_fraction_without_whole_after_a_unit(self) -> None:
        """As in Go, C{.5m} needs no leading digit, also after another part."""
        self.assertEqual(parse_duration("1h.5m"), timedelta(hours=1, seconds=30))
        self.assertEqual(parse_duration(".5s"), timedelta(milliseconds=500))

    def test_unknown_unit_message(self) -> None:
        """The message quotes the input and the unit and lists the units."""
        with self.assertRaises(ValueError) as caught:
            parse_duration("1x")
        self.assertEqual(
            str(caught.exception),
            "invalid duration '1x': unknown unit 'x' (expected ns, us, ms, s, m or h)",
        )
