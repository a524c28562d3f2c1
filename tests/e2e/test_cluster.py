"""
End to end: a karajo cluster (docs/cluster.md) as real twistd processes on
a real PostgreSQL.

L{OneServiceTests} share one cluster of three nodes per test process (a
fresh database on the machine's server, 127.0.0.1:5432), started at once
on the empty database by the first of them; L{FaultTests} each make their
own private server (L{tests.pgserver}) so they can kill nodes and stop the
database.
"""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import signal
import tempfile
import time
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from .. import pgserver
from .clusternodes import (
    ClusterNodes,
    events,
    fresh_database,
    get,
    logs,
    manage,
    signed_body,
    sleep,
    wait_run,
    wait_status,
    webhook,
)

try:
    import psycopg
except ImportError:  # pragma: no cover - the test extra has it
    psycopg = None

#: The minutely jobs of the exactly-once test.
MINUTELY = 50


def _shared_jobs(base: str) -> str:
    runs, solo, long_pid = (os.path.join(base, f) for f in ("runs", "solo", "long.pid"))
    minutely = "".join(
        f'[job "m{i:02d}"]\nschedule = minutely\n'
        f"command = echo $KARAJO_JOB_ID $KARAJO_JOB_COUNTER $(date +%s) >> {runs}\n"
        for i in range(MINUTELY))
    return minutely + f"""
[job "hook"]
path = /hook
command = "echo first line; sleep 3; echo second line"

[job "solo"]
path = /solo
command = "echo begin $KARAJO_JOB_COUNTER $(date +%s.%N) >> {solo}; sleep 1; \\
echo end $KARAJO_JOB_COUNTER $(date +%s.%N) >> {solo}"

[job "long"]
path = /long
command = "echo $$ > {long_pid}; exec sleep 30"
"""


class _Shared:
    """This test process's cluster of three nodes, and when it was up."""

    cluster: ClusterNodes | None = None
    ready: float = 0.0
    error: BaseException | None = None


async def shared_cluster() -> ClusterNodes:
    """The cluster of L{OneServiceTests}: started at the first call, stopped at exit."""
    if _Shared.error is not None:
        raise SkipTest(f"the shared cluster did not start: {_Shared.error}")
    if _Shared.cluster is not None:
        return _Shared.cluster
    try:
        conninfo, drop = fresh_database(pgserver.SHARED)
    except Exception as e:
        raise SkipTest(f"no PostgreSQL at {pgserver.SHARED}: {e}") from None
    base = tempfile.mkdtemp(prefix="karajo-cluster-e2e-")
    cluster = ClusterNodes(base, conninfo, _shared_jobs(base), ["n1", "n2", "n3"],
                           karajo="max_job_running = 60\n")

    def stop() -> None:
        cluster.stop()
        drop()
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(stop)
    cluster.start()  # all three at once, on the empty database
    try:
        await cluster.wait_alive(3, timeout=60)
    except BaseException as e:
        _Shared.error = e
        raise
    _Shared.cluster = cluster
    _Shared.ready = time.time()
    return cluster


def _content(log: dict) -> str:
    return base64.b64decode(log["content"]).decode("utf-8", "replace")


async def read_log(node: Any, job_id: str, counter: int) -> dict:
    return await get(node, f"/job_exec/log?id={job_id}&counter={counter}")


class OneServiceTests(TestCase):
    """Three nodes, one service."""

    timeout = 240

    def setUp(self) -> None:
        if psycopg is None:
            raise SkipTest("psycopg is not installed (pip install karajo[cluster])")

    async def test_three_nodes_start_at_once_on_an_empty_database(self) -> None:
        """
        Three nodes started at the same moment on an empty database: the
        schema is made once, every node sees the three alive, with one
        configuration digest, and none logged an error.
        """
        cluster = await shared_cluster()
        with psycopg.connect(cluster.conninfo) as conn:
            versions = conn.execute("SELECT count(*) FROM karajo_schema").fetchone()
            nodes = conn.execute("SELECT name FROM karajo_node ORDER BY name").fetchall()
        self.assertEqual(versions, (1,))
        self.assertEqual([n for (n,) in nodes], ["n1", "n2", "n3"])
        digests = set()
        for node in cluster.nodes:
            env = await get(node, "/environment")
            listed = env["cluster"]["nodes"]
            self.assertEqual(sorted((n["name"], n["alive"]) for n in listed),
                             [("n1", True), ("n2", True), ("n3", True)])
            self.assertEqual(env["cluster"]["config_mismatch"], [])
            digests.add(env["cluster"]["config_digest"])
            out = node.output()
            self.assertNotIn("Traceback", out, node.name)
            self.assertNotIn("Unhandled", out, node.name)
        self.assertEqual(len(digests), 1)

    async def test_webhook_to_one_node_readable_on_the_others(self) -> None:
        """
        A webhook sent to one node runs once; every node lists the run
        (with the node that ran it), serves its log and its events stream,
        a running log no more than about 2 s behind; the same signed
        payload sent to another node is refused as a replay.
        """
        cluster = await shared_cluster()
        body = signed_body()
        code, _, reply = await webhook(cluster.nodes[0], "/hook", body)
        self.assertEqual(code, 200, reply)
        sent = time.monotonic()
        counter = reply["data"]["run"]["counter"]
        streams = [defer.ensureDeferred(events(node, "hook", counter))
                   for node in cluster.nodes]
        code, _, reply = await webhook(cluster.nodes[1], "/hook", body)
        self.assertEqual((code, reply["name"]), (403, "ERR_REQUEST_REPLAYED"))
        # The first line is written at once, the second 3 s later; every
        # node shows the first one while the run still runs.
        for node in cluster.nodes:
            while True:
                try:
                    log = await read_log(node, "hook", counter)
                    if "first line" in _content(log):
                        break
                except AssertionError:
                    pass  # not known on this node yet
                self.assertLess(time.monotonic() - sent, 2.5, f"{node.name}: not shown in time")
                await sleep(0.1)
            self.assertEqual(log["status"], "running", node.name)
        ran_on = set()
        for node in cluster.nodes:
            entry = await wait_run(node, "hook", counter, "success")
            ran_on.add(entry["node"])
            log = await read_log(node, "hook", counter)
            self.assertIn("first line", _content(log))
            self.assertIn("second line", _content(log))
        self.assertEqual(len(ran_on), 1, ran_on)
        self.assertIn(ran_on.pop(), {"n1", "n2", "n3"})
        for node, stream in zip(cluster.nodes, streams, strict=True):
            pieces = await stream
            text = b"".join(data for _, data in pieces).decode()
            self.assertIn("first line", text, node.name)
            self.assertIn("second line", text, node.name)
            self.assertIn('event: end\ndata: {"status":"success"}', text, node.name)
            first = next(at for at, data in pieces if b"first line" in data)
            self.assertLess(first - sent, 2.5, f"{node.name}: the stream is late")

    async def test_counters_are_cluster_wide_and_one_run_at_a_time(self) -> None:
        """
        Three triggers sent at once to three nodes: one runs, one is queued,
        one is refused (429), as on one server.  Two more through other
        nodes: every counter used once, consecutive, and no two runs overlap.
        """
        cluster = await shared_cluster()
        solo = os.path.join(cluster.base, "solo")
        results = await defer.gatherResults([
            defer.ensureDeferred(webhook(node, "/solo")) for node in cluster.nodes])
        codes = sorted(code for code, _, _ in results)
        self.assertEqual(codes, [200, 200, 429], [r for _, _, r in results])
        statuses = sorted(r["data"]["run"]["status"] for code, _, r in results if code == 200)
        self.assertEqual(statuses, ["queued", "running"])
        refused = [r for code, _, r in results if code == 429][0]
        self.assertEqual(refused["name"], "ERR_JOB_ALREADY_RUN")
        counters = sorted(r["data"]["run"]["counter"] for code, _, r in results if code == 200)
        await wait_run(cluster.nodes[2], "solo", counters[1], "success", timeout=20)
        for node in (cluster.nodes[2], cluster.nodes[1]):
            code, _, reply = await webhook(node, "/solo")
            self.assertEqual(code, 200, reply)
            counters.append(reply["data"]["run"]["counter"])
            await wait_run(node, "solo", counters[-1], "success", timeout=20)
        self.assertEqual(counters, list(range(counters[0], counters[0] + 4)), counters)
        with open(solo) as f:
            lines = [line.split() for line in f]
        spans = {}
        for what, counter, at in lines:
            spans.setdefault(int(counter), {})[what] = float(at)
        self.assertEqual(sorted(spans), counters)
        ordered = [spans[c] for c in counters]
        for before, after in zip(ordered, ordered[1:], strict=False):
            self.assertLessEqual(before["end"], after["begin"], spans)
        nodes = {(await logs(cluster.nodes[0], "solo"))[c]["node"] for c in counters}
        self.assertEqual(len(nodes), 1, nodes)

    async def test_pause_and_cancel_across_nodes(self) -> None:
        """
        Cancel sent to one node stops the run another node runs; pause sent
        to one node pauses the job everywhere (a trigger on any node gets
        412), resume on a third node lets it run again.
        """
        cluster = await shared_cluster()
        n1, n2, n3 = cluster.nodes
        pid_file = os.path.join(cluster.base, "long.pid")
        code, _, reply = await webhook(n1, "/long")
        self.assertEqual(code, 200, reply)
        counter = reply["data"]["run"]["counter"]
        entry = await wait_run(n3, "long", counter, "running", timeout=10)
        runner = next(n for n in cluster.nodes if n.name == entry["node"])
        canceler = next(n for n in cluster.nodes if n is not runner)
        while not os.path.exists(pid_file):
            await sleep(0.05)
        code, _, reply = await manage(canceler, "cancel", "long")
        self.assertEqual(code, 200, reply)
        for node in cluster.nodes:
            await wait_run(node, "long", counter, "canceled", timeout=10)
        with open(pid_file) as f:
            pid = int(f.read())
        self.assertFalse(pgserver.alive(pid), "the canceled command still runs")

        code, _, reply = await manage(n2, "pause", "long")
        self.assertEqual(code, 200, reply)
        for node in cluster.nodes:
            code, _, reply = await webhook(node, "/long")
            self.assertEqual((code, reply["name"]), (412, "ERR_JOB_PAUSED"), node.name)
            await wait_status(node, "long", "paused")
        code, _, reply = await manage(n3, "resume", "long")
        self.assertEqual(code, 200, reply)
        code, _, reply = await webhook(n1, "/long")
        self.assertEqual(code, 200, reply)
        again = reply["data"]["run"]["counter"]
        self.assertEqual(again, counter + 1)
        await wait_run(n2, "long", again, "running", timeout=10)
        code, _, reply = await manage(n1, "cancel", "long")
        self.assertEqual(code, 200, reply)
        await wait_run(n2, "long", again, "canceled", timeout=10)

    async def test_every_minute_slot_runs_exactly_once(self) -> None:
        """
        Fifty minutely jobs on three nodes over two minute boundaries (the
        first two after all three were up): each job's run of each slot is
        in the shared file exactly once, and no run of any other slot.
        """
        cluster = await shared_cluster()
        first = (int(_Shared.ready) // 60 + 1) * 60
        second = first + 60
        # Every run of the second slot has begun (and appended) some seconds after it.
        while time.time() < second + 8:
            await sleep(0.5)
        with open(os.path.join(cluster.base, "runs")) as f:
            lines = [line.split() for line in f]
        seen: dict[tuple[str, int], int] = {}
        for job_id, _counter, at in lines:
            slot = int(at) // 60 * 60
            if first <= slot <= second:
                seen[(job_id, slot)] = seen.get((job_id, slot), 0) + 1
        want = {(f"m{i:02d}", slot): 1 for i in range(MINUTELY) for slot in (first, second)}
        missing = sorted(k for k in want if k not in seen)
        twice = sorted(k for k, n in seen.items() if n != 1)
        self.assertEqual((missing, twice), ([], []))
        self.assertEqual(seen, want)
        # The load spread: every node ran some of them.
        nodes = set()
        for i in range(0, MINUTELY, 5):
            for entry in (await logs(cluster.nodes[0], f"m{i:02d}")).values():
                nodes.add(entry["node"])
        self.assertGreater(len(nodes), 1, nodes)


class FaultTests(TestCase):
    """A private PostgreSQL per test, so nodes can be killed and the database stopped."""

    timeout = 120

    def setUp(self) -> Any:
        if psycopg is None:
            raise SkipTest("psycopg is not installed (pip install karajo[cluster])")
        if not pgserver.available():
            raise SkipTest(f"no PostgreSQL programs in {pgserver.PG_BIN}")
        self.server = pgserver.PgServer()
        self.addCleanup(self.server.cleanup)
        return deferToThread(self.server.start)

    def cluster(self, jobs: str, names: list[str]) -> ClusterNodes:
        cluster = ClusterNodes(self.mktemp(), self.server.conninfo, jobs, names)
        self.addCleanup(cluster.stop)
        cluster.start()
        return cluster

    async def test_kill_9_of_the_node_running_a_job(self) -> None:
        """
        The node running a job is killed with -9: within node_timeout
        another node ends the run failed naming the lost node,
        the retry runs on a survivor, and the node restarted joins again.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        pid_file = os.path.join(base, "victim.pid")
        cluster = self.cluster(f"""
[job "victim"]
path = /victim
retry = 1
retry_delay = 1s
command = "if [ $KARAJO_RUN_ATTEMPT = 1 ]; then echo $$ > {pid_file}; exec sleep 30; fi; \\
echo attempt $KARAJO_RUN_ATTEMPT"
""", ["k1", "k2", "k3"])
        await cluster.wait_alive(3)
        code, _, reply = await webhook(cluster.nodes[0], "/victim")
        self.assertEqual(code, 200, reply)
        counter = reply["data"]["run"]["counter"]
        while not os.path.exists(pid_file):
            await sleep(0.05)
        self.addCleanup(_kill_file_pid, pid_file)
        entry = await wait_run(cluster.nodes[0], "victim", counter, "running")
        victim = next(n for n in cluster.nodes if n.name == entry["node"])
        survivors = [n for n in cluster.nodes if n is not victim]
        victim.kill9()
        killed = time.monotonic()
        entry = await wait_run(survivors[0], "victim", counter, "failed", timeout=15)
        noticed = time.monotonic() - killed
        # node_timeout 3 s after its last heartbeat (at most the kill); a
        # little for a loaded machine and this test's polling.
        self.assertLess(noticed, 3 + 1.0, f"noticed after {noticed:.1f}s")
        log = _content(await read_log(survivors[1], "victim", counter))
        self.assertIn(f"node {victim.name} was lost", log)
        # The retry has a counter of its own (from the new owner's block: a gap is allowed).
        deadline = time.monotonic() + 15
        while True:
            later = [e for c, e in (await logs(survivors[1], "victim")).items() if c > counter]
            if later and later[0]["status"] not in ("running", "queued"):
                break
            self.assertLess(time.monotonic(), deadline, later)
            await sleep(0.1)
        retry = later[0]
        self.assertEqual(len(later), 1, later)
        self.assertEqual(retry["status"], "success", retry)
        self.assertIn(retry["node"], {n.name for n in survivors})
        self.assertEqual((retry.get("trigger"), retry.get("attempt")), ("retry", 2), retry)
        log = _content(await read_log(survivors[0], "victim", retry["counter"]))
        self.assertIn("attempt 2", log)

        victim.start()
        await cluster.wait_alive(3)
        entry = (await logs(victim, "victim"))[counter]
        self.assertEqual((entry["status"], entry["node"]), ("failed", victim.name))

    async def test_database_stopped_for_10s_and_started_again(self) -> None:
        """
        The database stops for 10 s: triggers on every node get 503
        ERR_CLUSTER_UNAVAILABLE with Retry-After, reads go on, a run in
        progress finishes, no scheduled run starts; when it is back the
        run's end and log reach it (the other node shows them), and the
        interval job runs again.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        ticks = os.path.join(base, "ticks")
        cluster = self.cluster(f"""
[job "during"]
path = /during
command = "echo started; sleep 4; echo finished"

[job "tick"]
interval = 2s
catch_up = 1m
command = date +%s.%N >> {ticks}
""", ["d1", "d2"])
        await cluster.wait_alive(2)
        code, _, reply = await webhook(cluster.nodes[0], "/during")
        self.assertEqual(code, 200, reply)
        counter = reply["data"]["run"]["counter"]
        ran_on = (await wait_run(cluster.nodes[0], "during", counter, "running"))["node"]

        await deferToThread(self.server.stop)
        stopped = time.time()
        for node in cluster.nodes:
            while True:
                code, headers, reply = await webhook(node, "/during")
                if code == 503:
                    break
                self.assertLess(time.time() - stopped, 5, (node.name, code, reply))
                await sleep(0.2)
            self.assertEqual(reply["name"], "ERR_CLUSTER_UNAVAILABLE")
            self.assertIn("retry-after", headers)
            env = await get(node, "/environment")
            self.assertFalse(env["cluster"]["connected"])
        while time.time() < stopped + 10:
            await sleep(0.2)
        await deferToThread(self.server.start)
        restarted = time.time()

        for node in cluster.nodes:
            entry = await wait_run(node, "during", counter, "success", timeout=20)
            self.assertEqual(entry["node"], ran_on)
            self.assertIn("finished", _content(await read_log(node, "during", counter)))
        with psycopg.connect(self.server.conninfo) as conn:
            row = conn.execute("SELECT status, position('finished' in convert_from(log, 'UTF8'))"
                               " FROM karajo_run WHERE job_id = 'during' AND counter = %s",
                               (counter,)).fetchone()
        self.assertEqual(row[0], "success")
        self.assertGreater(row[1], 0)
        while time.time() < restarted + 6:
            await sleep(0.2)
        with open(ticks) as f:
            starts = [float(line) for line in f]
        # A fire claimed just before the stop may still start; none after.
        self.assertEqual([t for t in starts if stopped + 1.5 < t < restarted], [])
        self.assertTrue([t for t in starts if t > restarted], "the interval job runs again")
        code, _, reply = await webhook(cluster.nodes[1], "/during")
        self.assertEqual(code, 200, reply)


def _kill_file_pid(path: str) -> None:
    try:
        with open(path) as f:
            os.kill(int(f.read()), signal.SIGKILL)
    except (OSError, ValueError):
        pass

