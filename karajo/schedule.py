"""
When a timer job fires: parsing and evaluating C{schedule} values.

This module is pure computation (no reactor, no I/O) so that the scheduler
can ask "when next?" at every fire for thousands of jobs and so that every
rule here is unit-testable with plain datetimes.

Grammar (docs/schedules.md; keywords and day names are case-insensitive,
surrounding whitespace is ignored)::

    minutely                      every minute, at second 0
    hourly[@M,M,...]              at those minutes of every hour (default 0)
    daily[@HH:MM,...]             at those times every day (default 00:00)
    weekly[@DAY,...][@HH:MM,...]  DAY = Sunday..Saturday or Sun..Sat (default Sunday, 00:00)
    monthly[@D,...][@HH:MM,...]   days 1-31; a day the month lacks is skipped (default day 1, 00:00)

A value containing whitespace is a standard 5-field cron expression
(C{minute hour day-of-month month day-of-week}) with the meaning Debian's
crontab(5) gives it, matched by C{cronsim}; docs/schedules.md has the rules.

Times are wall-clock times in the schedule's timezone (UTC by default).
Daylight-saving time follows Debian cron(8)'s rule, applied to the calendar
forms too, so that C{daily@02:30} and C{30 2 * * *} always agree:

  - I{Wall-clock schedules} (C{daily}, C{weekly}, C{monthly}, and cron
    expressions whose minute and hour fields both do not start with C{*}:
    cron's "jobs that run at a specific time") fire once per matching local
    wall-clock time:
      - a wall time that occurs twice (autumn fall-back) fires only at its
        first occurrence (C{fold=0});
      - a wall time that does not exist (spring-forward gap) fires at the
        first instant after the gap, i.e. at the transition itself
        (02:30 on 2026-03-29 in Europe/Berlin fires at 03:00 CEST =
        01:00Z).  Several times inside one gap therefore fire once.
  - I{Real-time schedules} (C{minutely}, C{hourly}, and cron expressions
    whose minute or hour field starts with C{*}: cron's "wildcard jobs")
    fire at every real instant whose local wall clock matches: the repeated
    hour of a fall-back day fires twice (they are two distinct real hours)
    and wall times inside a spring-forward gap never happen, so they are
    not fired.

cronsim is only asked about naive wall times; mapping them to instants is
done here, with the same code for cron and calendar forms.
"""

from __future__ import annotations

import bisect
import calendar
import datetime
import re
from typing import Protocol

import attrs
from cronsim import CronSim, CronSimError

from karajo.walltime import (
    check_aware,
    next_real_fire,
    next_wall_fire,
)

__all__ = ["Schedule", "parse_schedule"]

UTC = datetime.UTC
_SECOND = datetime.timedelta(seconds=1)
_MINUTE = datetime.timedelta(minutes=1)
_HOUR = datetime.timedelta(hours=1)
_DAY = datetime.timedelta(days=1)


class Schedule(Protocol):
    """
    A parsed C{schedule} value.

    Implementations are immutable values; C{next_after} has no side effects
    a caller can observe.
    """

    # A read-only property (rather than a plain ``text: str`` attribute) so
    # that frozen attrs classes satisfy the protocol for type checkers.
    @property
    def text(self) -> str:
        """
        The value as written in the config.
        """

    def next_after(self, t: datetime.datetime) -> datetime.datetime:
        """
        The first fire instant strictly after the aware datetime C{t}, as an
        aware datetime in UTC.
        """

    def describe(self) -> str:
        """
        Human words for the web UI.
        """


def _zone_name(tz: datetime.tzinfo) -> str:
    """
    The zone as the operator wrote it (ZoneInfo key), or C{UTC}.
    """
    return str(getattr(tz, "key", None) or tz)


def _hhmm(minute_of_day: int) -> str:
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"


# ---------------------------------------------------------------------------
# Calendar forms.


def _on_day(
    day: datetime.date, times: tuple[int, ...], from_minute: int
) -> datetime.datetime | None:
    """
    The first of C{times} (minutes of the day, sorted) at or after
    C{from_minute} on C{day}, or None.
    """
    i = bisect.bisect_left(times, from_minute)
    if i == len(times):
        return None
    return datetime.datetime(day.year, day.month, day.day, times[i] // 60, times[i] % 60)


@attrs.frozen
class Minutely:
    """
    C{minutely}: every minute at second 0.

    Every zone in use today has a whole-minute UTC offset, so local second 0
    is UTC second 0 and the timezone never matters.
    """

    text: str
    timezone: datetime.tzinfo = UTC

    def next_after(self, t: datetime.datetime) -> datetime.datetime:
        check_aware(t)
        return t.astimezone(UTC).replace(second=0, microsecond=0) + _MINUTE

    def describe(self) -> str:
        return "every minute"


@attrs.frozen
class Hourly:
    """
    C{hourly@M,...}: at those local minutes of every real hour.
    """

    text: str
    minutes: tuple[int, ...] = (0,)
    timezone: datetime.tzinfo = UTC

    def _next_wall(self, w: datetime.datetime) -> datetime.datetime:
        i = bisect.bisect_left(self.minutes, w.minute)
        if i < len(self.minutes):
            return w.replace(minute=self.minutes[i])
        return w.replace(minute=self.minutes[0]) + _HOUR

    def next_after(self, t: datetime.datetime) -> datetime.datetime:
        check_aware(t)
        return next_real_fire(t, self.timezone, self._next_wall)

    def describe(self) -> str:
        text = "hourly at " + ", ".join(f":{m:02d}" for m in self.minutes)
        if self.timezone is not UTC:
            text += f" ({_zone_name(self.timezone)})"
        return text


@attrs.frozen
class Daily:
    """
    C{daily@HH:MM,...}: at those local times every day.
    """

    text: str
    times: tuple[int, ...] = (0,)
    timezone: datetime.tzinfo = UTC

    def _next_wall(self, w: datetime.datetime) -> datetime.datetime:
        found = _on_day(w.date(), self.times, w.hour * 60 + w.minute)
        if found is None:
            found = _on_day(w.date() + _DAY, self.times, 0)
        assert found is not None
        return found

    def next_after(self, t: datetime.datetime) -> datetime.datetime:
        check_aware(t)
        return next_wall_fire(t, self.timezone, self._next_wall)

    def describe(self) -> str:
        times = ", ".join(_hhmm(m) for m in self.times)
        return f"daily at {times} ({_zone_name(self.timezone)})"


_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # date.weekday()
_WEEKDAYS = {
    name: i
    for i, day in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
    for name in (day, day[:3])
}


@attrs.frozen
class Weekly:
    """
    C{weekly@DAY,...@HH:MM,...}: on those local weekdays at those times.

    C{weekdays} uses C{date.weekday()} numbering (Monday = 0).
    """

    text: str
    weekdays: frozenset[int] = frozenset({6})
    times: tuple[int, ...] = (0,)
    timezone: datetime.tzinfo = UTC

    def _next_wall(self, w: datetime.datetime) -> datetime.datetime:
        day = w.date()
        from_minute = w.hour * 60 + w.minute
        while True:
            if day.weekday() in self.weekdays:
                found = _on_day(day, self.times, from_minute)
                if found is not None:
                    return found
            day += _DAY
            from_minute = 0

    def next_after(self, t: datetime.datetime) -> datetime.datetime:
        check_aware(t)
        return next_wall_fire(t, self.timezone, self._next_wall)

    def describe(self) -> str:
        # Sunday first, as the grammar lists the days.
        days = ", ".join(_DAY_NAMES[d] for d in sorted(self.weekdays, key=lambda d: (d + 1) % 7))
        times = ", ".join(_hhmm(m) for m in self.times)
        return f"weekly on {days} at {times} ({_zone_name(self.timezone)})"


@attrs.frozen
class Monthly:
    """
    C{monthly@D,...@HH:MM,...}: on those days of every month, skipping days
    a month lacks (C{monthly@31} fires in seven months of the year).
    """

    text: str
    days: tuple[int, ...] = (1,)
    times: tuple[int, ...] = (0,)
    timezone: datetime.tzinfo = UTC

    def _next_wall(self, w: datetime.datetime) -> datetime.datetime:
        year, month, from_day = w.year, w.month, w.day
        from_minute = w.hour * 60 + w.minute
        # Walk months, not days: at most two months are skipped (day 31).
        while True:
            length = calendar.monthrange(year, month)[1]
            for day in self.days[bisect.bisect_left(self.days, from_day) :]:
                if day > length:
                    break
                found = _on_day(
                    datetime.date(year, month, day),
                    self.times,
                    from_minute if day == from_day else 0,
                )
                if found is not None:
                    return found
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            from_day, from_minute = 1, 0

    def next_after(self, t: datetime.datetime) -> datetime.datetime:
        check_aware(t)
        return next_wall_fire(t, self.timezone, self._next_wall)

    def describe(self) -> str:
        label = "day" if len(self.days) == 1 else "days"
        days = ", ".join(str(d) for d in self.days)
        times = ", ".join(_hhmm(m) for m in self.times)
        return f"monthly on {label} {days} at {times} ({_zone_name(self.timezone)})"


# ---------------------------------------------------------------------------
# Cron expressions.


@attrs.frozen
class Cron:
    """
    A standard 5-field cron expression with Debian cron's meaning.

    C{cronsim} matches the fields against naive local wall times (it follows
    Debian cron: C{N-N} is one value, day-of-month and day-of-week are ANDed
    when either starts with C{*}, 7 is Sunday); this module maps those wall
    times to instants.  C{wildcard} is Debian cron's DST switch: a job whose
    minute or hour field starts with C{*} runs on the new time at once (a
    real-time schedule, like C{hourly}), any other job runs at its wall-clock
    time (like C{daily}).
    """

    text: str
    expression: str
    timezone: datetime.tzinfo = UTC
    wildcard: bool = False

    def _next_wall(self, w: datetime.datetime) -> datetime.datetime:
        # A naive start keeps cronsim out of timezone handling (its own DST
        # rules assume iteration from a fixed start, not a fresh question at
        # any instant); it answers strictly after its start, hence w - 1 s.
        return next(CronSim(self.expression, w - _SECOND))

    def next_after(self, t: datetime.datetime) -> datetime.datetime:
        check_aware(t)
        if self.wildcard:
            return next_real_fire(t, self.timezone, self._next_wall)
        return next_wall_fire(t, self.timezone, self._next_wall)

    def describe(self) -> str:
        return f"cron {self.expression} ({_zone_name(self.timezone)})"


# The field grammar of crontab(5) plus cronsim's extensions (L, LW, nL, n#k,
# N/step); anything else (Debian cron would silently drop the rest of an
# item after a stray character: "5.5" is minute 5) is refused here, before
# cronsim, so that an error never depends on how cronsim happens to fail.
_CRON_ITEM = re.compile(r"[*0-9A-Za-z/#-]+")


def _parse_cron(text: str, value: str, tz: datetime.tzinfo) -> Cron:
    fields = value.split()
    if len(fields) != 5:
        extra = " (seconds/year fields are not supported)" if len(fields) in (6, 7) else ""
        raise ValueError(
            f"cron expression {value!r} has {len(fields)} fields; expected 5 "
            f"(minute hour day-of-month month day-of-week){extra}"
        )
    expression = " ".join(fields)
    for item in (item for field in fields for item in field.split(",")):
        if not (item.isascii() and _CRON_ITEM.fullmatch(item)):
            raise ValueError(
                f"cron expression {value!r} is not a standard cron expression "
                f"(item {item!r})"
            )
    try:
        next(CronSim(expression, _VALIDATION_START))
    except CronSimError as e:
        raise ValueError(f"invalid cron expression {value!r}: {_cron_reason(fields, e)}") from None
    except StopIteration:
        raise ValueError(f"invalid cron expression {value!r}: never fires") from None
    # Debian cron (entry.c) flags MIN_STAR/HR_STAR from the first character
    # of the field as written, so "*/5" is a wildcard and "0-59" is not.
    wildcard = fields[0].startswith("*") or fields[1].startswith("*")
    return Cron(text=text, expression=expression, timezone=tz, wildcard=wildcard)


_VALIDATION_START = datetime.datetime(2000, 1, 1)


def _cron_reason(fields: list[str], error: CronSimError) -> str:
    """
    Words for a cronsim refusal.  cronsim reports a day that no month of the
    month field has (C{0 0 30 2 *}) as a bad day-of-month; the field is fine
    on its own there, and "never fires" is what the operator needs to hear.
    """
    reason = str(error) or type(error).__name__
    if reason == "Bad day-of-month":
        anymonth = " ".join([*fields[:3], "*", fields[4]])
        try:
            CronSim(anymonth, _VALIDATION_START)
        except CronSimError:
            pass
        else:
            return "never fires (no month of the month field has that day)"
    return reason.lower()


# ---------------------------------------------------------------------------
# Calendar-form parsing.

_NUMBER = re.compile(r"[0-9]{1,2}")
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_KEYWORDS = "minutely, hourly, daily, weekly, monthly"


def _items(part: str, what: str) -> list[str]:
    items = part.split(",")
    if any(item == "" for item in items):
        raise ValueError(f"empty item in {what} list {part!r}")
    return items


def _number(item: str, what: str, low: int, high: int) -> int:
    if not _NUMBER.fullmatch(item):
        raise ValueError(f"{what} {item!r} is not a number {low}-{high}")
    n = int(item)
    if not low <= n <= high:
        raise ValueError(f"{what} {n} is out of range {low}-{high}")
    return n


def _times(part: str) -> tuple[int, ...]:
    result = set()
    for item in _items(part, "time"):
        match = _TIME.fullmatch(item)
        if match is None:
            raise ValueError(f"time {item!r} is not HH:MM")
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"time {item!r} is out of range 00:00-23:59")
        result.add(hour * 60 + minute)
    return tuple(sorted(result))


def _weekdays(part: str) -> frozenset[int]:
    result = set()
    for item in _items(part, "weekday"):
        day = _WEEKDAYS.get(item.lower())
        if day is None:
            raise ValueError(f"unknown weekday {item!r} (use Sunday..Saturday or Sun..Sat)")
        result.add(day)
    return frozenset(result)


def _split_day_and_times(keyword: str, parts: list[str]) -> tuple[str | None, str | None]:
    """
    Sort C{@} parts of weekly/monthly into (days, times).  With one part,
    the content decides: a part containing C{:} is the times list.
    """
    if len(parts) > 2:
        raise ValueError(f"{keyword} takes at most two @ parts (days, then times)")
    if len(parts) == 2:
        if ":" in parts[0]:
            raise ValueError(f"{keyword}: days must come before times, got {parts[0]!r} first")
        return parts[0], parts[1]
    if len(parts) == 1:
        return (None, parts[0]) if ":" in parts[0] else (parts[0], None)
    return None, None


_KEYWORD_NAMES = frozenset({"minutely", "hourly", "daily", "weekly", "monthly"})


def parse_schedule(text: str, timezone: datetime.tzinfo | None = None) -> Schedule:
    """
    Parse a C{schedule} value; C{timezone} None means UTC.

    Raises L{ValueError} naming the offending part, so the config loader can
    report C{FILE:LINE: reason} an operator can act on.
    """
    tz: datetime.tzinfo = UTC if timezone is None else timezone
    value = text.strip()
    if not value:
        raise ValueError("empty schedule")
    if value.split("@", 1)[0].strip().lower() in _KEYWORD_NAMES:
        # "hourly@ 5, 30": spaces around the parts of a keyword form are
        # only spacing, not a cron expression.
        value = "".join(value.split())
    elif any(ch.isspace() for ch in value):
        return _parse_cron(text, value, tz)
    if not value.isascii():
        raise ValueError(f"unknown schedule {value!r} (expected {_KEYWORDS} or a cron expression)")
    keyword, *parts = value.split("@")
    keyword = keyword.lower()

    if keyword == "minutely":
        if parts:
            raise ValueError("minutely takes no @ parts")
        return Minutely(text=text, timezone=tz)
    if keyword == "hourly":
        if len(parts) > 1:
            raise ValueError("hourly takes at most one @ part (minutes)")
        minutes: tuple[int, ...] = (0,)
        if parts:
            minutes = tuple(
                sorted({_number(m, "minute", 0, 59) for m in _items(parts[0], "minute")})
            )
        return Hourly(text=text, minutes=minutes, timezone=tz)
    if keyword == "daily":
        if len(parts) > 1:
            raise ValueError("daily takes at most one @ part (times)")
        return Daily(text=text, times=_times(parts[0]) if parts else (0,), timezone=tz)
    if keyword == "weekly":
        days_part, times_part = _split_day_and_times(keyword, parts)
        return Weekly(
            text=text,
            weekdays=_weekdays(days_part) if days_part is not None else frozenset({6}),
            times=_times(times_part) if times_part is not None else (0,),
            timezone=tz,
        )
    if keyword == "monthly":
        days_part, times_part = _split_day_and_times(keyword, parts)
        days: tuple[int, ...] = (1,)
        if days_part is not None:
            days = tuple(
                sorted({_number(d, "day", 1, 31) for d in _items(days_part, "day")})
            )
        return Monthly(
            text=text,
            days=days,
            times=_times(times_part) if times_part is not None else (0,),
            timezone=tz,
        )
    raise ValueError(
        f"unknown schedule keyword {keyword!r} (expected {_KEYWORDS} or a cron expression)"
    )
