"""
Operating karajo under load: reloads, a reload of 10,000 jobs, slow-body
attackers.  Each scenario starts the installed daemon (C{twistd -n karajo},
pinned to core 0 like C{http_load.py}, whose helpers it uses) and talks to it
over loopback only.

  1. 50 reloads while signed webhooks run at full load: wrk (core 1) sends
     distinct signed webhooks at 32 connections to a C{command = true} job;
     meanwhile a job file in C{job.d/} is added, changed and removed in
     turn, each change followed by SIGHUP.  Reported: answers by status
     (target: only 200 and 429), reloads that succeeded (the daemon's
     C{karajo_config_reloads_total}), and lost runs (accepted triggers minus
     runs the job has logged; target 0).
  2. A reload of 10,000 jobs: a daemon with 10,000 jobs gets one more job
     file, then SIGHUP; reported: SIGHUP -> the new job answers in the API
     (target < 2 s).
  3. 1,000 slow-body attackers: connections from 16 loopback addresses
     (127.0.0.2-17; one address may hold only 64) each declare a 1 MB body
     and send one byte a second, reconnecting when the daemon cuts them (at
     its body deadline); meanwhile signed webhooks arrive one at a time from
     127.0.0.1, 20 a second.  Reported: webhook latency p50/p99 (target p99
     < 100 ms), their statuses, and whether every accepted run succeeded.

    python bench/operations.py [--only 1,2,3] [--duration 20]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from _report import percentile, table  # bench/ is sys.path[0] when a script runs
from http_load import (
    SECRET,
    Daemon,
    free_port,
    get,
    many_jobs,
    run_wrk,
    write_pool,
)

HOOK = '[job "hook"]\npath = /hook\ncommand = true\nlog_retention = 1000000\n'
HOOK_URL = "/karajo/api/job_exec/run/hook"


def job_json(port: int, job_id: str) -> dict | None:
    status, body = get(port, f"/karajo/api/job_exec?id={job_id}", timeout=30)
    return json.loads(body)["data"] if status == 200 else None


def runs_logged(port: int, job_id: str) -> int:
    data = job_json(port, job_id)
    if not data or not data["logs"]:
        return 0
    return max(entry["counter"] for entry in data["logs"])


def reload_metric(port: int) -> dict[str, float]:
    _, body = get(port, "/karajo/metrics", timeout=30)
    found = {}
    for m in re.finditer(rb'karajo_config_reloads_total\{result="(\w+)"\} ([0-9.e+]+)', body):
        found[m.group(1).decode()] = float(m.group(2))
    return found


def wait_idle(port: int, job_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = job_json(port, job_id)
        if data and data["status"] not in ("running",):
            return
        time.sleep(0.1)


# --- 1. reloads under load --------------------------------------------------------


def reloads_under_load(args, tmp: str) -> list[tuple]:
    base = os.path.join(tmp, "reloads")
    port = free_port()
    d = Daemon(args, base, port, {"hook.conf": HOOK}, max_job_running=4)
    d.start()
    extra = os.path.join(base, "etc", "karajo", "job.d", "extra.conf")
    try:
        d.wait_ready()
        pool = os.path.join(base, "pool.txt")
        write_pool(pool, args.pool, False, int(time.time()))
        url = f"http://127.0.0.1:{port}{HOOK_URL}"
        result: dict = {}

        def load() -> None:
            result.update(run_wrk(args, url, 32, "signed.lua",
                                  [pool, "X-Karajo-Sign", str(args.threads)],
                                  duration=args.duration, daemon_pid=d.pid))

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(0.5)
        gap = (args.duration - 1.0) / args.reloads
        for k in range(args.reloads):
            step = k % 3
            if step == 0:
                with open(extra, "w") as f:
                    f.write(f'[job "extra"]\npath = /extra\ncommand = echo {k}\n')
            elif step == 1:
                with open(extra, "w") as f:
                    f.write(f'[job "extra"]\npath = /extra\ncommand = echo changed {k}\n')
            else:
                os.unlink(extra)
            os.kill(d.pid, signal.SIGHUP)
            time.sleep(gap)
        loader.join()
        wait_idle(port, "hook")
        time.sleep(1.0)
        runs = runs_logged(port, "hook")
        metric = reload_metric(port)
    finally:
        d.stop()
    other = result["sother"] + result["s403"]
    errors = sum(result[k] for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    return [
        ("webhooks answered", f"{result['requests']:,} in {args.duration:g} s "
                              f"({result['rps']:,.0f}/s), p99 {result['p99_ms']:.1f} ms"),
        ("answers 200 / 429 / other", f"{result['s200']:,} / {result['s429']:,} / {other:,} "
                                      f"({'OK' if other == 0 else 'MISSES'}: only 200 and 429)"),
        ("socket errors", f"{errors}"),
        ("reloads (SIGHUP) / succeeded / failed",
         f"{args.reloads} / {metric.get('success', 0):.0f} / {metric.get('failure', 0):.0f}"),
        # wrk stops with up to 32 requests in flight: the daemon may accept
        # some whose answers wrk never counts, so runs may exceed the 200s.
        ("accepted triggers (200s) / runs logged",
         f"{result['s200']:,} / {runs:,} "
         f"({'OK' if result['s200'] <= runs <= result['s200'] + 32 else 'MISSES'}: "
         f"{max(0, result['s200'] - runs)} lost, {max(0, runs - result['s200'])} answered "
         "after wrk stopped)"),
    ]


# --- 2. reload of 10,000 jobs -------------------------------------------------------


def big_reload(args, tmp: str) -> list[tuple]:
    base = os.path.join(tmp, "big")
    port = free_port()
    d = Daemon(args, base, port, many_jobs(args.jobs))
    d.start()
    try:
        d.wait_ready()
        with open(os.path.join(base, "etc", "karajo", "job.d", "zz-fresh.conf"), "w") as f:
            f.write('[job "fresh"]\npath = /fresh\ncommand = true\n')
        t0 = time.monotonic()
        os.kill(d.pid, signal.SIGHUP)
        elapsed = None
        while time.monotonic() - t0 < 60:
            if job_json(port, "fresh") is not None:
                elapsed = time.monotonic() - t0
                break
            time.sleep(0.01)
        metric = reload_metric(port)
    finally:
        d.stop()
    shown = f"{elapsed:.2f} s" if elapsed is not None else "never (60 s)"
    ok = elapsed is not None and elapsed < 2.0
    return [
        (f"SIGHUP -> new job listed, {args.jobs:,} jobs",
         f"{shown} ({'OK' if ok else 'MISSES'} < 2 s)"),
        ("reloads succeeded", f"{metric.get('success', 0):.0f}"),
    ]


# --- 3. slow-body attackers -----------------------------------------------------------


class Attackers:
    """N connections that each declare a big body and send a byte a second."""

    def __init__(self, port: int, count: int, sources: list[str]) -> None:
        self.port = port
        self.count = count
        self.sources = sources
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.cut = 0
        self.refused = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open_one(self, source: str) -> None:
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((source, 0))
            s.connect_ex(("127.0.0.1", self.port))
        except OSError:
            self.refused += 1
            s.close()
            return
        head = (f"POST {HOOK_URL} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000000\r\n\r\n").encode()
        self.sel.register(s, selectors.EVENT_READ, (source, head))

    def connected(self) -> int:
        return len(self.sel.get_map())

    def run(self) -> None:
        for i in range(self.count):
            self.open_one(self.sources[i % len(self.sources)])
        last = 0.0
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.1):
                try:
                    key.fileobj.recv(4096)
                except OSError:
                    pass
                # Readable means an answer (408) or a close: replace the connection.
                self.sel.unregister(key.fileobj)
                key.fileobj.close()
                self.cut += 1
                self.open_one(key.data[0])
            now = time.monotonic()
            if now - last >= 1.0:
                last = now
                for key in list(self.sel.get_map().values()):
                    source, head = key.data
                    try:
                        if head:
                            key.fileobj.send(head)
                            self.sel.modify(key.fileobj, selectors.EVENT_READ, (source, b""))
                        else:
                            key.fileobj.send(b"{")
                    except (BlockingIOError, OSError):
                        pass
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def signed_request(port: int, n: int) -> tuple[int, float]:
    body = json.dumps({"_karajo_epoch": int(time.time()), "n": n, "r": random.random()}).encode()
    sign = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=("127.0.0.1", 0))
    try:
        conn.request("POST", HOOK_URL, body=body, headers={
            "Content-Type": "application/json", "X-Karajo-Sign": sign})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - t0
    except OSError:
        return -1, time.monotonic() - t0
    finally:
        conn.close()


def slow_attackers(args, tmp: str) -> list[tuple]:
    base = os.path.join(tmp, "slow")
    port = free_port()
    d = Daemon(args, base, port, {"hook.conf": HOOK}, max_job_running=4)
    # Room for 1,000 connections plus runs, as the systemd unit's
    # LimitNOFILE gives (here: as much as this machine's hard limit allows).
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limit = min(65536, hard if hard != resource.RLIM_INFINITY else 65536)
    d.start(prefix=["prlimit", f"--nofile={limit}:{limit}", "--"])
    sources = [f"127.0.0.{i}" for i in range(2, 18)]
    attackers = Attackers(port, args.attackers, sources)
    try:
        d.wait_ready()
        attackers.thread.start()
        time.sleep(3.0)
        held = attackers.connected()
        latencies, statuses = [], {}
        n = 0
        t_end = time.monotonic() + args.duration
        while time.monotonic() < t_end:
            status, latency = signed_request(port, n)
            n += 1
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append(latency)
            time.sleep(0.05)
        held_end = attackers.connected()
        attackers.stop.set()
        attackers.thread.join(10)
        wait_idle(port, "hook")
        time.sleep(1.0)
        data = job_json(port, "hook") or {"logs": []}
    finally:
        attackers.stop.set()
        d.stop()
    latencies.sort()
    p99 = percentile(latencies, 99)
    failed = [e for e in data["logs"] if e["status"] != "success"]
    accepted = statuses.get(200, 0)
    return [
        ("attackers connected (start / end of the webhooks)", f"{held} / {held_end}"),
        ("attacker connections cut and replaced", f"{attackers.cut}"),
        ("webhooks sent, by status", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))),
        ("webhook latency p50 / p99 / max",
         f"{percentile(latencies, 50) * 1000:.1f} / {p99 * 1000:.1f} / {latencies[-1] * 1000:.1f} ms "
         f"({'OK' if p99 < 0.1 else 'MISSES'} p99 < 100 ms)"),
        ("accepted runs / logged runs not success",
         f"{accepted} / {len(failed)} ({'OK' if not failed else 'MISSES'})"),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="1,2,3")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--reloads", type=int, default=50)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--attackers", type=int, default=1000)
    p.add_argument("--pool", type=int, default=200_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--no-taskset", dest="taskset", action="store_false")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    args.wrk = shutil.which("wrk")
    only = {int(s) for s in args.only.split(",") if s.strip()}
    if 1 in only and args.wrk is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    tmp = tempfile.mkdtemp(prefix="karajo-ops-")
    try:
        for number, title, scenario in (
            (1, f"1. {args.reloads} reloads under signed-webhook load", reloads_under_load),
            (2, f"2. reload of {args.jobs:,} jobs", big_reload),
            (3, f"3. {args.attackers:,} slow-body attackers", slow_attackers),
        ):
            if number in only:
                print(title, flush=True)
                print(table(scenario(args, tmp), ("figure", "measured")), flush=True)
                print(flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
