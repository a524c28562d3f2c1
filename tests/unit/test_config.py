"""Tests for L{karajo.config}: files to a validated environment."""

from __future__ import annotations

import datetime
import os
from datetime import timedelta

from twisted.trial.unittest import SynchronousTestCase

from karajo.config import listen_endpoint, load_environment, validate
from karajo.errors import ConfigError
from karajo.model import Environment, Job, JobHttp, Notif, User, job_id
from tests.helpers import config_tree

NOTIF = """
[notif "ops"]
kind = email
smtp_server = smtps://mail.example.com
from = karajo@example.com
to = ops@example.com
"""


class JobIdTests(SynchronousTestCase):
    def test_examples(self) -> None:
        """IDs are lower-cased, odd characters become _, a leading digit gets _."""
        self.assertEqual(job_id("Test job success"), "test_job_success")
        self.assertEqual(job_id("interval-1m"), "interval-1m")
        self.assertEqual(job_id("1st job"), "_1st_job")
        # Like the original: per-character lower case, then byte by byte.
        self.assertEqual(job_id("Ünïcode/../x"), "__n__code____x")
        self.assertEqual(job_id("日本"), "______")
        self.assertEqual(job_id("İstanbul"), "istanbul")
        self.assertEqual(job_id("\u212a"), "k")
        self.assertEqual(job_id("ΟΔΟΣ"), "________")
        self.assertEqual(job_id("_x"), "_x")


class LoadTests(SynchronousTestCase):
    def load(self, main: str, files: dict[str, str] | None = None, environ=None):
        base = self.mktemp()
        path = config_tree(base, main, files)
        return load_environment(path, environ=environ or {}), path

    def assertConfigError(self, main: str, line: int, reason: str, files=None, environ=None, filename=None):
        """Loading fails with FILE:LINE: reason."""
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, main, files)
        err = self.assertRaises(ConfigError, load_environment, path, environ or {})
        expected_file = os.path.join(base, "etc", "karajo", filename) if filename else path
        self.assertEqual(err.filename, expected_file)
        self.assertEqual(err.line, line, str(err))
        self.assertIn(reason, err.reason)
        self.assertTrue(str(err).startswith(f"{expected_file}:{line}: "))
        return err

    def test_defaults(self) -> None:
        """An empty [karajo] section gives every default of docs/configuration.md."""
        (loaded, path) = self.load("")
        env = loaded.environment
        self.assertEqual(env.name, "karajo")
        self.assertEqual(env.listen_address, "127.0.0.1:31937")
        self.assertEqual(env.http_timeout, timedelta(minutes=5))
        self.assertEqual(env.max_job_running, 1)
        self.assertIsNone(env.dir_public)
        self.assertEqual(env.secret, "")
        self.assertEqual(env.sign_max_age, timedelta(minutes=5))
        self.assertEqual(env.max_body_size, 1024 * 1024)
        self.assertEqual(loaded.warnings, ())

    def test_job_defaults(self) -> None:
        """A job with only a command has the documented defaults."""
        loaded, _ = self.load('[job "Test job"]\ncommand = true\n')
        job = loaded.environment.jobs["Test job"]
        self.assertEqual(job.id, "test_job")
        self.assertEqual(job.auth_kind, "hmac-sha256")
        self.assertEqual(job.header_sign, "X-Karajo-Sign")
        self.assertEqual(job.log_retention, 5)
        self.assertIsNone(job.interval)
        self.assertIsNone(job.schedule)
        self.assertEqual(job.commands, ("true",))

    def test_job_http_defaults(self) -> None:
        """A JobHttp with neither schedule nor interval runs every 30s with GET/query."""
        loaded, _ = self.load('[job.http "ping"]\nhttp_url = http://example.com/x\n')
        job = loaded.environment.http_jobs["ping"]
        self.assertEqual(job.interval, timedelta(seconds=30))
        self.assertEqual(job.http_method, "GET")
        self.assertEqual(job.http_request_type, "query")
        self.assertEqual(job.http_timeout, timedelta(0))
        self.assertFalse(job.http_insecure)

    def test_full_job(self) -> None:
        """Every [job] key is read, repeated keys accumulate in order."""
        loaded, _ = self.load(
            NOTIF
            + """
            [job "full"]
            description = A <b>full</b> job
            interval = 1h30m
            path = full
            auth_kind = github
            header_sign = X-Sig
            secret = abc
            log_retention = 3
            command = echo "a;b"
            command = echo two # comment
            timeout = 300ms
            timezone = Europe/Berlin
            notif_on_success = ops
            notif_on_failed = ops
            """
        )
        job = loaded.environment.jobs["full"]
        self.assertEqual(job.description, "A <b>full</b> job")
        self.assertEqual(job.interval, timedelta(hours=1, minutes=30))
        self.assertEqual(job.path, "/full")
        self.assertEqual(job.auth_kind, "github")
        self.assertEqual(job.header_sign, "X-Sig")
        self.assertEqual(job.secret, "abc")
        self.assertEqual(job.log_retention, 3)
        self.assertEqual(job.commands, ("echo a;b", "echo two"))
        self.assertEqual(job.timeout, timedelta(milliseconds=300))
        self.assertEqual(job.timezone, "Europe/Berlin")
        self.assertEqual(job.notif_on_success, ("ops",))
        self.assertEqual(loaded.environment.secret_of(job), "abc")

    def test_full_job_http(self) -> None:
        """Every [job.http] key is read; headers are parsed into pairs."""
        loaded, _ = self.load(
            """
            [job.http "Full Http"]
            schedule = hourly@5
            http_method = post
            http_url = /karajo/api/job_exec/run/x
            http_request_type = JSON
            http_header = X-A: 1
            http_header = Authorization: Bearer t:o:k
            http_timeout = -1s
            http_insecure
            """
        )
        job = loaded.environment.http_jobs["Full Http"]
        self.assertEqual(job.id, "full_http")
        self.assertEqual(job.http_method, "POST")
        self.assertEqual(job.http_request_type, "json")
        self.assertEqual(job.http_headers, (("X-A", "1"), ("Authorization", "Bearer t:o:k")))
        self.assertEqual(job.http_timeout, timedelta(seconds=-1))
        self.assertTrue(job.http_insecure)
        self.assertIsNone(job.interval)

    def test_job_d_order_and_skips(self) -> None:
        """Only regular *.conf files of job.d are read, in name order; hidden files and directories are skipped."""
        loaded, _ = self.load(
            "",
            {
                "job.d/b.conf": '[job "b"]\ncommand = b\n',
                "job.d/a.conf": '[job "a"]\ncommand = a\n',
                "job.d/.hidden.conf": '[job "hidden"]\ncommand = h\n',
                "job.d/notes.txt": '[job "txt"]\ncommand = t\n',
                "job.d/dir.conf/x.conf": '[job "dir"]\ncommand = d\n',
                "job_http.d/h.conf": '[job.http "h"]\nhttp_url = /x\n',
            },
        )
        self.assertEqual(list(loaded.environment.jobs), ["a", "b"])
        self.assertEqual(list(loaded.environment.http_jobs), ["h"])

    def test_duplicate_first_wins(self) -> None:
        """The first of two same-named jobs wins and the duplicate is warned about with file:line."""
        loaded, path = self.load(
            '[job "x"]\ncommand = first\n',
            {"job.d/a.conf": '\n[job "x"]\ncommand = second\n'},
        )
        self.assertEqual(loaded.environment.jobs["x"].commands, ("first",))
        (warning,) = loaded.warnings
        self.assertIn("a.conf:1: duplicate", warning)
        self.assertIn(f"{path}:3", warning)

    def test_unknown_key_warned(self) -> None:
        """An unknown key is a warning naming file and line, not a silent drop."""
        loaded, path = self.load('[job "x"]\ncommand = a\ncomand = b\n')
        (warning,) = loaded.warnings
        self.assertTrue(warning.startswith(f"{path}:5: unknown key 'comand'"), warning)

    def test_unknown_section_warned(self) -> None:
        """An unknown section is a warning with its line."""
        loaded, path = self.load("[jobs \"x\"]\ncommand = a\n")
        self.assertTrue(loaded.warnings[0].startswith(f"{path}:3: unknown section"))

    def test_users(self) -> None:
        """user.conf gives users with their bcrypt hashes."""
        h = "$2a$10$9XMRfqpnzY2421fwYm5dd.CidJf7dHHWIESeeNGXuajHRf.Lqzy7a"
        loaded, _ = self.load("", {"user.conf": f'[user "yourname"]\npassword = {h}\n'})
        self.assertEqual(loaded.environment.users["yourname"].password, h)

    def test_credential_from_environment(self) -> None:
        """smtp_password = $VAR is read from the environment."""
        loaded, _ = self.load(
            NOTIF + "smtp_user = $SMTP_USER\nsmtp_password = $SMTP_PASS\n",
            environ={"SMTP_USER": "u", "SMTP_PASS": "p4ss"},
        )
        notif = loaded.environment.notifs["ops"]
        self.assertEqual((notif.smtp_user, notif.smtp_password), ("u", "p4ss"))
        self.assertNotIn("p4ss", repr(notif))
        # named so the daemon can take them out of its environment
        self.assertEqual(loaded.credential_vars, {"SMTP_USER", "SMTP_PASS"})

    def test_missing_file(self) -> None:
        """A missing main file is an error, not a server on defaults."""
        path = os.path.join(self.mktemp(), "nope.conf")
        err = self.assertRaises(ConfigError, load_environment, path, {})
        self.assertEqual(str(err), f"{path}: no such file")

    # --- errors, each with FILE:LINE ---------------------------------

    def test_bad_syntax(self) -> None:
        """An unclosed section header is a syntax error on its line."""
        self.assertConfigError('[job "x"\ncommand = a\n', 3, "")

    def test_bad_duration(self) -> None:
        """A duration that is not Go syntax names the interval line."""
        self.assertConfigError('[job "x"]\ncommand = a\ninterval = 5 minutes\n', 5, "interval")

    def test_short_interval(self) -> None:
        """An interval under one second is refused rather than silently raised."""
        self.assertConfigError('[job "x"]\ncommand = a\ninterval = 500ms\n', 5, "at least 1s")

    def test_bad_boolean(self) -> None:
        """A boolean that is none of true/false/yes/no/on/off/1/0 is refused."""
        self.assertConfigError('[job.http "x"]\nhttp_url = /x\nhttp_insecure = maybe\n', 5, "")

    def test_bad_number(self) -> None:
        """A number that is not an integer is refused."""
        self.assertConfigError("max_job_running = many\n", 3, "")

    def test_zero_max_job_running(self) -> None:
        """max_job_running below 1 would never run anything."""
        self.assertConfigError("max_job_running = 0\n", 3, "max_job_running")

    def test_bad_http_method(self) -> None:
        """Only GET, POST, PUT and DELETE are accepted."""
        self.assertConfigError('[job.http "x"]\nhttp_url = /x\nhttp_method = PATCH\n', 5, "http_method")

    def test_bad_request_type(self) -> None:
        """Only query, form and json are accepted."""
        self.assertConfigError(
            '[job.http "x"]\nhttp_url = /x\nhttp_method = POST\nhttp_request_type = xml\n',
            6, "http_request_type",
        )

    def test_json_with_get(self) -> None:
        """A body type needs a method that carries a body."""
        self.assertConfigError('[job.http "x"]\nhttp_url = /x\nhttp_request_type = json\n', 5, "POST or PUT")

    def test_bad_url(self) -> None:
        """http_url must be http(s) or a path on this server."""
        self.assertConfigError('[job.http "x"]\nhttp_url = ftp://h/x\n', 4, "http_url")

    def test_errors_never_show_credentials(self) -> None:
        """A header line missing its colon or a bad URL with a password is not echoed."""
        err = self.assertConfigError(
            '[job.http "x"]\nhttp_url = /x\nhttp_header = Authorization Bearer TOPSECRET\n', 5,
            "http_header: expected 'Name: value' (no ':')")
        self.assertNotIn("TOPSECRET", str(err))
        err = self.assertConfigError('[job.http "x"]\nhttp_url = ftp://u:TOPSECRET@h/x\n', 4,
                                     "http_url: 'ftp://u:********@h/x'")
        self.assertNotIn("TOPSECRET", str(err))
        for url in ("http://u:TOPSECRET@[::1/x", "http://u:TOPSECRET@h:99999/x",
                    "http://u:TOPSECRET@exa mple.com/x", "http://[", "http://x]/"):
            err = self.assertConfigError(f'[job.http "x"]\nhttp_url = {url}\n', 4, "http_url: ")
            self.assertNotIn("TOPSECRET", str(err))

    def test_empty_value_is_the_default(self) -> None:
        """C{key =} with no value leaves a scalar key at its default."""
        loaded, _ = self.load(
            "listen_address =\nmax_job_running =\nhttp_timeout =\n"
            '[job "j"]\ncommand = true\nheader_sign =\nauth_kind =\nlog_retention =\ninterval =\n'
            '[job.http "h"]\nhttp_url = /x\nhttp_method =\nhttp_request_type =\nhttp_insecure =\n'
        )
        env = loaded.environment
        self.assertEqual(env.listen_address, "127.0.0.1:31937")
        self.assertEqual(env.max_job_running, 1)
        self.assertEqual(env.http_timeout, datetime.timedelta(minutes=5))
        job = env.jobs["j"]
        self.assertEqual((job.header_sign, job.auth_kind, job.log_retention, job.interval),
                         ("X-Karajo-Sign", "hmac-sha256", 5, None))
        http = env.http_jobs["h"]
        self.assertEqual((http.http_method, http.http_request_type, http.http_insecure),
                         ("GET", "query", False))
        self.assertEqual(http.interval, datetime.timedelta(seconds=30))

    def test_named_karajo_section_is_not_karajo(self) -> None:
        """[karajo "prod"] is another section (git-config): warned about, not read."""
        loaded, path = self.load('[karajo "prod"]\nname = prod\n')
        self.assertEqual(loaded.environment.name, "karajo")
        self.assertIn(f'{path}:3: unknown section [karajo "prod"], ignored', loaded.warnings)

    def test_user_without_password(self) -> None:
        """A user with no password says so, and the misspelt key is shown with the error."""
        err = self.assertConfigError(
            "", 1, '[user "ann"] has no password', filename="user.conf",
            files={"user.conf": '[user "ann"]\npasswd = $2b$12$' + "a" * 53 + "\n"})
        self.assertTrue(any("unknown key 'passwd'" in w for w in err.warnings), err.warnings)

    def test_missing_url(self) -> None:
        """A JobHttp without a URL is reported at its section."""
        self.assertConfigError('[job.http "x"]\ninterval = 1m\n', 3, "http_url")

    def test_bad_auth_kind(self) -> None:
        """auth_kind must be one the server can verify."""
        self.assertConfigError('[job "x"]\ncommand = a\nauth_kind = basic\n', 5, "auth_kind")

    def test_bad_schedule(self) -> None:
        """An unparsable schedule is a config error on its line."""
        self.assertConfigError('[job "x"]\ncommand = a\nschedule = fortnightly\n', 5, "schedule")

    def test_bad_timezone(self) -> None:
        """An unknown zone is a config error on its line."""
        self.assertConfigError('[job "x"]\ncommand = a\ntimezone = Mars/Olympus\n', 5, "timezone")

    def test_no_command(self) -> None:
        """A job with nothing to run is reported at its section."""
        self.assertConfigError('[job "x"]\ninterval = 1m\n', 3, "no command")

    def test_unknown_notif(self) -> None:
        """notif_on_* must name a defined [notif]."""
        self.assertConfigError('[job "x"]\ncommand = a\nnotif_on_failed = pager\n', 5, "pager")

    def test_unset_credential(self) -> None:
        """A $VAR credential whose variable is unset fails at load."""
        self.assertConfigError(NOTIF + "smtp_password = $NOPE\n", 8, "NOPE is not set")

    def test_duplicate_path(self) -> None:
        """Two jobs on one path: the second one's path line is named."""
        base = os.path.abspath(self.mktemp())
        path = config_tree(
            base, '[job "a"]\ncommand = a\npath = /p\n',
            {"job.d/b.conf": '[job "b"]\ncommand = b\npath = p\n'},
        )
        err = self.assertRaises(ConfigError, load_environment, path, {})
        self.assertTrue(str(err).startswith(os.path.join(base, "etc/karajo/job.d/b.conf") + ":3: path"))

    def test_same_id(self) -> None:
        """Two names that normalise to one ID would share log directories."""
        self.assertConfigError('[job "A b"]\ncommand = a\n[job "a_b"]\ncommand = b\n', 5, "same ID")

    def test_bad_listen_address(self) -> None:
        """listen_address must be host:port."""
        self.assertConfigError("listen_address = localhost\n", 3, "listen_address")

    def test_bad_notif(self) -> None:
        """smtp_server needs an smtps:// or smtp+starttls:// URL."""
        self.assertConfigError('[notif "n"]\nkind = email\nsmtp_server = mail.example.com\n', 5, "smtp_server")

    def test_bad_user_hash(self) -> None:
        """A clear-text password in user.conf is refused, without echoing it."""
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, "", {"user.conf": '[user "u"]\npassword = s3cret\n'})
        err = self.assertRaises(ConfigError, load_environment, path, {})
        self.assertEqual((err.filename, err.line), (os.path.join(base, "etc/karajo/user.conf"), 2))
        self.assertNotIn("s3cret", str(err))

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 names the line of the bad byte."""
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, "")
        with open(path, "ab") as f:
            f.write(b"name = \xff\n")
        err = self.assertRaises(ConfigError, load_environment, path, {})
        self.assertEqual(err.line, 3)


class CodeEnvironmentTests(SynchronousTestCase):
    def test_names_from_keys(self) -> None:
        """A code-built environment names its jobs after their dict keys, as the original's code API does."""
        env, warnings = validate(
            Environment(
                jobs={"interval-1m-code": Job(call=lambda log, req: None, interval=timedelta(minutes=1))},
                http_jobs={"ping": JobHttp(http_url="/x")},
            )
        )
        self.assertEqual(env.jobs["interval-1m-code"].name, "interval-1m-code")
        self.assertEqual(env.http_jobs["ping"].interval, timedelta(seconds=30))
        self.assertEqual(warnings, ())

    def test_code_errors(self) -> None:
        """Code-built values get the same checks, reported against <code>."""
        err = self.assertRaises(ConfigError, validate, Environment(jobs={"x": Job()}))
        self.assertTrue(str(err).startswith("<code>"))
        self.assertIn("no command", str(err))

    def test_schedule_wins_warning(self) -> None:
        """Both schedule and interval: a warning says the schedule is used."""
        _, warnings = validate(
            Environment(jobs={"x": Job(commands=["true"], schedule="minutely", interval=timedelta(minutes=1))})
        )
        self.assertIn("the schedule is used", warnings[0])

    def test_notif_and_user_from_code(self) -> None:
        """Notifs and users can be defined in code too."""
        env, _ = validate(
            Environment(
                notifs={"n": Notif(smtp_server="smtp+starttls://h", sender="a@b", to=["c@d"])},
                users={"u": User(name="u", password="$2b$12$" + "x" * 53)},
                jobs={"x": Job(commands=["true"], notif_on_failed=["n"])},
            )
        )
        self.assertEqual(env.notifs["n"].name, "n")


class ListenEndpointTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """host:port, :port and [v6]:port become endpoint descriptions."""
        self.assertEqual(listen_endpoint("127.0.0.1:31937"), "tcp:31937:interface=127.0.0.1")
        self.assertEqual(listen_endpoint(":8080"), "tcp:8080")
        self.assertEqual(listen_endpoint("[::1]:80"), r"tcp6:80:interface=\:\:1")
        for bad in ("", "host", "1.2.3.4:99999", "a:b", ":"):
            self.assertRaises(ValueError, listen_endpoint, bad)


class ReviewFixTests(SynchronousTestCase):
    def test_duplicate_notif_warned(self) -> None:
        """A second [notif] of the same name is reported, the first kept."""
        path = config_tree(self.mktemp(), NOTIF + NOTIF.replace("ops@", "other@"))
        loaded = load_environment(path, {})
        self.assertEqual(loaded.environment.notifs["ops"].to, ("ops@example.com",))
        (warning,) = loaded.warnings
        self.assertIn('duplicate [notif "ops"] ignored', warning)

    def test_malformed_bcrypt_refused(self) -> None:
        """A password that only looks like a bcrypt hash is refused at load, not at every login."""
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, "", {"user.conf": '[user "u"]\npassword = $2b$nonsense\n'})
        err = self.assertRaises(ConfigError, load_environment, path, {})
        self.assertIn("bcrypt hash", err.reason)

    def test_code_dir_base_made_absolute(self) -> None:
        """A code-built environment's relative dir_base is made absolute once, at validation."""
        env, _ = validate(Environment(dir_base="relative/dir", jobs={"x": Job(commands=["true"])}))
        self.assertEqual(env.dir_base, os.path.abspath("relative/dir"))
