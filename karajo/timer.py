"""
A job's timer: when to fire next, on an injected clock.

Schedules are slot-based (the pure maths lives in L{karajo.schedule}); an
interval counts from the job's last run.  The timer remembers the last slot
it handled, so a wall-clock jump forward gives at most one catch-up fire and
a jump backward never fires a slot twice.  Whatever the fire callback does,
the timer keeps going.
"""

from __future__ import annotations

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
    ) -> None:
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
        self._call: IDelayedCall | None = None
        # The last slot handled (fired, skipped or dropped).  An interval
        # counts from the later of it and the job's last run, so a run that
        # waits for a slot (or never starts) cannot make the timer spin.
        self._anchor: float | None = None
        self.next_run: float | None = None

    # --- service ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._schedule is not None:
            self._anchor = self._clock.seconds()
        self._arm()

    def stopService(self) -> None:
        super().stopService()
        self._cancel()
        self.next_run = None

    def reschedule(self) -> None:
        """
        Recompute the next fire, e.g. after a webhook run moved an interval
        job's last run.
        """
        if self.running:
            self._arm()

    # --- as the runner's listener (karajo.run.RunListener) ---------------

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
        # Anchor at the later of slot and now: after a forward jump every
        # missed slot collapses into this one fire.
        self._anchor = max(target, now)
        try:
            self._handle()
        finally:
            if self.running:
                self._arm()

    def _handle(self) -> None:
        if self._is_paused():
            log.info("{job}: paused, timer fire skipped", job=self._label)
            return
        if self._is_busy():
            log.info("{job}: still running, timer fire dropped", job=self._label)
            return
        # No Deferred unless the callback returns one: a thousand timers may
        # fire on one slot, and each should stay a few microseconds.
        try:
            result = self._fire()
        except Exception:
            log.failure("{job}: timer fire failed", job=self._label)
            return
        if isinstance(result, Deferred):
            result.addErrback(
                lambda f: log.failure("{job}: timer fire failed", f, job=self._label)
            )
