"""
The web UI in a real headless Chromium (Playwright), against a daemon on
loopback: the whole site of L{karajo.web.site.build_site} on the real
reactor, with command jobs that really run.

Each test drives the browser on its own thread (see L{tests.e2e.browser})
while the reactor serves the daemon.  Screenshots go to C{test-artifacts/}.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from datetime import timedelta

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

import karajo.config
import karajo.server
from karajo import runrecord
from karajo.model import Environment, Job, JobHttp, User
from karajo.paths import Paths
from karajo.runrecord import RunRecord
from karajo.service import thread_runner
from karajo.users import hash_password
from karajo.web.site import build_site
from karajo.web.ui import CSP

from .browser import PHONE, Browser, artifact, assert_fits_phone, skip_reason

SECRET = "s3cret"
PASSWORD = "correct horse"

XSS_IMG = '<img src=x onerror="window.__xss=1">'
XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_DESCRIPTION = (
    XSS_SCRIPT + XSS_IMG
    + '<a href="javascript:window.__xss=1">js link</a>'
    + '<a href="https://example.org/" onclick="window.__xss=1">safe link</a>'
    + '<b onmouseover="window.__xss=1">bold</b><svg onload="window.__xss=1"></svg>'
    + "<iframe src=\"javascript:window.__xss=1\"></iframe><style>*{}</style>"
)

TICKER = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do echo tick $i; sleep 0.2; done"


def jobs() -> dict[str, Job]:
    out = [
        Job(name="ticker", description="Prints a line every <b>0.2 s</b> for 3 s.",
            commands=[TICKER], path="/ticker"),
        Job(name="sleeper", description="Sleeps, to be canceled.", commands=["sleep 30"],
            path="/sleeper", schedule="daily@02:30"),
        Job(name="nightly", description="Code job, <i>weekly</i>.", schedule="weekly@Sun@03:00",
            call=lambda log, request: log.write(b"done\n")),
        Job(name=XSS_IMG, description=XSS_DESCRIPTION, path="/xss",
            commands=["echo '" + XSS_SCRIPT + "'", "echo '" + XSS_IMG.replace("'", "") + "'",
                      "printf '%s\\n' '<a href=\"javascript:window.__xss=1\">x</a>'"]),
        Job(name=XSS_SCRIPT + " & \"quotes\"", description="<p>" + XSS_IMG + "</p>",
            commands=["true"], path="/xss2"),
    ]
    return {j.name: j for j in out}


def http_jobs() -> dict[str, JobHttp]:
    job = JobHttp(name="pinger", description="Pings nothing.", http_url="http://127.0.0.1:9/ping",
                  interval=timedelta(hours=2))
    return {job.name: job}


#: past runs written before start-up: (kind, id, [(status, seconds), ...])
HISTORY = [
    ("job", "nightly", [("success", 42), ("success", 38), ("failed", 5), ("success", 51),
                        ("success", 40)]),
    ("job", "sleeper", [("success", 30), ("canceled", 12), ("failed", 2)]),
    ("job_http", "pinger", [("success", 1), ("failed", 9), ("success", 1)]),
]


def seed_history(paths: Paths) -> None:
    """Finished logs and their run records, as earlier runs of the daemon left them."""
    for kind, job_id, runs in HISTORY:
        start = int(time.time()) - 7 * 86400
        directory = paths.log_dir(kind, job_id)
        os.makedirs(directory, exist_ok=True)
        records = []
        for counter, (status, seconds) in enumerate(runs, 1):
            start += 86400
            lines = []
            for at, text in ((start, "=== BEGIN"), (start + 1, "working…"),
                             (start + seconds, "=== DONE" if status == "success" else "!!! " + status)):
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
                lines.append(f"{stamp} UTC {kind}: {job_id}: {text}\n")
            path = os.path.join(directory, f"{job_id}.{counter}.{status}")
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(lines)
            os.utime(path, (start + seconds, start + seconds))
            records.append(RunRecord(job_id, counter, status, start, start + seconds))
        runrecord.write_records(paths.state_file(kind, job_id) + runrecord.RECORDS_SUFFIX,
                              tuple(records))


class Daemon:
    """The daemon's site on 127.0.0.1:<free port>, on the real reactor."""

    def __init__(self, base: str, users: bool) -> None:
        user_table = {}
        if users:
            user_table = {"admin": User(name="admin", password=hash_password(PASSWORD, rounds=4))}
        env, warnings = karajo.config.validate(Environment(
            name="karajo e2e", dir_base=os.path.abspath(base), secret=SECRET,
            jobs=jobs(), http_jobs=http_jobs(), users=user_table,
        ))
        self.service = karajo.server.build_service(karajo.config.Loaded(env, warnings), reactor)
        self.service.removeService(self.service.getServiceNamed("http"))
        seed_history(Paths(env.dir_base))
        self.service.startService()
        self.port = reactor.listenTCP(0, build_site(self.service, reactor, thread_runner(reactor)), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def stop(self) -> None:
        await self.port.stopListening()
        await self.service.stopService()


def run_now_route() -> bool:
    from karajo.web.api import routes

    return ("POST", "/karajo/api/job_exec/run_now") in routes()


class _BrowserTest(TestCase):
    timeout = 120
    users = False

    def setUp(self) -> defer.Deferred:
        reason = skip_reason()
        if reason:
            raise SkipTest(reason)
        self.daemon = Daemon(self.mktemp(), self.users)
        self.addCleanup(lambda: defer.ensureDeferred(self.daemon.stop()))
        self.browser = Browser(reactor)
        self.addCleanup(self.browser.stop)
        return self.browser.start()

    def in_browser(self, steps, *args) -> defer.Deferred:
        return self.browser.call(steps, *args)

    def assertNoConsoleErrors(self, allowed: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.browser.errors if not any(a in e for a in allowed)]
        self.assertEqual(errors, [], "\n".join(self.browser.console))

    # --- steps shared by both modes (run on the browser thread) --------------

    def open_dashboard(self, page) -> None:
        response = page.goto(self.daemon.url + "/karajo/app/")
        assert response.status == 200, response.status
        assert response.headers.get("content-security-policy") == CSP
        assert response.headers.get("x-content-type-options") == "nosniff"
        assert response.headers.get("referrer-policy") == "no-referrer"
        page.wait_for_function("() => window.KarajoUI && window.KarajoUI.polls > 0")

    def card(self, page, kind: str, job_id: str):
        return page.locator(f"#{kind}-{job_id}")

    def status_of(self, page, kind: str, job_id: str) -> str:
        return self.card(page, kind, job_id).locator('[data-field="status"]').text_content()

    def wait_status(self, page, kind: str, job_id: str, wanted: str, timeout: float = 15) -> None:
        page.wait_for_function(
            "([sel, wanted]) => { const n = document.querySelector(sel);"
            " return n && n.textContent === wanted; }",
            arg=[f'#{kind}-{job_id} [data-field="status"]', wanted],
            timeout=timeout * 1000,
        )

    def answer_secret(self, page, secret: str, closes: bool = True) -> None:
        page.wait_for_selector("#secret-dialog[open]")
        page.fill("#secret-input", secret)
        page.keyboard.press("Enter")
        if closes:
            page.wait_for_selector("#secret-dialog:not([open])", state="attached")


class NoUsersTests(_BrowserTest):
    """No users: the page asks for the secret once per tab and signs."""

    def test_dashboard_lists_jobs(self) -> defer.Deferred:
        """Every Job and JobHttp is shown with its status, and nothing executes."""
        expected = [("job", j.id) for j in jobs().values()] + [("job_http", "pinger")]

        def steps():
            page = self.browser.new_page()
            self.open_dashboard(page)
            shown = page.eval_on_selector_all(
                ".card[data-id]", "cards => cards.map(c => [c.dataset.kind, c.dataset.id])")
            assert sorted(map(tuple, shown)) == sorted(expected), shown
            for kind, job_id in expected:
                status = self.status_of(page, kind, job_id)
                assert status in ("started", "success", "failed", "running"), (job_id, status)
            assert self.status_of(page, "job", "nightly") == "success"
            assert self.status_of(page, "job", "sleeper") == "failed"
            nightly = self.card(page, "job", "nightly")
            assert nightly.locator("svg.chart rect.bar").count() == 5
            assert nightly.locator("a.run").count() == 5
            assert nightly.locator("rect.bar.st-failed").count() == 1
            assert "weekly on Sun at 03:00 (UTC)" in self.card(page, "job", "nightly").text_content()
            assert "only on request" in self.card(page, "job", "ticker").text_content()
            assert "daily at 02:30 (UTC)" in self.card(page, "job", "sleeper").text_content()
            countdown = self.card(page, "job", "sleeper").locator('[data-field="next_run"]')
            assert re.match(r"in (\d+m \d\ds|\d+h \d\dm \d\ds)", countdown.text_content()), \
                countdown.text_content()
            # the filter box
            page.fill("#filter", "sleep")
            visible = page.eval_on_selector_all(
                ".card[data-id]", "cards => cards.filter(c => !c.hidden).map(c => c.dataset.id)")
            assert visible == ["sleeper"], visible
            page.fill("#filter", "")
            page.screenshot(path=artifact("dashboard.png"), full_page=True)
            job_page = self.browser.new_page()
            job_page.goto(self.daemon.url + "/karajo/app/job?kind=job&id=nightly")
            job_page.wait_for_function("() => window.KarajoUI && window.KarajoUI.polls > 0")
            rows = job_page.locator("#run-rows tr[data-counter]")
            assert rows.count() == 5, rows.count()
            assert rows.first.locator('[data-field="duration"]').text_content() == "40s"
            job_page.screenshot(path=artifact("job.png"), full_page=True)
            phone = self.browser.new_page(PHONE)
            self.open_dashboard(phone)
            assert_fits_phone(phone)
            phone.screenshot(path=artifact("dashboard-phone.png"), full_page=False)
            assert page.evaluate("window.__xss") is None

        d = self.in_browser(steps)
        d.addCallback(lambda _: self.assertNoConsoleErrors())
        return d

    def test_chart_reads_run_times_from_api(self) -> defer.Deferred:
        """
        When the API's logs[] entries carry C{started}/C{ended}, the job
        page's chart and run table take the durations from them (here the
        API answers are rewritten in the browser to say so), without
        downloading any log.
        """
        requests: list[str] = []
        durations = {1: 10, 2: 20, 3: 30, 4: 40, 5: 80}

        def add_times(route) -> None:
            response = route.fetch()
            document = response.json()
            for entry in document["data"]["logs"]:
                start = 1_700_000_000 + entry["counter"] * 1000
                end = start + durations[entry["counter"]]
                entry["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
                entry["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end))
            route.fulfill(response=response, json=document)

        def steps():
            page = self.browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.route("**/karajo/api/job_exec?id=nightly", add_times)
            page.goto(self.daemon.url + "/karajo/app/job?kind=job&id=nightly")
            page.wait_for_function("() => window.KarajoUI && window.KarajoUI.polls > 0")
            rows = page.locator("#run-rows tr[data-counter]")
            page.wait_for_function(
                "() => document.querySelector('#run-rows tr [data-field=duration]')"
                ".textContent === '1m 20s'")
            shown = [rows.nth(i).locator('[data-field="duration"]').text_content()
                     for i in range(rows.count())]
            assert shown == ["1m 20s", "40s", "30s", "20s", "10s"], shown
            heights = page.eval_on_selector_all(
                "svg.chart rect.bar", "bars => bars.map(b => Number(b.getAttribute('height')))")
            # oldest left; the longest run (80 s) fills the chart's 38 units
            assert heights == [4.8, 9.5, 14.3, 19.0, 38.0], heights

        def check(_):
            self.assertEqual([u for u in requests if "/log?" in u], [])
            self.assertNoConsoleErrors()

        return self.in_browser(steps).addCallback(check)

    def test_run_now_and_live_log(self) -> defer.Deferred:
        """
        Run now (signed in the page with the typed secret) makes a new run
        appear; its log page grows while the job prints, following the run's
        events stream from the bytes it has (one stream, no polling), and
        stops once the run ends.
        """
        requests: list[str] = []

        def with_times(route) -> None:
            response = route.fetch()
            document = response.json()
            for entry in document["data"]["logs"]:
                entry["started"], entry["ended"] = "2026-01-01T00:00:00Z", "2026-01-01T00:01:05Z"
            route.fulfill(response=response, json=document)

        def steps():
            page = self.browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            self.open_dashboard(page)
            card = self.card(page, "job", "ticker")
            card.locator('button[data-action="run"]').click()
            self.answer_secret(page, SECRET)
            link = card.locator('a.run[data-counter="1"]')
            link.wait_for(timeout=10000)
            assert page.evaluate("sessionStorage.getItem('karajo.secret')") == SECRET
            # Once the run ends, the page asks the job's JSON for its times
            # (logs[].started/ended, here added in the browser).
            page.route("**/karajo/api/job_exec?id=ticker", with_times)
            link.click()
            page.wait_for_url("**/karajo/app/run?*")
            pre = page.locator("#log")
            first = pre.text_content()
            served = int(page.locator("#run-page").get_attribute("data-offset"))
            assert page.locator("#run-status").text_content() == "running", \
                page.locator("#run-status").text_content()
            page.wait_for_function(
                "() => document.getElementById('log').textContent.includes('tick 15')", timeout=20000)
            grown = pre.text_content()
            assert len(grown) > len(first), (first, grown)
            page.wait_for_function(
                "() => document.getElementById('run-status').textContent === 'success'", timeout=20000)
            page.wait_for_function(
                "() => document.getElementById('run-duration').textContent === '1m 05s'")
            streams = page.evaluate("window.KarajoUI.logStreams")
            assert streams == 1, streams
            assert page.evaluate("window.KarajoUI.logEvents") > 1
            events = page.evaluate("window.KarajoUI.logEvents")
            time.sleep(2)
            # Nothing more once the run ended: the stream closed, no reconnect.
            assert page.evaluate("window.KarajoUI.logStreams") == 1
            assert page.evaluate("window.KarajoUI.logEvents") == events
            text = pre.text_content()
            for i in range(1, 16):
                assert text.count(f": tick {i}\n") == 1, (i, text)
            assert "=== DONE" in text
            page.screenshot(path=artifact("log.png"), full_page=True)
            return served, text

        def check(result):
            served, text = result
            # No polling of the log; one events stream from the page's own bytes.
            self.assertEqual([u for u in requests if "/karajo/api/job_exec/log?" in u], [])
            streams = [u for u in requests if "/karajo/api/job_exec/events?" in u]
            self.assertEqual(len(streams), 1, streams)
            offset = int(re.search(r"offset=(\d+)", streams[0]).group(1))
            self.assertNotEqual(offset, 0, "the page downloaded the whole log again")
            self.assertEqual(offset, served)  # from the bytes the page was served with
            self.assertNoConsoleErrors()

        return self.in_browser(steps).addCallback(check)

    def test_pause_resume_cancel(self) -> defer.Deferred:
        """The buttons change the status; the secret is asked only once."""

        def steps():
            page = self.browser.new_page()
            self.open_dashboard(page)
            ticker = self.card(page, "job", "ticker")
            ticker.locator('button[data-action="pause"]').click()
            self.answer_secret(page, SECRET)
            self.wait_status(page, "job", "ticker", "paused")
            assert ticker.locator('button[data-action="run"]').is_disabled()
            assert "paused" in ticker.locator('[data-field="next_run"]').text_content()
            # keyboard: focus Resume and press Enter; no second secret prompt
            ticker.locator('button[data-action="resume"]').focus()
            page.keyboard.press("Enter")
            page.wait_for_function(
                "() => document.querySelector('#job-ticker [data-field=\"status\"]').textContent !== 'paused'")
            assert page.locator("#secret-dialog[open]").count() == 0
            # the HTTP job: pause/resume signed over the query string
            pinger = self.card(page, "job_http", "pinger")
            pinger.locator('button[data-action="pause"]').click()
            self.wait_status(page, "job_http", "pinger", "paused")
            pinger.locator('button[data-action="resume"]').click()
            page.wait_for_function(
                "() => document.querySelector('#job_http-pinger [data-field=\"status\"]').textContent !== 'paused'")
            # cancel a long run
            sleeper = self.card(page, "job", "sleeper")
            sleeper.locator('button[data-action="run"]').click()
            self.wait_status(page, "job", "sleeper", "running")
            sleeper.locator('button[data-action="cancel"]').click()
            self.wait_status(page, "job", "sleeper", "canceled")
            sleeper.locator('a.run.st-canceled[data-counter="4"]').wait_for()

        d = self.in_browser(steps)
        d.addCallback(lambda _: self.assertNoConsoleErrors())
        return d

    def test_wrong_secret_then_right(self) -> defer.Deferred:
        """A refused secret is forgotten and asked again; nothing changes before."""

        def steps():
            page = self.browser.new_page()
            self.open_dashboard(page)
            ticker = self.card(page, "job", "ticker")
            ticker.locator('button[data-action="pause"]').click()
            self.answer_secret(page, "wrong", closes=False)
            page.wait_for_function("() => document.getElementById('secret-help')"
                                   ".textContent.includes('refused')")
            assert "refused" in page.locator("#secret-help").text_content()
            assert self.status_of(page, "job", "ticker") != "paused"
            page.fill("#secret-input", SECRET)
            page.keyboard.press("Enter")
            self.wait_status(page, "job", "ticker", "paused")

        d = self.in_browser(steps)
        d.addCallback(lambda _: self.assertNoConsoleErrors(allowed=("401",)))
        return d

    def test_fallback_signer(self) -> defer.Deferred:
        """
        Without crypto.subtle (plain http on a LAN address), the pure-JS
        HMAC signs, and agrees with Python on known and random vectors.
        """
        vectors = [
            ("", ""),
            ("key", "The quick brown fox jumps over the lazy dog"),
            ("k" * 64, "exactly one block key"),
            ("long key " * 20, "a" * 1000),
            ("s3cret", '{"_karajo_epoch":1700000000}'),
            ("ünïcödé ключ", "données → 署名"),
        ] + [(os.urandom(8).hex(), os.urandom(n).hex()) for n in (55, 56, 63, 64, 65, 119, 120)]
        expected = [hmac.new(k.encode(), m.encode(), hashlib.sha256).hexdigest() for k, m in vectors]
        sha_vectors = {
            "": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq":
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        }
        hide = "Object.defineProperty(Crypto.prototype, 'subtle', {get() { return undefined; }});"

        def steps():
            page = self.browser.new_page(init_script=hide)
            self.open_dashboard(page)
            assert page.evaluate("window.crypto.subtle") is None
            got = page.evaluate(
                "vs => vs.map(([k, m]) => KarajoSHA256.hmacHex(k, m))", [list(v) for v in vectors])
            assert got == expected, (got, expected)
            for message, digest in sha_vectors.items():
                assert page.evaluate("m => KarajoSHA256.sha256Hex(m)", message) == digest
            assert page.evaluate("KarajoSHA256.sha256Hex('a'.repeat(1000000))") == \
                "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
            ticker = self.card(page, "job", "ticker")
            ticker.locator('button[data-action="pause"]').click()
            self.answer_secret(page, SECRET)
            self.wait_status(page, "job", "ticker", "paused")
            assert page.evaluate("window.KarajoUI.signer") == "fallback"
            # and WebCrypto (localhost is a secure context) signs the same
            normal = self.browser.new_page()
            self.open_dashboard(normal)
            same = normal.evaluate(
                "async vs => Promise.all(vs.map(([k, m]) => KarajoUI.hmacHex(k, m)))",
                [list(v) for v in vectors[1:]])
            assert same == expected[1:], same
            assert normal.evaluate("window.KarajoUI.signer") == "webcrypto"

        d = self.in_browser(steps)
        d.addCallback(lambda _: self.assertNoConsoleErrors())
        return d

    def test_xss_corpus_never_executes(self) -> defer.Deferred:
        """
        Hostile job names, descriptions, commands and log output are shown
        as text on the dashboard, the job page and the log page.
        """
        xss_id = jobs()[XSS_IMG].id

        def steps():
            page = self.browser.new_page()
            page.add_init_script("window.alert = () => { window.__xss = 'alert'; };")
            self.open_dashboard(page)
            card = self.card(page, "job", xss_id)
            assert card.locator(".name").text_content() == XSS_IMG
            assert card.locator(".desc img, .desc script, .desc svg, .desc iframe, .desc style").count() == 0
            hrefs = card.locator(".desc a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
            assert hrefs == [None, "https://example.org/"], hrefs
            assert card.locator(".desc b").text_content() == "bold"
            assert card.locator(".desc [onclick], .desc [onmouseover]").count() == 0
            card.locator(".desc a").first.click()  # the neutered javascript: link
            card.locator('button[data-action="run"]').click()
            self.answer_secret(page, SECRET)
            link = card.locator('a.run[data-counter="1"]')
            link.wait_for()
            self.wait_status(page, "job", xss_id, "success")
            page.wait_for_timeout(500)
            link.click()
            page.wait_for_url("**/karajo/app/run?*")
            text = page.locator("#log").text_content()
            assert XSS_SCRIPT in text and XSS_IMG in text, text
            assert page.locator("#log *").count() == 0
            page.goto(self.daemon.url + f"/karajo/app/job?kind=job&id={xss_id}")
            page.wait_for_function("() => window.KarajoUI && window.KarajoUI.polls > 1")
            assert XSS_SCRIPT in page.locator("#details").text_content()
            page.goto(self.daemon.url + "/karajo/app/")
            page.wait_for_function("() => window.KarajoUI && window.KarajoUI.polls > 1")
            other = page.locator(".card", has_text=XSS_SCRIPT + ' & "quotes"')
            assert other.count() == 1
            return page.evaluate("window.__xss")

        def check(flag):
            self.assertIsNone(flag)
            self.assertNoConsoleErrors()

        return self.in_browser(steps).addCallback(check)


class UsersTests(_BrowserTest):
    """With users: login page, session and CSRF token, nobody types a secret."""

    users = True

    def login(self, page, password: str = PASSWORD) -> None:
        page.fill("#login-name", "admin")
        page.fill("#login-password", password)
        page.click("#login-form button[type=submit]")

    def test_login_wrong_then_right(self) -> defer.Deferred:
        def steps():
            page = self.browser.new_page()
            response = page.goto(self.daemon.url + "/karajo/app/")
            assert page.url.endswith("/karajo/?next=%2Fkarajo%2Fapp%2F"), page.url
            assert response.headers.get("content-security-policy") == CSP
            self.login(page, "wrong password")
            page.wait_for_function("() => document.getElementById('login-error').textContent !== ''")
            assert "invalid name or password" in page.locator("#login-error").text_content()
            assert "/karajo/app/" not in page.url.split("?")[0]
            self.login(page)
            page.wait_for_url("**/karajo/app/")
            page.wait_for_function("() => window.KarajoUI && window.KarajoUI.polls > 0")
            assert page.locator(".card[data-id]").count() == len(jobs()) + 1
            assert page.locator(".account .user").text_content() == "admin"
            assert page.locator("#secret-dialog").count() == 0
            page.click("#logout")
            page.wait_for_url("**/karajo/")
            page.goto(self.daemon.url + "/karajo/app/")
            assert "/karajo/?next=" in page.url

        d = self.in_browser(steps)
        d.addCallback(lambda _: self.assertNoConsoleErrors(allowed=("400",)))
        return d

    def test_actions_with_session(self) -> defer.Deferred:
        """Pause, resume (and run now when the API has it) with the session + CSRF."""
        has_run_now = run_now_route()

        def steps():
            page = self.browser.new_page()
            page.goto(self.daemon.url + "/karajo/")
            self.login(page)
            page.wait_for_url("**/karajo/app/")
            page.wait_for_function("() => window.KarajoUI && window.KarajoUI.polls > 0")
            assert page.evaluate("document.querySelector('meta[name=karajo-csrf]').content") != ""
            ticker = self.card(page, "job", "ticker")
            ticker.locator('button[data-action="pause"]').click()
            self.wait_status(page, "job", "ticker", "paused")
            ticker.locator('button[data-action="resume"]').click()
            page.wait_for_function(
                "() => document.querySelector('#job-ticker [data-field=\"status\"]').textContent !== 'paused'")
            run = ticker.locator('button[data-action="run"]')
            if has_run_now:
                run.click()
                ticker.locator('a.run[data-counter="1"]').wait_for()
            else:
                assert run.is_disabled()
                assert "API" in run.get_attribute("title")
            assert page.locator("#secret-dialog").count() == 0
            page.screenshot(path=artifact("dashboard-users.png"), full_page=True)

        d = self.in_browser(steps)
        d.addCallback(lambda _: self.assertNoConsoleErrors())
        return d
