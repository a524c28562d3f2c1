"""
A run's page following a live run in a real headless Chromium (Playwright),
with users and without: the log the page shows equals the log file once the
run ends, also when the connection is cut in the middle of the run.

The cut is real: the browser reaches the daemon through a TCP proxy
(L{CuttingProxy}) whose open connections the test aborts at once, the
events stream with them, while the run goes on.  The page must then reopen
the stream at the byte it reached, so that no line is missing or twice.
"""

from __future__ import annotations

import os
import re
import time

from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.protocols import portforward

from karajo.model import Job
from karajo.paths import Paths
from karajo.status import RunStatus

from .browser import artifact
from .test_pages import PASSWORD, Daemon, _PagesTest

#: lines the chatty job prints: 4 a turn, 200 turns, multi-byte characters
#: in each (byte offsets are not character offsets)
TURNS, PER_TURN = 200, 4
CHATTY = (
    f"i=0; while [ $i -lt {TURNS} ]; do i=$((i+1)); "
    "printf 'line %d.%d: façade € ünï %030d\\n' "
    + " ".join(f"$i {k} $i" for k in range(1, PER_TURN + 1))
    + "; sleep 0.015; done"
)

RUN_PAGE = "/karajo/app/run?kind=job&id=chatty&counter=1"


class _Server(portforward.ProxyServer):
    def connectionMade(self) -> None:
        self.factory.open.add(self)
        super().connectionMade()

    def connectionLost(self, reason) -> None:
        self.factory.open.discard(self)
        super().connectionLost(reason)


class CuttingProxy(portforward.ProxyFactory):
    """A TCP proxy to the daemon whose open connections L{cut} aborts, both sides."""

    protocol = _Server

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.open: set[_Server] = set()

    def cut(self) -> int:
        """Abort every open connection (a network drop); how many there were."""
        servers = list(self.open)
        for server in servers:
            server.transport.abortConnection()
            if server.peer is not None:
                server.peer.transport.abortConnection()
        return len(servers)


class FollowTests(_PagesTest):
    """No users: the live follow of a chatty run, and a drop in the middle of it."""

    bypass_csp = True  # axe-core is added to the live page

    def setUp(self):
        self.axe_checked: list[str] = []
        d = super().setUp()
        self.proxy = CuttingProxy("127.0.0.1", self.daemon.port.getHost().port)
        port = reactor.listenTCP(0, self.proxy, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        return d

    def make_daemon(self) -> Daemon:
        jobs = {"chatty": Job(name="chatty", description="Prints 800 lines in about 4 s.",
                              commands=[CHATTY], path="/chatty")}
        return Daemon(self.mktemp(), self.users, jobs, {}, lambda paths: None)

    async def start_run(self) -> None:
        """Run chatty #1 and wait until its log exists."""
        runner = self.daemon.service.jobs["chatty"].runner
        runner.trigger(None)
        while runner.store.record(1) is None:
            await deferLater(reactor, 0.02, lambda: None)

    def final_log(self) -> str:
        path = os.path.join(Paths(self.daemon.service.env.dir_base).log_dir("job", "chatty"),
                            "chatty.1.success")
        with open(path, encoding="utf-8") as f:
            return f.read()

    # --- steps (browser thread) ---------------------------------------------------

    def open_run_page(self, requests: list[str]):
        page = self.browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        if self.users:
            page.goto(self.base + "/karajo/")
            page.fill("#login-name", "admin")
            page.fill("#login-password", PASSWORD)
            page.click("#login-form button[type=submit]")
            page.wait_for_url("**/karajo/app/")
        response = page.goto(self.base + RUN_PAGE)
        assert response.status == 200, response.status
        assert page.locator("#run-status").text_content() == "running"
        assert page.locator("#log-live").text_content() == "live"
        return page

    def wait_line(self, page, line: str) -> None:
        page.wait_for_function(
            "line => document.getElementById('log').textContent.includes(line)",
            arg=line, timeout=20000)

    def wait_end(self, page) -> dict:
        page.wait_for_function("() => window.KarajoUI.finished === true", timeout=30000)
        return {
            "shown": page.locator("#log").text_content(),
            "status": page.locator("#run-status").text_content(),
            "streams": page.evaluate("window.KarajoUI.logStreams"),
            "duration": page.locator("#run-duration").text_content(),
            "end": page.locator("#run-end time").text_content(),
            "size": page.locator("#log-size").text_content(),
        }

    def check_end(self, seen: dict, requests: list[str], streams: int) -> list[int]:
        """The page equals the file, the run's end is shown; the streams' offsets."""
        final = self.final_log()
        self.assertEqual(len(final.splitlines()), TURNS * PER_TURN + 3)  # BEGIN, DONE, END
        self.assertEqual(seen["shown"], final)
        self.assertEqual(seen["status"], "success")
        self.assertRegex(seen["duration"], r"^\d+s$")
        self.assertTrue(seen["end"].endswith(" ago"), seen["end"])
        self.assertEqual(seen["size"], f"{len(final.encode()) / 1024:.1f} KiB")
        events = [u for u in requests if "/karajo/api/job_exec/events?" in u]
        self.assertEqual((seen["streams"], len(events)), (streams, streams), events)
        # no polling: the log itself is asked for only after a lost stream
        logs = [u for u in requests if "/karajo/api/job_exec/log?" in u]
        self.assertEqual(len(logs), streams - 1, logs)
        self.assertNoConsoleErrors(allowed=("net::ERR_", "Failed to load resource"))
        return [int(re.search(r"offset=(\d+)", u).group(1)) for u in events]

    # --- tests --------------------------------------------------------------------------

    async def test_live_follow_equals_final_log(self) -> None:
        """Followed from the page's own bytes to the end: the text is the log file's."""
        await self.start_run()
        requests: list[str] = []

        def steps():
            page = self.open_run_page(requests)
            served = int(page.locator("#run-page").get_attribute("data-offset"))
            elapsed = page.locator("#run-duration time.elapsed")
            before = elapsed.text_content()
            page.wait_for_function(
                "t => document.querySelector('#run-duration time.elapsed').textContent !== t",
                arg=before, timeout=5000)  # the elapsed time ticks
            self.wait_line(page, "line 60.1:")
            page.screenshot(path=artifact("run-live.png"), full_page=False)
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                self.axe(page, f"live run page {scheme}")
            page.screenshot(path=artifact("run-live-dark.png"), full_page=False)
            page.emulate_media(color_scheme="light")
            seen = self.wait_end(page)
            page.screenshot(path=artifact("run-ended.png"), full_page=False)
            time.sleep(1.5)  # the stream ended: nothing reopens it
            seen["streams_later"] = page.evaluate("window.KarajoUI.logStreams")
            return served, seen

        served, seen = await self.in_browser(steps)
        await self.daemon.service.jobs["chatty"].runner.when_idle()
        offsets = self.check_end(seen, requests, streams=1)
        self.assertEqual(offsets, [served])  # from the bytes the page was served with
        self.assertEqual(seen["streams_later"], 1)
        self.assertEqual(len(self.axe_checked), 2)

    async def test_network_drop_resumes(self) -> None:
        """The connection cut mid-run: the stream reopens at the byte reached, no gap, no repeat."""
        await self.start_run()
        requests: list[str] = []
        runner = self.daemon.service.jobs["chatty"].runner

        def cut() -> tuple[int, bool]:
            running = runner.records()[-1].status is RunStatus.RUNNING
            return self.proxy.cut(), running

        def steps():
            page = self.open_run_page(requests)
            self.wait_line(page, "line 40.1:")
            cut_count, running = threads.blockingCallFromThread(reactor, cut)
            shown_at_cut = len(page.locator("#log").text_content())
            # the page says so, then reconnects and says nothing more
            page.wait_for_function(
                "() => document.getElementById('conn').textContent === 'connection lost — reconnecting'")
            page.wait_for_function("() => document.getElementById('conn').textContent === ''")
            seen = self.wait_end(page)
            return cut_count, running, shown_at_cut, seen

        cut_count, running, shown_at_cut, seen = await self.in_browser(steps)
        await self.daemon.service.jobs["chatty"].runner.when_idle()
        self.assertGreaterEqual(cut_count, 1)
        self.assertTrue(running, "the run ended before the connection was cut")
        self.assertLess(shown_at_cut, len(seen["shown"]))
        first, second = self.check_end(seen, requests, streams=2)
        self.assertGreater(second, first)
        self.assertEqual(len(self.axe_checked), 0)


class FollowUsersTests(FollowTests):
    """With users: the same, logged in through the proxy."""

    users = True
