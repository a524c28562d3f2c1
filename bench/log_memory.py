"""
Log memory: the daemon's peak RSS growth while one job prints 1 GiB.

A real karajo server (build_service, real reactor, real log store) gets one
command job that prints C{--bytes} bytes of 100-byte lines::

    yes xxxx...x | head -c BYTES        (99 x's and a newline per line)

The job is run once.  The daemon samples its own RSS (C{VmRSS} in
C{/proc/self/status}) every 50 ms from the reactor; C{VmHWM} (the kernel's
own peak) is read before and after too, so a spike between two samples is
not missed.  Reported: baseline RSS, peak RSS, growth, the log file size
after the run (capped at 10 MiB by default), elapsed time, throughput and
the daemon's CPU time.

    python bench/log_memory.py [--bytes 1073741824] [--profile]

Target (issue): peak RSS growth < 50 MiB while a job prints 1 GiB.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
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

TARGET_GROWTH_MIB = 50.0
MIB = 1024 * 1024



def status_kib(field: str) -> int:
    """A C{kB} field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bytes", type=int, default=1 << 30, help="bytes the job prints (default 1 GiB)")
    p.add_argument("--interval", type=float, default=0.05, help="RSS sampling period in s (default 0.05)")
    p.add_argument("--timeout", type=float, default=170.0,
                   help="cancel the run after this many seconds (default 170)")
    p.add_argument("--dir", default=None, help="parent of the temporary dir_base")
    p.add_argument("--profile", action="store_true",
                   help="cProfile the reactor thread during the run (slows it down)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from twisted.internet import reactor, task

    from karajo.config import Loaded, validate
    from karajo.model import Environment, Job
    from karajo.server import build_service

    tmp = tempfile.mkdtemp(prefix="karajo-bench-log-", dir=args.dir)
    command = f"yes {'x' * 99} | head -c {args.bytes}"
    env, warnings = validate(Environment(
        dir_base=tmp,
        secret="x",
        listen_address="127.0.0.1:0",
        max_job_running=1,
        jobs={"big": Job(commands=[command])},
    ))
    service = build_service(Loaded(env, warnings), reactor)
    service.removeService(service.getServiceNamed("http"))
    runner = service.jobs["big"].runner

    samples: list[tuple[float, int]] = []
    st: dict = {}

    def sample() -> None:
        samples.append((time.perf_counter(), status_kib("VmRSS")))

    sampler = task.LoopingCall(sample)

    def start() -> None:
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        # The jobs' logs are read off the reactor thread first.
        service.when_ready().addCallback(lambda _: measure())

    def measure() -> None:
        gc.collect()
        st["baseline"] = status_kib("VmRSS")
        st["hwm0"] = status_kib("VmHWM")
        st["t0"] = time.perf_counter()
        st["cpu0"] = cpu_self()
        sampler.start(args.interval, now=True)
        if args.profile:
            st["prof"] = prof = cProfile.Profile()
            prof.enable()
        runner.trigger(None)
        st["timeout"] = reactor.callLater(args.timeout, timed_out)
        runner.when_idle().addCallback(ended)

    def timed_out() -> None:
        st["timed_out"] = True
        runner.cancel()

    def ended(_) -> None:
        if "prof" in st:
            st["prof"].disable()
        st["t1"] = time.perf_counter()
        st["cpu1"] = cpu_self()
        sample()
        st["hwm1"] = status_kib("VmHWM")
        if sampler.running:
            sampler.stop()
        if st["timeout"].active():
            st["timeout"].cancel()
        reactor.stop()

    reactor.callWhenRunning(start)
    print(f"running one job printing {args.bytes} bytes ({args.bytes / MIB:.0f} MiB)...", flush=True)
    reactor.run()

    # --- report ------------------------------------------------------------
    baseline = st["baseline"]
    peak_sampled = max(kib for _, kib in samples)
    # VmHWM only says something about this run if it rose during it.
    peak = max(peak_sampled, st["hwm1"] if st["hwm1"] > st["hwm0"] else 0)
    elapsed = st["t1"] - st["t0"]
    cpu = st["cpu1"] - st["cpu0"]
    logs = []
    log_dir = runner.store.directory
    for name in sorted(os.listdir(log_dir)):
        logs.append((name, os.path.getsize(os.path.join(log_dir, name))))
    growth_mib = (peak - baseline) / 1024

    print()
    print(f"log memory: one job printing {args.bytes} bytes as 100-byte lines "
          f"(`yes <99 x> | head -c {args.bytes}`), dir_base on {tmp}")
    if st.get("timed_out"):
        print(f"WARNING: the run was canceled after {args.timeout:.0f} s; figures cover part of the output")
    print()
    rows = [
        ("run status", runner.last_status),
        ("baseline RSS (before the run)", f"{baseline / 1024:.1f} MiB"),
        (f"peak RSS (sampled every {args.interval * 1000:g} ms, {len(samples)} samples)",
         f"{peak_sampled / 1024:.1f} MiB"),
        ("VmHWM before / after the run", f"{st['hwm0'] / 1024:.1f} / {st['hwm1'] / 1024:.1f} MiB"),
        ("peak RSS growth", f"{growth_mib:.1f} MiB"),
        ("RSS after the run", f"{samples[-1][1] / 1024:.1f} MiB"),
    ]
    for name, size in logs:
        rows.append((f"log file {name}", f"{size} bytes ({size / MIB:.2f} MiB)"))
    rows += [
        ("elapsed (trigger -> log finalised)", f"{elapsed:.2f} s"),
        ("throughput", f"{args.bytes / MIB / elapsed:.1f} MiB/s ({args.bytes / 100 / elapsed / 1e6:.2f} M lines/s)"),
        ("daemon CPU (user+sys, all threads)", f"{cpu:.2f} s ({cpu / elapsed * 100:.0f}% of one core)"),
        ("daemon CPU per MiB", f"{cpu / (args.bytes / MIB) * 1000:.2f} ms"),
    ]
    print(table(rows, ("", "value")))
    if "prof" in st:
        out = io.StringIO()
        stats = pstats.Stats(st["prof"], stream=out)
        stats.sort_stats("tottime").print_stats(12)
        print()
        print("cProfile of the run (reactor thread, top 12 by own time):")
        print(out.getvalue())
    print()
    print(f"target peak RSS growth < {TARGET_GROWTH_MIB:.0f} MiB: "
          f"{'meets' if growth_mib < TARGET_GROWTH_MIB else 'MISSES'} ({growth_mib:.1f} MiB)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
