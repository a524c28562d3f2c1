"""
How times, durations and timers read on the dashboard.

A schedule is described by the schedule itself
(L{karajo.schedule.Schedule.describe}), so the dashboard and
C{karajo check} use the same words; this module only adds intervals and
the time formats of the pages.
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

from karajo.schedule import parse_schedule
from karajo.web.envelope import ZERO_TIME

__all__ = [
    "describe_interval",
    "describe_timer",
    "human_duration",
    "human_size",
    "human_time",
    "iso_time",
    "plural",
    "trigger_words",
]

#: what started a run (L{karajo.status.Trigger}), as the run page says it
_TRIGGERS = {
    "schedule": "its schedule",
    "interval": "its interval",
    "webhook": "a webhook",
    "manual": "run now",
    "retry": "a retry",
    "chain": "another job's run (on_success / on_failed)",
    "catch_up": "catch-up of a timer slot missed",
}


def plural(n: int, word: str) -> str:
    """C{1 log}, C{5 logs}."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_interval(seconds: float) -> str:
    """C{every 1 hour 30 minutes} for 5400 s."""
    total = int(seconds)
    if total <= 0:
        return "continuously"
    parts = []
    for size, word in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if total >= size:
            parts.append(plural(total // size, word))
            total %= size
    if parts in (["1 day"], ["1 hour"], ["1 minute"], ["1 second"]):
        return "every " + parts[0][2:]
    return "every " + " ".join(parts)


def describe_timer(schedule: str | None, interval: datetime.timedelta | None,
                   timezone: str | None = None) -> str:
    """
    A job's schedule (its own words, see L{karajo.schedule}) or interval
    in words; C{only on request} without either.  A schedule that does not
    parse (never, after validation) is shown as written.
    """
    if schedule:
        try:
            zone = ZoneInfo(timezone) if timezone else None
            return parse_schedule(schedule, zone).describe()
        except (ValueError, LookupError):
            return schedule.strip()
    if interval is not None:
        return describe_interval(interval.total_seconds())
    return "only on request"


def iso_time(epoch: float | None) -> str:
    """RFC 3339 UTC for a C{<time datetime>}; Go's zero time for never."""
    if epoch is None:
        return ZERO_TIME
    try:
        when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return ZERO_TIME
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def human_time(epoch: float | None) -> str:
    """C{2026-01-02 03:04:05 UTC}, or C{never}."""
    if epoch is None:
        return "never"
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def human_duration(seconds: float | None) -> str:
    """C{1h 02m 03s}, C{4m 05s}, C{7s}; empty when unknown."""
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def human_size(size: int) -> str:
    """C{812 bytes} below 10 KiB, then C{10.0 KiB} (as the run page's script says it)."""
    return f"{size} bytes" if size < 10240 else f"{size / 1024:.1f} KiB"


def trigger_words(trigger: str | None) -> str:
    """What started a run, in words; C{unknown} for a log older than run records."""
    if trigger is None:
        return "unknown (an older log)"
    return _TRIGGERS.get(trigger, trigger)
