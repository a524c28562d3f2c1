"""
A job's timer: when to fire next, on an injected clock.

Schedules are slot-based (the pure maths lives in L{karajo.schedule}); an
interval counts from the job's last run.  The timer remembers the last slot
it handled, so a wall-clock jump forward gives at most one catch-up fire and
a jump backward never fires a slot twice.  Whatever the fire callback does,
the timer keeps going.

Two run policies (docs/configuration.md, "Run policies") are the timer's:
C{random_delay} (each fire waits a random time below it; C{next_run} still
shows the slot) and C{catch_up} (a slot missed no longer ago than it, while
karajo was down or the clock jumped, runs once, through C{fire_catch_up};
decided from the job's last run, the run record's, never from files).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karajo.schedule import Schedule

log = Logger()

#: how long before a slot a long sleep wakes up to re-aim
EARLY_WAKE = 0.5
#: a wake this much after its slot means the slot was missed (the clock
#: jumped forward, the machine slept), not that the reactor was busy
LATE = 2.0


def to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class JobTimer(Service):
    """
    Calls C{fire()} at each slot of C{schedule}, or C{interval} after
    C{last_run()}.  A fire while C{is_paused()} is skipped; while
    C{is_busy()} it is dropped (like systemd timers), never queued.
    """

    def __init__(
        self,
        clock: IReactorTime,
        fire: Callable[[], Any],
        *,
        schedule: Schedule | None = None,
        interval: timedelta | None = None,
        last_run: Callable[[], float | None] = lambda: None,
        is_paused: Callable[[], bool] = lambda: False,
        is_busy: Callable[[], bool] = lambda: False,
        label: str = "",
        catch_up: timedelta = timedelta(0),
        fire_catch_up: Callable[[], Any] | None = None,
        random_delay: timedelta = timedelta(0),
        uniform: Callable[[], float] = random.random,
        catch_up_at_start: bool = True,
    ) -> None:
        """
        @param catch_up: how long ago a missed slot may be and still run
            once (zero: no catch-up at start; a forward jump still fires
            once, as a plain fire).
        @param fire_catch_up: called instead of C{fire} for that run.
        @param random_delay: each fire waits C{uniform() * random_delay}.
        @param uniform: a number in [0, 1) per fire (tests pass their own).
        @param catch_up_at_start: whether a start looks for a missed slot;
            not for the timer a reload builds (karajo was not down).
        """
        if (schedule is None) == (interval is None):
            raise ValueError("a timer needs exactly one of schedule or interval")
        self._clock = clock
        self._fire = fire
        self._schedule = schedule
        self._interval = interval.total_seconds() if interval is not None else None
        self._last_run = last_run
        self._is_paused = is_paused
        self._is_busy = is_busy
        self._label = label
        self._catch_up = catch_up.total_seconds()
        self._fire_catch_up = fire_catch_up or fire
        self._random_delay = random_delay.total_seconds()
        self._uniform = uniform
        self._catch_up_at_start = catch_up_at_start
        self._call: IDelayedCall | None = None
        #: a fire waiting out its random delay
        self._delayed: IDelayedCall | None = None
        # The last slot handled (fired, skipped or dropped).  An interval
        # counts from the later of it and the job's last run, so a run that
        # waits for a slot (or never starts) cannot make the timer spin.
        self._anchor: float | None = None
        self.next_run: float | None = None
        #: a cluster node's claim (L{karajo.cluster}), None on a single
        #: server: called with the slot and the fire instead of firing, so
        #: that only the node that wins the slot fires it
        self.gate: Callable[[float, Callable[[], Any]], Any] | None = None

    # --- service ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._schedule is not None:
            now = self._clock.seconds()
            missed = self._missed(now, self._last_run())
            if self._catch_up_at_start and self._catch_up > 0 and missed is not None:
                log.info("{job}: a slot was missed while karajo was down; catching up",
                         job=self._label)
                self._handle(missed, catch_up=True)
            self._anchor = now
        self._arm()

    def stopService(self) -> None:
        super().stopService()
        self._cancel()
        if self._delayed is not None and self._delayed.active():
            self._delayed.cancel()
        self._delayed = None
        self.next_run = None

    def _missed(self, now: float, since: float | None) -> float | None:
        """
        The first slot after C{since} (the last run, or the last slot
        handled) and no more than C{catch_up} before C{now} that went by
        without a fire, or None.  Nothing is missed by a job that never ran.
        """
        if since is None:
            return None
        window_start = max(since, now - self._catch_up)
        if self._schedule is not None:
            slot = self._schedule.next_after(to_datetime(window_start)).timestamp()
        else:
            assert self._interval is not None
            slot = since + self._interval
            if slot < window_start:
                return None
        return slot if slot <= now else None

    def reschedule(self) -> None:
        """
        Recompute the next fire, e.g. after a webhook run moved an interval
        job's last run.
        """
        if self.running:
            self._arm()

    # --- as the runner's listener (karajo.runlistener.RunListener) ---------------

    def run_started(self, runner: Any, record: Any) -> None:
        """Any run, whatever triggered it, moves an interval's start."""
        self.reschedule()

    def run_finished(self, runner: Any, record: Any) -> None:
        pass

    # --- internals -------------------------------------------------------

    def _cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _target(self, now: float) -> float:
        if self._schedule is not None:
            anchor = self._anchor if self._anchor is not None else now
            return self._schedule.next_after(to_datetime(anchor)).timestamp()
        assert self._interval is not None
        starts = [t for t in (self._last_run(), self._anchor) if t is not None]
        if not starts:
            return now
        return max(starts) + self._interval

    def _arm(self) -> None:
        self._cancel()
        now = self._clock.seconds()
        target = self._target(now)
        self.next_run = target
        delay = max(0.0, target - now)
        if delay > EARLY_WAKE * 2:
            # A long sleep ends late (the kernel lets a timeout of T slip by
            # up to T/1000): wake shortly before and sleep the rest exactly.
            delay -= EARLY_WAKE
        self._call = self._clock.callLater(delay, self._wake)

    def _wake(self) -> None:
        self._call = None
        now = self._clock.seconds()
        target = self.next_run if self.next_run is not None else now
        if now < target:
            # Woken early (the clock went back): wait for the real slot.
            self._arm()
            return
        # A fire well after its slot (a forward jump, a start long after an
        # interval's due time) is a catch-up when the job asks for them and
        # a slot was missed inside its window; else the plain fire it
        # always was.
        catch_up = (
            now - target > LATE
            and self._catch_up > 0
            and self._missed(now, self._anchor if self._schedule else self._last_run()) is not None
        )
        # Anchor at the later of slot and now: after a forward jump every
        # missed slot collapses into this one fire.
        self._anchor = max(target, now)
        try:
            self._handle(target, catch_up=catch_up)
        finally:
            if self.running:
                self._arm()

    def _handle(self, slot: float, catch_up: bool = False) -> None:
        fire = self._fire_catch_up if catch_up else self._fire
        if self._random_delay > 0:
            if self._delayed is not None and self._delayed.active():
                log.info("{job}: a fire still waits out its random delay; this one dropped",
                         job=self._label)
                return
            wait = self._uniform() * self._random_delay
            self._delayed = self._clock.callLater(wait, self._start, fire, slot)
            return
        self._start(fire, slot)

    def _start(self, fire: Callable[[], Any], slot: float) -> None:
        self._delayed = None
        if self._is_paused():
            log.info("{job}: paused, timer fire skipped", job=self._label)
            return
        if self._is_busy():
            log.info("{job}: still running, timer fire dropped", job=self._label)
            return
        # No Deferred unless the callback returns one: a thousand timers may
        # fire on one slot, and each should stay a few microseconds.
        try:
            result = fire() if self.gate is None else self.gate(slot, fire)
        except Exception:
            log.failure("{job}: timer fire failed", job=self._label)
            return
        if isinstance(result, Deferred):
            result.addErrback(
                lambda f: log.failure("{job}: timer fire failed", f, job=self._label)
            )
