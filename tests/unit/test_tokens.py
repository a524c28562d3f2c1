"""
API tokens (C{[token "NAME"]} in user.conf, C{Authorization: Bearer}):
the pure core L{karajo.tokens}, their checks in the config, and the API
and metrics page through L{treq.testing.StubTreq}.
"""

from __future__ import annotations

import hashlib
import io
import os
from contextlib import redirect_stdout
from typing import Any

import bcrypt
from twisted.trial import unittest

from karajo import cli, tokens
from karajo.config import load_environment, validate
from karajo.errors import ConfigError
from karajo.model import Environment, Token, User
from karajo.web.site import build_site
from tests.unit.test_api import SECRET, APITestCase

READ = "read-token-abcdefghijklmnopqrstuvwxyz012345"
MANAGE = "manage-token-abcdefghijklmnopqrstuvwxyz0123"
TOKENS = {
    "prom": Token(hash=tokens.hash_token(READ), scope="read"),
    "ops": Token(hash=tokens.hash_token(MANAGE), scope="manage"),
}
ALICE = {"alice": User(password=bcrypt.hashpw(b"pw-alice", bcrypt.gensalt(4)).decode())}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class CoreTests(unittest.SynchronousTestCase):
    def test_hash_is_sha256_hex(self) -> None:
        self.assertEqual(tokens.hash_token("abc"),
                         "sha256:" + hashlib.sha256(b"abc").hexdigest())

    def test_new_tokens_differ_and_are_long(self) -> None:
        a, b = tokens.new_token(), tokens.new_token()
        self.assertNotEqual(a, b)
        self.assertGreaterEqual(len(a), 43)

    def test_digest_of(self) -> None:
        hexpart = hashlib.sha256(b"x").hexdigest()
        self.assertEqual(tokens.digest_of("sha256:" + hexpart), bytes.fromhex(hexpart))
        self.assertEqual(tokens.digest_of("sha256:" + hexpart.upper()), bytes.fromhex(hexpart))
        for bad in ("", hexpart, "sha256:" + hexpart[:-1], "md5:" + hexpart,
                    "sha256:" + "g" * 64, "sha256:" + hexpart + "0"):
            self.assertIsNone(tokens.digest_of(bad), bad)

    def test_match(self) -> None:
        table = list(TOKENS.values())
        self.assertIs(tokens.match(table, READ.encode()), TOKENS["prom"])
        self.assertIs(tokens.match(table, MANAGE.encode()), TOKENS["ops"])
        self.assertIsNone(tokens.match(table, b"other"))
        self.assertIsNone(tokens.match(table, READ.encode()[:-1]))
        self.assertIsNone(tokens.match([], READ.encode()))


class ConfigTests(unittest.TestCase):
    def write(self, user_conf: str) -> str:
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "etc", "karajo"))
        main = os.path.join(base, "karajo.conf")
        with open(main, "w") as f:
            f.write(f"[karajo]\n\tdir_base = {base}\n\tsecret = s\n")
        with open(os.path.join(base, "etc", "karajo", "user.conf"), "w") as f:
            f.write(user_conf)
        return main

    def test_read_from_user_conf(self) -> None:
        h = tokens.hash_token(READ)
        loaded = load_environment(self.write(
            f'[token "prom"]\n\thash = {h}\n\tscope = read\n'
            f'[token "ops"]\n\thash = {tokens.hash_token(MANAGE)}\n\tscope = manage\n'))
        env = loaded.environment
        self.assertEqual(env.tokens["prom"].hash, h)
        self.assertEqual(env.tokens["prom"].scope, "read")
        self.assertEqual(env.tokens["ops"].scope, "manage")
        self.assertNotIn(h, repr(env.tokens["prom"]))

    def test_scope_defaults_to_read(self) -> None:
        loaded = load_environment(self.write(
            f'[token "prom"]\n\thash = {tokens.hash_token(READ)}\n'))
        self.assertEqual(loaded.environment.tokens["prom"].scope, "read")

    def test_errors_name_file_and_line(self) -> None:
        h = tokens.hash_token(READ)
        for text, line, words in (
            ('[token "a"]\n\tscope = read\n\thash = sha256:abc\n', 3, "hash must be"),
            ('[token "a"]\n\thash = ' + h + '\n\tscope = admin\n', 3, "scope must be"),
            ('[token "a"]\n\tscope = read\n', 1, "hash must be"),
        ):
            main = self.write(text)
            with self.assertRaises(ConfigError) as caught:
                load_environment(main)
            error = caught.exception
            self.assertTrue(error.filename.endswith("user.conf"), error.filename)
            self.assertEqual(error.line, line, str(error))
            self.assertIn(words, str(error))

    def test_code_built_tokens_checked(self) -> None:
        with self.assertRaises(ConfigError):
            validate(Environment(tokens={"x": Token(hash="plain-token")}))
        env, _ = validate(Environment(tokens={"x": Token(hash=tokens.hash_token("t"))}))
        self.assertEqual(env.tokens["x"].name, "x")


class TokenAPITests(APITestCase):
    """Tokens where users exist: a token stands for a session."""

    users = ALICE
    tokens = TOKENS

    def test_read_token_reads(self) -> None:
        for path in ("/karajo/api/environment", "/karajo/api/job_exec?id=hello",
                     "/karajo/api/job_http?id=ping"):
            self.assertEqual(self.get(path, headers=bearer(READ)).code, 200, path)
            self.assertEqual(self.get(path, headers=bearer(MANAGE)).code, 200, path)
            self.assertError(self.get(path), 401, "ERR_UNAUTHORIZED")

    def test_read_token_reads_logs(self) -> None:
        self.runner("hello").trigger(None)
        response = self.get("/karajo/api/job_exec/log?id=hello&counter=1", headers=bearer(READ))
        self.assertEqual(response.code, 200, response.body)

    def test_scheme_is_case_insensitive(self) -> None:
        response = self.get("/karajo/api/environment",
                            headers={"Authorization": f"bearer  {READ}"})
        self.assertEqual(response.code, 200)

    def test_wrong_token(self) -> None:
        for value in (f"Bearer {READ}x", "Bearer ", "Bearer", f"Bearer {READ[:-1]}",
                      f"Bearer {tokens.hash_token(READ)}"):
            response = self.get("/karajo/api/environment", headers={"Authorization": value})
            document = self.assertError(response, 401, "ERR_UNAUTHORIZED")
            self.assertEqual(document["message"], "invalid API token")
            self.assertNotIn(READ.encode(), response.body)

    def test_token_in_cookie_ignored(self) -> None:
        self.assertError(self.get("/karajo/api/environment", cookie=READ), 401,
                         "ERR_UNAUTHORIZED")
        self.assertError(self.post("/karajo/api/job_exec/pause", "id=hello", cookie=MANAGE,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}),
                         401, "ERR_UNAUTHORIZED")
        self.assertFalse(self.runner("hello").paused)

    def test_manage_token_manages_without_signature(self) -> None:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        runner = self.runner("hello")
        response = self.post("/karajo/api/job_exec/pause", "id=hello",
                             headers={**form, **bearer(MANAGE)})
        self.assertEqual(response.code, 200, response.body)
        self.assertTrue(runner.paused)
        # The same body again: no replay guard for a token (nothing signed).
        self.assertEqual(self.post("/karajo/api/job_exec/resume", "id=hello",
                                   headers={**form, **bearer(MANAGE)}).code, 200)
        self.assertFalse(runner.paused)
        self.assertEqual(self.post("/karajo/api/job_exec/run_now", "id=hello",
                                   headers={**form, **bearer(MANAGE)}).code, 200)
        self.assertEqual(runner.counter, 1)
        http = self.runner("ping", "job_http")
        self.assertEqual(self.post("/karajo/api/job_http/pause?id=ping",
                                   headers=bearer(MANAGE)).code, 200)
        self.assertTrue(http.paused)
        self.assertEqual(self.post("/karajo/api/job_http/resume?id=ping",
                                   headers=bearer(MANAGE)).code, 200)
        self.assertFalse(http.paused)
        # Cancel reaches the runner (nothing runs: 409, not 401/403).
        self.assertError(self.post("/karajo/api/job_exec/cancel", "id=hello",
                                   headers={**form, **bearer(MANAGE)}),
                         409, "ERR_JOB_NOT_RUNNING")

    def test_read_token_cannot_manage(self) -> None:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for action in ("pause", "resume", "cancel", "run_now"):
            self.assertError(self.post(f"/karajo/api/job_exec/{action}", "id=hello",
                                       headers={**form, **bearer(READ)}),
                             403, "ERR_TOKEN_SCOPE")
        for action in ("pause", "resume", "run_now"):
            self.assertError(self.post(f"/karajo/api/job_http/{action}?id=ping",
                                       headers=bearer(READ)),
                             403, "ERR_TOKEN_SCOPE")
        self.assertFalse(self.runner("hello").paused)
        self.assertEqual(self.runner("hello").counter, 0)

    def test_wrong_token_not_rescued_by_signature(self) -> None:
        """A bearer request is judged by its token alone."""
        response = self.manage("pause", headers={"Authorization": "Bearer wrong"})
        self.assertError(response, 401, "ERR_UNAUTHORIZED")
        self.assertFalse(self.runner("hello").paused)

    def test_signature_still_works(self) -> None:
        self.assertEqual(self.manage("pause", secret=SECRET).code, 200)

    def test_token_never_logged_or_shown(self) -> None:
        from twisted.logger import capturedLogs
        with capturedLogs() as events:
            self.get("/karajo/api/environment", headers=bearer(READ + "z"))
            self.get("/karajo/api/environment", headers=bearer(READ))
        text = repr(events)
        self.assertNotIn(READ, text)


class NoUsersTokenTests(APITestCase):
    """Without users reading is open, but a wrong token is still refused."""

    tokens = TOKENS

    def test_open_without_token(self) -> None:
        self.assertEqual(self.get("/karajo/api/environment").code, 200)

    def test_wrong_token_refused(self) -> None:
        self.assertError(self.get("/karajo/api/environment", headers=bearer("nope")),
                         401, "ERR_UNAUTHORIZED")

    def test_manage_token_no_signature(self) -> None:
        response = self.post("/karajo/api/job_exec/pause", "id=hello",
                             headers={"Content-Type": "application/x-www-form-urlencoded",
                                      **bearer(MANAGE)})
        self.assertEqual(response.code, 200)
        self.assertError(self.post("/karajo/api/job_exec/resume", "id=hello",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}),
                         401, "ERR_UNAUTHORIZED")


class MetricsTokenTests(APITestCase):
    """The metrics page asks the same check (StubTreq over the whole site)."""

    users = ALICE
    tokens = TOKENS

    def scrape(self, headers: dict[str, str] | None = None) -> Any:
        from treq.testing import StubTreq

        site = build_site(self.service, self.clock, lambda f, *a: None, sessions=self.sessions)
        stub = StubTreq(site.resource)
        d = stub.get("http://karajo.test/karajo/metrics", headers=headers)
        stub.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(stub.content(response))
        return response.code, body

    def test_read_token(self) -> None:
        code, body = self.scrape(bearer(READ))
        self.assertEqual(code, 200, body)
        self.assertIn(b"karajo_runs_started", body)

    def test_without_or_wrong_token(self) -> None:
        for headers in (None, bearer("wrong"), {"Cookie": f"karajo_session={READ}"}):
            code, body = self.scrape(headers)
            self.assertEqual(code, 401, body)
            self.assertIn(b"ERR_UNAUTHORIZED", body)


class TokenCommandTests(unittest.SynchronousTestCase):
    def run_cli(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            code = cli.main(list(argv))
        return code, out.getvalue()

    def test_new_prints_token_and_lines(self) -> None:
        code, text = self.run_cli("token", "new", "ops", "--scope", "manage")
        self.assertEqual(code, 0)
        token = text.splitlines()[0].removeprefix("token: ")
        self.assertIn('[token "ops"]', text)
        self.assertIn(f"\thash = {tokens.hash_token(token)}\n", text)
        self.assertIn("\tscope = manage\n", text)
        self.assertEqual(text.count(token), 1)
        self.assertNotEqual(token, self.run_cli("token", "new", "ops")[1].splitlines()[0])

    def test_default_scope_read(self) -> None:
        self.assertIn("\tscope = read\n", self.run_cli("token", "new", "prom")[1])

    def test_bad_name(self) -> None:
        import contextlib
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code, _ = self.run_cli("token", "new", 'a"b')
        self.assertEqual(code, 2)
