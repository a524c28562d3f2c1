"""
L{karajo.scrub} in a real process: a secret named by C{$VAR} in the config
is gone from the daemon's environment, C{/proc/PID/environ} included,
once twistd's options are parsed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import config_tree

SECRET = "p4ss-0f-the-smtp-" + "x" * 20

_CHILD = textwrap.dedent("""
    import json, os, sys
    from karajo import tap
    options = tap.Options()
    options.parseOptions(["--config", sys.argv[1]])
    with open("/proc/self/environ", "rb") as f:
        block = f.read()
    print(json.dumps({
        "in_proc": sys.argv[2].encode() in block,
        "in_os": "KARAJO_TEST_SMTP_PASS" in os.environ,
        "user_in_os": "KARAJO_TEST_SMTP_USER" in os.environ,
        "kept": os.environ.get("KARAJO_TEST_KEEP"),
        "kept_in_proc": b"KARAJO_TEST_KEEP=keep-me" in block,
        "password": options.loaded.environment.notifs["ops"].smtp_password == sys.argv[2],
    }))
""")


class ScrubTests(SynchronousTestCase):
    def test_credential_gone_from_proc_environ(self) -> None:
        """
        After loading, the variable is out of os.environ and its value out
        of /proc/self/environ (the initial block), while the loaded config
        keeps it and unrelated variables stay.
        """
        path = config_tree(self.mktemp(), (
            '[notif "ops"]\nkind = email\nsmtp_server = smtps://mail.example.com\n'
            "from = karajo@example.com\nto = ops@example.com\n"
            "smtp_user = $KARAJO_TEST_SMTP_USER\nsmtp_password = $KARAJO_TEST_SMTP_PASS\n"
        ))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(sys.path),
            "KARAJO_TEST_SMTP_PASS": SECRET,
            "KARAJO_TEST_SMTP_USER": "mailer",
            "KARAJO_TEST_KEEP": "keep-me",
        }
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, path, SECRET],
            env=env, capture_output=True, timeout=60, check=False,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        result = json.loads(done.stdout.splitlines()[-1])
        self.assertEqual(result, {
            "in_proc": False, "in_os": False, "user_in_os": False,
            "kept": "keep-me", "kept_in_proc": True, "password": True,
        })
