"""
Runs triggered the way users trigger them: signed webhooks over HTTP.

Starts the installed daemon (C{taskset -c 0 twistd -n karajo}) with 20
webhook jobs C{[job "jK"] path = /jK}, C{command = true}, sharing
C{max_job_running = 4}, plus one job C{lat} whose command is
C{echo go > FIFO}.  This script (the load) stays on core 1.  The jobs'
commands inherit the daemon's core, as they would for any pinned daemon.

  1. Throughput: one keep-alive connection per job.  Each POSTs a signed
     C{{"_karajo_epoch":NOW,"n":K}} to its job, reads the whole answer (the
     Job JSON with its C{run}), waits until that run's log has its final
     name, and triggers again.  So 20 runs are always wanted and 4 run at
     once.  After C{--warmup} runs, C{--seconds} of it are measured: runs
     ended per second, and the daemon's CPU per run (user + system from
     C{/proc/PID/stat}, all threads, children not included), trigger answers'
     latency.
  2. Latency: C{--latency-runs} triggers of C{lat}, one at a time, each
     C{--gap} s after the previous run's log is final (the first, after
     phase 1's last runs ended).  A watcher on core 1,
     blocked reading the named pipe, notes the wall clock as the shell's
     builtin C{echo} writes; latency = watcher's time - the time this
     script started to connect (the request is built and signed before).

    python bench/webhook_runs.py [--seconds 10] [--latency-runs 300] [--json FILE]
                                 [--profile OUT.txt]

C{--profile} runs py-spy (C{--rate}, default 1,000 samples/s, non-blocking;
C{--native} adds C frames but stops the daemon at each sample) on the daemon during
phase 1's measured window, writes the collapsed stacks (C{flamegraph.pl}
and speedscope read them) and prints the hottest functions (own and
cumulative).  Sampling slows the daemon: the figures of a profiled run are
not the benchmark's.
C{--json} writes the figures for C{bench/compare.py}.

Targets (issue 20): CPU per run <= 1.2 ms, >= 600 runs/s; trigger -> command
start p50 <= 1.8 ms, p99 <= 3 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _report import percentile, wait_for_file  # noqa: E402
from http_load import (  # noqa: E402
    DAEMON_CPU,
    LOAD_CPU,
    SECRET,
    Daemon,
    find_tool,
    free_port,
    loadavg,
    report_profile,
)

TARGET_CPU_MS = 1.2
TARGET_RUNS = 600.0
TARGET_P50 = 1.8
TARGET_P99 = 3.0

KEY = SECRET.encode()


def signed_request(port: int, path: str, n: int, close: bool = False) -> bytes:
    body = b'{"_karajo_epoch":%d,"n":%d}' % (int(time.time()), n)
    sign = hmac.new(KEY, body, hashlib.sha256).hexdigest()
    head = (
        f"POST /karajo/api/job_exec/run{path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"X-Karajo-Sign: {sign}\r\n"
        f"Content-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode("ascii") + body


class Answer:
    """Reads HTTP/1.1 answers (Content-Length or chunked) from a byte stream."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> tuple[int, bytes] | None:
        """The status and body of the next whole answer, or None until it is in."""
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buf[:end].decode("latin-1").split("\r\n")
        length = 0
        chunked = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        pos = end + 4
        if not chunked:
            if len(self.buf) < pos + length:
                return None
            body = self.buf[pos:pos + length]
            self.buf = self.buf[pos + length:]
            return int(head[0].split()[1]), body
        parts = []
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(self.buf[pos:eol].split(b";")[0], 16)
            if len(self.buf) < eol + 2 + size + 2:
                return None
            parts.append(self.buf[eol + 2:eol + 2 + size])
            pos = eol + 2 + size + 2
            if size == 0:
                break
        self.buf = self.buf[pos:]
        return int(head[0].split()[1]), b"".join(parts)


class Client:
    """One keep-alive connection triggering one job in a closed loop."""

    def __init__(self, port: int, job: str, log_dir: str) -> None:
        self.job = job
        self.path = "/" + job
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.answer = Answer()
        self.port = port
        self.log_dir = os.path.join(log_dir, job)
        self.waiting_for: str | None = None
        self.sent_at = 0.0


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def throughput(args, port: int, pid: int, log_dir: str, jobs: list[str]) -> dict:
    sel = selectors.DefaultSelector()
    clients = [Client(port, job, log_dir) for job in jobs]
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)
    n = 0
    ended = 0
    answers: list[float] = []
    statuses: dict[int, int] = {}
    idle = list(clients)
    waiting: list[Client] = []
    window: dict | None = None
    profiler = None
    deadline = None

    def send(c: Client) -> None:
        nonlocal n
        n += 1
        request = signed_request(port, c.path, n)
        c.sent_at = time.perf_counter()
        c.sock.sendall(request)

    while True:
        for c in idle:
            send(c)
        idle = []
        for key, _ in sel.select(0.0002):
            c = key.data
            data = c.sock.recv(65536)
            if not data:
                raise SystemExit("the daemon closed a connection")
            got = c.answer.feed(data)
            if got is None:
                continue
            status, body = got
            statuses[status] = statuses.get(status, 0) + 1
            if window is not None:
                answers.append((time.perf_counter() - c.sent_at) * 1000)
            if status != 200:
                idle.append(c)  # 429: the queued run has not started yet
                continue
            counter = json.loads(body)["data"]["run"]["counter"]
            c.waiting_for = os.path.join(c.log_dir, f"{c.job}.{counter}.")
            waiting.append(c)
        still = []
        for c in waiting:
            base = c.waiting_for
            if os.path.exists(base + "success") or os.path.exists(base + "failed"):
                ended += 1
                idle.append(c)
            else:
                still.append(c)
        waiting = still
        now = time.monotonic()
        if window is None and ended >= args.warmup:
            if args.profile:
                profiler = start_profile(args, pid)
            window = {"cpu0": cpu_split(pid), "t0": time.monotonic(), "ended0": ended}
            deadline = window["t0"] + args.seconds
        elif window is not None and now >= deadline:
            user, system = (b - a for a, b in zip(window["cpu0"], cpu_split(pid), strict=True))
            cpu = user + system
            wall = now - window["t0"]
            runs = ended - window["ended0"]
            break
    for c in clients:
        c.sock.close()
    if profiler is not None:
        finish_profile(args, profiler)
    answers.sort()
    return {
        "runs": runs,
        "seconds": wall,
        "runs_per_s": runs / wall,
        "cpu_ms_per_run": 1000 * cpu / max(runs, 1),
        "cpu_util": cpu / wall,
        "user_ms_per_run": 1000 * user / max(runs, 1),
        "system_ms_per_run": 1000 * system / max(runs, 1),
        "answer_p50_ms": percentile(answers, 50),
        "answer_p99_ms": percentile(answers, 99),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


WATCHER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
while os.read(fd, 64):
    sys.stdout.write(f"{time.time_ns()}\\n")
    sys.stdout.flush()
"""


def runs_going_on(log_dir: str) -> int:
    """How many logs under C{log_dir} are still running (a name with no status)."""
    return sum(1 for _, _, names in os.walk(log_dir)
               for name in names if name.rsplit(".", 1)[-1].isdigit())


def latency(args, port: int, log_dir: str, watcher: subprocess.Popen) -> dict:
    first = []
    d = os.path.join(log_dir, "lat")
    # Phase 1's last runs are still ending: the first trigger waits for
    # them, as each later one waits for the run before it.
    deadline = time.monotonic() + 10
    while runs_going_on(log_dir) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(args.gap)
    for n in range(1, args.latency_runs + 1):
        request = signed_request(port, "/lat", 10_000_000 + n, close=True)
        sent = time.time_ns()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            answer = Answer()
            got = None
            while got is None:
                data = sock.recv(65536)
                if not data:
                    raise SystemExit("the daemon closed the latency connection")
                got = answer.feed(data)
        if got[0] != 200:
            raise SystemExit(f"latency trigger {n}: HTTP {got[0]}")
        wait_for_file(os.path.join(d, f"lat.{n}.success"), 10)
        first.append((int(watcher.stdout.readline()) - sent) / 1e6)
        time.sleep(args.gap)
    first.sort()
    return {"runs": len(first), "p50_ms": percentile(first, 50),
            "p90_ms": percentile(first, 90), "p99_ms": percentile(first, 99),
            "max_ms": first[-1]}


def start_profile(args, pid: int) -> subprocess.Popen:
    """py-spy on the daemon for the measured window, as collapsed stacks."""
    cmd = ["taskset", "-c", str(LOAD_CPU), args.py_spy, "record", "-r", str(args.rate),
           "--pid", str(pid), "--duration", str(int(args.seconds)), "--format", "raw",
           "-o", args.profile]
    # --native must stop the daemon for every sample (2,000 stops a second
    # cut its throughput tenfold); Python frames alone can be read without.
    cmd += ["--native"] if args.native else ["--nonblocking"]
    if args.gil:
        cmd += ["--gil"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    return proc


def finish_profile(args, proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        print("py-spy: " + err.decode(errors="replace")[-1000:])
    # A non-blocking sampler may read a frame while it changes: drop the
    # few lines that came out garbled.
    with open(args.profile, encoding="utf-8", errors="replace") as f:
        lines = [ln for ln in f if ln.rstrip("\n").rpartition(" ")[2].isdigit()]
    with open(args.profile, "w", encoding="utf-8") as f:
        f.writelines(lines)
    report_profile(args.profile, top=30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--max-job-running", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0, help="measured window of phase 1")
    p.add_argument("--warmup", type=int, default=500, help="runs before the window opens")
    p.add_argument("--latency-runs", type=int, default=300)
    p.add_argument("--gap", type=float, default=0.01)
    p.add_argument("--profile", default=None,
                   help="py-spy phase 1 into this file (collapsed stacks: flamegraph.pl's input)")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples/s")
    p.add_argument("--native", action="store_true", help="py-spy --native (slows the daemon)")
    p.add_argument("--gil", action="store_true",
                   help="py-spy --gil: only the thread holding the GIL (Python CPU)")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--no-taskset", dest="taskset", action="store_false")
    p.add_argument("--dir", default=None, help="parent of the temporary directory")
    args = p.parse_args(argv)
    if args.taskset and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        args.taskset = False
    if args.taskset:
        os.sched_setaffinity(0, {LOAD_CPU})
    args.py_spy = find_tool("py-spy")
    if args.profile and args.py_spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")

    tmp = tempfile.mkdtemp(prefix="karajo-bench-webhook-", dir=args.dir)
    fifo = os.path.join(tmp, "first-instruction")
    os.mkfifo(fifo, 0o600)
    jobs = [f"j{k}" for k in range(args.jobs)]
    conf = "".join(f'[job "{j}"]\npath = /{j}\ncommand = true\n' for j in jobs)
    conf += f'[job "lat"]\npath = /lat\ncommand = echo go > {fifo}\n'
    port = free_port()
    daemon = Daemon(args, os.path.join(tmp, "d"), port, {"jobs.conf": conf},
                    max_job_running=args.max_job_running)
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, fifo], stdout=subprocess.PIPE,
                               text=True)
    daemon.start()
    load0 = loadavg()
    try:
        daemon.wait_ready()
        log_dir = os.path.join(daemon.base, "var", "log", "karajo", "job")
        tp = throughput(args, port, daemon.pid, log_dir, jobs)
        lat = latency(args, port, log_dir, watcher)
    except SystemExit as e:
        raise SystemExit(f"{e}\n{daemon.log_tail()}") from None
    finally:
        daemon.stop()
        watcher.kill()
        watcher.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = loadavg()

    pin = f"daemon on core {DAEMON_CPU}, load on core {LOAD_CPU}" if args.taskset else "unpinned"
    print(f"webhook-triggered runs: {args.jobs} jobs `command = true`, max_job_running = "
          f"{args.max_job_running}; {pin}; load average {load0} -> {load1}")
    print(f"  throughput: {tp['runs']:,} runs in {tp['seconds']:.1f} s = {tp['runs_per_s']:,.0f} "
          f"runs/s; daemon CPU {tp['cpu_ms_per_run']:.3f} ms/run (user "
          f"{tp['user_ms_per_run']:.2f} + system {tp['system_ms_per_run']:.2f}; "
          f"{100 * tp['cpu_util']:.0f}% of its core); answer p50 {tp['answer_p50_ms']:.2f} ms, p99 "
          f"{tp['answer_p99_ms']:.2f} ms; statuses {tp['statuses']}")
    print(f"  signed webhook -> command start, {lat['runs']} one at a time: p50 "
          f"{lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f}, p99 {lat['p99_ms']:.2f}, "
          f"max {lat['max_ms']:.2f}")
    checks = [
        ("daemon CPU per run <= 1.2 ms", tp["cpu_ms_per_run"] <= TARGET_CPU_MS),
        (">= 600 runs/s", tp["runs_per_s"] >= TARGET_RUNS),
        ("trigger -> start p50 <= 1.8 ms", lat["p50_ms"] <= TARGET_P50),
        ("trigger -> start p99 <= 3 ms", lat["p99_ms"] <= TARGET_P99),
    ]
    for label, ok in checks:
        print(f"  target {label}: {'meets' if ok else 'MISSES'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bench": "webhook_runs", "load_average": [load0, load1],
                       "throughput": tp, "latency": lat}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
