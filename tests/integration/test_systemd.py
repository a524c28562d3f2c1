"""
The systemd files in C{etc/systemd/}: the unit parsed and checked for what
karajo needs, then (where systemd's tools exist) C{systemd-analyze verify}
on it and C{systemd-sysusers} / C{systemd-tmpfiles} on the snippets, run
against a scratch root directory.
"""

from __future__ import annotations

import configparser
import os
import shutil
import stat
import subprocess
import sys

from twisted.trial import unittest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEMD = os.path.join(TOP, "etc", "systemd")
UNIT = os.path.join(SYSTEMD, "karajo.service")


def read_unit(path: str = UNIT) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    with open(path, encoding="utf-8") as f:
        parser.read_file(f)
    return parser


class UnitFileTests(unittest.TestCase):
    def test_required_keys(self) -> None:
        unit = read_unit()
        self.assertEqual(set(unit.sections()), {"Unit", "Service", "Install"})
        service = unit["Service"]
        self.assertEqual(
            service["ExecStart"],
            "/usr/bin/twistd -n --pidfile= karajo --config /etc/karajo/karajo.conf",
        )
        expected = {
            "User": "karajo",
            "KillMode": "control-group",
            "Restart": "on-failure",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "read-only",
            "PrivateTmp": "yes",
            "WorkingDirectory": "/",
            # Connections are capped from RLIMIT_NOFILE (karajo.web.limits).
            "LimitNOFILE": "65536",
        }
        for key, value in expected.items():
            self.assertEqual(service.get(key), value, key)
        writable = service["ReadWritePaths"].split()
        for path in ("/var/lib/karajo", "/var/log/karajo", "/run/karajo"):
            self.assertIn(path, writable)
        self.assertEqual(unit["Install"]["WantedBy"], "multi-user.target")
        # Jobs must still be able to run: nothing that forbids exec or
        # writable+executable memory, or limits system calls.
        for key in ("NoExecPaths", "MemoryDenyWriteExecute", "SystemCallFilter", "PrivateUsers"):
            self.assertNotIn(key, service)

    def test_sysusers_and_tmpfiles(self) -> None:
        with open(os.path.join(SYSTEMD, "karajo.sysusers"), encoding="utf-8") as f:
            lines = [line.split() for line in f if line.strip() and not line.startswith("#")]
        self.assertEqual(lines[0][:2], ["u", "karajo"])
        with open(os.path.join(SYSTEMD, "karajo.tmpfiles"), encoding="utf-8") as f:
            entries = {line.split()[1]: line.split() for line in f
                       if line.strip() and not line.startswith("#")}
        for path in ("/var/lib/karajo", "/var/log/karajo", "/run/karajo"):
            self.assertEqual(entries[path][0], "d")
            self.assertEqual(entries[path][2:4], ["0700", "karajo"])

    def test_systemd_analyze_verify(self) -> None:
        tool = shutil.which("systemd-analyze")
        if tool is None:
            raise unittest.SkipTest("systemd-analyze is not installed")
        # verify checks that ExecStart's program exists: point it at the
        # twistd of this environment in a copy, keep everything else.
        twistd = shutil.which("twistd") or os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.access(twistd, os.X_OK):
            raise unittest.SkipTest("no twistd to stand in for /usr/bin/twistd")
        scratch = os.path.abspath(self.mktemp())
        os.makedirs(scratch)
        with open(UNIT, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("ExecStart=/usr/bin/twistd ", text)
        copy = os.path.join(scratch, "karajo.service")
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text.replace("ExecStart=/usr/bin/twistd ", f"ExecStart={twistd} "))
        result = subprocess.run([tool, "verify", copy], capture_output=True, text=True,
                                timeout=60)
        output = result.stdout + result.stderr
        if "Failed to" in output and "bus" in output.lower():
            raise unittest.SkipTest(f"systemd-analyze cannot run here: {output.strip()}")
        self.assertEqual(result.returncode, 0, output)
        self.assertNotIn("Unknown key", output)
        self.assertNotIn("Unknown section", output)
        self.assertNotIn("ignoring", output.lower())

    def test_snippets_applied_to_scratch_root(self) -> None:
        sysusers = shutil.which("systemd-sysusers")
        tmpfiles = shutil.which("systemd-tmpfiles")
        if sysusers is None or tmpfiles is None:
            raise unittest.SkipTest("systemd-sysusers / systemd-tmpfiles are not installed")
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to chown in the scratch root")
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        for command in ([sysusers, f"--root={root}", os.path.join(SYSTEMD, "karajo.sysusers")],
                        [tmpfiles, f"--root={root}", "--create",
                         os.path.join(SYSTEMD, "karajo.tmpfiles")]):
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with open(os.path.join(root, "etc", "passwd"), encoding="utf-8") as f:
            [entry] = [line.split(":") for line in f if line.startswith("karajo:")]
        uid = int(entry[2])
        self.assertNotEqual(uid, 0)
        for path in ("var/lib/karajo", "var/log/karajo", "run/karajo"):
            info = os.stat(os.path.join(root, path))
            self.assertEqual((info.st_uid, stat.S_IMODE(info.st_mode)), (uid, 0o700), path)
