"""
Cluster mode under load, with faults: 3 nodes on one PostgreSQL, next to
the same load on one node without C{[cluster]}, in the same run.

Jobs: C{--jobs} (10,000) command jobs, of which C{--minutely} (1,000) are
C{minutely} and the rest C{hourly@M} spread over the hour (150 per minute
for 10,000), all C{catch_up = 1m}; each command is one C{date} appending
C{JOBID_EPOCH} to a shared file (the command start).

1. Single: one node without C{[cluster]}, C{--single-slots} minute slots.
2. Cluster: a private PostgreSQL (L{tests.pgserver}, pg_stat_statements
   loaded), C{--nodes} nodes started at once, C{--slots} minute slots
   (B0..B4 for 5): node 2 is killed with -9 five seconds before B1 and
   restarted 25 s after it; the database is stopped three seconds before B3
   and started five seconds after it.

Reported: runs per (job, due slot) (exactly 1 is the promise: for slots
due while everything was up; for slots due in a fault window, once
after it, within C{catch_up}); lateness p50/p99 slot -> claim (a bench-only
trigger on C{karajo_slot} stamps each won claim with the database clock) and
slot -> command start, on the slots outside the fault windows, next to the
single node's; time for the survivors to list the killed node dead;
database statements (pg_stat_statements calls, BEGIN/COMMIT included) and
transactions per run; CPU seconds of the database and of the nodes
(their commands included).

    flock /tmp/bench.lock python bench/cluster.py [--jobs 10000] [--slots 5]

(The script takes C{/tmp/bench.lock} itself as well.)  Needs
/usr/lib/postgresql/15/bin and psycopg (C{pip install -e .[cluster]}).
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from _report import percentile, table  # bench/ is sys.path[0] when a script runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from karajo.process import processes  # noqa: E402
from tests import pgserver  # noqa: E402

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
CLK = os.sysconf("SC_CLK_TCK")
KILLED = 1  # index of the node killed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--minutely", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--slots", type=int, default=5, help="minute slots of the cluster phase")
    p.add_argument("--single-slots", type=int, default=2, help="minute slots of the single node")
    p.add_argument("--margin", type=float, default=8.0,
                   help="seconds before a boundary the nodes must be up for it to count")
    p.add_argument("--dir", default=None, help="parent of the temporary directories")
    p.add_argument("--keep", action="store_true", help="keep the directories (node output)")
    p.add_argument("--no-lock", action="store_true",
                   help="do not take /tmp/bench.lock (a trial run whose figures are not kept)")
    return p.parse_args(argv)


# --- configuration ---------------------------------------------------------------


def job_ids(args) -> list[tuple[str, int | None]]:
    """(id, minute) per job: minute None for minutely, else its hourly@M minute."""
    return [(f"j{i:05d}", None if i < args.minutely else (i - args.minutely) % 60)
            for i in range(args.jobs)]


def jobs_text(args, runs: str) -> str:
    out = []
    for job_id, minute in job_ids(args):
        schedule = "minutely" if minute is None else f"hourly@{minute}"
        out.append(f'[job "{job_id}"]\nschedule = {schedule}\ncatch_up = 1m\n'
                   f"command = exec date +{job_id}_%s.%N >> {runs}\n")
    return "".join(out)


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


class Node:
    def __init__(self, base: str, name: str, port: int, jobs: str, cluster: str | None) -> None:
        self.name, self.base, self.port = name, base, port
        self.config = os.path.join(base, "etc", "karajo", "karajo.conf")
        main = (f"[karajo]\ndir_base = {base}\nlisten_address = 127.0.0.1:{port}\n"
                "secret = bench\nmax_job_running = 5000\n")
        if cluster is not None:
            main += f"[cluster]\ndatabase = {cluster}\nnode = {name}\n"
        write(self.config, main)
        write(os.path.join(base, "etc", "karajo", "job.d", "jobs.conf"), jobs)
        self.process: subprocess.Popen | None = None
        self.cpu_before = 0.0
        self.cpu_spent = 0.0  # of the processes that ended

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT)
        out = open(os.path.join(self.base, "twistd.out"), "ab")
        self.process = subprocess.Popen(
            [TWISTD, "--pidfile=", "-n", "karajo", "--config", self.config],
            cwd=self.base, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def cpu(self) -> float:
        """CPU seconds of this node's processes so far (commands, reaped, included)."""
        now = self.cpu_spent
        if self.process is not None:
            now += proc_cpu(self.process.pid, children=True)
        return now

    def kill9(self) -> None:
        assert self.process is not None
        self.cpu_spent += proc_cpu(self.process.pid, children=True)
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def environment(self) -> dict | None:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/karajo/api/environment", timeout=5) as r:
                return json.load(r)["data"]
        except (OSError, ValueError):
            return None


def proc_cpu(pid: int, children: bool = False) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the database's CPU --------------------------------------------------------------


class DbCpu:
    """CPU seconds of the postmaster and its children, sampled (they live on)."""

    def __init__(self, server) -> None:
        self.server = server
        self.seen: dict[int, float] = {}
        self.base: dict[int, float] = {}

    def sample(self) -> None:
        root = self.server.pid()
        if root is None:
            return
        pids = [root] + children_of(root)
        for pid in pids:
            self.seen[pid] = max(self.seen.get(pid, 0.0), proc_cpu(pid))

    def start(self) -> None:
        self.sample()
        self.base = dict(self.seen)

    def total(self) -> float:
        return sum(v - self.base.get(pid, 0.0) for pid, v in self.seen.items())


def children_of(ppid: int) -> list[int]:
    return [pid for pid, (_state, parent, _group) in processes().items() if parent == ppid]


# --- measuring -----------------------------------------------------------------------


def wait_until(t: float, tick=None) -> None:
    while True:
        left = t - time.time()
        if left <= 0:
            return
        if tick is not None:
            tick()
        time.sleep(min(left, 0.5))


def due_slot(t: float, minute: int | None) -> int:
    """The newest slot of a job (minutely, or hourly@minute) at or before t."""
    m = int(t) // 60 * 60
    if minute is None:
        return m
    hour = int(t) // 3600 * 3600
    slot = hour + minute * 60
    return slot if slot <= t else slot - 3600


def read_runs(path: str) -> list[tuple[str, float]]:
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                job_id, _, at = line.strip().partition("_")
                if at:
                    out.append((job_id, float(at)))
    return out


def per_slot(args, runs, boundaries) -> tuple[dict, dict]:
    """Runs of each (job, slot) due at one of the boundaries; lateness per boundary."""
    minute_of = dict(job_ids(args))
    counts = collections.Counter()
    late: dict[int, list[float]] = collections.defaultdict(list)
    for job_id, at in runs:
        slot = due_slot(at, minute_of[job_id])
        if slot in boundaries:
            counts[(job_id, slot)] += 1
            late[slot].append(at - slot)
    for b in boundaries:
        for job_id, minute in minute_of.items():
            if minute is None or (b // 60) % 60 == minute:
                counts.setdefault((job_id, b), 0)
    return counts, late


def ready(nodes: list[Node], count: int | None, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        envs = [n.environment() for n in nodes]
        if all(e is not None for e in envs):
            if count is None:
                return
            if all((e.get("cluster") or {}).get("connected")
                   and sum(x["alive"] for x in e["cluster"]["nodes"]) == count for e in envs):
                return
        time.sleep(0.5)
    raise SystemExit(f"nodes not ready after {timeout}s")


def first_boundary(margin: float) -> int:
    return (int(time.time() + margin) // 60 + 1) * 60


def ms(values: list[float]) -> tuple[str, str]:
    v = sorted(values)
    return f"{percentile(v, 50) * 1000:.0f}", f"{percentile(v, 99) * 1000:.0f}"


def single_phase(args, work: str) -> dict:
    runs = os.path.join(work, "single.runs")
    node = Node(os.path.join(work, "single"), "single", free_port(), jobs_text(args, runs), None)
    started = time.time()
    node.start()
    try:
        ready([node], None)
        print(f"single node up in {time.time() - started:.1f}s", flush=True)
        b0 = first_boundary(args.margin)
        bounds = [b0 + 60 * i for i in range(args.single_slots)]
        wait_until(b0 - 1)
        cpu0 = node.cpu()
        wait_until(bounds[-1] + 59)
        cpu = node.cpu() - cpu0
    finally:
        node.stop()
    counts, late = per_slot(args, read_runs(runs), set(bounds))
    return {"counts": counts, "late": [x for b in bounds for x in late[b]], "cpu": cpu,
            "seconds": bounds[-1] + 59 - (b0 - 1), "runs": sum(counts.values())}


CLAIM_TRIGGER = """
CREATE TABLE IF NOT EXISTS bench_claim (job_id text, slot float8, node text, at float8);
CREATE OR REPLACE FUNCTION bench_claimed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO bench_claim VALUES (NEW.job_id, NEW.slot, NEW.node,
                                  extract(epoch FROM clock_timestamp()));
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS bench_claimed ON karajo_slot;
CREATE TRIGGER bench_claimed AFTER INSERT ON karajo_slot
  FOR EACH ROW EXECUTE FUNCTION bench_claimed();
"""


def db_counters(conninfo: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as c:
        calls = c.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            " WHERE query NOT LIKE '%pg_stat%' AND query NOT LIKE '%bench_%'").fetchone()[0]
        xacts = c.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                          " WHERE datname = current_database()").fetchone()[0]
    return int(calls), int(xacts)


def cluster_phase(args, work: str) -> dict:
    import psycopg

    server = pgserver.PgServer()
    server.start()
    server.stop()
    with open(os.path.join(server.data, "postgresql.conf"), "a") as f:
        f.write("shared_preload_libraries = 'pg_stat_statements'\n"
                "pg_stat_statements.track_utility = on\nmax_connections = 200\n")
    server.start()
    conninfo = server.conninfo
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_stat_statements")
    runs = os.path.join(work, "cluster.runs")
    jobs = jobs_text(args, runs)
    nodes = [Node(os.path.join(work, f"n{i + 1}"), f"n{i + 1}", free_port(), jobs, conninfo)
             for i in range(args.nodes)]
    try:
        return _cluster_measure(args, server, conninfo, nodes, runs)
    finally:
        for n in nodes:
            n.stop()
        if not args.keep:
            server.cleanup()


def _cluster_measure(args, server, conninfo, nodes, runs) -> dict:
    import psycopg

    started = time.time()
    for n in nodes:
        n.start()
    ready(nodes, len(nodes))
    print(f"{len(nodes)} nodes up in {time.time() - started:.1f}s", flush=True)
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(CLAIM_TRIGGER)
    b0 = first_boundary(args.margin)
    bounds = [b0 + 60 * i for i in range(args.slots)]
    kill_at, restart_at = bounds[1] - 5, bounds[1] + 25
    stop_at, start_at = bounds[3] - 3, bounds[3] + 5
    db = DbCpu(server)
    wait_until(b0 - 2, db.sample)
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute("SELECT pg_stat_statements_reset()")
    calls0, xacts0 = db_counters(conninfo)
    db.start()
    cpu0 = sum(n.cpu() for n in nodes)
    end = bounds[-1] + 59
    notice = None
    victim = nodes[KILLED]
    survivor = nodes[0]
    # kill -9, then watch a survivor list the victim dead
    wait_until(kill_at, db.sample)
    victim.kill9()
    killed = time.time()
    print(f"killed {victim.name} at slot B1-5s", flush=True)
    while time.time() < restart_at:
        db.sample()
        if notice is None:
            env = survivor.environment() or {}
            dead = [x for x in (env.get("cluster") or {}).get("nodes", [])
                    if x["name"] == victim.name and not x["alive"]]
            if dead:
                notice = time.time() - killed
                print(f"{victim.name} listed dead after {notice:.1f}s", flush=True)
        time.sleep(0.2)
    victim.start()
    print(f"restarted {victim.name}", flush=True)
    wait_until(stop_at, db.sample)
    db.sample()
    server.stop()
    print("database stopped at B3-3s", flush=True)
    wait_until(start_at)
    server.start()
    print("database started at B3+5s", flush=True)
    wait_until(end, db.sample)
    db.sample()
    cpu = sum(n.cpu() for n in nodes) - cpu0
    calls1, xacts1 = db_counters(conninfo)
    counts, late = per_slot(args, read_runs(runs), set(bounds))
    fine = [bounds[0], bounds[2]] + bounds[4:]
    with psycopg.connect(conninfo, autocommit=True) as c:
        claims = c.execute("SELECT slot, at FROM bench_claim").fetchall()
        stored = c.execute("SELECT count(*) FROM karajo_run WHERE started >= %s AND started < %s",
                           (b0 - 2, end)).fetchone()[0]
        by_node = c.execute("SELECT node, count(*) FROM karajo_run WHERE started >= %s"
                            " AND started < %s GROUP BY node ORDER BY node",
                            (b0 - 2, end)).fetchall()
    claim_late = [at - slot for slot, at in claims if int(slot) in fine]
    alive_all = all(n.process is not None and n.process.poll() is None for n in nodes)
    return {
        "counts": counts, "bounds": bounds, "fine": fine,
        "late": [x for b in fine for x in late[b]], "claim_late": claim_late,
        "notice": notice, "cpu": cpu, "db_cpu": db.total(), "seconds": end - (b0 - 2),
        "calls": calls1 - calls0, "xacts": xacts1 - xacts0, "stored": stored,
        "by_node": by_node, "alive": alive_all,
    }


def count_summary(counts: dict, slots: list[int]) -> str:
    hist = collections.Counter(n for (_, s), n in counts.items() if s in slots)
    return " ".join(f"{k}x:{v}" for k, v in sorted(hist.items()))


def main(argv=None) -> None:
    args = parse_args(argv)
    # Stopped (SIGTERM), the script still stops its nodes and server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if not pgserver.available():
        raise SystemExit(f"no PostgreSQL programs in {pgserver.PG_BIN}")
    lock = open("/tmp/bench.lock", "a")
    if not args.no_lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
    work = tempfile.mkdtemp(prefix="karajo-bench-cluster-", dir=args.dir)
    try:
        print(f"{args.jobs} jobs ({args.minutely} minutely), {args.nodes} nodes, "
              f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
        single = single_phase(args, work)
        cluster = cluster_phase(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)
    b = cluster["bounds"]
    print()
    print("runs per (job, due slot)  [Nx:M = M slots ran N times]")
    print(f"  single node, {args.single_slots} slots: "
          f"{count_summary(single['counts'], sorted({s for _, s in single['counts']}))}")
    print(f"  cluster, slots while all up (B0 B2 B4..): "
          f"{count_summary(cluster['counts'], cluster['fine'])}")
    print(f"  cluster, B1 (node killed 5 s before): {count_summary(cluster['counts'], [b[1]])}")
    if len(b) > 3:
        print(f"  cluster, B3 (database down B3-3s..B3+5s): "
              f"{count_summary(cluster['counts'], [b[3]])}")
    print()
    s50, s99 = ms(single["late"])
    c50, c99 = ms(cluster["late"])
    k50, k99 = ms(cluster["claim_late"])
    print(table([
        ("single node: slot -> command start", len(single["late"]), s50, s99),
        ("cluster: slot -> claim", len(cluster["claim_late"]), k50, k99),
        ("cluster: slot -> command start", len(cluster["late"]), c50, c99),
    ], ("lateness outside fault windows", "runs", "p50 ms", "p99 ms")))
    runs = max(cluster["stored"], 1)
    print()
    print(f"killed node listed dead by a survivor after: "
          f"{cluster['notice'] if cluster['notice'] is None else round(cluster['notice'], 1)} s")
    print(f"runs stored in the database during the phase: {cluster['stored']} "
          f"(by node: {', '.join(f'{n}={c}' for n, c in cluster['by_node'])})")
    print(f"database statements per run (pg_stat_statements calls incl. BEGIN/COMMIT): "
          f"{cluster['calls'] / runs:.1f}; transactions per run: {cluster['xacts'] / runs:.1f}")
    wall = cluster["seconds"]
    total = cluster["db_cpu"] + cluster["cpu"]
    print(f"CPU seconds over {wall:.0f} s: database {cluster['db_cpu']:.1f}, nodes (with their "
          f"commands) {cluster['cpu']:.1f}; database share {cluster['db_cpu'] / total:.0%}")
    print(f"single node CPU seconds over {single['seconds']:.0f} s: {single['cpu']:.1f} "
          f"({single['runs']} runs)")


if __name__ == "__main__":
    main()
