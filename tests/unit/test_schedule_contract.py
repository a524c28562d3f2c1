"""
L{karajo.schedule} where the mutation run found no test, written against
fire times, parse results and descriptions only (the evaluator's internals
may change): the last minute of the day, same-day monthly times, an hour
field spelled as 0-23, the process's own time zone, the text kept, and the
order of words in descriptions.
"""

from __future__ import annotations

import datetime
import os
import time
from zoneinfo import ZoneInfo

from twisted.trial.unittest import SynchronousTestCase

from karajo.schedule import parse_schedule

UTC = datetime.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


class FireTimeTests(SynchronousTestCase):
    def test_last_minute_of_the_day(self) -> None:
        """23:59 is a valid time and fires."""
        self.assertEqual(
            parse_schedule("daily@23:59").next_after(utc("2026-01-01T12:00")),
            utc("2026-01-01T23:59"),
        )
        self.assertEqual(
            parse_schedule("daily@23:00").next_after(utc("2026-01-01T12:00")),
            utc("2026-01-01T23:00"),
        )

    def test_monthly_later_the_same_day(self) -> None:
        """Asked on the day, minutes before the time, it fires that day."""
        self.assertEqual(
            parse_schedule("monthly@15@10:30").next_after(utc("2026-01-15T10:25")),
            utc("2026-01-15T10:30"),
        )

    def test_hour_range_covering_the_day_is_fixed_time(self) -> None:
        """
        C{0 0-23 * * *} is a fixed-time job for cron(8) (neither its minute
        nor its hour field starts with C{*}): on the fall-back day it fires
        once in the repeated hour, unlike C{0 * * * *} and C{hourly}.
        """
        schedule = parse_schedule("0 0-23 * * *", BERLIN)
        t, fired = utc("2026-10-24T23:30"), []
        for _ in range(3):
            t = schedule.next_after(t)
            fired.append(t)
        self.assertEqual(
            fired,
            [utc("2026-10-25T00:00"), utc("2026-10-25T02:00"), utc("2026-10-25T03:00")],
        )

    def test_wildcard_hour_is_real_time(self) -> None:
        """C{0 * * * *} and C{hourly} fire in both passes of the repeated hour."""
        for text in ("0 * * * *", "hourly"):
            schedule = parse_schedule(text, BERLIN)
            t, fired = utc("2026-10-24T23:30"), []
            for _ in range(3):
                t = schedule.next_after(t)
                fired.append(t)
            self.assertEqual(
                fired,
                [utc("2026-10-25T00:00"), utc("2026-10-25T01:00"), utc("2026-10-25T02:00")],
                text,
            )

    def test_local_time_zone_of_the_process_does_not_matter(self) -> None:
        """The same fire times with the process in another zone (TZ)."""
        old = os.environ.get("TZ")

        def restore() -> None:
            if old is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old
            time.tzset()

        self.addCleanup(restore)
        for zone in ("Asia/Tokyo", "America/New_York"):
            os.environ["TZ"] = zone
            time.tzset()
            self.assertEqual(
                parse_schedule("hourly@15").next_after(utc("2026-03-08T06:20")),
                utc("2026-03-08T07:15"),
            )
            self.assertEqual(
                parse_schedule("0 * 29 2 *", BERLIN).next_after(utc("2026-03-01T00:00")),
                utc("2028-02-28T23:00"),
            )
            # 02:30 does not exist in Berlin on 2026-03-29: fires at the transition.
            self.assertEqual(
                parse_schedule("daily@02:30", BERLIN).next_after(utc("2026-03-28T12:00")),
                utc("2026-03-29T01:00"),
            )
            self.assertEqual(
                parse_schedule("30 * * * *", BERLIN).next_after(utc("2026-03-29T00:45")),
                utc("2026-03-29T01:30"),
            )


class ParseResultTests(SynchronousTestCase):
    def test_text_kept(self) -> None:
        """The value as written is kept, for every form."""
        for text in (
            "0 * * * *", " 5  4 * * 1 ", "minutely", "hourly@5", "daily@10:00",
            " Daily @ 10:00 ", "weekly@Mon@10:00", "monthly@1@10:00",
        ):
            self.assertEqual(parse_schedule(text).text, text)

    def test_messages(self) -> None:
        """Refusals name the offending part, word for word."""
        for text, message in [
            ("weekly@10:00@Mon", "weekly: days must come before times, got '10:00' first"),
            ("monthly@10:00@1", "monthly: days must come before times, got '10:00' first"),
            ("", "empty schedule"),
            ("  ", "empty schedule"),
            ("minutely@5", "minutely takes no @ parts"),
            ("hourly@5@6", "hourly takes at most one @ part (minutes)"),
            ("daily@10:00@11:00", "daily takes at most one @ part (times)"),
            ("hourly@5,", "empty item in minute list '5,'"),
            ("monthly@1,,2", "empty item in day list '1,,2'"),
            ("monthly@32", "day 32 is out of range 1-31"),
            ("hourly@60", "minute 60 is out of range 0-59"),
            ("yearly", "unknown schedule keyword 'yearly' "
             "(expected minutely, hourly, daily, weekly, monthly or a cron expression)"),
            ("d\u00e4ily", "unknown schedule 'd\u00e4ily' "
             "(expected minutely, hourly, daily, weekly, monthly or a cron expression)"),
            ("weekly@Mo", "unknown weekday 'Mo' (use Sunday..Saturday or Sun..Sat)"),
            ("monthly@1@2@3", "monthly takes at most two @ parts (days, then times)"),
            ("daily@24:00", "time '24:00' is out of range 00:00-23:59"),
            ("daily@10:60", "time '10:60' is out of range 00:00-23:59"),
            ("daily@1000", "time '1000' is not HH:MM"),
            ("daily@10:00,", "empty item in time list '10:00,'"),
            ("weekly@Mon,,Tue", "empty item in weekday list 'Mon,,Tue'"),
            ("hourly@x", "minute 'x' is not a number 0-59"),
            ("0 0 * * * *",
             "cron expression '0 0 * * * *' has 6 fields; expected 5 "
             "(minute hour day-of-month month day-of-week) (seconds/year fields are not supported)"),
            ("0 0 * * * * *",
             "cron expression '0 0 * * * * *' has 7 fields; expected 5 "
             "(minute hour day-of-month month day-of-week) (seconds/year fields are not supported)"),
            ("0 0 *", "cron expression '0 0 *' has 3 fields; expected 5 "
             "(minute hour day-of-month month day-of-week)"),
            ("H * * * *", "invalid cron expression 'H * * * *': bad minute"),
            ("0 0 30 2 *", "invalid cron expression '0 0 30 2 *': never fires (no month of the month field has that day)"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse_schedule(text)
            self.assertEqual(str(caught.exception), message)

    def test_naive_time_refused(self) -> None:
        with self.assertRaises(ValueError) as caught:
            parse_schedule("hourly").next_after(datetime.datetime(2026, 1, 1))
        self.assertEqual(
            str(caught.exception),
            "next_after needs a timezone-aware datetime, got datetime.datetime(2026, 1, 1, 0, 0)",
        )


class DescribeTests(SynchronousTestCase):
    def test_weekly_days_from_sunday(self) -> None:
        self.assertEqual(
            parse_schedule("weekly@Sat,Mon,Sun,Wed@12:00,10:00").describe(),
            "weekly on Sun, Mon, Wed, Sat at 10:00, 12:00 (UTC)",
        )

    def test_monthly_several_times(self) -> None:
        self.assertEqual(
            parse_schedule("monthly@15,1@18:30,06:00", BERLIN).describe(),
            "monthly on days 1, 15 at 06:00, 18:30 (Europe/Berlin)",
        )
