"""
Durations in the syntax of Go's C{time.Duration}.

The original karajo is written in Go, so its configuration files say
C{interval = 1h30m} and its JSON API reports durations as integer
nanoseconds.  Reading, printing and exporting durations exactly as Go does
keeps existing files, scripts and dashboards working.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µ MICRO SIGN
    "\u03bcs": 1_000,  # μ GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DIGITS = frozenset("0123456789")
# Go's Duration is an int64 of nanoseconds (about 292 years).
_MAX_NS = 2**63 - 1
# No unit is longer than 13 digits of nanoseconds, so further fraction
# digits cannot change the result; ignoring them also keeps a hostile
# "1.000…" from reaching int()'s digit limit.
_FRACTION_DIGITS = 20


def parse_duration(text: str) -> datetime.timedelta:
    """
    Read a Go duration such as C{90s}, C{1h30m}, C{1.5h} or C{-300ms}.

    A bare C{0} needs no unit, as in Go.  Precision below a microsecond is
    truncated towards zero because L{datetime.timedelta} holds no more; a
    non-zero duration under 1us is refused rather than read as zero.

    @raise ValueError: with a message that quotes the input, for anything
        Go would refuse, including values beyond Go's ±292 years.
    """
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return datetime.timedelta(0)
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    while rest:
        number, rest = _take(rest, lambda c: c in _DIGITS or c == ".")
        unit, rest = _take(rest, lambda c: c not in _DIGITS and c != ".")
        if not number:
            raise ValueError(f"invalid duration {text!r}: expected a number")
        whole, _, fraction = number.partition(".")
        if not (whole or fraction) or "." in fraction:
            raise ValueError(f"invalid duration {text!r}: bad number {number!r}")
        if not unit:
            raise ValueError(f"invalid duration {text!r}: missing unit")
        if unit not in _UNITS:
            raise ValueError(
                f"invalid duration {text!r}: unknown unit {unit!r}"
                " (expected ns, us, ms, s, m or h)"
            )
        scale = _UNITS[unit]
        whole = whole.lstrip("0")
        if len(whole) > len(str(_MAX_NS)):
            raise _out_of_range(text)
        total += int(whole or "0") * scale
        fraction = fraction[:_FRACTION_DIGITS]
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > _MAX_NS + negative:
            raise _out_of_range(text)
    if 0 < total < 1000:
        # It would truncate to zero, which means something else entirely
        # (http_timeout = 0 is "the global timeout").
        raise ValueError(f"invalid duration {text!r}: karajo counts in microseconds, at least 1us")
    # Truncate (as Go does with excess fraction digits) rather than round,
    # so that to_nanoseconds() of the result still fits Go's int64.
    microseconds = total // 1000
    if negative:
        microseconds = -microseconds
    return datetime.timedelta(microseconds=microseconds)


def format_duration(td: datetime.timedelta) -> str:
    """
    Print a duration as Go's C{Duration.String()} does (C{1h30m0s},
    C{1.5s}, C{300ms}, C{0s}), so that what karajo shows matches what the
    original showed and can be pasted back into a config file.
    """
    ns = to_nanoseconds(td)
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_decimal(ns, 3)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_decimal(ns, 6)}ms"
    seconds, fraction = divmod(ns, 1_000_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = _decimal(seconds * 1_000_000_000 + fraction, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def to_nanoseconds(td: datetime.timedelta) -> int:
    """
    The exact number of nanoseconds, which is how Go's JSON encoder writes
    a C{time.Duration} and so what API clients of the original expect.
    """
    return ((td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds) * 1_000


def _take(text: str, wanted: Callable[[str], bool]) -> tuple[str, str]:
    """Split C{text} after its longest prefix whose characters are wanted."""
    end = 0
    while end < len(text) and wanted(text[end]):
        end += 1
    return text[:end], text[end:]


def _decimal(value: int, places: int) -> str:
    """C{value / 10**places} without trailing zeros, as Go's C{fmtFrac}."""
    whole, fraction = divmod(value, 10**places)
    digits = str(fraction).rjust(places, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def _out_of_range(text: str) -> ValueError:
    return ValueError(f"invalid duration {text!r}: out of range (more than 292 years)")
