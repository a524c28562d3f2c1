"""
The cluster view (the dashboard's cluster panel and C{/karajo/app/cluster})
in a real headless Chromium (Playwright), with users and without, checked
by axe-core in light and dark.

The daemon under test is node C{web-1} of a cluster whose database is the
in-memory one of the node logic's tests (L{tests.clusterfake}), on the
real reactor.  The other nodes are rows of that database: C{web-2}
heartbeats from a loop of the test, started from another configuration
(its digest differs) and runs C{backup} #7; C{web-3} is dead since 95 s.
Stopping C{web-2}'s heartbeat lets C{web-1} find it dead after
C{node_timeout}, as it would a killed process: the page must show it.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

import karajo.config
import karajo.server
from karajo.clusterstore import NodeInfo
from karajo.model import Cluster, Environment, Job, User
from karajo.runrecord import RunRecord
from karajo.service import thread_runner
from karajo.status import RunStatus
from karajo.users import hash_password
from karajo.version import __version__
from karajo.web.site import build_site
from karajo.web.ui import CSP
from tests.clusterfake import FakeDatabase, FakeStore

from .browser import PHONE, Browser, artifact, assert_fits_phone, skip_reason
from .test_pages import PASSWORD, SECRET, Daemon, _PagesTest

#: web-2's configuration digest: not web-1's
OTHER_DIGEST = "f00dfeed" * 8
#: web-1 finds a node dead after this long without a heartbeat
NODE_TIMEOUT = 4.0
#: what backup #7 wrote on web-2 before the test looks
REMOTE_LOG = b"copying /srv to the backup host\n"
#: web-3's last heartbeat was this long before the test starts (seconds)
DEAD_FOR = 95


def age_of(text: str) -> int:
    """Seconds of a heartbeat's age as the page writes it: C{1m 35s ago}, C{2s ago}."""
    found = re.fullmatch(r"(?:(\d+)m )?(\d+)s ago", text)
    assert found, text
    return int(found.group(1) or 0) * 60 + int(found.group(2))


def cluster_jobs() -> dict[str, Job]:
    """Jobs without a timer: nothing fires while the test looks."""
    jobs = [
        Job(name="backup", description="Nightly copy, run by hand here.", commands=["true"],
            path="/backup"),
        Job(name="report", description="Builds the report.", commands=["true"], path="/report"),
    ]
    return {j.name: j for j in jobs}


class ClusterDaemon(Daemon):
    """Node web-1 on 127.0.0.1:<free port>, its cluster's database in memory."""

    def __init__(self, base: str, users: bool) -> None:
        self.db = FakeDatabase(reactor)  # type: ignore[arg-type]
        user_table = {}
        if users:
            user_table = {"admin": User(name="admin", password=hash_password(PASSWORD, rounds=4))}
        env, warnings = karajo.config.validate(Environment(
            name="karajo cluster", dir_base=os.path.abspath(base), secret=SECRET,
            jobs=cluster_jobs(), users=user_table,
            cluster=Cluster(database="fake", node="web-1", heartbeat=timedelta(seconds=1),
                            node_timeout=timedelta(seconds=NODE_TIMEOUT)),
        ))
        self.service = karajo.server.build_service(
            karajo.config.Loaded(env, warnings), reactor, cluster_store=FakeStore(self.db))
        self.service.removeService(self.service.getServiceNamed("http"))
        now = time.time()
        # web-3 died DEAD_FOR ago (another node found it dead then)
        self.db.nodes["web-3"] = NodeInfo("web-3", False, now - DEAD_FOR, 0, __version__,
                                          self.service.cluster.digest, now - 7200)
        # web-2: alive, heartbeating, another configuration, running backup #7
        self.other = FakeStore(self.db)
        self.beats = task.LoopingCall(self._beat)
        self.beats.start(0.5)
        self.other.begin_run("web-2", "job", RunRecord(
            "backup", 7, RunStatus.RUNNING, now - 30, None, "schedule", 1, "web-2"))
        self.other.append_logs([("job", "backup", 7, 0, REMOTE_LOG)])
        self.service.startService()
        site = build_site(self.service, reactor, thread_runner(reactor))
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def _beat(self) -> None:
        self.other.heartbeat(NodeInfo("web-2", True, 0, 1, "0.9.0", OTHER_DIGEST, 0))

    def kill_other(self) -> None:
        """web-2 stops heartbeating, as after kill -9."""
        if self.beats.running:
            self.beats.stop()

    async def stop(self) -> None:
        self.kill_other()
        await super().stop()


def node_rows(page) -> dict[str, dict[str, str]]:
    """The node table: each row's cells by data-field, and its classes."""
    return page.eval_on_selector_all("#node-rows tr[data-node]", """trs => Object.fromEntries(
        trs.map(tr => [tr.dataset.node, Object.assign({class: tr.className,
            name: tr.cells[0].textContent.trim()},
            Object.fromEntries(Array.from(tr.querySelectorAll('td[data-field]'),
                td => [td.dataset.field, td.textContent.trim()])))]))""")


class _ClusterPagesTest(_PagesTest):
    bypass_csp = True

    def setUp(self):
        self.axe_checked: list[str] = []
        return super().setUp()

    def make_daemon(self) -> Daemon:
        return ClusterDaemon(self.mktemp(), self.users)

    def check_cluster(self, page, tag: str) -> None:
        """The panel, the page, axe light and dark, and web-2 going down (browser thread)."""
        self.goto(page, "/karajo/app/")
        panel = page.locator("section.cluster-panel")
        assert panel.locator("#cluster-summary").text_content() == "3 nodes: 2 alive, 1 dead"
        assert page.locator("#dead-nodes li").all_text_contents() == ["dead web-3"]
        warning = page.locator("#cluster-warning")
        assert warning.get_attribute("data-nodes") == "web-2"
        assert warning.text_content() == (
            "Configuration differs: nodes started from another configuration than this node"
            " (web-1): web-2. Start every node from the same files."), warning.text_content()
        # each run shows its node: backup #7 on web-2, on its card
        run7 = page.locator(".card[data-id=backup] a.run[data-counter='7']")
        assert run7.get_attribute("title") == "run 7: running, on web-2", run7.get_attribute("title")
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            self.axe(page, f"dashboard with cluster panel {scheme} {tag}")
        page.screenshot(path=artifact(f"cluster-panel-dark-{tag}.png"), full_page=False)
        page.emulate_media(color_scheme="light")
        # by keyboard from the panel to the cluster page
        page.focus("section.cluster-panel a[href='/karajo/app/cluster']")
        page.keyboard.press("Enter")
        page.wait_for_url("**/karajo/app/cluster")
        page.wait_for_function("() => window.KarajoUI && window.KarajoUI.polls > 0")
        rows = node_rows(page)
        assert list(rows) == ["web-1", "web-2", "web-3"], rows
        me, other, dead = rows["web-1"], rows["web-2"], rows["web-3"]
        assert me["name"] == "web-1 this node" and "me" in me["class"].split(), me
        assert [r["state"] for r in rows.values()] == ["alive", "alive", "dead"], rows
        assert "dead" in dead["class"].split()
        assert me["digest"] == self.daemon.service.cluster.digest[:12], me
        assert other["digest"] == OTHER_DIGEST[:12] + " differs", other
        assert dead["digest"] == me["digest"]  # a dead node's digest does not warn
        assert other["version"] == "0.9.0" and me["version"] == __version__, rows
        assert other["running"] == "1 backup #7", other
        assert me["running"] == "0 none" and dead["running"] == "0 none", rows
        href = page.get_attribute("#node-rows tr[data-node=web-2] a.run", "href")
        assert href == "/karajo/app/run?kind=job&id=backup&counter=7", href
        full = page.get_attribute("#node-rows tr[data-node=web-2] code", "title")
        assert full == OTHER_DIGEST, full
        assert "web-2" in page.locator("#cluster-warning").text_content()
        # heartbeat ages: relative, the absolute time on hover, ticking
        aged = page.locator("#node-rows tr[data-node=web-3] time")
        before = aged.text_content()
        assert DEAD_FOR <= age_of(before) <= DEAD_FOR + 60, before
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", aged.get_attribute("title"))
        page.wait_for_function(
            "t => document.querySelector('#node-rows tr[data-node=web-3] time').textContent !== t",
            arg=before)
        fresh = page.locator("#node-rows tr[data-node=web-2] time").text_content()
        assert age_of(fresh) <= 3, fresh
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            self.axe(page, f"cluster page {scheme} {tag}")
            page.screenshot(path=artifact(f"cluster-{scheme}-{tag}.png"), full_page=True)
        page.emulate_media(color_scheme="light")
        phone = self.browser.new_page(PHONE)
        self.goto(phone, "/karajo/app/cluster", polls=False)
        assert_fits_phone(phone)
        phone.close()
        # the page of web-2's run, served by web-1: its node, its log from the database, live
        self.run_tab = self.browser.new_page()
        self.goto(self.run_tab, "/karajo/app/run?kind=job&id=backup&counter=7", polls=False)
        assert self.run_tab.locator("#run-node").text_content() == "web-2"
        assert self.run_tab.locator("#run-status").text_content() == "running"
        assert self.run_tab.locator("#log").text_content() == REMOTE_LOG.decode()
        self.run_tab.wait_for_selector("#log-live:text('live')")

    def check_down(self, page, tag: str) -> None:
        """web-2 stops heartbeating: after node_timeout the page shows it dead."""
        page.wait_for_function(
            "() => document.querySelector('#node-rows tr[data-node=web-2] .status')"
            ".textContent === 'dead'", timeout=(NODE_TIMEOUT + 6) * 1000)
        rows = node_rows(page)
        assert [r["state"] for r in rows.values()] == ["alive", "dead", "dead"], rows
        # its run was ended by web-1's reap; a dead node's digest warns no more
        assert rows["web-2"]["running"] == "0 none", rows
        # the run page followed web-2's run to the end web-1 gave it
        self.run_tab.wait_for_function(
            "() => document.getElementById('run-status').textContent === 'failed'")
        self.run_tab.wait_for_function(
            "() => document.getElementById('log').textContent.includes('node web-2 was lost')")
        assert self.run_tab.locator("#log").text_content().startswith(REMOTE_LOG.decode())
        self.run_tab.screenshot(path=artifact(f"cluster-run-of-lost-node-{tag}.png"))
        assert rows["web-2"]["digest"] == OTHER_DIGEST[:12], rows
        assert page.locator("#cluster-warning").count() == 0
        assert page.locator("#cluster-summary").text_content() == "3 nodes: 1 alive, 2 dead"
        self.axe(page, f"cluster page, two nodes down {tag}")
        page.screenshot(path=artifact(f"cluster-node-down-{tag}.png"), full_page=True)
        self.goto(page, "/karajo/app/")
        assert page.locator("#dead-nodes li").all_text_contents() == ["dead web-2", "dead web-3"]
        assert page.locator("#cluster-warning").count() == 0

    async def run_steps(self, tag: str) -> None:
        def first():
            page = self.browser.new_page()
            if self.users:
                self.login(page)
            self.check_cluster(page, tag)
            return page

        page = await self.in_browser(first)
        self.daemon.kill_other()
        await self.in_browser(self.check_down, page, tag)
        self.assertEqual(len(self.axe_checked), 5)
        self.assertNoConsoleErrors()


class ClusterPageTests(_ClusterPagesTest):
    """No users: the cluster panel and page, a digest warning, a node going down."""

    async def test_cluster_view(self) -> None:
        await self.run_steps("nousers")


class ClusterPageUsersTests(_ClusterPagesTest):
    """With users: the same, behind the login page."""

    users = True

    async def test_cluster_view(self) -> None:
        await self.run_steps("users")


class SingleServerTests(TestCase):
    """A single server shows nothing of a cluster: no panel, no cluster page."""

    timeout = 60

    def setUp(self) -> defer.Deferred:
        reason = skip_reason()
        if reason:
            raise SkipTest(reason)
        self.daemon = Daemon(self.mktemp(), False, cluster_jobs(), {}, lambda paths: None)
        self.addCleanup(lambda: defer.ensureDeferred(self.daemon.stop()))
        self.browser = Browser(reactor)
        self.addCleanup(self.browser.stop)
        return self.browser.start()

    def test_no_cluster_view(self) -> defer.Deferred:
        def steps():
            page = self.browser.new_page()
            response = page.goto(self.daemon.url + "/karajo/app/")
            assert response.headers.get("content-security-policy") == CSP
            page.wait_for_function("() => window.KarajoUI && window.KarajoUI.polls > 0")
            assert page.locator("#cluster, .cluster-panel, #cluster-warning").count() == 0
            assert page.locator(".card[data-id=backup]").count() == 1
            response = page.goto(self.daemon.url + "/karajo/app/cluster")
            assert response.status == 404, response.status
            assert "no [cluster] section" in page.locator("main").text_content()

        d = self.browser.call(steps)
        d.addCallback(lambda _: self.assertEqual(
            [e for e in self.browser.errors if "404" not in e], []))
        return d
