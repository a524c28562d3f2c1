"""
Shutdown: SIGTERM while 3 jobs run that ignore TERM and leave children
behind, some double-forked out of their parent's reach (but still in the
command's process group).  The daemon must exit 0 within the kill grace
period + 1 s, with 3 logs finalised C{canceled} and no process of theirs
left, found both by process group and by working directory.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from karajo.process import KILL_GRACE

from .harness import LONG, Daemon, job_processes, live_in_groups, report, scale, wait_until

#: Every job ignores TERM (ignored signals survive fork and exec, so all
#: its children ignore it too) and leaves background children.
COMMANDS = {
    # children, a double-forked grandchild (reparented to init), a nested shell
    "stubborn": "\"trap '' TERM; echo started; sleep 60 & (sleep 61 &); "
                "sh -c 'sleep 62 & wait' & wait\"",
    # output streaming while the signal arrives, with a background child
    "chatty": "\"trap '' TERM; sleep 60 & echo started; "
              "while true; do echo tick; sleep 0.01; done\"",
    # a TERM handler that starts more work instead of exiting
    "handler": "\"trap 'echo got TERM; sleep 30' TERM; echo started; sleep 60 & wait; wait\"",
}
#: live processes each group has once its command is fully started
MEMBERS = {"stubborn": 5, "chatty": 2, "handler": 2}


def config() -> str:
    jobs = "".join(
        f'[job "{name}"]\ninterval = 1h\ncommand = {command}\n'
        for name, command in COMMANDS.items()
    )
    return "max_job_running = 3\n" + jobs


class ShutdownTests(TestCase):
    timeout = 300 if LONG else 60

    @defer.inlineCallbacks
    def test_sigterm_with_stubborn_jobs(self):
        yield defer.ensureDeferred(self.shutdowns())

    async def shutdowns(self) -> None:
        rounds = scale(1, 20)
        timings = []
        for number in range(rounds):
            timings.append(await self.one(os.path.join(self.mktemp(), str(number))))
        report(
            "shutdown",
            rounds=rounds,
            jobs=len(COMMANDS),
            kill_grace_s=KILL_GRACE,
            exit_s_max=f"{max(timings):.2f}",
            exit_s_min=f"{min(timings):.2f}",
            canceled_logs=len(COMMANDS) * rounds,
            orphans=0,
        )

    async def one(self, base: str) -> float:
        daemon = Daemon(base, config())
        self.addCleanup(lambda: defer.ensureDeferred(daemon.cleanup()))
        await daemon.start()

        def started() -> bool:
            groups = daemon.recorded_groups()
            if len(groups) != len(COMMANDS):
                return False
            return all(
                len(live_in_groups([groups[name]])) >= MEMBERS[name] for name in COMMANDS
            )

        ok = await wait_until(started, timeout=10)
        self.assertTrue(ok, "jobs did not start:\n" + daemon.output())
        groups = daemon.recorded_groups()
        members = live_in_groups(groups.values())
        code, took = await daemon.stop()

        self.assertEqual(code, 0, daemon.output()[-3000:])
        self.assertLess(took, KILL_GRACE + 1, f"took {took:.2f}s")
        for name in COMMANDS:
            directory = daemon.log_dir(name)
            self.assertEqual(os.listdir(directory), [f"{name}.1.canceled"])
            with open(os.path.join(directory, f"{name}.1.canceled"), "rb") as f:
                lines = f.read().splitlines()
            self.assertTrue(lines[-1].endswith(b"??? CANCELED: karajo is stopping"), lines[-3:])
            self.assertIn(b"started", b"\n".join(lines))
        self.assertGreaterEqual(len(members), sum(MEMBERS.values()))
        self.assertEqual(live_in_groups(groups.values()), [])
        self.assertEqual(job_processes(daemon.base), [])
        self.assertEqual(daemon.recorded_groups(), {})
        return took
