"""
Run policies under load: how random_delay spreads a minute's starts, and
what 1,000 always-failing jobs with retries cost.

Part 1, C{random_delay}: N code jobs (C{schedule = minutely},
C{random_delay = 30s}, C{max_job_running} high enough that nothing
queues) on a real karajo server (build_service, real epoll reactor, real log
store on disk). Each job's callable records C{time.time() - slot}. The
script waits for the next minute boundary and reports how the starts spread
over the window: the share of starts in the busiest second (target: no
second holds more than 5 %), and how late each start is after the time its
drawn delay asked for (the timers' own lateness: slot + delay -> callable),
p50/p99.

Part 2, retries: N command jobs (C{exit 1}, C{retry = 3},
C{retry_delay = 1s}, C{max_job_running = 4}) are each triggered once, so
4 x N runs fail. The reactor samples every 10 ms how many runs execute at
once (target: never more than C{max_job_running}) and the daemon's RSS
(target: < 20 MiB growth over the 4,000 runs).

    python bench/policies.py [--jobs 1000] [--part delay|retry|both] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta

from _report import percentile, table  # bench/ is sys.path[0] when a script runs

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_SECOND_SHARE = 0.05
TARGET_RSS_GROWTH_MIB = 20.0




def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def build(jobs: dict, base: str, max_job_running: int, reactor):
    from karajo.config import Loaded, validate
    from karajo.model import Environment
    from karajo.server import build_service

    env, warnings = validate(Environment(
        dir_base=base, secret="bench", jobs=jobs, max_job_running=max_job_running,
    ))
    service = build_service(Loaded(env, warnings), reactor)
    service.removeService(service.getServiceNamed("http"))
    return service


def part_delay(args) -> list[tuple]:
    from twisted.internet import reactor

    import karajo.timer
    from karajo.model import Job

    starts: list[float] = []  # callable start - slot
    wanted: list[float] = []  # callable start - (slot + drawn delay)
    drawn: dict[str, float] = {}
    slot_of: dict[str, float] = {}
    delay = args.random_delay

    # Record each timer's drawn delay (this process only): the timers draw
    # uniform() * random_delay when a fire starts waiting.
    original_init = karajo.timer.JobTimer.__init__

    def init(self, *a, **kw):
        original_init(self, *a, **kw)
        job_name = self._label
        uniform = self._uniform

        def recording() -> float:
            u = uniform()
            drawn[job_name] = u * delay
            return u

        self._uniform = recording

    karajo.timer.JobTimer.__init__ = init

    def make(name: str):
        def call(log, request):
            now = time.time()
            slot = math.floor(now / 60) * 60
            if now - slot > delay + 5:  # not this minute's fire
                return None
            starts.append(now - slot)
            key = f"job/{name}"  # the timer's label is the runner's service name
            if key in drawn:
                wanted.append(now - (slot + drawn[key]))
            slot_of[name] = slot
            return None
        return call

    jobs = {f"d{i:04d}": Job(schedule="minutely", random_delay=timedelta(seconds=delay),
                             call=make(f"d{i:04d}"))
            for i in range(args.jobs)}
    base = tempfile.mkdtemp(prefix="karajo-bench-", dir=args.dir)
    service = build(jobs, base, args.jobs + 10, reactor)
    service.startService()  # timers arm once the jobs' logs are read
    boundary = math.floor(time.time() / 60) * 60 + 60
    if boundary - time.time() < 3:
        boundary += 60
    end = boundary + delay + 3
    print(f"waiting for {time.strftime('%H:%M:%S', time.gmtime(boundary))} UTC, "
          f"then {delay:g} s of random delay", flush=True)
    reactor.callLater(end - time.time(), reactor.stop)
    reactor.run()
    service.stopService()
    shutil.rmtree(base, ignore_errors=True)

    per_second = collections.Counter(int(s) for s in starts)
    busiest, count = per_second.most_common(1)[0] if per_second else (None, 0)
    share = count / len(starts) if starts else float("nan")
    late = sorted(wanted)
    return [
        ("starts in the slot's window", f"{len(starts)} of {args.jobs}"),
        ("seconds of the window used", f"{len(per_second)} of {delay:g}"),
        ("busiest second: share of starts",
         f"{share * 100:.1f} % (second {busiest}) "
         f"({'OK' if share <= TARGET_SECOND_SHARE else 'MISSES'} <= 5 %)"),
        ("start after slot + drawn delay, p50 / p99 / max",
         f"{percentile(late, 50) * 1000:.1f} / {percentile(late, 99) * 1000:.1f} / "
         f"{(late[-1] if late else float('nan')) * 1000:.1f} ms ({len(late)} matched)"),
    ]


def part_retry(args) -> list[tuple]:
    from twisted.internet import reactor, task

    from karajo.model import Job

    max_running = 4
    jobs = {f"f{i:04d}": Job(path=f"/f{i:04d}", commands=("exit 1",), retry=3,
                             retry_delay=timedelta(seconds=1))
            for i in range(args.jobs)}
    base = tempfile.mkdtemp(prefix="karajo-bench-", dir=args.dir)
    service = build(jobs, base, max_running, reactor)
    service.startService()
    expected = 4 * args.jobs
    peak = [0]
    rss0 = [0]
    rss_peak = [0]
    t0 = [0.0]
    runners = [svc.runner for svc in service.jobs.values()]

    def finished() -> int:
        return sum(r.counter for r in runners) - sum(1 for r in runners if r.executing)

    def sample() -> None:
        running = sum(1 for r in runners if r.executing)
        peak[0] = max(peak[0], running)
        rss_peak[0] = max(rss_peak[0], rss_kib())
        done = sum(1 for r in runners if r.counter >= 4 and not r.active
                   and not getattr(r, "retry_pending", False))
        if done == len(runners):
            reactor.stop()

    def start() -> None:
        rss0[0] = rss_kib()
        t0[0] = time.monotonic()
        for r in runners:
            r.trigger(None)
        task.LoopingCall(sample).start(0.01)

    service.when_ready().addCallback(lambda _: start())
    reactor.callLater(600, reactor.stop)
    reactor.run()
    elapsed = time.monotonic() - t0[0]
    runs = sum(r.counter for r in runners)
    failed = sum(
        1 for svc in service.jobs.values() for rec in svc.runner.records() if rec.status == "failed"
    )
    rss1 = rss_kib()
    service.stopService()
    shutil.rmtree(base, ignore_errors=True)
    growth = (max(rss_peak[0], rss1) - rss0[0]) / 1024
    return [
        ("runs (expected 4 per job)", f"{runs} of {expected}, {elapsed:.1f} s"),
        ("kept logs ending failed", f"{failed}"),
        ("most runs executing at once",
         f"{peak[0]} ({'OK' if peak[0] <= max_running else 'MISSES'} <= {max_running})"),
        ("RSS at start / peak / end",
         f"{rss0[0] / 1024:.1f} / {rss_peak[0] / 1024:.1f} / {rss1 / 1024:.1f} MiB"),
        ("RSS growth",
         f"{growth:.1f} MiB ({'OK' if growth < TARGET_RSS_GROWTH_MIB else 'MISSES'} < 20 MiB)"),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--part", choices=("delay", "retry", "both"), default="both")
    p.add_argument("--random-delay", type=float, default=30.0)
    p.add_argument("--dir", default=None, help="parent of the temporary dir_base")
    args = p.parse_args(argv)
    # Each part needs a fresh reactor: run the second in a child process.
    if args.part == "both":
        import subprocess
        for part in ("delay", "retry"):
            subprocess.run([sys.executable, __file__, "--part", part, "--jobs", str(args.jobs),
                            "--random-delay", str(args.random_delay)]
                           + (["--dir", args.dir] if args.dir else []), check=False)
        return 0
    rows = part_delay(args) if args.part == "delay" else part_retry(args)
    title = ("random_delay" if args.part == "delay" else "retries") + f", {args.jobs} jobs"
    print(title)
    print(table(rows, ("figure", "measured")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
