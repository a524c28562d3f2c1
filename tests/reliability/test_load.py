"""
Load: signed webhook POSTs over 50 concurrent keep-alive connections to
three webhook jobs that share C{max_job_running = 1}.

Every response must be 200 (the trigger was accepted: started or queued)
or an explicit 429 C{ERR_JOB_ALREADY_RUN}; once the daemon has drained,
each job must have logged exactly as many runs as it accepted triggers;
and at no moment may more than one run execute.  That last one is watched
three ways: each run itself counts the runs in progress in a shared
directory (exact: two overlapping runs always see each other), the test
polls the pgid files, and it polls the statuses of
C{GET /karajo/api/environment}.
"""

from __future__ import annotations

import json
import os
import time

import treq
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from karajo.joblog import parse_log_name

from .harness import LONG, Daemon, percentile, report, scale, sign, sleep, wait_until, webhook_body

JOBS = ("load0", "load1", "load2")
CONCURRENCY = 50


def config(base: str) -> str:
    running = os.path.join(base, "running")
    seen = os.path.join(base, "concurrency")
    command = (
        f'"touch {running}/$$; ls {running} | wc -l >> {seen}; sleep 0.05; rm {running}/$$"'
    )
    jobs = "".join(
        f'[job "{job}"]\npath = /{job}\nlog_retention = 1000000\ncommand = {command}\n'
        for job in JOBS
    )
    return "max_job_running = 1\n" + jobs


class LoadTests(TestCase):
    timeout = 900 if LONG else 90

    @defer.inlineCallbacks
    def test_signed_webhooks_under_load(self):
        yield defer.ensureDeferred(self.load())

    async def load(self) -> None:
        total = scale(1000, 10000)
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "running"))
        daemon = Daemon(base, config(base))
        self.addCleanup(lambda: defer.ensureDeferred(daemon.cleanup()))
        await daemon.start()

        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = CONCURRENCY + 2
        pool.retryAutomatically = False
        self.addCleanup(pool.closeCachedConnections)
        client = treq.client.HTTPClient(Agent(reactor, pool=pool))

        statuses: dict[int, int] = {}
        accepted = {job: 0 for job in JOBS}
        refusals: set[str] = set()
        unexpected: list[str] = []
        latencies: list[float] = []
        # Observers of concurrency.
        max_pgid_files = 0
        max_api_running = 0
        api_polls = 0

        def poll_pgids() -> None:
            nonlocal max_pgid_files
            max_pgid_files = max(max_pgid_files, len(daemon.recorded_groups()))

        async def poll_api() -> None:
            nonlocal max_api_running, api_polls
            while not done:
                response = await client.get(daemon.url + "/karajo/api/environment")
                body = await response.json()
                running = sum(1 for j in body["data"]["jobs"].values() if j["status"] == "running")
                max_api_running = max(max_api_running, running)
                api_polls += 1
                await sleep(0.02)

        requests = iter(range(total))

        async def worker() -> None:
            for number in requests:
                job = JOBS[number % len(JOBS)]
                body = webhook_body()
                started = time.monotonic()
                response = await client.post(
                    f"{daemon.url}/karajo/api/job_exec/run/{job}",
                    data=body,
                    headers={"X-Karajo-Sign": sign(body), "Content-Type": "application/json"},
                )
                content = await response.content()
                latencies.append(time.monotonic() - started)
                statuses[response.code] = statuses.get(response.code, 0) + 1
                try:
                    name = json.loads(content).get("name", "")
                except ValueError:
                    name = "<not json>"
                if response.code == 200:
                    accepted[job] += 1
                elif response.code == 429 and name == "ERR_JOB_ALREADY_RUN":
                    refusals.add(name)
                else:
                    unexpected.append(f"{response.code} {content[:200]!r}")

        done = False
        pgid_loop = task.LoopingCall(poll_pgids)
        pgid_loop.start(0.005)
        poller = defer.ensureDeferred(poll_api())
        started = time.monotonic()
        try:
            await defer.gatherResults(
                [defer.ensureDeferred(worker()) for _ in range(CONCURRENCY)], consumeErrors=True
            )
            load_seconds = time.monotonic() - started

            def logged() -> dict[str, int]:
                counts = {}
                for job in JOBS:
                    directory = daemon.log_dir(job)
                    found = os.listdir(directory) if os.path.isdir(directory) else []
                    names = [parse_log_name(job, n) for n in found]
                    counts[job] = sum(1 for n in names if n is not None and n.status is not None)
                return counts

            drained = await wait_until(lambda: logged() == accepted, timeout=60, step=0.1)
            drain_seconds = time.monotonic() - started - load_seconds
            await sleep(1.0)  # nothing more may run after the drain
            runs = logged()
        finally:
            done = True
            pgid_loop.stop()
            await poller
        with open(os.path.join(base, "concurrency")) as f:
            seen_by_runs = [int(line) for line in f if line.strip()]
        failed = [
            n for job in JOBS for n in os.listdir(daemon.log_dir(job))
            if not n.endswith(".success")
        ]
        code, _ = await daemon.stop()

        lost = sum(accepted.values()) - sum(runs.values())
        report(
            "load",
            requests=total,
            concurrency=CONCURRENCY,
            status_200=statuses.get(200, 0),
            status_429=statuses.get(429, 0),
            other_status=len(unexpected),
            requests_per_s=f"{total / load_seconds:.0f}",
            latency_p50_ms=f"{1000 * percentile(latencies, 50):.1f}",
            latency_p99_ms=f"{1000 * percentile(latencies, 99):.1f}",
            accepted=sum(accepted.values()),
            runs_logged=sum(runs.values()),
            lost=lost,
            drain_s=f"{drain_seconds:.1f}",
            max_running_seen_by_runs=max(seen_by_runs, default=0),
            max_pgid_files=max_pgid_files,
            max_api_running=max_api_running,
            api_polls=api_polls,
        )
        self.assertEqual(unexpected, [])
        self.assertEqual(sum(statuses.values()), total)
        self.assertTrue(drained, f"accepted {accepted}, logged {runs}")
        self.assertEqual(runs, accepted)
        self.assertEqual(failed, [])
        self.assertEqual(len(seen_by_runs), sum(runs.values()))
        self.assertEqual(max(seen_by_runs), 1)
        self.assertLessEqual(max_pgid_files, 1)
        self.assertLessEqual(max_api_running, 1)
        self.assertGreater(statuses.get(429, 0), 0, "the load never saturated the queue")
        self.assertEqual(code, 0)
