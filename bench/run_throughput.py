"""
Run throughput: runs per second of a trivial command, and the daemon's own
CPU time per run, next to the raw cost of spawning C{/bin/sh -c true}.

A real karajo server (build_service, real reactor, real log store) gets
C{--jobs} command jobs (C{commands = true}) and C{max_job_running = 4}.
Every job is re-triggered as soon as it is idle until C{--runs} runs have
ended.  Measured: wall time (runs/s) and the daemon process's own CPU time
(C{getrusage(RUSAGE_SELF)}, user + system, all its threads, not its
children) per run.  Then, in the same process, the same number of bare
spawns, 4 at a time:

  - C{/bin/sh -c true} through C{reactor.spawnProcess} (Twisted uses
    C{posix_spawnp});
  - C{/bin/sh -c true} as karajo spawns a command: leading a new process
    group through L{karajo.process.LeaderProcess}, stdin from /dev/null.

The script re-executes itself under C{taskset -c 0} so the daemon runs on
one core; every spawned process is moved to the other core(s) right after
it is spawned (C{sched_setaffinity} on its pid, for karajo and raw spawns
alike), so the commands' load does not share the daemon's core.

    python bench/run_throughput.py [--runs 2000] [--jobs 8] [--profile] [--no-pin]

Targets (issue): >= 400 runs/s and < 1.5 ms of daemon CPU per run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time

from _report import table  # bench/ is sys.path[0] when a script runs

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_RUNS_PER_S = 400.0
TARGET_CPU_MS = 1.5
PINNED_ENV = "KARAJO_BENCH_PINNED"



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2000, help="runs (and raw spawns) to measure (default 2000)")
    p.add_argument("--jobs", type=int, default=8, help="command jobs sharing the slots (default 8)")
    p.add_argument("--max-job-running", type=int, default=4, help="slots, and raw spawn concurrency (default 4)")
    p.add_argument("--command", default="true", help="the jobs' command (default: true)")
    p.add_argument("--dir", default=None, help="parent of the temporary dir_base (e.g. /dev/shm)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the daemon or its children")
    p.add_argument("--daemon-cpu", type=int, default=0, help="core for the daemon (default 0)")
    p.add_argument("--profile", action="store_true",
                   help="after the measurement, cProfile one more batch of runs and print the top entries")
    p.add_argument("--profile-runs", type=int, default=500, help="runs in the profiled batch (default 500)")
    p.add_argument("--warmup", type=int, default=40, help="unmeasured runs/spawns first (default 40)")
    return p.parse_args(argv)


def maybe_reexec_pinned(args) -> None:
    """Re-run this script under taskset -c DAEMON_CPU (once)."""
    if args.no_pin or os.environ.get(PINNED_ENV):
        return
    taskset = shutil.which("taskset")
    if taskset is None or len(os.sched_getaffinity(0)) < 2:
        print("note: taskset missing or only one core; running unpinned", file=sys.stderr)
        return
    env = dict(os.environ, **{PINNED_ENV: "1"})
    sys.stdout.flush()
    os.execve(taskset, [taskset, "-c", str(args.daemon_cpu), sys.executable,
                        os.path.abspath(__file__), *sys.argv[1:]], env)


def pin_children(child_cpus: set[int] | None):
    """
    Move every process karajo spawns to C{child_cpus} right after the
    spawn (it starts on the daemon's core, inherited, and is moved while
    or after it exec's).  Returns C{pin(pid)} for the raw spawns.
    """
    import karajo.process

    def pin(pid: int | None) -> None:
        # pid is None when the child has already exited and been reaped.
        if child_cpus and pid is not None:
            try:
                os.sched_setaffinity(pid, child_cpus)
            except OSError:
                pass  # already gone

    spawn = karajo.process.spawn_leader

    def spawn_and_pin(*args, **kwargs) -> int:
        pid = spawn(*args, **kwargs)
        pin(pid)
        return pid

    karajo.process.spawn_leader = spawn_and_pin
    return pin


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> int:
    args = parse_args(argv)
    maybe_reexec_pinned(args)

    from twisted.internet import defer, protocol, reactor

    from karajo.config import Loaded, validate
    from karajo.model import Environment, Job
    from karajo.process import SHELL, LeaderProcess, command_env, leader_spawn_usable
    from karajo.server import build_service

    affinity = os.sched_getaffinity(0)
    all_cpus = set(range(os.cpu_count() or 1))
    pinned = bool(os.environ.get(PINNED_ENV)) and not args.no_pin
    child_cpus = (all_cpus - affinity) if pinned else None
    if pinned and not child_cpus:
        child_cpus = None
    pin = pin_children(child_cpus)
    if not leader_spawn_usable(reactor):
        print("note: karajo falls back to setsid(1) on this Twisted", file=sys.stderr)

    tmp = tempfile.mkdtemp(prefix="karajo-bench-runs-", dir=args.dir)
    env, warnings = validate(Environment(
        dir_base=tmp,
        secret="x",
        listen_address="127.0.0.1:0",
        max_job_running=args.max_job_running,
        jobs={f"t{i}": Job(commands=[args.command]) for i in range(args.jobs)},
    ))
    service = build_service(Loaded(env, warnings), reactor)
    service.removeService(service.getServiceNamed("http"))
    runners = [js.runner for js in service.jobs.values()]

    results: dict[str, dict] = {}

    # --- karajo runs ---------------------------------------------------------
    def karajo_batch(total: int) -> defer.Deferred:
        """Keep every job busy until C{total} runs have ended."""
        done = defer.Deferred()
        st = {"started": 0, "ended": 0, "failed": 0, "busy": 0}

        def kick(runner) -> None:
            st["started"] += 1
            runner.trigger(None)
            runner.when_idle().addCallback(lambda _: ended(runner))

        def ended(runner) -> None:
            st["ended"] += 1
            if runner.last_status != "success":
                st["failed"] += 1
            if st["started"] < total:
                kick(runner)
            elif st["ended"] == total:
                done.callback(st)

        for runner in runners[:total]:
            kick(runner)
        return done

    # --- raw spawns ----------------------------------------------------------
    class Bare(protocol.ProcessProtocol):
        def __init__(self, d: defer.Deferred) -> None:
            self.d = d

        def processEnded(self, reason) -> None:
            self.d.callback(reason.value.exitCode)

    def raw_batch(total: int, argv: list[str], as_karajo: bool) -> defer.Deferred:
        done = defer.Deferred()
        st = {"started": 0, "ended": 0, "failed": 0}
        cenv = command_env(1)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        done.addBoth(lambda r: (os.close(devnull), r)[1])

        def spawn() -> None:
            st["started"] += 1
            d = defer.Deferred()
            if as_karajo:
                t = LeaderProcess(reactor, argv[0], argv, cenv, None, Bare(d),
                                   childFDs={0: devnull, 1: "r", 2: "r"})
            else:
                t = reactor.spawnProcess(Bare(d), argv[0], argv, env=cenv,
                                         childFDs={0: "w", 1: "r", 2: "r"})
                t.closeStdin()
            pin(t.pid)
            d.addCallback(ended)

        def ended(code) -> None:
            st["ended"] += 1
            if code != 0:
                st["failed"] += 1
            if st["started"] < total:
                spawn()
            elif st["ended"] == total:
                done.callback(st)

        for _ in range(min(args.max_job_running, total)):
            spawn()
        return done

    async def measure(label: str, make, total: int) -> None:
        t0, c0, k0 = time.perf_counter(), cpu_self(), cpu_children()
        st = await make(total)
        wall, cpu, kids = time.perf_counter() - t0, cpu_self() - c0, cpu_children() - k0
        results[label] = dict(n=total, wall=wall, cpu=cpu, kids=kids, failed=st["failed"])
        print(f"  {label}: {total / wall:.0f}/s", flush=True)

    sh_argv = [SHELL, "-c", "true"]
    profile_text = None

    async def scenario() -> None:
        nonlocal profile_text
        await service.when_ready()  # the jobs' logs are read off the reactor thread
        # Warm-up: first spawns, first log files, imports.
        await karajo_batch(args.warmup)
        await raw_batch(args.warmup, sh_argv, False)
        await raw_batch(args.warmup, sh_argv, True)
        await measure("raw: /bin/sh -c true (spawnProcess)", lambda n: raw_batch(n, sh_argv, False), args.runs)
        await measure("raw: /bin/sh -c true, new group (as karajo)",
                      lambda n: raw_batch(n, sh_argv, True), args.runs)
        await measure(f"karajo: {args.jobs} jobs '{args.command}', max_job_running={args.max_job_running}",
                      karajo_batch, args.runs)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            await karajo_batch(args.profile_runs)
            prof.disable()
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out)
            stats.sort_stats("cumulative").print_stats(15)
            stats.sort_stats("tottime").print_stats(15)
            profile_text = out.getvalue()

    def run() -> None:
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        d = defer.ensureDeferred(scenario())
        d.addErrback(lambda f: (f.printTraceback(), None))
        d.addBoth(lambda _: reactor.stop())

    # Always end: a hard deadline well under the 3-minute budget.
    reactor.callLater(170, lambda: (print("timed out", file=sys.stderr), reactor.stop()))
    print(f"daemon on cpu(s) {sorted(affinity)}, children on "
          f"{sorted(child_cpus) if child_cpus else 'the same cpu(s)'}; {args.runs} runs each...", flush=True)
    reactor.callWhenRunning(run)
    reactor.run()

    # --- report ------------------------------------------------------------
    print()
    print(f"run throughput, {args.runs} runs/spawns each, concurrency {args.max_job_running}, "
          f"dir_base on {tmp}")
    print(f"daemon pinned to cpu(s) {sorted(affinity)}; spawned processes moved to "
          f"{sorted(child_cpus) if child_cpus else 'no other cpu (unpinned)'}")
    print()
    rows = []
    for label, r in results.items():
        rows.append((label, f"{r['n'] / r['wall']:.0f}", f"{r['wall']:.2f}",
                     f"{r['cpu'] / r['n'] * 1000:.3f}", f"{r['cpu'] / r['wall'] * 100:.0f}%",
                     f"{r['kids'] / r['n'] * 1000:.3f}", r["failed"]))
    print(table(rows, ("", "runs/s", "wall s", "daemon CPU ms/run", "daemon core busy",
                       "children CPU ms/run", "failed")))

    k = next((r for label, r in results.items() if label.startswith("karajo")), None)
    raw = next((r for label, r in results.items() if "as karajo" in label), None)
    if k is not None and raw is not None:
        extra = (k["cpu"] - raw["cpu"]) / k["n"] * 1000
        print()
        print(f"karajo's own overhead over the spawn it makes: {extra:.3f} ms daemon CPU per run; "
              f"{(k['wall'] / k['n'] - raw['wall'] / raw['n']) * 1000:.3f} ms wall per run (at this concurrency)")
    if k is not None:
        rps = k["n"] / k["wall"]
        cpu_ms = k["cpu"] / k["n"] * 1000
        print()
        print(f"target >= {TARGET_RUNS_PER_S:.0f} runs/s: {'meets' if rps >= TARGET_RUNS_PER_S else 'MISSES'} "
              f"({rps:.0f}/s)")
        print(f"target < {TARGET_CPU_MS} ms daemon CPU/run: {'meets' if cpu_ms < TARGET_CPU_MS else 'MISSES'} "
              f"({cpu_ms:.3f} ms)")
    if profile_text is not None:
        print()
        print(f"cProfile of {args.profile_runs} more karajo runs (reactor thread only; log "
              "finalisation runs in the thread pool):")
        print(profile_text)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
