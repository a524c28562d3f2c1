"""
Wall-clock times in a zone and the instants they name, across daylight-saving
changes (docs/schedules.md): the maths under every schedule form, calendar
and cron alike.  Naive datetimes here are always local wall-clock times;
aware ones are instants.  Pure: no reactor, no clock of its own.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

__all__ = ["ceil_minute", "check_aware", "instant", "next_real_fire", "next_wall_fire", "offset", "transition", "wall"]

UTC = datetime.UTC
_MINUTE = datetime.timedelta(minutes=1)
_DAY = datetime.timedelta(days=1)

NextWall = Callable[[datetime.datetime], datetime.datetime]


def check_aware(t: datetime.datetime) -> None:
    """
    Refuse naive datetimes: guessing their zone would silently shift fires.
    """
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"next_after needs a timezone-aware datetime, got {t!r}")


def ceil_minute(w: datetime.datetime) -> datetime.datetime:
    """
    The first whole minute at or after C{w}.
    """
    if w.second or w.microsecond:
        return w.replace(second=0, microsecond=0) + _MINUTE
    return w


def wall(t: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
    """
    The naive local wall-clock reading of instant C{t} in C{tz}.
    """
    return t.astimezone(tz).replace(tzinfo=None)


def offset(u: datetime.datetime, tz: datetime.tzinfo) -> datetime.timedelta | None:
    """
    The UTC offset in force in C{tz} at instant C{u}.
    """
    return u.astimezone(tz).utcoffset()


def transition(
    lo: datetime.datetime, hi: datetime.datetime, tz: datetime.tzinfo
) -> datetime.datetime:
    """
    The first whole-second instant in C{(lo, hi]} whose offset differs from
    the offset at C{lo}.

    zoneinfo has no public API for transition instants, so bisect; this runs
    only for times right next to a DST change, so its cost does not matter.
    """
    before = offset(lo, tz)
    a = int(lo.timestamp())  # offset(a) == before
    b = -int(-hi.timestamp() // 1)  # ceil; offset(b) != before
    while b - a > 1:
        mid = (a + b) // 2
        if offset(datetime.datetime.fromtimestamp(mid, UTC), tz) == before:
            a = mid
        else:
            b = mid
    return datetime.datetime.fromtimestamp(b, UTC)


def instant(c: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
    """
    Map the local wall time C{c} to the instant a wall-clock schedule fires.

    A repeated wall time maps to its first occurrence (fold=0, which is what
    C{replace(tzinfo=tz)} means); a wall time inside a spring-forward gap maps
    to the end of the gap.  The mapping never decreases as C{c} grows, which
    is what lets L{next_wall_fire} scan candidates in wall-clock order.
    """
    if tz is UTC:
        return c.replace(tzinfo=UTC)
    first = c.replace(tzinfo=tz).astimezone(UTC)
    if wall(first, tz) == c:
        return first
    # Nonexistent: fold=0 and fold=1 use the offsets on either side of the
    # gap, so the transition lies between the two readings.
    other = c.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return transition(min(first, other), max(first, other), tz)


def next_wall_fire(
    t: datetime.datetime, tz: datetime.tzinfo, next_wall: NextWall
) -> datetime.datetime:
    """
    Next fire after C{t} of a wall-clock schedule.

    C{next_wall(w)} returns the first matching local wall time at or after
    the whole minute C{w}.  Candidates at or before the wall reading of C{t}
    map to instants at or before C{t}; later ones may still map to an instant
    not after C{t} when C{t} is inside a repeated hour, hence the loop.
    """
    c = next_wall(ceil_minute(wall(t, tz) + datetime.timedelta(microseconds=1)))
    while True:
        x = instant(c, tz)
        if x > t:
            return x
        c = next_wall(c + _MINUTE)


def next_real_fire(
    t: datetime.datetime, tz: datetime.tzinfo, next_wall: NextWall
) -> datetime.datetime:
    """
    Next fire after C{t} of a real-time schedule: the first whole-minute
    instant after C{t} whose local wall-clock reading matches.

    Works one stretch of constant UTC offset at a time: inside such a stretch
    wall time is instant plus offset, so the first matching wall time gives
    the answer directly.  Stretches are checked a day at most at a time
    (tzdata never changes offset twice within a day), and long runs without
    a match are skipped wholesale.
    """
    s = t.astimezone(UTC).replace(second=0, microsecond=0) + _MINUTE
    if tz is UTC:
        return next_wall(s.replace(tzinfo=None)).replace(tzinfo=UTC)
    while True:
        local = s.astimezone(tz)
        off = local.utcoffset()
        assert off is not None
        c = next_wall(ceil_minute(local.replace(tzinfo=None)))
        x = (c - off).replace(tzinfo=UTC)
        horizon = min(x, s + _DAY)
        if offset(horizon, tz) != off:
            s = ceil_minute(transition(s, horizon, tz))
            continue
        if x <= s + _DAY:
            return x
        # No wall time in [wall(s), c) matches; no instant before one day
        # ahead of c's instant can have a wall reading at or after c.
        s = max(s + _DAY, ceil_minute(instant(c, tz) - _DAY))
