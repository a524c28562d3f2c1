"""The shipped examples load and build a server (file and code jobs together)."""

from __future__ import annotations

import os
import runpy
import shutil

from twisted.application.service import IService
from twisted.trial.unittest import SynchronousTestCase

from karajo.config import load_environment
from karajo.resources import examples_dir

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ExampleConfigTests(SynchronousTestCase):
    def test_example_config_loads(self) -> None:
        """etc/karajo/karajo.conf loads without warnings, with the README's example jobs."""
        base = os.path.abspath(self.mktemp())
        shutil.copytree(examples_dir(), os.path.join(base, "etc"))
        cwd = os.getcwd()
        os.chdir(base)
        self.addCleanup(os.chdir, cwd)
        loaded = load_environment("etc/karajo/karajo.conf", {})
        self.assertEqual(loaded.warnings, ())
        env = loaded.environment
        self.assertEqual(env.dir_base, base)
        self.assertEqual(
            sorted(env.jobs),
            ["hello-world", "interval-1m", "schedule-hourly-5m", "webhook-github"],
        )
        self.assertEqual(sorted(env.http_jobs), ["interval-90s", "schedule-hourly-6m"])

    def test_tac_adds_code_jobs(self) -> None:
        """examples/karajo_example.tac builds one server with file-defined and code-defined jobs."""
        base = os.path.abspath(self.mktemp())
        shutil.copytree(examples_dir(), os.path.join(base, "etc"))
        cwd = os.getcwd()
        os.chdir(base)
        self.addCleanup(os.chdir, cwd)
        namespace = runpy.run_path(os.path.join(CHECKOUT, "examples", "karajo_example.tac"))
        service = IService(namespace["application"])
        (karajo,) = list(service)
        self.assertIn("interval-1m", karajo.jobs)
        self.assertIn("interval-1m-code", karajo.jobs)
        self.assertIn("webhook-github-code", karajo.jobs)
        self.assertIn("schedule-6m-code", karajo.http_jobs)
        self.assertIsNotNone(karajo.jobs["webhook-github-code"].runner.job.call)


def _readme_ini_block(marker: str) -> str:
    """The first C{```ini} block of the README that holds C{marker}."""
    import re

    with open(os.path.join(CHECKOUT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```ini\n(.*?)```", f.read(), re.S)
    return next(b for b in blocks if marker in b)


class ReadmeNotifTests(SynchronousTestCase):
    def test_readme_notif_example_loads(self) -> None:
        """The [notif] example of the README is a valid configuration, as written."""
        from tests.helpers import config_tree

        block = _readme_ini_block('[notif "')
        path = config_tree(self.mktemp(), block)
        loaded = load_environment(path, {"KARAJO_SMTP_PASSWORD": "pw"})
        self.assertEqual(loaded.warnings, ())
        notif = loaded.environment.notifs["ops"]
        self.assertEqual(notif.smtp_server, "smtps://smtp.example.com")
        self.assertEqual(notif.smtp_password, "pw")
        self.assertEqual(notif.to, ("ops@example.com", "oncall@example.com"))
        self.assertEqual(loaded.environment.jobs["backup"].notif_on_failed, ("ops",))


class ReadmeEnvFileTests(SynchronousTestCase):
    def test_readme_env_file_example_loads(self) -> None:
        """The README's env_file example loads with its file in place (mode 0600)."""
        from tests.helpers import config_tree, write

        base = os.path.abspath(self.mktemp())
        path = config_tree(base, _readme_ini_block("env_file"))
        secrets = write(os.path.join(base, "etc", "karajo", "secrets", "publish.env"),
                        'REGISTRY_TOKEN="glpat-x"\n')
        os.chmod(secrets, 0o600)
        loaded = load_environment(path, {})
        self.assertEqual(loaded.warnings, ())
        self.assertEqual(
            loaded.environment.jobs["publish"].resolved_env,
            (("REGISTRY", "registry.example.org"), ("REGISTRY_TOKEN", "glpat-x")),
        )
