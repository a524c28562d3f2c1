"""
Tests for L{karajo.schedule}.
"""

from __future__ import annotations

import datetime
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
