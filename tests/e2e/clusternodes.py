"""
A karajo cluster as real processes, for the cluster end-to-end tests: N
C{twistd -n karajo} nodes started from the same job files, each with its
own C{dir_base} and port, on one PostgreSQL database.

The nodes are C{subprocess.Popen} children, not reactor processes: a
cluster may outlive one test method (L{tests.e2e.test_cluster} shares one
among the methods a trial worker runs) and is stopped at exit.  Output of
node NAME goes to C{BASE/NAME/twistd.out}.  HTTP goes through the reactor
(L{request}, L{get}, L{webhook}, L{manage}, L{events}).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import signal
import subprocess
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from ..helpers import write
from .daemon import free_port, twistd

SECRET = "s3cret"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fresh_database(server: str) -> tuple[str, Any]:
    """A new empty database on C{server}: its conninfo, and a function dropping it."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = "karajo_e2e_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    conninfo = make_conninfo(server, dbname=name)

    def drop() -> None:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return conninfo, drop


class Node:
    """One node: its name, port, C{dir_base}, process (None while down)."""

    def __init__(self, name: str, base: str, port: int, config: str, database: str) -> None:
        self.name = name
        self.database = database
        self.base = base
        self.port = port
        self.config = config
        self.out = os.path.join(base, "twistd.out")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["KARAJO_TEST_DATABASE_URL"] = self.database
        with open(self.out, "ab") as out:
            self.process = subprocess.Popen(
                [twistd(), "--pidfile=", "-n", "karajo", "--config", self.config],
                cwd=self.base, env=env, stdout=out, stderr=subprocess.STDOUT,
            )

    def kill9(self) -> None:
        """SIGKILL the node alone (its commands, in their own groups, live on)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after C{grace} (blocking: for clean-up)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def output(self) -> str:
        with open(self.out, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/karajo/api"


class ClusterNodes:
    """
    N nodes sharing C{jobs} (the text of C{job.d/jobs.conf}, the same on
    every node) and C{[cluster] database = conninfo}.
    """

    def __init__(self, base: str, conninfo: str, jobs: str, names: list[str],
                 heartbeat: str = "1s", node_timeout: str = "3s", karajo: str = "") -> None:
        self.base = os.path.abspath(base)
        self.conninfo = conninfo
        self.nodes: list[Node] = []
        for name in names:
            node_base = os.path.join(self.base, name)
            port = free_port()
            main = (
                f"[karajo]\ndir_base = {node_base}\nlisten_address = 127.0.0.1:{port}\n"
                f"secret = {SECRET}\n{karajo}"
                f"[cluster]\ndatabase = $KARAJO_TEST_DATABASE_URL\nnode = {name}\n"
                f"heartbeat = {heartbeat}\nnode_timeout = {node_timeout}\n"
            )
            etc = os.path.join(node_base, "etc", "karajo")
            config = write(os.path.join(etc, "karajo.conf"), main)
            write(os.path.join(etc, "job.d", "jobs.conf"), jobs)
            self.nodes.append(Node(name, node_base, port, config, conninfo))

    def start(self) -> None:
        """Start every node at once."""
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def outputs(self) -> str:
        return "\n".join(f"----- {n.name}\n{n.output()[-4000:]}" for n in self.nodes)

    async def wait_alive(self, count: int, timeout: float = 60.0,
                         nodes: list[Node] | None = None) -> None:
        """Until each of C{nodes} (default: the running ones) lists C{count} nodes alive."""
        deadline = reactor.seconds() + timeout
        watch = nodes or [n for n in self.nodes if n.process is not None]
        while True:
            seen = []
            for node in watch:
                try:
                    env = await get(node, "/environment")
                    cluster = env.get("cluster") or {}
                    alive = sum(1 for n in cluster.get("nodes", []) if n["alive"])
                    seen.append(alive if cluster.get("connected") else -1)
                except Exception:
                    seen.append(None)
            if all(s == count for s in seen):
                return
            if reactor.seconds() > deadline:
                raise AssertionError(f"alive nodes seen {seen}, want {count}\n{self.outputs()}")
            await sleep(0.2)


def sleep(seconds: float) -> defer.Deferred:
    return deferLater(reactor, seconds, lambda: None)


async def request(node: Node, method: str, path: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], Any]:
    """One HTTP request to C{node}: status, headers (lower-case names), JSON body."""
    agent = Agent(reactor, connectTimeout=5)
    hdrs = Headers({k: [v] for k, v in (headers or {}).items()})
    producer = FileBodyProducer(io.BytesIO(body)) if body else None
    response = await agent.request(method.encode(), (node.url + path).encode(), hdrs, producer)
    data = await readBody(response)
    got = {k.decode().lower(): [v.decode() for v in vs]
           for k, vs in response.headers.getAllRawHeaders()}
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = data
    return response.code, got, parsed


async def get(node: Node, path: str) -> Any:
    """GET an API path; the envelope's C{data} (or the whole document)."""
    code, _, doc = await request(node, "GET", path)
    if code != 200:
        raise AssertionError(f"GET {path} on {node.name}: {code} {doc}")
    return doc.get("data", doc) if isinstance(doc, dict) and "code" in doc else doc


class _Stream(Protocol):
    """A response body as it comes: each piece with the moment it came."""

    def __init__(self) -> None:
        self.pieces: list[tuple[float, bytes]] = []
        self.done: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.pieces.append((time.monotonic(), data))

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(None)


async def events(node: Node, job_id: str, counter: int) -> list[tuple[float, bytes]]:
    """A run's events stream from C{node}, read to its end: (arrival, bytes) pieces."""
    agent = Agent(reactor, connectTimeout=5)
    response = await agent.request(
        b"GET", f"{node.url}/job_exec/events?id={job_id}&counter={counter}".encode())
    if response.code != 200:
        raise AssertionError(f"events on {node.name}: {response.code}")
    stream = _Stream()
    response.deliverBody(stream)
    await stream.done
    return stream.pieces


def _sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def signed_body() -> bytes:
    """A webhook body with a fresh epoch and nonce: never a replay."""
    return json.dumps({"_karajo_epoch": int(time.time()), "nonce": uuid.uuid4().hex}).encode()


async def webhook(node: Node, path: str, body: bytes | None = None) -> tuple[int, dict, Any]:
    """A signed webhook (by default a fresh body: never a replay)."""
    body = body if body is not None else signed_body()
    return await request(node, "POST", "/job_exec/run" + path, body,
                         {"Content-Type": "application/json", "X-Karajo-Sign": _sign(body)})


async def manage(node: Node, action: str, job_id: str) -> tuple[int, dict, Any]:
    """A signed management call: pause, resume, cancel, run_now."""
    body = urlencode({"_karajo_epoch": int(time.time()), "id": job_id,
                      "nonce": uuid.uuid4().hex}).encode()
    return await request(node, "POST", "/job_exec/" + action, body,
                         {"Content-Type": "application/x-www-form-urlencoded",
                          "X-Karajo-Sign": _sign(body)})


async def logs(node: Node, job_id: str) -> dict[int, dict]:
    """The runs C{node} lists for a job, by counter."""
    job = await get(node, "/job_exec?id=" + job_id)
    return {entry["counter"]: entry for entry in job["logs"]}


async def wait_run(node: Node, job_id: str, counter: int, status: str | tuple[str, ...],
                   timeout: float = 20.0) -> dict:
    """Until C{node} lists run C{counter} of the job with C{status}; that entry."""
    want = (status,) if isinstance(status, str) else status
    deadline = reactor.seconds() + timeout
    entry = None
    while reactor.seconds() < deadline:
        entry = (await logs(node, job_id)).get(counter)
        if entry is not None and entry["status"] in want:
            return entry
        await sleep(0.1)
    raise AssertionError(f"{node.name}: run {job_id}.{counter} is {entry}, want {want}")


async def wait_status(node: Node, job_id: str, status: str, timeout: float = 5.0) -> None:
    """
    Until C{node} shows the job with C{status}: a node learns of a pause or
    resume made on another one by a NOTIFY, not at the moment the call is
    answered (docs/cluster.md).
    """
    deadline = reactor.seconds() + timeout
    shown = None
    while reactor.seconds() < deadline:
        shown = (await get(node, f"/job_exec?id={job_id}"))["status"]
        if shown == status:
            return
        await sleep(0.05)
    raise AssertionError(f"{node.name}: job {job_id} is {shown}, want {status}")
