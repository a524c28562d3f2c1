"""
Tests for L{karajo.schedule}.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from karajo.schedule import Schedule, parse_schedule

UTC = datetime.UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # 30-minute DST shift
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30, no DST
MINUTE = datetime.timedelta(minutes=1)


def utc(*args: int) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(schedule: Schedule, start: datetime.datetime, end: datetime.datetime) -> list[datetime.datetime]:
    """
    Every fire in C{(start, end)}, found the way the scheduler does: by
    feeding each result back into C{next_after}.
    """
    result = []
    t = schedule.next_after(start)
    while t < end:
        result.append(t)
        t = schedule.next_after(t)
    return result


class CalendarFormTests(SynchronousTestCase):
    """
    The calendar forms fire at exactly the times the grammar promises.
    """

    start = utc(2026, 1, 1)

    def test_minutely(self) -> None:
        """
        C{minutely} fires 1,440 times a day, each at second 0 of a distinct
        minute.
        """
        result = fires(parse_schedule("minutely"), self.start - MINUTE, self.start + datetime.timedelta(days=1))
        self.assertEqual(len(result), 1440)
        self.assertEqual(len(set(result)), 1440)
        self.assertTrue(all(t.second == 0 and t.microsecond == 0 for t in result))
        self.assertEqual(result[0], self.start)

    def test_hourly_minutes(self) -> None:
        """
        C{hourly@0,15,30,45} fires 96 times a day at those minutes.
        """
        result = fires(parse_schedule("hourly@0,15,30,45"), self.start - MINUTE, self.start + datetime.timedelta(days=1))
        self.assertEqual(len(result), 96)
        self.assertEqual({t.minute for t in result}, {0, 15, 30, 45})
        self.assertTrue(all(t.second == 0 for t in result))

    def test_daily_times(self) -> None:
        """
        C{daily@00:00,12:00} fires twice a day.
        """
        result = fires(parse_schedule("daily@00:00,12:00"), self.start - MINUTE, self.start + datetime.timedelta(days=3))
        self.assertEqual(
            result,
            [utc(2026, 1, d, h) for d in (1, 2, 3) for h in (0, 12)],
        )

    def test_weekly_days_and_times(self) -> None:
        """
        C{weekly@Mon,fri@09:30} fires only on Mondays and Fridays at 09:30;
        day names are case-insensitive.
        """
        result = fires(parse_schedule("weekly@Mon,fri@09:30"), self.start, self.start + datetime.timedelta(weeks=4))
        # 2026-01-01 is a Thursday.
        self.assertEqual(
            result,
            [utc(2026, 1, d, 9, 30) for d in (2, 5, 9, 12, 16, 19, 23, 26)],
        )
        self.assertEqual({t.strftime("%a") for t in result}, {"Mon", "Fri"})

    def test_monthly_31_skips_short_months(self) -> None:
        """
        C{monthly@31} fires only in months that have a 31st.
        """
        result = fires(parse_schedule("monthly@31"), self.start, utc(2027, 1, 1))
        self.assertEqual([t.month for t in result], [1, 3, 5, 7, 8, 10, 12])
        self.assertTrue(all(t.day == 31 and t.hour == 0 and t.minute == 0 for t in result))

    def test_monthly_days_and_times(self) -> None:
        """
        C{monthly@1,15@06:00,18:00} fires on both days at both times, and a
        single C{@} part with a colon is the times list.
        """
        result = fires(parse_schedule("monthly@15,1@18:00,06:00"), self.start, utc(2026, 2, 1))
        self.assertEqual(
            result,
            [utc(2026, 1, 1, 6), utc(2026, 1, 1, 18), utc(2026, 1, 15, 6), utc(2026, 1, 15, 18)],
        )
        result = fires(parse_schedule("monthly@07:45"), self.start, utc(2026, 4, 1))
        self.assertEqual(result, [utc(2026, m, 1, 7, 45) for m in (1, 2, 3)])

    def test_weekly_single_part_decided_by_content(self) -> None:
        """
        With one C{@} part, weekly treats it as times when it has a colon and
        as days otherwise.
        """
        self.assertEqual(
            fires(parse_schedule("weekly@10:00"), self.start, utc(2026, 1, 15)),
            [utc(2026, 1, 4, 10), utc(2026, 1, 11, 10)],
        )
        self.assertEqual(
            fires(parse_schedule("weekly@Wednesday"), self.start, utc(2026, 1, 15)),
            [utc(2026, 1, 7), utc(2026, 1, 14)],
        )

    def test_defaults(self) -> None:
        """
        Without @ parts: hourly at :00, daily at 00:00, weekly Sunday 00:00,
        monthly on day 1 at 00:00.
        """
        end = utc(2026, 3, 1)
        hourly = fires(parse_schedule("hourly"), self.start, self.start + datetime.timedelta(hours=5))
        self.assertEqual(hourly, [utc(2026, 1, 1, h) for h in range(1, 5)])
        daily = fires(parse_schedule("daily"), self.start, utc(2026, 1, 4))
        self.assertEqual(daily, [utc(2026, 1, 2), utc(2026, 1, 3)])
        weekly = fires(parse_schedule("weekly"), self.start, utc(2026, 1, 20))
        self.assertEqual(weekly, [utc(2026, 1, 4), utc(2026, 1, 11), utc(2026, 1, 18)])
        self.assertEqual({t.strftime("%A") for t in weekly}, {"Sunday"})
        monthly = fires(parse_schedule("monthly"), self.start, end)
        self.assertEqual(monthly, [utc(2026, 2, 1)])

    def test_duplicates_case_and_whitespace(self) -> None:
        """
        Duplicated list items fire once; keywords are case-insensitive and
        surrounding whitespace is ignored; C{text} keeps the value as written.
        """
        schedule = parse_schedule("  HOURLY@5,5,05\n")
        self.assertEqual(schedule.text, "  HOURLY@5,5,05\n")
        result = fires(schedule, self.start, self.start + datetime.timedelta(hours=3))
        self.assertEqual(result, [utc(2026, 1, 1, h, 5) for h in range(3)])

    def test_spaces_inside_keyword_forms(self) -> None:
        """Spaces between the parts of a keyword form are spacing, not cron."""
        for text, same_as in (("hourly@ 5, 30", "hourly@5,30"),
                              ("daily @ 01:00 , 13:30", "daily@01:00,13:30"),
                              ("weekly@ Mon, Fri @ 09:00", "weekly@Mon,Fri@09:00")):
            end = self.start + datetime.timedelta(days=14)
            self.assertEqual(fires(parse_schedule(text), self.start, end),
                             fires(parse_schedule(same_as), self.start, end), text)
        with self.assertRaises(ValueError) as caught:
            parse_schedule("hourly@ 5, 75")
        self.assertIn("minute", str(caught.exception))

    def test_strictly_after(self) -> None:
        """
        Asked exactly at a fire instant, C{next_after} returns the next one;
        asked a microsecond before, it returns that instant.
        """
        cases = [
            ("minutely", utc(2026, 1, 1, 10, 7), utc(2026, 1, 1, 10, 8)),
            ("hourly@15,45", utc(2026, 1, 1, 10, 15), utc(2026, 1, 1, 10, 45)),
            ("daily@12:00", utc(2026, 1, 1, 12), utc(2026, 1, 2, 12)),
            ("weekly@Thu@08:00", utc(2026, 1, 1, 8), utc(2026, 1, 8, 8)),
            ("monthly@1", utc(2026, 1, 1), utc(2026, 2, 1)),
            ("*/10 * * * *", utc(2026, 1, 1, 10, 10), utc(2026, 1, 1, 10, 20)),
            ("0 12 * * *", utc(2026, 1, 1, 12), utc(2026, 1, 2, 12)),
        ]
        for text, at, following in cases:
            schedule = parse_schedule(text)
            self.assertEqual(schedule.next_after(at), following, text)
            self.assertEqual(schedule.next_after(at - datetime.timedelta(microseconds=1)), at, text)

    def test_result_is_utc_for_any_input_zone(self) -> None:
        """
        C{next_after} accepts any aware datetime and answers in UTC.
        """
        t = datetime.datetime(2026, 1, 1, 9, 0, tzinfo=BERLIN)  # 08:00Z
        result = parse_schedule("daily@08:30").next_after(t)
        self.assertEqual(result, utc(2026, 1, 1, 8, 30))
        self.assertIs(result.tzinfo, UTC)

    def test_naive_datetime_rejected(self) -> None:
        """
        A naive datetime is refused rather than guessed at.
        """
        self.assertRaises(ValueError, parse_schedule("minutely").next_after, datetime.datetime(2026, 1, 1))

    def test_zone_without_dst(self) -> None:
        """
        Wall-clock times are local: in Asia/Kolkata (+05:30) daily@09:00 is
        03:30Z and hourly@0 is at :30 UTC.
        """
        self.assertEqual(parse_schedule("daily@09:00", KOLKATA).next_after(self.start), utc(2026, 1, 1, 3, 30))
        self.assertEqual(parse_schedule("hourly", KOLKATA).next_after(self.start), utc(2026, 1, 1, 0, 30))


class CronTests(SynchronousTestCase):
    """
    Values with spaces are standard 5-field cron expressions.
    """

    # (expression, after, expected next fire), all UTC.  2026-01-01 is a Thursday.
    table = [
        ("*/5 * * * *", utc(2026, 1, 1, 0, 2), utc(2026, 1, 1, 0, 5)),
        ("*/5 * * * *", utc(2026, 1, 1, 0, 55, 30), utc(2026, 1, 1, 1, 0)),
        ("0 9 * * mon-fri", utc(2026, 1, 2, 10), utc(2026, 1, 5, 9)),
        ("0 9 * * MON-FRI", utc(2026, 1, 1, 8), utc(2026, 1, 1, 9)),
        ("30 4 1 * *", utc(2026, 1, 1, 5), utc(2026, 2, 1, 4, 30)),
        ("0 0 1 jan *", utc(2026, 1, 1), utc(2027, 1, 1)),
        ("15 14 1 * *", utc(2026, 1, 31), utc(2026, 2, 1, 14, 15)),
        ("0 22 * * 1-5", utc(2026, 1, 2, 22), utc(2026, 1, 5, 22)),
        ("23 0-20/2 * * *", utc(2026, 1, 1, 0, 23), utc(2026, 1, 1, 2, 23)),
        ("5 4 * * sun", utc(2026, 1, 1), utc(2026, 1, 4, 4, 5)),
        ("0 0 * * 7", utc(2026, 1, 1), utc(2026, 1, 4)),
        ("0 0,12 1 */2 *", utc(2026, 1, 1, 0), utc(2026, 1, 1, 12)),
        ("0 0 29 2 *", utc(2026, 1, 1), utc(2028, 2, 29)),
        ("0 0 13 * fri", utc(2026, 1, 1), utc(2026, 1, 2)),  # day-of-month OR weekday
        ("59 23 31 12 *", utc(2026, 1, 1), utc(2026, 12, 31, 23, 59)),
        ("0 0 L * *", utc(2026, 2, 1), utc(2026, 2, 28)),
    ]

    def test_known_next_fires(self) -> None:
        """
        Each expression's next fire after a given instant is the known one.
        """
        for expression, after, expected in self.table:
            self.assertEqual(parse_schedule(expression).next_after(after), expected, expression)

    def test_timezone_applies(self) -> None:
        """
        The schedule's timezone applies to cron expressions too.
        """
        schedule = parse_schedule("0 9 * * *", BERLIN)
        self.assertEqual(schedule.next_after(utc(2026, 1, 1)), utc(2026, 1, 1, 8))
        self.assertEqual(schedule.next_after(utc(2026, 7, 1)), utc(2026, 7, 1, 7))

    def test_matches_calendar_forms(self) -> None:
        """
        Equivalent cron and calendar forms fire at the same instants over a
        year in a DST zone.
        """
        pairs = [
            ("daily@02:30", "30 2 * * *"),
            ("weekly@Mon,Fri@09:30", "30 9 * * mon,fri"),
            ("monthly@31@01:15", "15 1 31 * *"),
            ("hourly@0,30", "0,30 * * * *"),
        ]
        for zone in (BERLIN, NEW_YORK):
            for calendar_form, cron_form in pairs:
                start, end = utc(2026, 1, 1), utc(2027, 1, 1)
                if calendar_form.startswith("hourly"):
                    start, end = utc(2026, 3, 7), utc(2026, 3, 30)
                self.assertEqual(
                    fires(parse_schedule(calendar_form, zone), start, end),
                    fires(parse_schedule(cron_form, zone), start, end),
                    f"{calendar_form} / {cron_form} in {zone}",
                )


def _fires_by_day(schedule: Schedule, zone: ZoneInfo, day: datetime.date) -> list[datetime.datetime]:
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), zone).astimezone(UTC)
    return fires(schedule, start - MINUTE, end)


class DaylightSavingTests(SynchronousTestCase):
    """
    Wall-clock schedules fire once per local day across DST changes: a
    nonexistent time fires at the end of the gap, a repeated time at its
    first occurrence.  Real-time schedules fire in every real hour.
    """

    def assertOneFire(self, texts: list[str], zone: ZoneInfo, day: datetime.date, expected: datetime.datetime) -> None:
        for text in texts:
            result = _fires_by_day(parse_schedule(text, zone), zone, day)
            self.assertEqual(result, [expected], f"{text} in {zone} on {day}")

    def test_berlin_spring_forward(self) -> None:
        """
        2026-03-29 Berlin: 02:30 does not exist; it fires once, at 03:00 CEST.
        """
        self.assertOneFire(["daily@02:30", "30 2 * * *"], BERLIN, datetime.date(2026, 3, 29), utc(2026, 3, 29, 1, 0))
        # The days around are ordinary.
        self.assertOneFire(["daily@02:30", "30 2 * * *"], BERLIN, datetime.date(2026, 3, 28), utc(2026, 3, 28, 1, 30))
        self.assertOneFire(["daily@02:30", "30 2 * * *"], BERLIN, datetime.date(2026, 3, 30), utc(2026, 3, 30, 0, 30))

    def test_berlin_fall_back(self) -> None:
        """
        2026-10-25 Berlin: 02:30 happens twice; it fires once, at the first
        (CEST, 00:30Z).
        """
        self.assertOneFire(["daily@02:30", "30 2 * * *"], BERLIN, datetime.date(2026, 10, 25), utc(2026, 10, 25, 0, 30))
        self.assertOneFire(["daily@02:30", "30 2 * * *"], BERLIN, datetime.date(2026, 10, 26), utc(2026, 10, 26, 1, 30))

    def test_new_york_spring_forward(self) -> None:
        """
        2026-03-08 New York: 02:30 does not exist; it fires once, at 03:00 EDT.
        """
        self.assertOneFire(["daily@02:30", "30 2 * * *"], NEW_YORK, datetime.date(2026, 3, 8), utc(2026, 3, 8, 7, 0))
        self.assertOneFire(["daily@02:30", "30 2 * * *"], NEW_YORK, datetime.date(2026, 3, 9), utc(2026, 3, 9, 6, 30))

    def test_new_york_fall_back(self) -> None:
        """
        2026-11-01 New York: 01:30 happens twice and fires once, at the first
        (EDT, 05:30Z); 02:30 happens once (EST).
        """
        day = datetime.date(2026, 11, 1)
        self.assertOneFire(["daily@01:30", "30 1 * * *"], NEW_YORK, day, utc(2026, 11, 1, 5, 30))
        self.assertOneFire(["daily@02:30", "30 2 * * *"], NEW_YORK, day, utc(2026, 11, 1, 7, 30))

    def test_several_times_in_one_gap_fire_once(self) -> None:
        """
        Two wall times inside the same gap both map to its end: one fire.
        """
        self.assertOneFire(
            ["daily@02:00,02:45", "0,45 2 * * *"], BERLIN, datetime.date(2026, 3, 29), utc(2026, 3, 29, 1, 0)
        )

    def test_weekly_and_monthly_follow_the_same_rules(self) -> None:
        """
        2026-03-29 and 2026-10-25 are Sundays: weekly and monthly forms obey
        the gap and fold rules as daily does.
        """
        self.assertOneFire(["weekly@Sun@02:30", "monthly@29@02:30"], BERLIN, datetime.date(2026, 3, 29), utc(2026, 3, 29, 1))
        self.assertOneFire(["weekly@Sun@02:30", "monthly@25@02:30"], BERLIN, datetime.date(2026, 10, 25), utc(2026, 10, 25, 0, 30))

    def test_hourly_fires_every_real_hour(self) -> None:
        """
        C{hourly@30} and C{30 * * * *} fire in each real hour: 23 times on
        the spring day and 25 on the fall-back day (the repeated hour twice).
        """
        for text in ("hourly@30", "30 * * * *"):
            schedule = parse_schedule(text, BERLIN)
            spring = _fires_by_day(schedule, BERLIN, datetime.date(2026, 3, 29))
            autumn = _fires_by_day(schedule, BERLIN, datetime.date(2026, 10, 25))
            self.assertEqual(len(spring), 23, text)
            self.assertEqual(len(autumn), 25, text)
            self.assertIn(utc(2026, 10, 25, 0, 30), autumn)
            self.assertIn(utc(2026, 10, 25, 1, 30), autumn)

    def test_minutely_every_real_minute(self) -> None:
        """
        C{minutely} in a zone fires every real minute across a fall-back day.
        """
        result = _fires_by_day(parse_schedule("minutely", BERLIN), BERLIN, datetime.date(2026, 10, 25))
        self.assertEqual(len(result), 25 * 60)

    def test_against_brute_force(self) -> None:
        """
        Around DST changes in several zones (including Lord Howe's 30-minute
        shift), C{next_after} agrees with a minute-by-minute scan that applies
        the documented rules directly.
        """
        day_predicates: dict[str, Callable[[datetime.datetime], bool]] = {
            "daily@01:30,02:30,03:00": lambda w: (w.hour, w.minute) in {(1, 30), (2, 30), (3, 0)},
            "45 1,2 * * *": lambda w: w.minute == 45 and w.hour in (1, 2),
            "weekly@Sun,Sat@02:10": lambda w: w.weekday() in (5, 6) and (w.hour, w.minute) == (2, 10),
        }
        real_predicates: dict[str, Callable[[datetime.datetime], bool]] = {
            "hourly@0,20,45": lambda w: w.minute in (0, 20, 45),
            "*/15 * * * *": lambda w: w.minute % 15 == 0,
        }
        windows = [
            (BERLIN, utc(2026, 3, 28), utc(2026, 3, 30)),
            (BERLIN, utc(2026, 10, 24), utc(2026, 10, 26)),
            (NEW_YORK, utc(2026, 3, 7), utc(2026, 3, 9, 12)),
            (NEW_YORK, utc(2026, 10, 31), utc(2026, 11, 2, 12)),
            (LORD_HOWE, utc(2026, 4, 3), utc(2026, 4, 6)),
            (LORD_HOWE, utc(2026, 10, 2), utc(2026, 10, 5)),
        ]
        for zone, start, end in windows:
            for text, predicate in day_predicates.items():
                expected = _brute_force(zone, start, end, predicate, once_per_wall_time=True)
                self.assertEqual(fires(parse_schedule(text, zone), start - MINUTE, end), expected, f"{text} {zone}")
            for text, predicate in real_predicates.items():
                expected = _brute_force(zone, start, end, predicate, once_per_wall_time=False)
                self.assertEqual(fires(parse_schedule(text, zone), start - MINUTE, end), expected, f"{text} {zone}")


def _brute_force(
    zone: ZoneInfo,
    start: datetime.datetime,
    end: datetime.datetime,
    predicate: Callable[[datetime.datetime], bool],
    once_per_wall_time: bool,
) -> list[datetime.datetime]:
    """
    Scan every real minute in C{[start, end)}.  Real-time rule: fire when the
    wall reading matches.  Wall-clock rule: additionally skip second
    occurrences (fold=1), and fire at the first minute after a gap if any
    skipped wall time matched.
    """
    result = []
    x = start
    previous_wall = (x - MINUTE).astimezone(zone).replace(tzinfo=None)
    while x < end:
        local = x.astimezone(zone)
        wall = local.replace(tzinfo=None)
        fire = predicate(wall) and not (once_per_wall_time and local.fold)
        if once_per_wall_time and wall - previous_wall > MINUTE:
            skipped = previous_wall + MINUTE
            while skipped < wall:
                fire = fire or predicate(skipped)
                skipped += MINUTE
        if fire:
            result.append(x)
        previous_wall = wall
        x += MINUTE
    return result


class InvalidInputTests(SynchronousTestCase):
    """
    Bad values raise L{ValueError} with a message naming the problem.
    """

    invalid = [
        "",
        "   ",
        "yearly",
        "minutely@5",
        "hourly@",
        "hourly@60",
        "hourly@-1",
        "hourly@1,,2",
        "hourly@5@10",
        "hourly@x",
        "hourly@007",
        "daily@24:00",
        "daily@12:60",
        "daily@12",
        "daily@12:5",
        "daily@12:00,",
        "daily@12:00@13:00",
        "weekly@Mo",
        "weekly@Mon@09:30@10:00",
        "weekly@09:30@Mon",
        "weekly@Mon,09:30",
        "weekly@",
        "monthly@0",
        "monthly@32",
        "monthly@1@25:00",
        "monthly@,1",
        "monthly@1@2@3",
        "daily@１２:00",  # fullwidth digits
        "wëekly",
        "@daily",
        "* * * *",
        "* * * * * *",
        "0 0 * * * 2026",
        "61 * * * *",
        "0 0 31 2 *",
        "*/0 * * * *",
        "H * * * *",
        "R * * * *",
        "0 0 * * 8",
    ]

    def test_invalid_inputs(self) -> None:
        """
        Every value in the table raises ValueError with a non-empty message.
        """
        for text in self.invalid:
            with self.assertRaises(ValueError, msg=repr(text)) as caught:
                parse_schedule(text)
            self.assertTrue(str(caught.exception), repr(text))

    def test_messages_are_specific(self) -> None:
        """
        Messages name the offending item.
        """
        cases = {
            "hourly@60": "minute 60 is out of range 0-59",
            "weekly@Mo": "unknown weekday 'Mo'",
            "monthly@32": "day 32 is out of range 1-31",
            "yearly": "unknown schedule keyword 'yearly'",
            "* * * * * *": "has 6 fields; expected 5",
            "0 0 31 2 *": "never fires",
            "hourly@1,,2": "empty item",
        }
        for text, fragment in cases.items():
            with self.assertRaises(ValueError) as caught:
                parse_schedule(text)
            self.assertIn(fragment, str(caught.exception), text)

    @settings(max_examples=500, deadline=None)
    @given(st.text())
    def test_arbitrary_text(self, text: str) -> None:
        """
        Any text gives a working Schedule or a ValueError, nothing else.
        """
        _check_parses_or_rejects(self, text)

    @settings(max_examples=500, deadline=None)
    @given(
        st.builds(
            "".join,
            st.lists(
                st.sampled_from(
                    ["minutely", "hourly", "daily", "weekly", "monthly", "Mon", "sun", "@", ",", ":",
                     "0", "5", "12", "31", "59", "60", "*", "/", "-", " ", "L", "#", "?"]
                ),
                max_size=12,
            ),
        )
    )
    def test_grammar_fragments(self, text: str) -> None:
        """
        Text assembled from grammar pieces (more often valid) also gives a
        working Schedule or a ValueError, nothing else.
        """
        _check_parses_or_rejects(self, text)


def _check_parses_or_rejects(case: SynchronousTestCase, text: str) -> None:
    try:
        schedule = parse_schedule(text, BERLIN)
    except ValueError:
        return
    t = utc(2026, 10, 25, 0, 59, 30)
    following = schedule.next_after(t)
    case.assertGreater(following, t)
    case.assertIs(following.tzinfo, UTC)
    case.assertIsInstance(schedule.describe(), str)


class DescribeTests(SynchronousTestCase):
    """
    C{describe()} gives the web UI plain words for each form.
    """

    def test_describe(self) -> None:
        """
        Each form reads naturally; wall-clock forms name their zone.
        """
        cases = [
            ("minutely", None, "every minute"),
            ("hourly", None, "hourly at :00"),
            ("hourly@45,0,15,30", None, "hourly at :00, :15, :30, :45"),
            ("hourly@30", KOLKATA, "hourly at :30 (Asia/Kolkata)"),
            ("daily", None, "daily at 00:00 (UTC)"),
            ("daily@12:00,0:00", None, "daily at 00:00, 12:00 (UTC)"),
            ("weekly", None, "weekly on Sun at 00:00 (UTC)"),
            ("weekly@fri,MONDAY@09:30", BERLIN, "weekly on Mon, Fri at 09:30 (Europe/Berlin)"),
            ("monthly@31", None, "monthly on day 31 at 00:00 (UTC)"),
            ("monthly@15,1@06:00", None, "monthly on days 1, 15 at 06:00 (UTC)"),
            (" */5  * * * * ", None, "cron */5 * * * * (UTC)"),
            ("0 9 * * mon-fri", NEW_YORK, "cron 0 9 * * mon-fri (America/New_York)"),
        ]
        for text, zone, expected in cases:
            self.assertEqual(parse_schedule(text, zone).describe(), expected, text)


class CronSemanticsTests(SynchronousTestCase):
    """
    Cron expressions mean what Debian's crontab(5) and cron(8) say, in the
    places where karajo once read them differently.
    """

    def test_single_value_range(self) -> None:
        """
        C{N-N} is the one value N, not the whole field: C{5-5 * * * *} fires
        once an hour and C{0 0 * * 1-1} on Mondays only.
        """
        start = utc(2026, 1, 1)  # a Thursday
        self.assertEqual(
            fires(parse_schedule("5-5 * * * *"), start, utc(2026, 1, 1, 3)),
            [utc(2026, 1, 1, h, 5) for h in range(3)],
        )
        self.assertEqual(
            fires(parse_schedule("0 0 * * 1-1"), start, utc(2026, 1, 20)),
            [utc(2026, 1, 5), utc(2026, 1, 12), utc(2026, 1, 19)],
        )

    def test_star_day_field_ands_the_other(self) -> None:
        """
        When either day field starts with C{*} (C{*/2}, C{*/1} too), both
        must match: C{0 0 */2 * 1} is a Monday that is an odd day of the
        month.  Only when neither starts with C{*} are they ORed.
        """
        start = utc(2026, 1, 1)
        # Mondays of 2026-01..02: 5, 12, 19, 26, Feb 2, 9, 16, 23.
        self.assertEqual(
            fires(parse_schedule("0 0 */2 * 1"), start, utc(2026, 3, 1)),
            [utc(2026, 1, 5), utc(2026, 1, 19), utc(2026, 2, 9), utc(2026, 2, 23)],
        )
        self.assertEqual(
            fires(parse_schedule("0 0 */1 * 1"), start, utc(2026, 1, 20)),
            [utc(2026, 1, 5), utc(2026, 1, 12), utc(2026, 1, 19)],
        )
        self.assertEqual(
            fires(parse_schedule("0 0 1 * */7"), start, utc(2026, 4, 1)),
            [utc(2026, 2, 1), utc(2026, 3, 1)],  # the 1st that is a Sunday
        )
        # Neither starts with "*": the 13th or any Friday.
        self.assertEqual(
            fires(parse_schedule("0 0 13 * 5"), start, utc(2026, 1, 17)),
            [utc(2026, 1, 2), utc(2026, 1, 9), utc(2026, 1, 13), utc(2026, 1, 16)],
        )

    def test_weekday_step_reaches_sunday_seven(self) -> None:
        """
        Day-of-week runs 0-7 and 7 is Sunday, so C{1/2} (an extension:
        C{1-7/2}) is Monday, Wednesday, Friday and Sunday.
        """
        result = fires(parse_schedule("0 0 * * 1/2"), utc(2026, 1, 1), utc(2026, 1, 12))
        self.assertEqual({t.strftime("%a") for t in result}, {"Mon", "Wed", "Fri", "Sun"})
        self.assertIn(utc(2026, 1, 4), result)  # a Sunday
        self.assertEqual(
            fires(parse_schedule("0 0 * * 5-7"), utc(2026, 1, 1), utc(2026, 1, 8)),
            [utc(2026, 1, 2), utc(2026, 1, 3), utc(2026, 1, 4)],
        )

    def test_dst_rule_follows_the_star(self) -> None:
        """
        Whether a cron job is a wildcard job (real time) or a fixed-time job
        (wall clock) is decided by a C{*} at the start of the minute or hour
        field, not by how many hours the hour field covers.
        """
        day = datetime.date(2026, 10, 25)  # Berlin falls back, 02:xx twice
        # Covers all 24 hours but is written without "*": fixed-time, 24 fires.
        fixed = _fires_by_day(parse_schedule("0 0-23 * * *", BERLIN), BERLIN, day)
        self.assertEqual(len(fixed), 24)
        self.assertIn(utc(2026, 10, 25, 0), fixed)
        self.assertNotIn(utc(2026, 10, 25, 1), fixed)
        # One hour only, but the minute field starts with "*": wildcard.
        wild = _fires_by_day(parse_schedule("*/30 2 * * *", BERLIN), BERLIN, day)
        self.assertEqual(wild, [utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30),
                                utc(2026, 10, 25, 1), utc(2026, 10, 25, 1, 30)])

    def test_extensions_kept(self) -> None:
        """
        Beyond crontab(5), karajo keeps C{L}/C{LW} (last day / last weekday
        of the month), C{D#n} (nth weekday) and C{DL} (last weekday D).
        """
        start = utc(2026, 1, 1)
        self.assertEqual(parse_schedule("0 0 LW * *").next_after(start), utc(2026, 1, 30))
        self.assertEqual(parse_schedule("0 0 * * 1#2").next_after(start), utc(2026, 1, 12))
        self.assertEqual(parse_schedule("0 0 * * 5L").next_after(start), utc(2026, 1, 30))

    def test_refused_forms(self) -> None:
        """
        Text Debian cron refuses, or silently reads as something else, is a
        config error with a message naming the problem.
        """
        cases = {
            "5.5 * * * *": "not a standard cron expression",  # Debian: minute 5
            "0 0 * * 5-1": "bad day-of-week",  # Debian: never fires
            "0 0 ? * *": "not a standard cron expression",
            "0 0 0 * *": "bad day-of-month",
            "0 0 31 4,6 *": "never fires",
            "0-64/30 * * * *": "bad minute",
        }
        for text, fragment in cases.items():
            with self.assertRaises(ValueError, msg=text) as caught:
                parse_schedule(text)
            self.assertIn(fragment, str(caught.exception), text)


# ---------------------------------------------------------------------------
# A second, independent cron evaluator: crontab(5) read literally and
# matched minute by minute.  It shares no code with karajo.schedule or cronsim.

_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DOW_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (low, high, names with the number of their first entry)
_FIELDS = [(0, 59, None), (0, 23, None), (1, 31, None), (1, 12, (_MONTH_NAMES, 1)), (0, 7, (_DOW_NAMES, 0))]


def _value(text: str, field: int) -> int:
    names = _FIELDS[field][2]
    if names is not None and text.lower() in names[0]:
        return names[0].index(text.lower()) + names[1]
    return int(text)


def _field_set(text: str, field: int) -> set[int]:
    """
    The values a field matches: a comma list of C{*}, C{N}, C{A-B}, each of
    C{*} and C{A-B} optionally followed by C{/STEP}; C{N/STEP} is karajo's
    documented extension C{N-high/STEP}.
    """
    low, high, _ = _FIELDS[field]
    values: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, b = body.split("-")
            first, last = _value(a, field), _value(b, field)
        else:
            first = _value(body, field)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    if field == 4 and 7 in values:
        values.add(0)
    return values


class _BruteCron:
    """
    Fires at every minute whose five wall-clock fields match (UTC only).
    """

    def __init__(self, expression: str) -> None:
        fields = expression.split()
        self.minutes, self.hours, self.doms, self.months, self.dows = (
            _field_set(text, i) for i, text in enumerate(fields)
        )
        # crontab(5)/Debian: the two day fields are ORed only when neither
        # starts with "*"; otherwise both must match.
        self.day_or = not fields[2].startswith("*") and not fields[4].startswith("*")

    def day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.doms
        dow = day.isoweekday() % 7 in self.dows
        return (dom or dow) if self.day_or else (dom and dow)

    def next_after(self, t: datetime.datetime, horizon_days: int = 366 * 30) -> datetime.datetime | None:
        """
        The first whole minute after C{t} that matches, scanning minute by
        minute through every day whose date fields match.
        """
        first = t.replace(second=0, microsecond=0) + MINUTE
        day = first.date()
        for _ in range(horizon_days):
            if self.day_matches(day):
                minute = datetime.datetime.combine(day, datetime.time(), UTC)
                for _ in range(1440):
                    if (minute >= first and minute.hour in self.hours
                            and minute.minute in self.minutes):
                        return minute
                    minute += MINUTE
            day += datetime.timedelta(days=1)
        return None


def _generated_expressions(count: int, seed: int) -> list[str]:
    """
    Random but reproducible expressions covering every item form of each
    field: C{*}, C{*/S}, C{N}, C{A-B} (including C{N-N}), C{A-B/S}, C{N/S},
    names, 7 for Sunday, and lists of them.
    """
    rng = random.Random(seed)

    def item(field: int) -> str:
        low, high, names = _FIELDS[field]

        def number() -> str:
            n = rng.randint(low, high)
            if names is not None and n < len(names[0]) + names[1] and n >= names[1] and rng.random() < 0.3:
                name = names[0][n - names[1]]
                return rng.choice([name, name.upper(), name.capitalize()])
            return str(n)

        kind = rng.choice(["star", "star_step", "number", "range", "range_step", "single_range", "number_step"])
        if kind == "star":
            return "*"
        if kind == "star_step":
            return f"*/{rng.randint(1, high - low + 2)}"
        if kind == "number":
            return number()
        if kind == "number_step":
            return f"{rng.randint(low, high)}/{rng.randint(1, high - low + 1)}"
        if kind == "single_range":
            n = number()
            return f"{n}-{n}"
        a, b = sorted(rng.sample(range(low, high + 1), 2))
        text = f"{a}-{b}"
        return text + f"/{rng.randint(1, b - a + 1)}" if kind == "range_step" else text

    result = []
    for _ in range(count):
        fields = []
        for field in range(5):
            n = rng.choice([1, 1, 1, 2, 3])
            items = [item(field) for _ in range(n)]
            if n > 1 and rng.random() < 0.7:
                items = [i for i in items if not i.startswith("*")] or ["1"]
            fields.append(",".join(items))
        result.append(" ".join(fields))
    return result


# The forms that karajo once got wrong, and the classic edge cases.
_HAND_PICKED = [
    "5-5 * * * *", "0 0 * * 1-1", "0 0 */2 * 1", "0 0 */1 * 1", "0 0 1 * */1",
    "0 0 */2 * mon", "0 0 1,15 * */2", "0 0 * * 1/2", "0 0 * * 0/3", "0 0 * * */2",
    "0 0 * * 6-7", "0 0 * * 7", "0 0 * * 0", "0 0 * * 0,7", "0 0 * * sun-sat",
    "0 0 * * 0-7/7", "0 0 13 * fri", "0 0 13 * 5", "30 4 1,15 * 5", "0 0 31 * *",
    "0 0 30 * *", "0 0 29 2 *", "0 0 29 2 mon", "0 0 29 2 */7", "0 0 31 1-12/2 *",
    "59 23 31 12 *", "0 0 1 1 *", "* * * * *", "*/7 * * * *", "*/59 */23 * * *",
    "*/100 * * * *", "0-59/15 0-23/6 * * *", "23 0-23/2 * * *", "5 4 * * sun",
    "0 22 * * 1-5", "15 14 1 * *", "0 9-17 * * mon-fri", "0 0 1-7 * 1", "0 0 1-7 * *",
    "0 0 8-14 * */7", "0,30 * * jan,jul *", "0 12 * feb-apr sat,sun", "1 2 3 4 5",
    "5/15 * * * *", "0 3/6 * * *", "0 0 2/10 * *", "0 0 1 2/5 *", "7-7 7-7 7-7 7-7 7-7",
    "0 0 1-1 * 0-0", "0 0 */31 * *", "0 0 * */12 *", "0 0 */2 */3 */4",
    # Never fire: refused at parse time.
    "0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 */2", "0 0 30-31 feb *",
]


class CronDifferentialTests(SynchronousTestCase):
    """
    karajo's cron agrees with the brute-force evaluator above on the next
    fires after several start instants, for hundreds of expressions.
    """

    starts = [
        utc(2026, 1, 1),
        utc(2026, 2, 28, 23, 59, 30),
        datetime.datetime(2026, 6, 15, 13, 37, 42, 500000, tzinfo=UTC),
        utc(2027, 12, 31, 23, 59),
        utc(2028, 2, 28, 12),
        utc(2099, 12, 31, 23),  # 2100 is no leap year
    ]

    def test_against_brute_force(self) -> None:
        """
        For every expression and start, the next three fires (each asked
        after the previous one) are the brute force's; an expression karajo
        refuses as never firing has no fire in 30 years.
        """
        expressions = _HAND_PICKED + _generated_expressions(500, seed=20261204)
        self.assertGreaterEqual(len(set(expressions)), 500)
        compared = refused = 0
        for expression in expressions:
            brute = _BruteCron(expression)
            try:
                schedule = parse_schedule(expression)
            except ValueError as e:
                self.assertIn("never fires", str(e), expression)
                self.assertIsNone(brute.next_after(utc(2026, 1, 1)), expression)
                refused += 1
                continue
            for start in self.starts:
                ours, theirs = start, start
                for _ in range(3):
                    ours, theirs = schedule.next_after(ours), brute.next_after(theirs)
                    self.assertEqual(ours, theirs, f"{expression} after {start}")
                    assert theirs is not None
                compared += 1
        # Nearly all generated expressions fire; the check above must not
        # have passed by refusing them.
        self.assertGreater(compared, 500 * len(self.starts))
        self.assertEqual(refused, 4)


class CronDaylightSavingTableTests(SynchronousTestCase):
    """
    Hand-checked fires over whole local days around DST changes, for
    fixed-time jobs (minute and hour fields without a leading C{*}: wall
    clock, first occurrence, end of the gap) and wildcard jobs (real time).

    Berlin 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00Z.
    Berlin 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00Z (02:xx twice).
    New York 2026-03-08: 02:00 EST becomes 03:00 EDT at 07:00Z.
    New York 2026-11-01: 02:00 EDT becomes 01:00 EST at 06:00Z (01:xx twice).
    """

    table: list[tuple[str, ZoneInfo, datetime.date, list[datetime.datetime]]] = [
        # Berlin, spring forward.
        ("30 2 * * *", BERLIN, datetime.date(2026, 3, 29), [utc(2026, 3, 29, 1)]),
        ("0,45 2 * * *", BERLIN, datetime.date(2026, 3, 29), [utc(2026, 3, 29, 1)]),
        ("30 3 * * *", BERLIN, datetime.date(2026, 3, 29), [utc(2026, 3, 29, 1, 30)]),
        ("30 1 * * *", BERLIN, datetime.date(2026, 3, 29), [utc(2026, 3, 29, 0, 30)]),
        ("*/20 2 * * *", BERLIN, datetime.date(2026, 3, 29), []),
        ("* 2 * * *", BERLIN, datetime.date(2026, 3, 29), []),
        ("0 */2 * * *", BERLIN, datetime.date(2026, 3, 29),
         [utc(2026, 3, 28, 23), utc(2026, 3, 29, 2)] + [utc(2026, 3, 29, h) for h in range(4, 22, 2)]),
        # Berlin, fall back.
        ("30 2 * * *", BERLIN, datetime.date(2026, 10, 25), [utc(2026, 10, 25, 0, 30)]),
        ("0 2-3 * * *", BERLIN, datetime.date(2026, 10, 25), [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)]),
        ("*/20 2 * * *", BERLIN, datetime.date(2026, 10, 25),
         [utc(2026, 10, 25, h, m) for h in (0, 1) for m in (0, 20, 40)]),
        ("0 */2 * * *", BERLIN, datetime.date(2026, 10, 25),
         [utc(2026, 10, 24, 22), utc(2026, 10, 25, 0), utc(2026, 10, 25, 1)]
         + [utc(2026, 10, 25, h) for h in range(3, 22, 2)]),
        ("0 0,2,4,6,8,10,12,14,16,18,20,22 * * *", BERLIN, datetime.date(2026, 10, 25),
         [utc(2026, 10, 24, 22), utc(2026, 10, 25, 0)] + [utc(2026, 10, 25, h) for h in range(3, 22, 2)]),
        # New York, spring forward.
        ("30 2 * * *", NEW_YORK, datetime.date(2026, 3, 8), [utc(2026, 3, 8, 7)]),
        ("0 3 * * *", NEW_YORK, datetime.date(2026, 3, 8), [utc(2026, 3, 8, 7)]),
        ("*/30 2 * * *", NEW_YORK, datetime.date(2026, 3, 8), []),
        ("15 1-3 * * 0", NEW_YORK, datetime.date(2026, 3, 8), [utc(2026, 3, 8, 6, 15), utc(2026, 3, 8, 7), utc(2026, 3, 8, 7, 15)]),
        ("15 * 8 3 *", NEW_YORK, datetime.date(2026, 3, 8),
         [utc(2026, 3, 8, h, 15) for h in range(5, 7)] + [utc(2026, 3, 8, h, 15) for h in range(7, 24)]
         + [utc(2026, 3, 9, h, 15) for h in range(0, 4)]),
        # New York, fall back.
        ("30 1 * * *", NEW_YORK, datetime.date(2026, 11, 1), [utc(2026, 11, 1, 5, 30)]),
        ("0 1,2 * * *", NEW_YORK, datetime.date(2026, 11, 1), [utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)]),
        ("*/30 1 * * *", NEW_YORK, datetime.date(2026, 11, 1),
         [utc(2026, 11, 1, 5), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 30)]),
        ("30 * 1 11 *", NEW_YORK, datetime.date(2026, 11, 1),
         [utc(2026, 11, 1, h, 30) for h in range(4, 24)] + [utc(2026, 11, 2, h, 30) for h in range(0, 5)]),
        ("30 0-23 1 11 *", NEW_YORK, datetime.date(2026, 11, 1),
         [utc(2026, 11, 1, h, 30) for h in range(4, 6)] + [utc(2026, 11, 1, h, 30) for h in range(7, 24)]
         + [utc(2026, 11, 2, h, 30) for h in range(0, 5)]),
    ]

    def test_table(self) -> None:
        """
        Each expression fires exactly at the listed instants over the local
        day, found by feeding each fire back into C{next_after}.
        """
        for expression, zone, day, expected in self.table:
            self.assertEqual(
                _fires_by_day(parse_schedule(expression, zone), zone, day),
                expected,
                f"{expression} in {zone} on {day}",
            )
