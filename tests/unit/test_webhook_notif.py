"""
C{[notif] kind = webhook}: its keys in the config (checked with file and
line) and the JSON body of L{karajo.notify_webhook} (pure parts).
"""

from __future__ import annotations

import json
import os

from twisted.trial import unittest

from karajo.config import load_environment, validate
from karajo.errors import ConfigError
from karajo.model import Environment, Job, JobHttp, Notif
from karajo.notify_webhook import WebhookSender, log_path, payload, summary
from karajo.runrecord import RunRecord


class ConfigTests(unittest.TestCase):
    def write(self, notif: str) -> str:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        main = os.path.join(base, "karajo.conf")
        with open(main, "w") as f:
            f.write(f"[karajo]\n\tdir_base = {base}\n\tsecret = s\n{notif}")
        return main

    def test_read(self) -> None:
        loaded = load_environment(self.write(
            '[notif "chat"]\n\tkind = webhook\n\turl = https://chat.example/hooks/abc\n'
            '\tsecret = $HOOK_SECRET\n\thttp_header = X-A: 1\n\thttp_header = X-B: two\n'
            '\thttp_insecure = true\n'), environ={"HOOK_SECRET": "from-env"})
        notif = loaded.environment.notifs["chat"]
        self.assertEqual((notif.kind, notif.url, notif.secret, notif.http_insecure),
                         ("webhook", "https://chat.example/hooks/abc", "from-env", True))
        self.assertEqual(notif.http_headers, (("X-A", "1"), ("X-B", "two")))
        self.assertIn("HOOK_SECRET", loaded.credential_vars)
        self.assertNotIn("abc", repr(notif))
        self.assertNotIn("from-env", repr(notif))

    def test_errors_name_the_line(self) -> None:
        for text, line, words in (
            ('[notif "c"]\n\tkind = webhook\n\turl = ftp://x/s3cret-key\n', 6, "http:// or https://"),
            ('[notif "c"]\n\tkind = webhook\n', 4, "url must be"),
            ('[notif "c"]\n\tkind = webhook\n\turl = https://\n', 6, "with a host"),
            ('[notif "c"]\n\tkind = sms\n', 5, "email or webhook"),
            ('[notif "c"]\n\tkind = webhook\n\turl = https://x/\n\thttp_header = nocolon\n', 7,
             "Name: value"),
        ):
            with self.assertRaises(ConfigError) as caught:
                load_environment(self.write(text))
            self.assertEqual(caught.exception.line, line, str(caught.exception))
            self.assertIn(words, str(caught.exception))
            # The URL (its path may be a key) is never repeated.
            self.assertNotIn("s3cret-key", str(caught.exception))

    def test_code_built(self) -> None:
        env, _ = validate(Environment(notifs={"c": Notif(kind="webhook", url="http://h:8080/x")}))
        self.assertEqual(env.notifs["c"].name, "c")
        for bad in (Notif(kind="webhook", url="http://h:99999/"),
                    Notif(kind="webhook", url="http://h/a b"),
                    Notif(kind="webhook", url="http://h/", http_headers=(("X", "a\r\nb"),)),
                    Notif(kind="webhook", url="http://h/", http_headers=(("X Y", "a"),))):
            with self.assertRaises(ConfigError):
                validate(Environment(notifs={"c": bad}))


class PayloadTests(unittest.SynchronousTestCase):
    def test_without_log_and_times(self) -> None:
        job = JobHttp(name="Ping")
        record = RunRecord("ping", 3, "canceled")
        document = json.loads(payload(job, record, None, "prod"))
        self.assertEqual(document["text"], "[prod] job_http ping #3: canceled")
        self.assertEqual(document["kind"], "job_http")
        self.assertIsNone(document["started"])
        self.assertIsNone(document["duration_s"])
        self.assertEqual(document["log_tail"], "")
        self.assertEqual(document["log_url"], "/karajo/app/log?kind=job_http&id=ping&counter=3")

    def test_tail_caps_and_bad_utf8(self) -> None:
        job = Job(name="x")
        record = RunRecord("x", 1, "failed", 10.0, 12.5)
        log = b"a\n" * 50 + b"\xff" + b"z" * 20000 + b"\n"
        tail = json.loads(payload(job, record, log))["log_tail"]
        self.assertLessEqual(len(tail.encode("utf-8")), 8 * 1024 + 3)
        self.assertTrue(tail.endswith("z\n"))

    def test_summary_one_line(self) -> None:
        job = Job(name="x")
        self.assertEqual(summary(job, RunRecord("x", 2, "success", 0.0, 61.0)),
                         "[karajo] job x #2: success after 1m1s")
        self.assertNotIn("\n", summary(job, RunRecord("x", 2, "success"), "a\nb"))

    def test_log_path_quotes(self) -> None:
        self.assertEqual(log_path("job", "a&b", 1), "/karajo/app/log?kind=job&id=a%26b&counter=1")

    def test_headers(self) -> None:
        sender = WebhookSender(reactor=None, clients=object())  # type: ignore[arg-type]
        notif = Notif(kind="webhook", url="http://h/", secret="k",
                      http_headers=(("Content-Type", "application/x-custom"), ("X-A", "1"),
                                    ("X-A", "2"), ("X-Karajo-Sign", "forged")))
        headers = sender.headers(notif, b"{}")
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/x-custom"])
        self.assertEqual(headers.getRawHeaders(b"x-a"), [b"1", b"2"])
        self.assertEqual(len(headers.getRawHeaders(b"x-karajo-sign")), 1)
        self.assertNotEqual(headers.getRawHeaders(b"x-karajo-sign"), [b"forged"])
