"""Tests for L{karajo.timer}: exact fire times on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from karajo.schedule import parse_schedule
from karajo.timer import JobTimer

START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # a Thursday
DAY = 86400


class Recorder:
    """A fire callback that records the clock time of each call."""

    def __init__(self, clock: Clock, result=None) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.result = result

    def __call__(self):
        self.times.append(self.clock.seconds())
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def make(schedule: str | None = None, interval: timedelta | None = None, start: float = START, **kw):
    clock = Clock()
    clock.advance(start)
    fire = Recorder(clock, kw.pop("result", None))
    timer = JobTimer(
        clock,
        fire,
        schedule=parse_schedule(schedule) if schedule else None,
        interval=interval,
        **kw,
    )
    timer.startService()
    return clock, fire, timer


def run_for(clock: Clock, seconds: float, step: float = 60) -> None:
    """
    Let C{seconds} pass, stopping exactly at each pending call (so fire
    times are exact) and at least every C{step} seconds.
    """
    end = clock.seconds() + seconds
    while clock.seconds() < end:
        now = clock.seconds()
        due = [c.getTime() for c in clock.getDelayedCalls()]
        target = min([end, now + step] + [t for t in due if t >= now])
        clock.advance(target - now)


class ScheduleTimerTests(SynchronousTestCase):
    def test_minutely_day(self) -> None:
        """24 simulated hours of minutely fire exactly 1,440 times, each at second 0."""
        clock, fire, _ = make("minutely")
        run_for(clock, DAY, step=7)
        self.assertEqual(len(fire.times), 1440)
        self.assertTrue(all(t % 60 == 0 for t in fire.times))
        self.assertEqual(len(set(fire.times)), 1440)

    def test_hourly_quarters(self) -> None:
        """hourly@0,15,30,45 fires 96 times a day, at those minutes."""
        clock, fire, _ = make("hourly@0,15,30,45")
        run_for(clock, DAY)
        self.assertEqual(len(fire.times), 96)
        self.assertEqual({int(t % 3600) for t in fire.times}, {0, 900, 1800, 2700})

    def test_daily_twice(self) -> None:
        """daily@00:00,12:00 fires twice a day; the slot at the start instant is not fired."""
        clock, fire, _ = make("daily@00:00,12:00")
        run_for(clock, 3 * DAY, step=600)
        self.assertEqual(
            [t - START for t in fire.times],
            [12 * 3600, DAY, DAY + 12 * 3600, 2 * DAY, 2 * DAY + 12 * 3600, 3 * DAY],
        )

    def test_weekly_days(self) -> None:
        """weekly@Mon,fri@09:30 fires on Mondays and Fridays at 09:30 UTC only."""
        clock, fire, _ = make("weekly@Mon,fri@09:30")
        run_for(clock, 28 * DAY, step=3600)
        days = [datetime.fromtimestamp(t, UTC) for t in fire.times]
        self.assertEqual(len(days), 8)
        self.assertEqual({d.strftime("%a %H:%M:%S") for d in days}, {"Mon 09:30:00", "Fri 09:30:00"})

    def test_monthly_31(self) -> None:
        """monthly@31 skips months without a 31st."""
        clock, fire, _ = make("monthly@31")
        run_for(clock, 365 * DAY, step=6 * 3600)
        months = [datetime.fromtimestamp(t, UTC).month for t in fire.times]
        self.assertEqual(months, [1, 3, 5, 7, 8, 10, 12])

    def test_next_run_exposed(self) -> None:
        """next_run is the upcoming slot, and moves after each fire."""
        clock, _, timer = make("hourly@5")
        self.assertEqual(timer.next_run, START + 300)
        clock.advance(300)
        self.assertEqual(timer.next_run, START + 3600 + 300)

    def test_paused_skipped(self) -> None:
        """While paused, fires are skipped (not queued) and next_run keeps moving."""
        paused = [True]
        clock, fire, timer = make("minutely", is_paused=lambda: paused[0])
        run_for(clock, 600)
        self.assertEqual(fire.times, [])
        self.assertEqual(timer.next_run, START + 660)
        paused[0] = False
        run_for(clock, 60)
        self.assertEqual(fire.times, [START + 660])

    def test_busy_dropped(self) -> None:
        """A fire while the job still runs is dropped, not queued."""
        busy = [True]
        clock, fire, _ = make("minutely", is_busy=lambda: busy[0])
        run_for(clock, 180)
        busy[0] = False
        run_for(clock, 60)
        self.assertEqual(fire.times, [START + 240])

    def test_forward_jump_one_catch_up(self) -> None:
        """A forward clock jump of 3 hours gives one catch-up fire, then the normal slots."""
        clock, fire, _ = make("minutely")
        clock.advance(60)
        clock.advance(3 * 3600 + 30)
        self.assertEqual(fire.times, [START + 60, START + 60 + 3 * 3600 + 30])
        clock.advance(30)
        self.assertEqual(fire.times[-1], START + 60 + 3 * 3600 + 60)
        self.assertEqual(len(fire.times), 3)

    def test_backward_jump_never_repeats(self) -> None:
        """After the clock goes back 30 minutes, no slot that already fired fires again."""
        clock, fire, _ = make("minutely")
        run_for(clock, 600)
        last = fire.times[-1]
        clock.rightNow -= 1800
        run_for(clock, 3600)
        wall_slots = fire.times
        after = wall_slots[wall_slots.index(last) + 1 :]
        self.assertTrue(all(t > last for t in after), after)
        self.assertEqual(len(after), len(set(after)))
        self.assertEqual(after[0], last + 60)

    def test_raising_callback_keeps_timer(self) -> None:
        """A fire callback that raises is logged and the schedule continues."""
        clock, fire, _ = make("minutely", result=RuntimeError("boom"))
        run_for(clock, 300)
        self.assertEqual(len(fire.times), 5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 5)

    def test_failing_deferred_keeps_timer(self) -> None:
        """A fire that returns a failed Deferred is logged and the schedule continues."""
        clock, fire, _ = make("minutely", result=defer.fail(ValueError("x")))
        run_for(clock, 180)
        self.assertEqual(len(fire.times), 3)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_stop_cancels(self) -> None:
        """A stopped timer leaves no pending call and fires no more."""
        clock, fire, timer = make("minutely")
        timer.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])
        run_for(clock, 600)
        self.assertEqual(fire.times, [])

    def test_needs_exactly_one(self) -> None:
        """A timer needs a schedule or an interval, not both or neither."""
        self.assertRaises(ValueError, JobTimer, Clock(), lambda: None)
        self.assertRaises(
            ValueError, JobTimer, Clock(), lambda: None,
            schedule=parse_schedule("minutely"), interval=timedelta(seconds=1),
        )

    def test_timezone_schedule(self) -> None:
        """A schedule in a zone fires at that zone's wall time."""
        from zoneinfo import ZoneInfo

        clock = Clock()
        clock.advance(START)
        fire = Recorder(clock)
        JobTimer(clock, fire, schedule=parse_schedule("daily@09:00", ZoneInfo("Europe/Berlin"))).startService()
        run_for(clock, DAY, step=600)
        self.assertEqual(fire.times, [START + 8 * 3600])


class IntervalTimerTests(SynchronousTestCase):
    def test_never_run_fires_at_once(self) -> None:
        """A job that never ran runs at once, then every interval."""
        clock, fire, _ = make(interval=timedelta(seconds=90))
        clock.advance(0)
        run_for(clock, 300, step=1)
        self.assertEqual(fire.times, [START, START + 90, START + 180, START + 270])

    def test_overdue_at_start(self) -> None:
        """A restored last run older than one interval runs at once."""
        clock, fire, _ = make(interval=timedelta(minutes=1), last_run=lambda: START - 3600)
        clock.advance(0)
        self.assertEqual(fire.times, [START])

    def test_not_overdue_waits(self) -> None:
        """A restored last run 20 s ago with a 1 m interval waits 40 s."""
        clock, fire, timer = make(interval=timedelta(minutes=1), last_run=lambda: START - 20)
        self.assertEqual(timer.next_run, START + 40)
        clock.advance(39)
        self.assertEqual(fire.times, [])
        clock.advance(1)
        self.assertEqual(fire.times, [START + 40])

    def test_counts_from_last_run(self) -> None:
        """The interval counts from the job's last run, which a webhook run also moves."""
        last = [START]
        clock, fire, timer = make(interval=timedelta(seconds=60), last_run=lambda: last[0])
        clock.advance(30)
        last[0] = clock.seconds()  # a webhook run at +30
        timer.reschedule()
        self.assertEqual(timer.next_run, START + 90)
        clock.advance(30)
        self.assertEqual(fire.times, [])
        clock.advance(30)
        self.assertEqual(fire.times, [START + 90])

    def test_short_interval_honoured(self) -> None:
        """Any interval of 1 s or more is honoured, not raised to a minute."""
        clock, fire, _ = make(interval=timedelta(seconds=1))
        run_for(clock, 10, step=0.5)
        self.assertEqual(len(fire.times), 11)

    def test_pause_keeps_moving(self) -> None:
        """A paused interval job skips fires and resumes one interval after the skip."""
        paused = [True]
        clock, fire, timer = make(interval=timedelta(seconds=60), is_paused=lambda: paused[0])
        run_for(clock, 150, step=1)
        self.assertEqual(fire.times, [])
        self.assertEqual(timer.next_run, START + 180)
        paused[0] = False
        run_for(clock, 30, step=1)
        self.assertEqual(fire.times, [START + 180])

    def test_busy_long_run(self) -> None:
        """A run longer than the interval drops fires without spinning."""
        clock, fire, _ = make(interval=timedelta(seconds=10), last_run=lambda: START, is_busy=lambda: True)
        run_for(clock, 100, step=1)
        self.assertEqual(fire.times, [])
        self.assertLessEqual(len(clock.getDelayedCalls()), 1)
