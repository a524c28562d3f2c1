"""
Fire times of L{karajo.schedule} where the search loops of the evaluator
must end: a time inside the repeated hour of a fall-back day, and a cron
expression that matches a few hours every four years in a zone with DST.

Written against fire times only (not internals), and each evaluation runs
under a wall-clock bound, so a search that loops forever fails the test
instead of hanging the suite.
"""

from __future__ import annotations

import datetime
import signal
from collections.abc import Callable
from typing import TypeVar
from zoneinfo import ZoneInfo

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from karajo.schedule import parse_schedule

UTC = datetime.UTC
BERLIN = ZoneInfo("Europe/Berlin")
#: Far more than any evaluation needs (milliseconds); small enough for a failing run.
BOUND_SECONDS = 5.0

T = TypeVar("T")


class TookTooLong(Exception):
    """An evaluation did not finish within L{BOUND_SECONDS}."""


def bounded(call: Callable[[], T], seconds: float = BOUND_SECONDS) -> T:
    """
    C{call()}, interrupted by C{SIGALRM} after C{seconds} of wall time.

    A signal rather than a thread: a thread stuck in an endless loop could
    not be stopped and would keep a core busy for the rest of the run.
    """
    if not hasattr(signal, "setitimer"):
        raise SkipTest("needs signal.setitimer")

    def expire(signum: int, frame: object) -> None:
        raise TookTooLong(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def utc(text: str) -> datetime.datetime:
    """An aware UTC datetime from C{YYYY-MM-DDTHH:MM[:SS]}."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


class RepeatedHourTests(SynchronousTestCase):
    """
    On 2026-10-25 Berlin goes from 03:00 CEST back to 02:00 CET at 01:00Z,
    so the wall times 02:00-02:59 happen twice: 00:00Z-00:59Z and
    01:00Z-01:59Z.  A wall-clock schedule fires at the first of them only.
    """

    def next_after(self, text: str, after: str) -> datetime.datetime:
        schedule = parse_schedule(text, BERLIN)
        return bounded(lambda: schedule.next_after(utc(after)))

    def test_daily_asked_inside_second_pass(self) -> None:
        """
        Asked at 02:10 CET (second pass, 01:10Z), C{daily@02:50} does not
        fire again at 02:50 CET: its 02:50 of that day was 00:50Z.  The next
        fire is 02:50 CET on the 26th.
        """
        self.assertEqual(
            self.next_after("daily@02:50", "2026-10-25T01:10"), utc("2026-10-26T01:50")
        )

    def test_daily_asked_between_the_two_passes(self) -> None:
        """Asked right after the first 02:50 (00:50Z), also the next day."""
        self.assertEqual(
            self.next_after("daily@02:50", "2026-10-25T00:50"), utc("2026-10-26T01:50")
        )
        self.assertEqual(
            self.next_after("daily@02:50", "2026-10-25T00:49:59"), utc("2026-10-25T00:50")
        )

    def test_several_times_inside_second_pass(self) -> None:
        """
        Every time of the repeated hour is skipped on the second pass, not
        only the first candidate: C{daily@02:20,02:40} asked at 02:10 CET.
        """
        self.assertEqual(
            self.next_after("daily@02:20,02:40", "2026-10-25T01:10"), utc("2026-10-26T01:20")
        )

    def test_weekly_and_monthly_inside_second_pass(self) -> None:
        """The other wall-clock forms end the same way (25 Oct 2026 is a Sunday)."""
        self.assertEqual(
            self.next_after("weekly@Sun@02:50", "2026-10-25T01:10"), utc("2026-11-01T01:50")
        )
        self.assertEqual(
            self.next_after("monthly@25@02:50", "2026-10-25T01:10"), utc("2026-11-25T01:50")
        )

    def test_cron_inside_second_pass(self) -> None:
        """A cron expression with a fixed hour is a wall-clock schedule too."""
        self.assertEqual(
            self.next_after("50 2 * * *", "2026-10-25T01:10"), utc("2026-10-26T01:50")
        )


class SparseCronTests(SynchronousTestCase):
    """
    C{0 * 29 2 *} fires every hour of 29 February only: the real-time
    evaluator has to skip almost four years of non-matching days in a zone
    whose offset changes twice a year on the way.
    """

    def fires(self, after: str, count: int) -> list[datetime.datetime]:
        schedule = parse_schedule("0 * 29 2 *", BERLIN)

        def run() -> list[datetime.datetime]:
            t, out = utc(after), []
            for _ in range(count):
                t = schedule.next_after(t)
                out.append(t)
            return out

        return bounded(run)

    def test_next_leap_day(self) -> None:
        """From March 2026 the next fire is 29 Feb 2028 00:00 CET (23:00Z the day before)."""
        self.assertEqual(
            self.fires("2026-03-01T00:00", 2),
            [utc("2028-02-28T23:00"), utc("2028-02-29T00:00")],
        )

    def test_all_hours_then_the_leap_day_after(self) -> None:
        """24 fires on the leap day, then four years later (not 'year 10000')."""
        fired = self.fires("2026-03-01T00:00", 25)
        self.assertEqual(fired[23], utc("2028-02-29T22:00"))
        self.assertEqual(fired[24], utc("2032-02-28T23:00"))

    def test_from_inside_summer_time(self) -> None:
        """Asked in summer (CEST), the skip lands on the same instant."""
        self.assertEqual(self.fires("2026-07-15T12:34", 1), [utc("2028-02-28T23:00")])

    def test_from_the_last_fire(self) -> None:
        """Asked at the last hour of a leap day, the next is four years on."""
        self.assertEqual(self.fires("2028-02-29T22:00", 1), [utc("2032-02-28T23:00")])
