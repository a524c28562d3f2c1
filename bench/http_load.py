"""
HTTP load benchmark of a real C{twistd -n karajo} daemon, over loopback.

The daemon is started from the installed package as
C{taskset -c 0 twistd -n karajo --config FILE} on a fresh C{dir_base} in a
temporary directory; the load comes from C{wrk} (Debian's) pinned with
C{taskset -c 1}, with the Lua scripts of C{bench/wrk/} counting statuses and
printing latency percentiles.  This script itself keeps off the daemon's
core too.  Scenarios (issue 5, "Done when"):

  1. signed webhook triggers: C{[job "hook"] path = /hook}, C{command = true},
     C{max_job_running = 1}; 32 connections POST C{{"_karajo_epoch":NOW,"n":K}}
     with a valid HMAC-SHA256, every payload distinct (a pool signed here
     beforehand, since wrk's Lua has no HMAC), so the replay guard lets each
     through once.  Target: accepted (200) + busy (429) >= 3,000 req/s and no
     other status.
  2. forged signatures: the same with a wrong signature.  Target: >= 5,000
     req/s of 403.
  3. C{GET /karajo/api/environment} with 1,000 jobs of 5 finished logs each
     at 8 connections (target >= 200 req/s), then at 64 connections (it must
     never stall: max latency reported, no timeouts).
  4. start-up with 10,000 jobs in C{job.d/}: spawn to the first answered
     C{GET /karajo/api/environment}, and the daemon's RSS then.  Targets
     < 3 s and < 150 MiB.  Run twice: cold (empty C{var/}) and warm.

Then the scenario furthest from its target is run again under py-spy
(C{--profile}, default on when py-spy is found) and the hottest functions
are printed (own and cumulative samples).

    python bench/http_load.py [--duration 10] [--only 1,2,3,4] [--no-profile]
                              [--profile-scenario N] [--keep]

Run it with the interpreter of the environment karajo is installed in
(C{twistd} is looked up beside C{sys.executable}, then on C{PATH}).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WRK_DIR = os.path.join(HERE, "wrk")

SECRET = "bench-s3cret"
DAEMON_CPU = 0
LOAD_CPU = 1

TARGET_SIGNED_RPS = 3000.0
TARGET_FORGED_RPS = 5000.0
TARGET_ENV_RPS = 200.0
TARGET_START_S = 3.0
TARGET_RSS_MIB = 150.0


# --- helpers ----------------------------------------------------------------


def table(rows: list[tuple], headers: tuple) -> str:
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, row in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def find_tool(name: str) -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pinned(cpu: int, argv: list[str], use_taskset: bool) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if use_taskset else argv


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def gzip_size(port: int, path: str) -> int:
    """The size on the wire of C{path}'s answer with C{Accept-Encoding: gzip} (0: not encoded)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
        return len(body) if resp.getheader("Content-Encoding") == "gzip" else 0
    finally:
        conn.close()


class Daemon:
    """A C{twistd -n karajo} process on a config file, pinned to one core."""

    def __init__(self, args, base: str, port: int, jobs_conf: dict[str, str],
                 logs_per_job: int = 0, log_jobs: list[str] = (),
                 max_job_running: int = 1, main_jobs: str = "") -> None:
        self.args = args
        self.base = base
        self.port = port
        self.proc: subprocess.Popen | None = None
        os.makedirs(os.path.join(base, "etc", "karajo", "job.d"), exist_ok=True)
        self.config = os.path.join(base, "etc", "karajo", "karajo.conf")
        with open(self.config, "w") as f:
            f.write(
                "[karajo]\n"
                "name = bench\n"
                f"listen_address = 127.0.0.1:{port}\n"
                f"dir_base = {base}\n"
                f"secret = {SECRET}\n"
                f"max_job_running = {max_job_running}\n"
                + main_jobs
            )
        for name, text in jobs_conf.items():
            with open(os.path.join(base, "etc", "karajo", "job.d", name), "w") as f:
                f.write(text)
        for job_id in log_jobs:
            d = os.path.join(base, "var", "log", "karajo", "job", job_id)
            os.makedirs(d, exist_ok=True)
            for n in range(1, logs_per_job + 1):
                with open(os.path.join(d, f"{job_id}.{n}.success"), "w") as f:
                    f.write(f"2024-01-01 00:00:0{n} UTC {job_id}: === BEGIN\n"
                            f"2024-01-01 00:00:0{n} UTC {job_id}: $ true\n"
                            f"2024-01-01 00:00:0{n} UTC {job_id}: === success\n")

    def argv(self, prefix: list[str] | None = None) -> list[str]:
        twistd = find_tool("twistd")
        if twistd is None:
            raise SystemExit("twistd not found (run with the venv's python)")
        cmd = [twistd, "-n", "--pidfile=", "--logfile", os.path.join(self.base, "twistd.log"),
               "karajo", "--config", self.config]
        return (prefix or []) + pinned(DAEMON_CPU, cmd, self.args.taskset)

    def start(self, prefix: list[str] | None = None) -> float:
        """Spawn; return the spawn time (time.monotonic)."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv(prefix), cwd=self.base,
                                     stdin=subprocess.DEVNULL,
                                     stdout=open(os.path.join(self.base, "stdout.log"), "wb"),
                                     stderr=subprocess.STDOUT)
        return t0

    @property
    def pid(self) -> int:
        """The twistd process (under a py-spy prefix: py-spy's child)."""
        assert self.proc is not None
        if getattr(self, "_child_pid", None):
            return self._child_pid
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.01) -> float:
        """Poll GET /karajo/api/environment until it answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {self.proc.returncode}:\n"
                                 + self.log_tail())
            try:
                status, _ = get(self.port, "/karajo/api/environment", timeout=30)
                if status == 200:
                    return time.monotonic()
            except OSError:
                pass
            time.sleep(interval)
        raise SystemExit("daemon did not answer in time:\n" + self.log_tail())

    def log_tail(self) -> str:
        out = []
        for name in ("stdout.log", "twistd.log"):
            try:
                with open(os.path.join(self.base, name), errors="replace") as f:
                    out.append(f"--- {name}\n" + "".join(f.readlines()[-30:]))
            except OSError:
                pass
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_wrk(args, url: str, connections: int, script: str, script_args: list[str] = (),
            duration: float | None = None, daemon_pid: int | None = None) -> dict:
    """
    One wrk run; with C{daemon_pid}, also the daemon's CPU time over it
    (C{cpu_ms_per_req}, and C{cpu_util}: below ~0.95 while the load is
    closed-loop means the daemon's core was shared with something else).
    """
    duration = duration or args.duration
    cmd = pinned(LOAD_CPU, [args.wrk, "-t", str(args.threads), "-c", str(connections),
                            "-d", f"{duration:g}s", "--timeout", f"{args.timeout:g}s",
                            "-s", os.path.join(WRK_DIR, script), url], args.taskset)
    if script_args:
        cmd += ["--", *script_args]
    env = dict(os.environ, KARAJO_WRK_DIR=WRK_DIR)
    if getattr(args, "gzip", False):
        env["KARAJO_WRK_GZIP"] = "1"
    c0 = cpu_seconds(daemon_pid) if daemon_pid else 0.0
    w0 = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 120)
    wall = time.monotonic() - w0
    c1 = cpu_seconds(daemon_pid) if daemon_pid else 0.0
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("KARAJO-BENCH ")), None)
    if res.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    r = json.loads(line.split(" ", 1)[1])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    for k in ("p50", "p90", "p99", "max"):
        r[k + "_ms"] = r[k + "_us"] / 1000.0
    r["stderr"] = res.stderr.strip()
    r["cpu_s"] = c1 - c0
    r["cpu_util"] = (c1 - c0) / wall if daemon_pid else float("nan")
    r["cpu_ms_per_req"] = 1000.0 * (c1 - c0) / max(r["requests"], 1) if daemon_pid else float("nan")
    return r


def print_wrk(label: str, r: dict) -> None:
    print(f"  {label}: {r['rps']:,.0f} req/s ({r['requests']:,} requests), "
          f"latency p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms")
    print(f"    statuses: 200={r['s200']:,} 429={r['s429']:,} 403={r['s403']:,} "
          f"other={r['sother']:,}; socket errors: connect={r['err_connect']} "
          f"read={r['err_read']} write={r['err_write']} timeout={r['err_timeout']}")
    if r["cpu_s"]:
        print(f"    daemon CPU: {r['cpu_ms_per_req']:.3f} ms per request, "
              f"{100 * r['cpu_util']:.0f}% of its core over the run; load average {loadavg()}")
    if r["stderr"]:
        print("    wrk stderr: " + r["stderr"].replace("\n", "\n    "))


def write_pool(path: str, n: int, forged: bool, epoch: int) -> None:
    """C{n} distinct signed payloads, one C{"<sig> <body>"} per line."""
    key = SECRET.encode()
    bad = b"not-the-secret"
    with open(path, "w") as f:
        for i in range(n):
            body = b'{"_karajo_epoch":%d,"n":%d}' % (epoch, i)
            sig = hmac.new(bad if forged else key, body, hashlib.sha256).hexdigest()
            f.write(f"{sig} {body.decode()}\n")


# --- scenarios ----------------------------------------------------------------

HOOK_JOB = '[job "hook"]\npath = /hook\ncommand = true\n'
# --rules: three trigger rules that hold for every payload of the pool, and
# two payload variables (docs/configuration.md, "Trigger rules").
HOOK_RULES = (
    "match = header:Content-Type == application/json\n"
    "match = n ~ ^[0-9]+$\n"
    "match = _karajo_epoch != 0\n"
    "payload_env = N=n\n"
    "payload_env = TYPE=header:Content-Type\n"
)
HOOK_URL = "/karajo/api/job_exec/run/hook"


def many_jobs(count: int, per_file: int = 500) -> dict[str, str]:
    files = {}
    for start in range(0, count, per_file):
        files[f"jobs-{start // per_file:04d}.conf"] = "".join(
            f'[job "j{i:05d}"]\ncommand = true\n' for i in range(start, min(count, start + per_file))
        )
    return files


def webhook_scenario(args, tmp: str, forged: bool, profile: bool = False) -> dict:
    name = "forged" if forged else "signed"
    base = os.path.join(tmp, f"{name}{'-profile' if profile else ''}")
    port = free_port()
    d = Daemon(args, base, port, {"hook.conf": HOOK_JOB + (HOOK_RULES if args.rules else "")})
    d.start()
    try:
        d.wait_ready()
        # Enough distinct payloads that no thread ever wraps around.
        n = args.pool if not forged else min(args.pool, 20000)
        pool = os.path.join(base, "pool.txt")
        t = time.monotonic()
        write_pool(pool, n, forged, int(time.time()))
        print(f"  pool of {n:,} {'forged' if forged else 'signed'} payloads in "
              f"{time.monotonic() - t:.2f} s")
        url = f"http://127.0.0.1:{port}{HOOK_URL}"
        prof = start_profiler(args, d, base, name) if profile else None
        r = run_wrk(args, url, 32, "signed.lua", [pool, "X-Karajo-Sign", str(args.threads)],
                    daemon_pid=d.pid)
        if prof:
            finish_profiler(prof)
        r["rss_mib"] = rss_mib(d.pid)
        return r
    finally:
        d.stop()


def env_scenario(args, tmp: str, profile: bool = False) -> tuple[dict, dict]:
    base = os.path.join(tmp, "environment" + ("-profile" if profile else ""))
    port = free_port()
    jobs = many_jobs(args.env_jobs)
    ids = [f"j{i:05d}" for i in range(args.env_jobs)]
    d = Daemon(args, base, port, jobs, logs_per_job=5, log_jobs=ids)
    d.start()
    try:
        d.wait_ready()
        status, body = get(port, "/karajo/api/environment")
        doc = json.loads(body)
        nlogs = sum(len(j["logs"]) for j in doc["data"]["jobs"].values())
        packed = gzip_size(port, "/karajo/api/environment")
        print(f"  document: {len(body):,} bytes ({packed:,} gzip-encoded when asked), "
              f"{len(doc['data']['jobs']):,} jobs, {nlogs:,} logs"
              + ("; wrk asks for gzip" if args.gzip else ""))
        args.env_bytes = (len(body), packed)
        url = f"http://127.0.0.1:{port}/karajo/api/environment"
        prof = start_profiler(args, d, base, "environment") if profile else None
        r8 = run_wrk(args, url, 8, "get.lua", daemon_pid=d.pid)
        if prof:
            finish_profiler(prof)
            return r8, {}
        r64 = run_wrk(args, url, 64, "get.lua", daemon_pid=d.pid)
        r64["rss_mib"] = rss_mib(d.pid)
        return r8, r64
    finally:
        d.stop()


def startup_scenario(args, tmp: str, profile: bool = False) -> list[dict]:
    base = os.path.join(tmp, "startup" + ("-profile" if profile else ""))
    port = free_port()
    d = Daemon(args, base, port, many_jobs(args.startup_jobs))
    results = []
    for label in (("cold",) if profile else ("cold", "warm")):
        prefix = None
        if profile:
            out = os.path.join(args.profile_dir, "startup.raw")
            prefix = pinned(LOAD_CPU, [args.py_spy, "record", "--format", "raw", "--rate",
                                       str(args.rate), "-o", out, "--"], args.taskset)
            d.out = out
        t0 = d.start(prefix)
        try:
            if profile:
                d._child_pid = wait_child(d.proc.pid)
            t1 = d.wait_ready()
            rss = rss_mib(d.pid)
            status, body = get(port, "/karajo/api/environment", timeout=30)
            njobs = len(json.loads(body)["data"]["jobs"])
        finally:
            if profile:
                os.kill(d._child_pid, signal.SIGTERM)
                d.proc.wait(60)
            else:
                d.stop()
        results.append({"label": label, "seconds": t1 - t0, "rss_mib": rss, "jobs": njobs})
        print(f"  {label}: first answer {t1 - t0:.2f} s after spawn, VmRSS {rss:.1f} MiB, "
              f"{njobs:,} jobs served")
    if profile:
        report_profile(out)
    return results


# --- profiling ----------------------------------------------------------------


def wait_child(pid: int, timeout: float = 10.0) -> int:
    """The first child of C{pid} (py-spy's child: the daemon)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.002)
    raise SystemExit("py-spy did not start the daemon")


def start_profiler(args, d: Daemon, base: str, name: str):
    out = os.path.join(args.profile_dir, f"{name}.raw")
    cmd = pinned(LOAD_CPU, [args.py_spy, "record", "--format", "raw", "--rate", str(args.rate),
                            "--pid", str(d.pid), "--duration", str(int(args.duration) + 1),
                            "-o", out], args.taskset)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    return proc, out


def finish_profiler(prof) -> None:
    proc, out = prof
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0 and not os.path.exists(out):
        print("  py-spy failed: " + err.decode(errors="replace")[-2000:])
        return
    report_profile(out)


def _frame_name(frame: str) -> str:
    """C{func (twisted/web/http.py:12)} -> C{func (twisted/web/http.py)}."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit(':', 1)[0]})" if where else func


#: Leaf frames of thread-pool threads waiting for work: not the daemon's cost.
_IDLE_LEAVES = ("Condition.wait (threading.py)", "Event.wait (threading.py)")


def report_profile(raw: str, top: int = 25) -> None:
    """Own and cumulative samples per function from py-spy's raw output."""
    own: collections.Counter = collections.Counter()
    cum: collections.Counter = collections.Counter()
    total = idle = 0
    try:
        with open(raw) as f:
            lines = f.readlines()
    except OSError as e:
        print(f"  no profile: {e}")
        return
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_frame_name(fr) for fr in stack.split(";")]
        if frames[-1] in _IDLE_LEAVES:
            idle += n
            continue
        total += n
        own[frames[-1]] += n
        for fr in set(frames):
            cum[fr] += n
    if not total:
        print(f"  py-spy: no busy samples in {raw}")
        return
    print(f"\n  py-spy: {total:,} busy samples ({idle:,} of idle pool threads left out) -> {raw}")
    print("  top by own samples:")
    for fr, n in own.most_common(top):
        print(f"    {100.0 * n / total:5.1f}%  {fr}")
    print("  top by cumulative samples (leaving out frames in >= 90% of samples: the main loop):")
    shown = 0
    for fr, n in cum.most_common():
        if n < 0.9 * total:
            print(f"    {100.0 * n / total:5.1f}%  {fr}")
            shown += 1
            if shown >= top:
                break


# --- main -------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds of wrk per run (default 10)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: one load core)")
    p.add_argument("--timeout", type=float, default=10.0, help="wrk request timeout, s (default 10)")
    p.add_argument("--only", default="1,2,3,4", help="scenarios to run (default 1,2,3,4)")
    p.add_argument("--pool", type=int, default=100_000,
                   help="signed payloads for scenario 1 (default 100,000; never reused)")
    p.add_argument("--env-jobs", type=int, default=1000, help="jobs of scenario 3 (default 1,000)")
    p.add_argument("--startup-jobs", type=int, default=10_000, help="jobs of scenario 4 (default 10,000)")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    p.add_argument("--gzip", action="store_true",
                   help="scenario 3: wrk asks for gzip (Accept-Encoding: gzip)")
    p.add_argument("--json", default=None, help="write the figures to this file")
    p.add_argument("--rules", action="store_true",
                   help="scenarios 1-2: the job has 3 trigger rules and 2 payload variables")
    p.add_argument("--profile-scenario", type=int, default=None,
                   help="profile this scenario (default: the one furthest from its target)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples/s (default 250)")
    p.add_argument("--profile-dir", default=None, help="where py-spy output goes (default: the temp dir)")
    p.add_argument("--no-taskset", dest="taskset", action="store_false", help="do not pin")
    p.add_argument("--dir", default=None, help="parent of the temporary directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    only = {int(s) for s in args.only.split(",") if s.strip()}
    args.wrk = shutil.which("wrk")
    if args.wrk is None and only & {1, 2, 3}:
        raise SystemExit("wrk not found (apt-get install wrk)")
    if args.taskset and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        print("note: taskset missing or a single core: running unpinned")
        args.taskset = False
    if args.taskset:
        os.sched_setaffinity(0, {LOAD_CPU})  # keep this script off the daemon's core
    args.py_spy = find_tool("py-spy")
    tmp = tempfile.mkdtemp(prefix="karajo-bench-http-", dir=args.dir)
    args.profile_dir = args.profile_dir or tmp
    os.makedirs(args.profile_dir, exist_ok=True)
    print(f"karajo HTTP load: daemon on cpu {DAEMON_CPU}, wrk on cpu {LOAD_CPU}, "
          f"{args.duration:g} s per wrk run, {args.threads} wrk thread(s); dir {tmp}")
    print(f"load average at start: {loadavg()} (other work on this machine skews every figure)")

    rows = []
    results: dict = {"bench": "http_load", "load_average": [loadavg()], "gzip": args.gzip}
    # (scenario, how far from target: >1 is a miss; bigger is worse)
    misses: dict[int, float] = {}
    try:
        if 1 in only:
            print("\n[1] signed webhook triggers, 32 connections")
            r = webhook_scenario(args, tmp, forged=False)
            print_wrk("signed", r)
            ok_rps = (r["s200"] + r["s429"]) / (r["duration_us"] / 1e6)
            other = r["sother"] + r["s403"] + r["err_timeout"]
            print(f"  accepted+429: {ok_rps:,.0f} req/s; other statuses: {other}")
            results["signed"] = {"rps": ok_rps, "cpu_ms_per_req": r["cpu_ms_per_req"],
                                 "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "other": other}
            rows.append(("1 signed webhook, accepted+429 req/s", f"{ok_rps:,.0f}",
                         f">= {TARGET_SIGNED_RPS:,.0f}", ok_rps >= TARGET_SIGNED_RPS))
            rows.append(("1 signed webhook, latency p50/p99 ms",
                         f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}", "", ""))
            rows.append(("1 signed webhook, daemon CPU ms/req", f"{r['cpu_ms_per_req']:.3f}",
                         f"(<= {1000 / TARGET_SIGNED_RPS:.3f} to reach target)", ""))
            rows.append(("1 signed webhook, 200 / 429 / other", f"{r['s200']:,} / {r['s429']:,} / {other}",
                         "other = 0", other == 0))
            misses[1] = TARGET_SIGNED_RPS / max(ok_rps, 1e-9)
        if 2 in only:
            print("\n[2] forged signatures, 32 connections")
            r = webhook_scenario(args, tmp, forged=True)
            print_wrk("forged", r)
            rps403 = r["s403"] / (r["duration_us"] / 1e6)
            other = r["requests"] - r["s403"]
            results["forged"] = {"rps": rps403, "cpu_ms_per_req": r["cpu_ms_per_req"],
                                 "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "other": other}
            rows.append(("2 forged signature, 403 req/s", f"{rps403:,.0f}",
                         f">= {TARGET_FORGED_RPS:,.0f}", rps403 >= TARGET_FORGED_RPS))
            rows.append(("2 forged signature, latency p50/p99 ms",
                         f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}", "", ""))
            rows.append(("2 forged signature, daemon CPU ms/req", f"{r['cpu_ms_per_req']:.3f}",
                         f"(<= {1000 / TARGET_FORGED_RPS:.3f} to reach target)", ""))
            rows.append(("2 forged signature, non-403", f"{other}", "0", other == 0))
            misses[2] = TARGET_FORGED_RPS / max(rps403, 1e-9)
        if 3 in only:
            print(f"\n[3] GET /karajo/api/environment, {args.env_jobs:,} jobs x 5 logs")
            r8, r64 = env_scenario(args, tmp)
            print_wrk("8 connections", r8)
            print_wrk("64 connections", r64)
            results["environment"] = {
                "rps8": r8["rps"], "cpu_ms_per_req8": r8["cpu_ms_per_req"], "p99_ms8": r8["p99_ms"],
                "rps64": r64["rps"], "max_ms64": r64["max_ms"],
                "bytes": args.env_bytes[0], "gzip_bytes": args.env_bytes[1]}
            rows.append(("3 environment @8, req/s", f"{r8['rps']:,.0f}",
                         f">= {TARGET_ENV_RPS:,.0f}", r8["rps"] >= TARGET_ENV_RPS and r8["sother"] == 0))
            rows.append(("3 environment @8, latency p50/p99 ms",
                         f"{r8['p50_ms']:.2f} / {r8['p99_ms']:.2f}", "", ""))
            rows.append(("3 environment @8, daemon CPU ms/req", f"{r8['cpu_ms_per_req']:.3f}",
                         f"(<= {1000 / TARGET_ENV_RPS:.3f} to reach target)", ""))
            rows.append(("3 environment @64, req/s", f"{r64['rps']:,.0f}", "", ""))
            stalled = r64["err_timeout"] + r64["sother"] + r64["err_read"] + r64["err_connect"]
            rows.append(("3 environment @64, p50/p99/max ms",
                         f"{r64['p50_ms']:.1f} / {r64['p99_ms']:.1f} / {r64['max_ms']:.1f}",
                         "no stall", stalled == 0))
            misses[3] = TARGET_ENV_RPS / max(r8["rps"], 1e-9)
        if 4 in only:
            print(f"\n[4] start-up with {args.startup_jobs:,} jobs in job.d/")
            starts = startup_scenario(args, tmp)
            for s in starts:
                rows.append((f"4 start-up ({s['label']}), s to first answer", f"{s['seconds']:.2f}",
                             f"< {TARGET_START_S:g}", s["seconds"] < TARGET_START_S))
                rows.append((f"4 start-up ({s['label']}), VmRSS MiB", f"{s['rss_mib']:.1f}",
                             f"< {TARGET_RSS_MIB:g}", s["rss_mib"] < TARGET_RSS_MIB))
            results["startup"] = starts
            worst = max(starts, key=lambda s: s["seconds"])
            misses[4] = max(worst["seconds"] / TARGET_START_S,
                            max(s["rss_mib"] for s in starts) / TARGET_RSS_MIB)

        results["load_average"].append(loadavg())
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        print("\nSummary (this machine)")
        print(table([(a, b, c, "" if d == "" else ("ok" if d else "MISS")) for a, b, c, d in rows],
                    ("figure", "measured", "target", "")))
        if misses:
            print("\nfraction of target (>1 misses): " +
                  ", ".join(f"[{k}] {v:.2f}" for k, v in sorted(misses.items())))

        if not args.no_profile and (misses or args.profile_scenario):
            if args.py_spy is None:
                print("\n(py-spy not found: pip install py-spy to profile)")
            else:
                which = args.profile_scenario or max(misses, key=misses.get)
                print(f"\n[profile] scenario {which} under py-spy ({args.rate} Hz)")
                if which == 1:
                    webhook_scenario(args, tmp, forged=False, profile=True)
                elif which == 2:
                    webhook_scenario(args, tmp, forged=True, profile=True)
                elif which == 3:
                    env_scenario(args, tmp, profile=True)
                elif which == 4:
                    startup_scenario(args, tmp, profile=True)
    finally:
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
