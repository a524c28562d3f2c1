"""
Time from a signed webhook trigger to the command's first instruction.

Starts a real C{twistd -n karajo} on 127.0.0.1 (pinned to core 0 with
C{--pin}) with one webhook job whose command is C{echo go > FIFO}: the
shell's first instruction is a builtin that writes to a named pipe.  A
watcher process (on core 1, blocked reading that pipe) notes the wall clock
the moment the write wakes it.  The client (this process, also on core 1)
builds and signs a trigger, notes the time, connects and sends it; the
latency is the watcher's time minus the client's.  Nothing is subtracted:
the watcher's own wake-up is counted in, so the figure slightly overstates
karajo's part.

Triggers are sent one at a time, each C{--gap} seconds after the previous
run's log is final (a trigger that arrives while the daemon is still
flushing the previous log measures that flush, not the trigger path).

    python bench/trigger_latency.py [--runs 300] [--gap 0.01] [--pin]

Target (issue 4): p50 < 3.5 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from _report import wait_for_file  # bench/ is sys.path[0] when a script runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def signed_trigger(port: int, n: int) -> bytes:
    """The whole HTTP request of trigger C{n}, signed: built before the clock starts."""
    body = json.dumps({"_karajo_epoch": int(time.time()), "n": n}).encode()
    sign = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    head = (
        "POST /karajo/api/job_exec/run/t HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"X-Karajo-Sign: {sign}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def send(port: int, request: bytes) -> int:
    """Connect, send, read the whole answer; its status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        return response.status


# Reads the named pipe (opened read-write, so a read waits for the next
# writer instead of seeing end-of-file) and prints when each write woke it.
WATCHER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
while os.read(fd, 64):
    sys.stdout.write(f"{time.time_ns()}\\n")
    sys.stdout.flush()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.01,
                        help="seconds between a run's final log and the next trigger (default 0.01)")
    parser.add_argument("--pin", action="store_true", help="pin the daemon (and so its commands) to core 0")
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="karajo-bench-trigger-")
    port = free_port()
    os.makedirs(os.path.join(base, "etc/karajo"))
    config = os.path.join(base, "etc/karajo/karajo.conf")
    fifo = os.path.join(base, "first-instruction")
    os.mkfifo(fifo, 0o600)
    with open(config, "w") as f:
        f.write(
            f"[karajo]\ndir_base = {base}\nlisten_address = 127.0.0.1:{port}\n"
            "secret = s3cret\nmax_job_running = 1\n"
            f'[job "t"]\npath = /t\ncommand = echo go > {fifo}\n'
        )
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    cmd = [twistd, "--pidfile=", "-n", "karajo", "--config", config]
    # The client sits on core 1.  --pin also pins the daemon to core 0; its
    # commands then inherit core 0 and share it with the daemon.
    os.sched_setaffinity(0, {1})
    if args.pin and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0"] + cmd
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, fifo], stdout=subprocess.PIPE, text=True)
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=base)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        log_dir = os.path.join(base, "var/log/karajo/job/t")
        first = []
        for n in range(1, args.runs + 1):
            request = signed_trigger(port, n)
            sent = time.time_ns()
            status = send(port, request)
            if status != 200:
                raise SystemExit(f"trigger {n}: HTTP {status}")
            wait_for_file(os.path.join(log_dir, f"t.{n}.success"), 5)
            first.append((int(watcher.stdout.readline()) - sent) / 1e6)
            time.sleep(args.gap)
    finally:
        daemon.terminate()
        daemon.wait(10)
        watcher.kill()
        watcher.wait(10)
        shutil.rmtree(base, ignore_errors=True)

    print(f"signed trigger -> the command's first instruction, {len(first)} runs one at a time, "
          f"{args.gap * 1000:g} ms apart; daemon {'pinned to core 0' if args.pin else 'unpinned'}, "
          "client on core 1")
    print()
    print(f"{'':38} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, values in (("trigger -> first instruction", first),):
        print(f"{label:38} {percentile(values, 50):8.2f} {percentile(values, 90):8.2f} "
              f"{percentile(values, 99):8.2f} {max(values):8.2f}")
    p50 = percentile(first, 50)
    print(f"target p50 < 3.5 ms (trigger -> first instruction): {'meets' if p50 < 3.5 else 'MISSES'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
