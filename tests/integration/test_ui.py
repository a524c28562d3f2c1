"""
The web UI resource (L{karajo.web.ui}) through L{treq.testing.StubTreq},
over a real L{karajo.service.KarajoService} with code jobs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import timedelta

from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.template import flattenString

import karajo.config
import karajo.server
from karajo import runrecord
from karajo.model import Environment, Job, JobHttp, User
from karajo.paths import Paths
from karajo.resources import templates_dir
from karajo.runrecord import RunRecord
from karajo.users import COOKIE_NAME, Sessions, hash_password
from karajo.web.description import sanitize_description
from karajo.web.ui import WebUI, safe_next
from karajo.web.words import describe_timer

#: Written out, not imported: a test comparing the header with the module's
#: own constant would pass whatever the policy said.
EXPECTED_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

EVIL_NAME = '<script>alert("name")</script> & <img src=x onerror=alert(1)>'
DESCRIPTION = (
    "<b>bold</b> <i>it</i> <em>em</em> <strong>strong</strong> <code>c&lt;1</code><br>"
    '<p>para</p><ul><li>one</li></ul><ol><li>two</li></ol>'
    '<a href="https://example.org/x?a=1&amp;b=2">ok link</a>'
    '<a href="javascript:alert(1)">js link</a>'
    '<a href="http://example.com/" onclick="alert(1)" style="color:red">http link</a>'
    '<script>alert("desc")</script><img src=x onerror="alert(1)">'
    '<svg onload="alert(1)"></svg><iframe src="https://evil"></iframe>'
    '<style>body{}</style><form action="https://evil"><input></form>'
    '<b onmouseover="alert(1)">hover</b><a href="data:text/html,x">data</a>'
)


def write_evil(log, request):
    log.write(b"<script>alert('log')</script>\n<img src=x onerror=alert(1)>\n")


def build(test: TestCase, users: bool = False):
    base = os.path.abspath(test.mktemp())
    table = {}
    if users:
        table = {"admin": User(name="admin", password=hash_password("pw", rounds=4))}
    jobs = {
        "plain": Job(name="plain", description=DESCRIPTION, call=write_evil, path="/plain",
                     interval=timedelta(minutes=90)),
        EVIL_NAME: Job(name=EVIL_NAME, description="<p>" + EVIL_NAME + "</p>",
                       commands=["echo '<script>'"], schedule="weekly@mon,fri@10:00"),
    }
    http_jobs = {"ping": JobHttp(name="ping", http_url="http://127.0.0.1:9/",
                                 schedule="daily@01:00,13:30")}
    return serve(test, Environment(
        dir_base=base, secret="s3cret", jobs=jobs, http_jobs=http_jobs, users=table))


def serve(test: TestCase, environment: Environment):
    """
    The server of C{environment} started (without its listener) and its
    web UI behind a StubTreq; a user's password is "pw".
    """
    env, warnings = karajo.config.validate(environment)
    service = karajo.server.build_service(
        karajo.config.Loaded(env, warnings), reactor,
        run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
    )
    service.removeService(service.getServiceNamed("http"))
    service.startService()
    test.addCleanup(service.stopService)
    sessions = Sessions(env.users, reactor, check=lambda password, hashed: defer.succeed(password == "pw"))
    ui = WebUI(service, sessions)
    root = Resource()
    root.putChild(b"karajo", ui.resource())
    return service, sessions, ui, StubTreq(root)


class Pages(TestCase):
    def setUp(self) -> None:
        self.service, self.sessions, self.ui, self.treq = build(self)
        self.evil_id = karajo.model.job_id(EVIL_NAME)

    async def get(self, path: str, **kw):
        response = await self.treq.get("http://k" + path, allow_redirects=False, **kw)
        body = await response.content()
        return response, body

    def assertSecurityHeaders(self, response, path: str) -> None:
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("content-security-policy"), [EXPECTED_CSP], path)
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"], path)
        self.assertEqual(headers.getRawHeaders("referrer-policy"), ["no-referrer"], path)

    async def run_plain(self) -> None:
        runner = self.service.jobs["plain"].runner
        runner.trigger(None)
        await runner.when_idle()

    async def test_csp_on_every_response(self) -> None:
        await self.run_plain()
        paths = {
            "/karajo/": 302,
            "/karajo": 302,
            "/karajo/app": 302,
            "/karajo/app/": 200,
            "/karajo/app/job?kind=job&id=plain": 200,
            "/karajo/app/job?kind=job_http&id=ping": 200,
            f"/karajo/app/job?kind=job&id={self.evil_id}": 200,
            "/karajo/app/run?kind=job&id=plain&counter=1": 200,
            "/karajo/app/log?kind=job&id=plain&counter=1": 302,
            "/karajo/app/run?kind=job&id=plain&counter=99": 404,
            "/karajo/app/run?kind=job&id=plain&counter=x": 404,
            "/karajo/app/job?kind=nope&id=plain": 400,
            "/karajo/app/job?kind=job&id=missing": 404,
            "/karajo/static/common.js": 200,
            "/karajo/static/dashboard.js": 200,
            "/karajo/static/sign.js": 200,
            "/karajo/static/run.js": 200,
            "/karajo/static/login.js": 200,
            "/karajo/static/app.css": 200,
            "/karajo/static/sha256.js": 200,
            "/karajo/static/favicon.svg": 200,
            "/karajo/static/missing.js": 404,
            "/karajo/static/../karajo/web/ui.py": 404,
            "/karajo/nothing/here": 404,
        }
        for path, code in paths.items():
            response, body = await self.get(path)
            self.assertEqual(response.code, code, path)
            self.assertSecurityHeaders(response, path)
            if code != 302 and "/static/" not in path or code == 404:
                self.assertIn(b"<!DOCTYPE html>", body[:20], path)
                self.assertNotIn(b"<script>", body, path)
                self.assertNotIn(b" style=", body, path)
        response = await self.treq.post("http://k/karajo/app/", allow_redirects=False)
        self.assertEqual(response.code, 405)
        self.assertSecurityHeaders(response, "POST")

    async def test_no_users_redirects_to_dashboard(self) -> None:
        response, _ = await self.get("/karajo/")
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/karajo/app/"])
        response, body = await self.get("/karajo/app/")
        self.assertEqual(response.code, 200)
        self.assertIn(b'name="karajo-users" content="0"', body)
        self.assertIn(b'id="secret-dialog"', body)
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])

    async def test_names_are_escaped(self) -> None:
        _, body = await self.get("/karajo/app/")
        self.assertNotIn(b"<script>alert", body)
        self.assertNotIn(b"<img src=x", body)
        self.assertIn(b"&lt;script&gt;alert(\"name\")&lt;/script&gt; &amp; &lt;img src=x", body)
        _, body = await self.get(f"/karajo/app/job?kind=job&id={self.evil_id}")
        self.assertNotIn(b"<script>alert", body)
        # the command is text too
        self.assertIn(b"<code>echo '&lt;script&gt;'</code>", body)

    async def test_description_sanitized(self) -> None:
        _, body = await self.get("/karajo/app/")
        text = body.decode()
        card = text[text.index('id="job-plain"'):]
        card = card[card.index('<div class="desc">'):card.index("<dl class=\"facts\">")]
        for kept in ("<b>bold</b>", "<i>it</i>", "<em>em</em>", "<strong>strong</strong>",
                     "<code>c&lt;1</code>", "<br />", "<p>para</p>", "<ul><li>one</li></ul>",
                     "<ol><li>two</li></ol>", "hover</b>"):
            self.assertIn(kept, card)
        self.assertIn('<a href="https://example.org/x?a=1&amp;b=2" rel="noopener noreferrer nofollow">'
                      "ok link</a>", card)
        self.assertIn('<a href="http://example.com/" rel="noopener noreferrer nofollow">http link</a>',
                      card)
        self.assertIn("<a>js link</a>", card)
        self.assertIn("<a>data</a>", card)
        for gone in ("<script", "alert(\"desc\")", "<img", "onerror", "onclick", "onload",
                     "onmouseover", "javascript:", "<svg", "<iframe", "<style", "<form",
                     "<input", "style=", "data:text"):
            self.assertNotIn(gone, card, gone)

    async def test_sanitize_function(self) -> None:
        async def render(text: str) -> str:
            return (await flattenString(None, sanitize_description(text))).decode()

        self.assertEqual(await render("<b>x</b><script>y</script>"), "<b>x</b>")
        self.assertEqual(await render("a < b & c"), "a &lt; b &amp; c")
        self.assertEqual(await render('<a href=" JaVaScRiPt:alert(1)">x</a>'), "<a>x</a>")
        self.assertEqual(await render("<p>unclosed <b>bold"), "<p>unclosed <b>bold</b></p>")
        self.assertEqual(await render("<blink>text</blink>"), "text")
        self.assertEqual(await render(""), "")

    async def test_run_page_escapes_output(self) -> None:
        await self.run_plain()
        response, body = await self.get("/karajo/app/run?kind=job&id=plain&counter=1")
        self.assertEqual(response.code, 200)
        self.assertIn(b"&lt;script&gt;alert('log')&lt;/script&gt;", body)
        self.assertNotIn(b"<img src=x", body)
        self.assertIn(b'data-status="success"', body)
        self.assertIn(b'data-offset="', body)
        _, dash = await self.get("/karajo/app/")
        self.assertIn(b'href="/karajo/app/run?kind=job&amp;id=plain&amp;counter=1"', dash)
        self.assertIn(b'class="bar st-success"', dash)

    async def test_static_caching(self) -> None:
        # What the scripts may not do (HTML sinks, eval) is eslint.config.js's
        # job, run by .ci/run and by LintConfig below.
        response, body = await self.get("/karajo/static/common.js")
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["text/javascript; charset=utf-8"])
        etag = response.headers.getRawHeaders("etag")[0]
        with open(os.path.join(templates_dir(), "static", "common.js"), "rb") as f:
            self.assertEqual(body, f.read())
        response, body = await self.get("/karajo/static/common.js", headers={"If-None-Match": etag})
        self.assertEqual(response.code, 304)
        self.assertEqual(body, b"")
        response, _ = await self.get("/karajo/static/app.css")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/css; charset=utf-8"])

    async def test_each_page_loads_its_script(self) -> None:
        """
        One module per page (it imports common.js); sha256.js only where
        the page signs in the browser; the chart's geometry and each
        card's API path are in the page for the script to read.
        """
        await self.run_plain()
        pages = {
            "/karajo/app/": ["sha256.js", "dashboard.js"],
            "/karajo/app/job?kind=job&id=plain": ["sha256.js", "dashboard.js"],
            "/karajo/app/run?kind=job&id=plain&counter=1": ["run.js"],
            "/karajo/app/nothing": ["common.js"],
        }
        for path, wanted in pages.items():
            _, body = await self.get(path)
            scripts = re.findall(rb'<script [^>]*src="/karajo/static/([a-z0-9]+\.js)\?v=', body)
            self.assertEqual([s.decode() for s in scripts], wanted, path)
            self.assertIn(f'src="{self.ui.static.url(wanted[-1])}" type="module"'.encode(), body)
        _, body = await self.get("/karajo/app/")
        self.assertIn(b'data-height="40" data-bar-width="8" data-bar-gap="2" data-runs="20"', body)
        self.assertIn(b'data-field="runs" data-limit="5"', body)
        self.assertIn(b'data-api="job_exec" data-table="jobs"', body)
        self.assertIn(b'data-api="job_http" data-table="http_jobs"', body)
        _, body = await self.get("/karajo/app/run?kind=job&id=plain&counter=1")
        self.assertIn(b'data-api="job_exec"', body)

    def test_schedule_words(self) -> None:
        """
        A schedule reads as the schedule describes itself (the words of
        C{karajo check}); an interval, or nothing, in the page's words.
        """
        cases = {
            ("minutely", None): "every minute",
            ("hourly@0,15,30", None): "hourly at :00, :15, :30",
            ("daily@01:00,13:30", None): "daily at 01:00, 13:30 (UTC)",
            ("daily@ 02:30", None): "daily at 02:30 (UTC)",
            ("weekly@mon,fri@10:00", None): "weekly on Mon, Fri at 10:00 (UTC)",
            ("monthly@1,15@06:00", None): "monthly on days 1, 15 at 06:00 (UTC)",
            ("30 2 * * *", None): "cron 30 2 * * * (UTC)",
            (None, timedelta(minutes=90)): "every 1 hour 30 minutes",
            (None, timedelta(minutes=5)): "every 5 minutes",
            (None, timedelta(hours=1)): "every hour",
            (None, None): "only on request",
        }
        for (schedule, interval), words in cases.items():
            self.assertEqual(describe_timer(schedule, interval), words)
        self.assertEqual(describe_timer("daily@02:30", None, "Europe/Berlin"),
                         "daily at 02:30 (Europe/Berlin)")

    async def test_card_shows_schedule_words(self) -> None:
        """The dashboard's card shows the schedule's own words, the raw value as title."""
        _, body = await self.get("/karajo/app/")
        self.assertIn(b'<dd title="weekly@mon,fri@10:00">weekly on Mon, Fri at 10:00 (UTC)</dd>',
                      body)
        self.assertIn(b'<dd title="interval 5400s">every 1 hour 30 minutes</dd>', body)

    def test_safe_next(self) -> None:
        self.assertEqual(safe_next("/karajo/app/log?kind=job&id=x&counter=2"),
                         "/karajo/app/log?kind=job&id=x&counter=2")
        for evil in ("https://evil.example/", "//evil.example/karajo/app/", "/karajo/app//evil",
                     "/karajo/app/../../x", "/elsewhere", "javascript:alert(1)", "", None,
                     "/karajo/app/\\evil"):
            self.assertEqual(safe_next(evil), "/karajo/app/", evil)


#: the seeded runs of "flaky" (retry = 2): (counter, status, start, attempt, node).
#: Run 3 was queued during run 2's retry wait, so the retries took 4 and 5.
FLAKY_RUNS = [
    (1, "success", 1_000_000, 1, None),
    (2, "failed", 1_000_100, 1, None),
    (3, "success", 1_000_400, 1, None),
    (4, "failed", 1_000_200, 2, None),
    (5, "success", 1_000_300, 3, "node-b"),
]


class RunPage(TestCase):
    """The run page's facts: trigger, attempt and its failure chain, node, times."""

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        paths = Paths(base)
        directory = paths.log_dir("job", "flaky")
        os.makedirs(directory)
        records = []
        for counter, status, start, attempt, node in FLAKY_RUNS:
            with open(os.path.join(directory, f"flaky.{counter}.{status}"), "w") as f:
                f.write(f"run {counter}\n")
            records.append(RunRecord("flaky", counter, status, start, start + 65,
                                     "retry" if attempt > 1 else "webhook", attempt, node))
        runrecord.write_records(paths.state_file("job", "flaky") + runrecord.RECORDS_SUFFIX,
                                tuple(records))
        _service, _sessions, _ui, self.treq = serve(self, Environment(
            dir_base=base, secret="s3cret",
            jobs={"flaky": Job(name="flaky", commands=["false"], path="/flaky", retry=2)}))

    async def page(self, counter: int) -> str:
        response = await self.treq.get(
            f"http://k/karajo/app/run?kind=job&id=flaky&counter={counter}")
        self.assertEqual(response.code, 200)
        return (await response.content()).decode()

    def chain(self, body: str) -> list[str]:
        nav = re.search(r'<nav id="chain".*?</nav>', body, re.S)
        return re.findall(r'<li data-counter="(\d+)">', nav.group(0)) if nav else []

    async def test_chain_in_start_order(self) -> None:
        body = await self.page(4)
        self.assertEqual(self.chain(body), ["2", "4", "5"])
        self.assertIn('<a href="/karajo/app/run?kind=job&amp;id=flaky&amp;counter=4" '
                      'aria-current="page">#4</a> attempt 2 ', body)
        self.assertIn('<dd id="run-attempt">2 of up to 3</dd>', body)
        self.assertIn("a retry", body)
        self.assertIn('datetime="1970-01-12T13:50:00Z"', body)  # started, 1_000_200
        self.assertIn('<dd id="run-duration">1m 05s</dd>', body)
        self.assertNotIn('id="run-node"', body)  # no node: a single server
        self.assertIn('<dd id="log-size">6 bytes</dd>', body)  # "run 4\n"
        self.assertNotIn('id="follow"', body)  # a final run is not followed
        body = await self.page(5)
        self.assertEqual(self.chain(body), ["2", "4", "5"])
        self.assertIn('<dd id="run-node">node-b</dd>', body)
        # run 3 (queued during the retry wait) is alone, as is run 1
        self.assertEqual(self.chain(await self.page(3)), [])
        body = await self.page(1)
        self.assertEqual(self.chain(body), [])
        self.assertIn('<dd id="run-trigger"><span title="webhook">a webhook</span></dd>', body)
        self.assertIn('<dd id="run-attempt">1 of up to 3</dd>', body)

    async def test_old_log_url_redirects(self) -> None:
        """Webhook notifications' log_url (the page's older name) leads to the run page."""
        response = await self.treq.get("http://k/karajo/app/log?kind=job&id=flaky&counter=2",
                                       allow_redirects=False)
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders("location"),
                         ["/karajo/app/run?kind=job&id=flaky&counter=2"])
        response = await self.treq.get("http://k/karajo/app/log?id=a%26b&x=1",
                                       allow_redirects=False)
        self.assertEqual(response.headers.getRawHeaders("location"),
                         ["/karajo/app/run?id=a%26b"])


class WithUsers(TestCase):
    def setUp(self) -> None:
        self.service, self.sessions, self.ui, self.treq = build(self, users=True)

    async def get(self, path: str, **kw):
        response = await self.treq.get("http://k" + path, allow_redirects=False, **kw)
        body = await response.content()
        return response, body

    async def test_login_required(self) -> None:
        response, body = await self.get("/karajo/")
        self.assertEqual(response.code, 200)
        self.assertIn(b'id="login-form"', body)
        self.assertIn(b'/karajo/static/login.js?v=', body)
        self.assertEqual(response.headers.getRawHeaders("content-security-policy"), [EXPECTED_CSP])
        for path in ("/karajo/app/", "/karajo/app/job?kind=job&id=plain",
                     "/karajo/app/run?kind=job&id=plain&counter=1",
                     "/karajo/app/log?kind=job&id=plain&counter=1"):
            response, body = await self.get(path)
            self.assertEqual(response.code, 302, path)
            location = response.headers.getRawHeaders("location")[0]
            self.assertTrue(location.startswith("/karajo/?next=%2Fkarajo%2Fapp%2F"), location)
            self.assertNotIn(b"plain", body)
        response, _ = await self.get("/karajo/app/", cookies={COOKIE_NAME: "forged-token"})
        self.assertEqual(response.code, 302)

    async def test_session_shows_dashboard(self) -> None:
        session = await self.sessions.login("admin", "pw", "127.0.0.1")
        cookies = {COOKIE_NAME: session.token}
        response, _ = await self.get("/karajo/", cookies=cookies)
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/karajo/app/"])
        response, _ = await self.get("/karajo/?next=%2Fkarajo%2Fapp%2Fjob%3Fkind%3Djob%26id%3Dplain",
                                     cookies=cookies)
        self.assertEqual(response.headers.getRawHeaders("location"),
                         ["/karajo/app/job?kind=job&id=plain"])
        response, _ = await self.get("/karajo/?next=https%3A%2F%2Fevil%2F", cookies=cookies)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/karajo/app/"])
        response, body = await self.get("/karajo/app/", cookies=cookies)
        self.assertEqual(response.code, 200)
        self.assertIn(f'name="karajo-csrf" content="{session.csrf}"'.encode(), body)
        self.assertIn(b'name="karajo-users" content="1"', body)
        self.assertIn(b'id="logout"', body)
        self.assertNotIn(b'id="secret-dialog"', body)
        self.assertNotIn(b"sha256.js", body)  # nothing is signed in the browser
        self.assertNotIn(session.token.encode(), body)
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])

    async def test_login_page_keeps_next(self) -> None:
        _, body = await self.get("/karajo/?next=%2Fkarajo%2Fapp%2Flog%3Fkind%3Djob")
        self.assertIn(b'name="next" value="/karajo/app/log?kind=job"', body)
        _, body = await self.get("/karajo/?next=%22%3E%3Cscript%3E")
        self.assertIn(b'name="next" value="/karajo/app/"', body)
        self.assertNotIn(b"<script>", body)


class FallbackSHA256(TestCase):
    """templates/static/sha256.js against hashlib/hmac, when node is here."""

    def test_vectors(self) -> None:
        import hashlib
        import hmac
        import json

        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            self.skipTest("node is not installed (the browser tests check the same vectors)")
        vectors = [("", ""), ("key", "The quick brown fox jumps over the lazy dog"),
                   ("k" * 64, "m"), ("k" * 65, "m" * 200), ("ключ", "données")]
        vectors += [(os.urandom(5).hex(), os.urandom(n).hex()) for n in range(20, 70, 3)]
        script = (
            "const k = require(process.argv[1]);"
            "const vs = JSON.parse(process.argv[2]);"
            "console.log(JSON.stringify(vs.map(([a, b]) => [k.hmacHex(a, b), k.sha256Hex(b)])));"
        )
        path = os.path.join(templates_dir(), "static", "sha256.js")
        out = subprocess.run([node, "-e", script, path, json.dumps(vectors)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        got = json.loads(out)
        want = [[hmac.new(k.encode(), m.encode(), hashlib.sha256).hexdigest(),
                 hashlib.sha256(m.encode()).hexdigest()] for k, m in vectors]
        self.assertEqual(got, want)


class LintConfig(TestCase):
    """
    eslint.config.js, which replaces a byte grep of the scripts: it must
    refuse every way of putting a string in the page as HTML or running it
    as code, and pass the scripts as they are.  Needs C{npm ci} (done by
    .ci/run); skipped without it.
    """

    PROBES = {
        "inner": 'document.body.innerHTML = "x";',
        "outer-computed": 'const n = document.body; n["outerHTML"] = "x";',
        "adjacent": 'document.body.insertAdjacentHTML("beforeend", "x");',
        "write": 'document.write("x");',
        "write-alias": 'const d = document; d.writeln("x");',
        "assign": 'Object.assign(document.body, {innerHTML: "x"});',
        "eval": 'eval("1");',
        "timer-string": 'setTimeout("x()", 1);',
        "function": 'new Function("x");',
        "var": "var x = 1; document.title = String(x);",
    }

    def setUp(self) -> None:
        # The checkout these tests are in (the package may be installed elsewhere).
        root = os.path.dirname(os.path.abspath(__file__))
        while not os.path.isfile(os.path.join(root, "eslint.config.js")):
            if os.path.dirname(root) == root:
                self.skipTest("not a checkout: no eslint.config.js")
            root = os.path.dirname(root)
        self.root = root
        self.eslint = os.path.join(self.root, "node_modules", ".bin", "eslint")
        if not os.access(self.eslint, os.X_OK):
            self.skipTest("eslint is not installed (npm ci)")

    def lint(self, source: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.eslint, "--stdin", "--stdin-filename", "templates/static/probe.js"],
            input="export {};\n" + source + "\n", cwd=self.root, capture_output=True,
            text=True, timeout=120,
        )

    def test_refuses_sinks(self) -> None:
        for name, source in self.PROBES.items():
            result = self.lint(source)
            self.assertEqual(result.returncode, 1, f"{name}: {result.stdout}{result.stderr}")
            self.assertIn(" error ", result.stdout, name)

    def test_accepts_text(self) -> None:
        result = self.lint('document.body.textContent = "x";')
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_scripts_pass(self) -> None:
        result = subprocess.run([self.eslint, "templates/static"], cwd=self.root,
                                capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)


class ClusterView(TestCase):
    """
    The cluster panel and page of node web-1, on a clock, its database the
    in-memory one (L{tests.clusterfake}); the browser test
    (tests/e2e/test_cluster_page.py) covers the rest.
    """

    def setUp(self) -> None:
        from karajo.model import Cluster
        from tests.clusterfake import FakeDatabase, FakeStore

        self.clock = Clock()
        self.db = FakeDatabase(self.clock)
        self.db.up = False  # down at start: no heartbeat answered yet
        env, warnings = karajo.config.validate(Environment(
            dir_base=os.path.abspath(self.mktemp()), secret="s3cret",
            jobs={"plain": Job(name="plain", call=write_evil, path="/plain")},
            cluster=Cluster(database="fake", node="web-1", heartbeat=timedelta(seconds=2),
                            node_timeout=timedelta(seconds=15)),
        ))
        self.service = karajo.server.build_service(
            karajo.config.Loaded(env, warnings), self.clock,
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
            cluster_store=FakeStore(self.db))
        self.service.removeService(self.service.getServiceNamed("http"))
        self.service.startService()
        self.addCleanup(self.service.stopService)
        sessions = Sessions({}, self.clock, check=lambda p, h: defer.succeed(False))
        root = Resource()
        root.putChild(b"karajo", WebUI(self.service, sessions, clock=self.clock).resource())
        self.treq = StubTreq(root)

    async def get(self, path: str) -> bytes:
        response = await self.treq.get("http://k" + path, allow_redirects=False)
        self.assertEqual(response.code, 200, path)
        return await response.content()

    async def test_before_the_database_answers(self) -> None:
        """This node is listed before its first heartbeat; the panel and page say the database is away."""
        page = await self.get("/karajo/app/cluster")
        self.assertEqual(re.findall(rb'<tr class="([a-z ]+)" data-node="([^"]+)"', page),
                         [(b"node me", b"web-1")])
        self.assertIn(b'id="cluster-offline"', page)
        self.assertIn(b"1 node: 1 alive, 0 dead", page)
        self.assertIn(b'type="module"', page)
        self.assertIn(b"cluster.js", page)
        dashboard = await self.get("/karajo/app/")
        self.assertIn(b'id="cluster-offline"', dashboard)
        self.assertNotIn(b'id="cluster-warning"', dashboard)

    async def test_other_configuration_named_and_escaped(self) -> None:
        """An alive node of another digest is named in the warning, its name escaped as text."""
        from karajo.clusterstore import NodeInfo

        self.db.up = True
        evil = "<b>web-2</b>"
        self.db.nodes[evil] = NodeInfo(evil, True, self.clock.seconds(), 0, "0.9.0", "ab" * 32, 0)
        self.clock.advance(2)  # web-1's next heartbeat reads the node list
        page = await self.get("/karajo/app/cluster")
        self.assertNotIn(b'id="cluster-offline"', page)
        self.assertIn(b'data-nodes="&lt;b&gt;web-2&lt;/b&gt;"', page)
        self.assertIn(b"started from another configuration than this node (web-1): "
                      b"&lt;b&gt;web-2&lt;/b&gt;.", page)
        self.assertNotIn(b"<b>web-2</b>", page)
        self.assertIn(b'<code title="' + b"ab" * 32 + b'">' + b"ab" * 6 + b"</code> "
                      b'<span class="differs">differs</span>', page)
        self.assertEqual(page.count(b'class="differs"'), 1)  # web-1's own digest is not marked
        dashboard = await self.get("/karajo/app/")
        self.assertIn(b'id="cluster-warning"', dashboard)
        self.assertIn(b"2 nodes: 2 alive, 0 dead", dashboard)
