"""
Fuzz the parsers that read untrusted or operator-written input: the config
reader (git-config syntax, then the whole loader on generated file trees),
the schedule parser, the log-name parser and signature verification with
arbitrary header bytes.

The only exceptions allowed are the documented ones (L{ConfigError},
L{ValueError} for a schedule); every config error must name a file and a
line.  A few hundred examples per target in CI, 10,000 with
C{KARAJO_RELIABILITY=long}; the number each target ran is reported.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import shutil
import time
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from karajo import gitconfig
from karajo.config import JOB_HTTP_KEYS, JOB_KEYS, KARAJO_KEYS, NOTIF_KEYS, load_environment
from karajo.errors import ConfigError
from karajo.joblog import STATUSES, LogName, parse_log_name
from karajo.schedule import parse_schedule
from karajo.signature import Verdict, verify

from .harness import report, scale

EXAMPLES = scale(300, 10000)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
COUNTS: dict[str, int] = {}


def count(target: str) -> None:
    COUNTS[target] = COUNTS.get(target, 0) + 1


# --- config ------------------------------------------------------------------

_SYNTAX = st.sampled_from(
    ['[', ']', '"', '\\', '\\\n', '\n', ' ', '\t', '=', '#', ';', '.', 'a', 'job', 'karajo',
     '[job "x"]', '[karajo]', 'command', 'interval', 'key = value', '\r\n', '\\"', '\\t',
     '\\q', '"unterminated', '\x00', '\u00e9', '\ufeff', '[job.http "y"]', 'x = "a;b"']
)
_VALUES = st.sampled_from([
    "", "0", "1", "-1", "3", "lots", "99999999999999999999999", "1s", "90s", "1m", "1h30m",
    "300ms", "-1s", "1 minute", "0.5s", "true", "false", "yes", "perhaps", "minutely",
    "hourly@5", "daily@02:30", "weekly@mon,fri@10:00", "monthly@31@23:59", "*/5 * * * *",
    "0 0 30 2 *", "every tuesday", "UTC", "Europe/Berlin", "Mars/Base", "/hook", "hook",
    "/karajo/api/environment", "http://127.0.0.1:1/x", "ftp://x", "GET", "POST", "PATCH",
    "query", "json", "form", "xml", "hmac-sha256", "github", "sourcehut", "plain",
    "X-A: b", "Bad Header", "Authorization: Bearer t", "$KARAJO_FUZZ_UNSET", "$HOME",
    "smtps://mail.example", "smtp+starttls://mail.example:587", "smtp://x", "a@b", "email",
    "127.0.0.1:0", ":31937", "[::1]:31937", "nowhere", '"quoted # not a comment"', "a # b",
    "echo hi", "ops", "$2b$04$abcdefghijklmnopqrstuu", "a\\", "\\n",
])
_KEYS = sorted(set(KARAJO_KEYS) | set(JOB_KEYS) | set(JOB_HTTP_KEYS) | set(NOTIF_KEYS)
               | {"password", "unknown_key", "Command", "INTERVAL"} - {"dir_base"})
#: plausible values per key, so that generated trees often load and the
#: loader's later stages (validation, cross references) are reached too
_GOOD = {
    "interval": ["1s", "90s", "1m", "1h30m"], "timeout": ["1s", "5m"],
    "http_timeout": ["0", "-1s", "30s"], "sign_max_age": ["5m", "1s"],
    "log_retention": ["1", "5", "100"], "max_job_running": ["1", "3"],
    "max_body_size": ["0", "1048576"], "smtp_insecure": ["true", "no"],
    "http_insecure": ["1", "off"], "schedule": ["minutely", "hourly@5,35", "daily@02:30",
    "weekly@mon,fri@10:00", "monthly@1,15@00:00", "*/5 * * * *"],
    "timezone": ["UTC", "Europe/Berlin"], "auth_kind": ["hmac-sha256", "github", "sourcehut"],
    "http_method": ["GET", "POST", "PUT", "DELETE"], "http_request_type": ["query", "json", "form"],
    "http_url": ["/karajo/api/environment", "http://127.0.0.1:1/x"], "http_header": ["X-A: b"],
    "command": ["echo hi", '"echo a; echo b"'], "path": ["/hook", "/a/b"],
    "notif_on_success": ["ops"], "notif_on_failed": ["ops"], "kind": ["email"],
    "smtp_server": ["smtps://mail.example", "smtp+starttls://mail.example:587"],
    "from": ["karajo <k@example.com>"], "to": ["ops@example.com"], "smtp_user": ["$HOME", "u"],
    "smtp_password": ["$HOME", "pw"], "listen_address": ["127.0.0.1:31937", ":8080"],
    "password": ["$2b$04$" + "a" * 53],
}
_HEADERS = st.sampled_from(
    ["karajo", 'job "a"', 'job "A b"', 'job.http "h"', 'job "a"', 'notif "ops"',
     'user "admin"', 'job "1x"', 'job.http "a"', 'job "c"', 'job.http "d"', 'notif "ops"']
    * 5 + ["job", "unknown", 'notif "n"', 'job "\\"', "job.http"]
)


#: hypothesis favours the bounds of st.integers(); this is a fair 1-in-30
_ONE_IN_30 = st.sampled_from([False] * 29 + [True])


@st.composite
def config_files(draw) -> dict[str, str | bytes]:
    """A config tree: the main file (dir_base is prepended) and maybe others."""

    def value(key: str) -> str:
        roll = draw(st.integers(0, 9))
        if roll < 7 and key in _GOOD:
            return draw(st.sampled_from(_GOOD[key]))
        if roll < 9:
            return draw(_VALUES)
        return draw(st.text(max_size=20))

    def section() -> str:
        header = draw(_HEADERS)
        lines = [f"[{header}]"]
        if header.startswith("job") and draw(st.integers(0, 4)):
            lines.append("command = true" if header.startswith("job ") else "http_url = /x")
        if header.startswith("notif") and draw(st.integers(0, 4)):
            lines += ["smtp_server = smtps://m.example", "from = a@b", "to = c@d"]
        for _ in range(draw(st.integers(0, 6))):
            key = draw(st.sampled_from(_KEYS))
            if draw(st.sampled_from([False] * 19 + [True])):
                lines.append(key)  # a bare key: boolean true
            else:
                lines.append(f"{key} = {value(key.lower())}")
        return "\n".join(lines)

    def text() -> str:
        if draw(st.sampled_from([False] * 9 + [True])):  # raw syntax soup
            return draw(st.lists(_SYNTAX, max_size=30).map("".join))
        return "\n".join(section() for _ in range(draw(st.integers(0, 4))))

    files: dict[str, str | bytes] = {"karajo.conf": text()}
    for name in ("job.d/a.conf", "job_http.d/b.conf", "user.conf"):
        if draw(st.booleans()):
            files[name] = text()
    if draw(_ONE_IN_30):
        files["job.d/z.conf"] = b"[job \"bin\"]\ncommand = \xff\xfe\n"
    return files


# --- schedules ---------------------------------------------------------------

_SCHEDULE_PARTS = st.sampled_from(
    ["minutely", "hourly", "daily", "weekly", "monthly", "@", ",", ":", "00", "0", "5", "59",
     "60", "23", "24", "31", "32", "1", "-1", "mon", "Sun", "friday", "xyz", " ", "*", "*/5",
     "1-5", "MON-FRI", "?", "L", "W", "#", "/", "02:30", "25:00", "12:60", "\t", "ǅ", "１"]
)
_ZONES = st.sampled_from(
    [None, ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"),
     ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Pacific/Chatham"), ZoneInfo("Asia/Kathmandu")]
)
_INSTANTS = st.datetimes(
    min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2099, 1, 1),
    timezones=st.just(datetime.UTC),
)

# --- signatures --------------------------------------------------------------

_HEADER_NAMES = ["X-Karajo-Sign", "X-Hub-Signature-256", "X-Hub-Signature",
                 "X-Payload-Signature", "X-Payload-Nonce", "X-GitHub-Delivery", "X-Custom"]
_RAW_VALUES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100),
    st.builds(lambda h: h.encode(), st.text("0123456789abcdefABCDEF", min_size=40, max_size=64)),
    st.builds(lambda p, h: p + h.encode(),
              st.sampled_from([b"sha256=", b"sha1=", b"SHA256=", b"sha256==", b" sha256=", b"md5="]),
              st.text("0123456789abcdef \t", max_size=70)),
    st.builds(lambda b: b.encode(), st.text("ABCDEFabcdef0123456789+/=", max_size=100)),
)


class FuzzTests(TestCase):
    """
    Each C{fuzz_*} method is a hypothesis test; C{test_*} runs it and
    reports how many examples it ran.
    """

    def run_fuzz(self, target: str) -> None:
        COUNTS.pop(target, None)
        started = time.monotonic()
        getattr(self, "fuzz_" + target)()
        report(
            "fuzz",
            target=target,
            examples=COUNTS.get(target, 0),
            unexpected_exceptions=0,
            seconds=f"{time.monotonic() - started:.1f}",
        )
        self.assertGreaterEqual(COUNTS.get(target, 0), min(EXAMPLES, 100))

    def test_gitconfig_parse(self) -> None:
        self.run_fuzz("gitconfig_parse")

    def test_load_environment(self) -> None:
        self.run_fuzz("load_environment")

    def test_parse_schedule(self) -> None:
        self.run_fuzz("parse_schedule")

    def test_parse_log_name(self) -> None:
        self.run_fuzz("parse_log_name")

    def test_log_name_round_trip(self) -> None:
        self.run_fuzz("log_name_round_trip")

    def test_verify_arbitrary_headers(self) -> None:
        self.run_fuzz("signature_verify")

    def test_verify_good_signatures(self) -> None:
        self.run_fuzz("signature_verify_good")

    # -- config

    @FUZZ
    @given(st.text(max_size=300) | st.lists(_SYNTAX, max_size=60).map("".join))
    def fuzz_gitconfig_parse(self, text: str) -> None:
        """Any text parses or fails with a ConfigError naming a line of it."""
        count("gitconfig_parse")
        try:
            sections = gitconfig.parse(text, "f.conf")
        except ConfigError as e:
            self.assertIsInstance(e.line, int, str(e))
            self.assertTrue(1 <= e.line <= text.count("\n") + 1, str(e))
            self.assertEqual(e.filename, "f.conf")
            self.assertTrue(str(e).startswith(f"f.conf:{e.line}: "))
            return
        for section in sections:
            for entry in section.entries:
                self.assertTrue(1 <= entry.line <= text.count("\n") + 1)

    @FUZZ
    @given(config_files())
    def fuzz_load_environment(self, files: dict[str, str | bytes]) -> None:
        """
        A generated config tree loads or fails with a ConfigError naming one
        of its files and a line in it; every warning names a file and line.
        """
        count("load_environment")
        base = self._tree
        shutil.rmtree(base, ignore_errors=True)
        etc = os.path.join(base, "etc", "karajo")
        written = {}
        for rel, content in files.items():
            path = os.path.join(etc, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if rel == "karajo.conf":
                content = f"[karajo]\ndir_base = {base}\n" + content
            data = content.encode() if isinstance(content, str) else content
            with open(path, "wb") as f:
                f.write(data)
            written[path] = data.count(b"\n") + 1
        main = os.path.join(etc, "karajo.conf")
        try:
            loaded = load_environment(main, environ={"HOME": "/root"})
        except ConfigError as e:
            self.assertIn(e.filename, written, str(e))
            self.assertIsInstance(e.line, int, str(e))
            self.assertTrue(1 <= e.line <= written[e.filename], str(e))
            self.assertTrue(str(e).startswith(f"{e.filename}:{e.line}: "), str(e))
            return
        for warning in loaded.warnings:
            self.assertRegex(warning, r"^/.+:\d+: ")

    @property
    def _tree(self) -> str:
        if not hasattr(self, "_tree_path"):
            self._tree_path = os.path.abspath(self.mktemp())
        return self._tree_path

    # -- schedules

    @FUZZ
    @given(
        st.lists(_SCHEDULE_PARTS, max_size=12).map("".join) | st.text(max_size=40),
        _ZONES,
        _INSTANTS,
    )
    def fuzz_parse_schedule(self, text: str, zone, instant: datetime.datetime) -> None:
        """A schedule parses or raises ValueError; a parsed one always has a next fire."""
        count("parse_schedule")
        try:
            schedule = parse_schedule(text, zone)
        except ValueError:
            return
        after = schedule.next_after(instant)
        self.assertIsNotNone(after.tzinfo)
        self.assertGreater(after, instant)
        self.assertIsInstance(schedule.describe(), str)

    # -- log names

    @FUZZ
    @given(
        st.one_of(st.sampled_from(["job", "a.b", "x", "0", "j-1_"]), st.text(max_size=12)),
        st.one_of(
            st.text(max_size=40),
            st.tuples(
                st.sampled_from(["", ".", "..", "x"]),
                st.text("0123456789+-_ ٣\u00b2", max_size=25),
                st.sampled_from(["", ".", ".success", ".failed", ".canceled", ".running",
                                 ".success.", ".SUCCESS", ".failed.x"]),
            ),
        ),
    )
    def fuzz_parse_log_name(self, job_id: str, rest) -> None:
        """Never raises; whatever it accepts formats back to the same name."""
        count("parse_log_name")
        if isinstance(rest, tuple):
            middle, number, tail = rest
            filename = job_id + "." + middle + number + tail if middle == "x" else job_id + middle + number + tail
        else:
            filename = rest
        name = parse_log_name(job_id, filename)
        if name is not None:
            self.assertEqual(name.filename, filename)
            self.assertEqual(name.job_id, job_id)

    @FUZZ
    @given(
        st.text(st.characters(blacklist_characters="/\x00"), min_size=1, max_size=20),
        st.integers(1, 10**30),
        st.sampled_from((None,) + STATUSES),
    )
    def fuzz_log_name_round_trip(self, job_id: str, counter: int, status) -> None:
        count("log_name_round_trip")
        name = LogName(counter, job_id, status)
        self.assertEqual(parse_log_name(job_id, name.filename), name)

    # -- signatures

    @FUZZ
    @given(
        st.sampled_from(["hmac-sha256", "github", "sourcehut", "HMAC-SHA256 ", "", "none"]),
        st.one_of(st.text(max_size=20), st.binary(max_size=20)),
        st.binary(max_size=300),
        st.dictionaries(st.sampled_from(_HEADER_NAMES), _RAW_VALUES, max_size=7),
        st.sampled_from(["X-Karajo-Sign", "X-Custom", "x-karajo-sign", ""]),
    )
    def fuzz_signature_verify(self, kind, secret, body, headers, header_sign) -> None:
        """Arbitrary header bytes never raise and never verify."""
        count("signature_verify")
        lowered = {k.lower(): v for k, v in headers.items()}
        verdict = verify(kind, secret, body, lambda name: lowered.get(name.lower()), header_sign)
        self.assertIsInstance(verdict, Verdict)
        self.assertIsInstance(verdict.reason, str)
        self.assertFalse(verdict.ok, (kind, headers))

    @FUZZ
    @given(
        st.text(min_size=1, max_size=20),
        st.binary(max_size=300),
        st.sampled_from(["{}", "sha256={}", "SHA256={}", " {} ", "sha256={}\t"]),
        st.booleans(),
    )
    def fuzz_signature_verify_good(self, secret, body, spelling, upper) -> None:
        """A right hmac-sha256 signature verifies in every accepted spelling."""
        count("signature_verify_good")
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        value = spelling.format(digest.upper() if upper else digest).encode()
        verdict = verify("hmac-sha256", secret, body, lambda n: value if n.lower() == "x-karajo-sign" else None)
        self.assertTrue(verdict.ok, verdict.reason)
        github = verify("github", secret, body,
                        lambda n: value if n.lower() == "x-hub-signature-256" else None)
        self.assertTrue(github.ok, github.reason)
