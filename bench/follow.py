"""
Following runs live: N clients follow one run's events stream while the run
prints 1 MB/s for 20 s.

A real daemon (C{twistd -n karajo}, pinned to core 0 like C{http_load.py})
runs one command job that prints 100-byte lines, 1,000 of them every
0.1 s, each starting with the time it was printed.  N followers
(C{--followers}, default 200, spread over C{--procs} client processes on
core 1) are connected before the run is triggered and open
C{GET /karajo/api/job_exec/events} as soon as the trigger answers (so a
follower's lag is the daemon's, not the time a client process took to
start), read the stream to its end, and keep a SHA-256 of the text they got
and, for the last line of every piece, how long after its printing it
arrived (one follower per client process decodes every event and hashes
the text; the others hash the JSON strings' contents as received, which do
not depend on where the log was cut into pieces, and count as complete when
theirs equal it).  Reported: followers that got exactly the final log file's bytes
(target: all), the worst lag (target: none more than 1 s behind), and the
daemon's CPU for the run with N followers minus the same run followed by
none (target: under 25 % of one core over the 20 s); also the client
processes' own CPU, to show they are not what holds the followers back.

The lag is wall-clock: on a machine busy with other work the daemon, its
command or a client may wait for a core, and the lag with it; when the
command itself is held back (fewer than 95 % of its lines printed), the
table says the figures are invalid.  C{--fifo}
runs them under SCHED_FIFO (root only) so that only karajo's own work shows;
C{--dir /dev/shm} keeps other disk traffic out of the daemon's log writes.
CPU figures are CPU time and need neither.  C{--profile RAW} records the
daemon under py-spy while it is followed (that run's figures then include
py-spy's pauses).

The daemon's per-run log cap (10 MiB by default, head and tail kept) is
raised to 64 MiB here so that all 20 MB stream live; with the default cap
the middle of such a log is cut by design, and a follower gets the tail
when the run ends.

    python bench/follow.py [--followers 200] [--seconds 20] [--procs 8] [--fifo]
                           [--dir DIR] [--profile RAW]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from _report import table  # bench/ is sys.path[0] when a script runs
from http_load import SECRET, cpu_seconds, free_port, get, report_profile

STAMP = re.compile(rb"chatty: (\d+\.\d+) x")

DAEMON_CPU = 0
LOAD_CPU = 1
#: SCHED_FIFO priority with --fifo: above every ordinary process, below the
#: kernel's own threads (which run at 50 and up).
FIFO_PRIORITY = 10

PRINTER = (
    "import sys, time\n"
    "out = sys.stdout.buffer\n"
    "end = time.time() + {seconds}\n"
    "while time.time() < end:\n"
    "    t0 = time.time()\n"
    "    stamp = ('%.6f ' % t0).encode()\n"
    "    line = stamp + b'x' * (99 - len(stamp)) + b'\\n'\n"
    "    out.write(line * 1000)\n"
    "    out.flush()\n"
    "    time.sleep(max(0.0, 0.1 - (time.time() - t0)))\n"
)

LAUNCH = (
    "import sys\n"
    "import karajo.joblog as joblog\n"
    "joblog.LogStore.__init__.__kwdefaults__['max_bytes'] = 64 * 1024 * 1024\n"
    "from twisted.scripts.twistd import run\n"
    "sys.argv = ['twistd'] + sys.argv[1:]\n"
    "run()\n"
)


def start_daemon(base: str, port: int, seconds: float, fifo: bool) -> subprocess.Popen:
    os.makedirs(os.path.join(base, "etc", "karajo"), exist_ok=True)
    with open(os.path.join(base, "printer.py"), "w") as f:
        f.write(PRINTER.format(seconds=seconds))
    config = os.path.join(base, "etc", "karajo", "karajo.conf")
    with open(config, "w") as f:
        f.write(
            "[karajo]\nname = bench\n"
            f"listen_address = 127.0.0.1:{port}\ndir_base = {base}\nsecret = {SECRET}\n"
            '[job "chatty"]\npath = /chatty\n'
            f"command = {sys.executable} {os.path.join(base, 'printer.py')}\n"
        )
    cmd = (["chrt", "-f", str(FIFO_PRIORITY)] if fifo else []) + [
           "taskset", "-c", str(DAEMON_CPU), sys.executable, "-c", LAUNCH, "-n", "--pidfile=",
           "--logfile", os.path.join(base, "twistd.log"), "karajo", "--config", config]
    proc = subprocess.Popen(cmd, cwd=base, stdin=subprocess.DEVNULL,
                            stdout=open(os.path.join(base, "stdout.log"), "wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(port, "/karajo/api/environment")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.05)
    raise SystemExit("daemon did not start")


def trigger(port: int, n: int) -> int:
    import http.client
    body = json.dumps({"_karajo_epoch": int(time.time()), "n": n}).encode()
    sign = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/karajo/api/job_exec/run/chatty", body=body,
                 headers={"Content-Type": "application/json", "X-Karajo-Sign": sign})
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data["data"]["run"]["counter"]


class Follower:
    """
    One events-stream client on a raw socket (its process's selector),
    connected before the run is triggered and asking for the stream at once
    after: its lag is the daemon's, not the time a client took to start.
    """

    def __init__(self, sel: selectors.BaseSelector, port: int, source: str) -> None:
        # karajo holds at most 64 connections per client address: spread
        # the followers over loopback addresses, as distinct clients are.
        self.sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
        # Room for about a second of the stream: a client process busy with
        # its other followers does not make the daemon wait for this one.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sel = sel
        self.raw = bytearray()
        self.body = bytearray()
        self.head_done = False
        self.chunked = False
        self.content_sha = hashlib.sha256()
        self.sha = hashlib.sha256()
        self.reference = False
        self.size = 0
        self.max_lag = 0.0
        self.max_lag_at = 0.0
        self.status: str | None = None
        self.closed = False

    def ask(self, counter: int) -> None:
        self.sock.sendall(
            f"GET /karajo/api/job_exec/events?id=chatty&counter={counter} HTTP/1.1\r\n"
            "Host: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ, self)

    def feed(self, data: bytes) -> None:
        if not data:
            self.closed = True
            return
        raw = self.raw
        raw += data
        if not self.head_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            self.chunked = b"chunked" in bytes(raw[:end]).lower()
            del raw[:end + 4]
            self.head_done = True
        if not self.chunked:
            self.body += raw
            raw.clear()
        else:
            pos = 0
            while True:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                length = int(raw[pos:eol].split(b";")[0], 16)
                if len(raw) < eol + 2 + length + 2:
                    break
                self.body += raw[eol + 2:eol + 2 + length]
                pos = eol + 2 + length + 2
                if length == 0:
                    self.closed = True
                    break
            del raw[:pos]
        self.events()

    def events(self) -> None:
        body = self.body
        pos = 0
        now = time.time()
        while True:
            end = body.find(b"\n\n", pos)
            if end < 0:
                break
            block = bytes(body[pos:end])
            pos = end + 2
            if block.startswith(b"event: log\ndata: "):
                data = block[17:]
                # The JSON string's content: the same bytes however the log
                # was cut into pieces (JSON escapes each character alone),
                # so it is hashed as it is; the reference also decodes it.
                start = data.index(b'"text":"') + 8
                self.content_sha.update(data[start:-2])
                if self.reference:
                    text = json.loads(data)["text"].encode("utf-8")
                    self.sha.update(text)
                    self.size += len(text)
                # The piece's last line: how long after its printing it came.
                stamps = STAMP.findall(data[-400:])
                if stamps and now - float(stamps[-1]) > self.max_lag:
                    self.max_lag = now - float(stamps[-1])
                    self.max_lag_at = now
            elif block.startswith(b"event: end\ndata: "):
                self.status = json.loads(block[17:])["status"]
        del body[:pos]


def follow_many(port: int, count: int, proc: int, fifo: bool, ready, go, counter, queue) -> None:
    os.sched_setaffinity(0, {LOAD_CPU})
    if fifo:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
    sel = selectors.DefaultSelector()
    followers = [Follower(sel, port, f"127.0.{proc + 1}.{2 + i // 50}") for i in range(count)]
    followers[0].reference = True
    ready.put(proc)
    go.wait()
    for f in followers:
        f.ask(counter.value)
    open_ = set(followers)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    deadline = time.monotonic() + 300
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            f = key.data
            try:
                n = f.sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            f.feed(view[:n])
            if f.closed or f.status is not None:
                sel.unregister(f.sock)
                f.sock.close()
                open_.discard(f)
    reference = followers[0]
    cpu = sum(os.times()[:2])
    queue.put((cpu, [(reference.sha.hexdigest()
                      if f.content_sha.digest() == reference.content_sha.digest() else "differs",
                      f.size, f.max_lag, f.status, f.max_lag_at) for f in followers]))


def one_run(port: int, followers: int, procs: int, fifo: bool, daemon_pid: int, n: int,
            profile: str | None = None) -> dict:
    results: list[tuple] = []
    client_cpu = 0.0
    workers = []
    if followers:
        ready: multiprocessing.Queue = multiprocessing.Queue()
        queue: multiprocessing.Queue = multiprocessing.Queue()
        go = multiprocessing.Event()
        counter = multiprocessing.Value("i", 0)
        per = [followers // procs + (1 if i < followers % procs else 0) for i in range(procs)]
        workers = [multiprocessing.Process(target=follow_many,
                                           args=(port, k, i, fifo, ready, go, counter, queue))
                   for i, k in enumerate(per) if k]
        for w in workers:
            w.start()
        for _ in workers:
            ready.get(timeout=120)
    spy = None
    if profile:
        spy = subprocess.Popen(
            ["taskset", "-c", str(LOAD_CPU),
             shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy"),
             "record", "--format", "raw",
             "--rate", "200", "--pid", str(daemon_pid), "-o", profile],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    c0 = cpu_seconds(daemon_pid)
    t0 = time.monotonic()
    started = time.time()
    counter_n = trigger(port, n)
    if workers:
        counter.value = counter_n
        go.set()
        for _ in workers:
            cpu, got = queue.get()
            client_cpu += cpu
            results.extend(got)
        for w in workers:
            w.join()
    # Wait for the run's end (with no followers, by polling).
    while True:
        data = json.loads(get(port, "/karajo/api/job_exec?id=chatty")[1])["data"]
        entry = next((e for e in data["logs"] if e["counter"] == counter_n), None)
        if entry and entry["status"] != "running":
            break
        time.sleep(0.2)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(daemon_pid) - c0
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has
        spy.wait(60)
    return {"counter": counter_n, "results": results, "cpu": cpu, "wall": wall,
            "status": entry["status"], "client_cpu": client_cpu, "started": started}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--followers", type=int, default=200)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--fifo", action="store_true",
                   help="run the daemon, its command and the followers under SCHED_FIFO (needs "
                        "root): other work on a shared machine then does not delay them")
    p.add_argument("--dir", help="where the daemon's files go (default: the system's temporary "
                                 "directory; /dev/shm keeps other disk work out of the figures)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--profile", metavar="RAW",
                   help="record the daemon under py-spy while it is followed, into RAW")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="karajo-follow-", dir=args.dir)
    port = free_port()
    daemon = start_daemon(tmp, port, args.seconds, args.fifo)
    try:
        alone = one_run(port, 0, args.procs, args.fifo, daemon.pid, 1)
        followed = one_run(port, args.followers, args.procs, args.fifo, daemon.pid, 2,
                           args.profile)
        log_dir = os.path.join(tmp, "var", "log", "karajo", "job", "chatty")
        path = os.path.join(log_dir, f"chatty.{followed['counter']}.{followed['status']}")
        with open(path, "rb") as f:
            final = f.read()
    finally:
        daemon.terminate()
        daemon.wait(30)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    digest = hashlib.sha256(final).hexdigest()
    # A busy machine (or a stalled daemon) holds the command back: its
    # output waits in the pipe and the run prints less than asked.
    printed = len(STAMP.findall(final))
    expected = int(args.seconds * 10) * 1000
    got_all = sum(1 for sha, *_ in followed["results"] if sha == digest)
    lags = sorted(r[2] for r in followed["results"])
    worst_at = max(followed["results"], key=lambda r: r[2])[4] - followed["started"]
    streaming_cpu = followed["cpu"] - alone["cpu"]
    share = streaming_cpu / args.seconds
    rows = [
        ("final log", f"{len(final) / 1e6:.1f} MB, run {followed['status']}, "
                      f"{followed['wall']:.1f} s"),
        ("lines the command printed (10,000 a second)",
         f"{printed:,} of {expected:,} "
         f"({'OK' if printed >= 0.95 * expected else 'INVALID: the command was held back'})"),
        ("followers with every byte (= the final file)",
         f"{got_all} of {args.followers} "
         f"({'OK' if got_all == args.followers else 'MISSES'})"),
        ("worst lag behind the printing, median / max over followers",
         f"{lags[len(lags) // 2]:.3f} / {lags[-1]:.3f} s "
         f"({'OK' if lags and lags[-1] < 1.0 else 'MISSES'} < 1 s), "
         f"the worst {worst_at:.1f} s into the run"),
        ("daemon CPU for the run: alone / with followers",
         f"{alone['cpu']:.2f} / {followed['cpu']:.2f} s"),
        ("daemon CPU for the streaming",
         f"{streaming_cpu:.2f} s over {args.seconds:g} s = {share * 100:.0f} % of one core "
         f"({'OK' if share < 0.25 else 'MISSES'} < 25 %)"),
        ("the followers' own CPU (core 1)",
         f"{followed['client_cpu']:.2f} s = {followed['client_cpu'] / followed['wall'] * 100:.0f} %"
         " of that core"),
    ]
    print(f"{args.followers} followers of one run printing 1 MB/s for {args.seconds:g} s")
    print(table(rows, ("figure", "measured")))
    if args.profile:
        report_profile(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
