"""
Tests for a job's own environment variables: the C{env} lines and the
C{env_file} (L{karajo.envvars}), as the config loader and L{karajo.validate}
read them (docs/configuration.md, "env and env_file").

Every error and warning here is also checked for not holding the value:
values are secrets.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from karajo.config import load_environment, validate
from karajo.envvars import Assignment, merge, parse_assignment, parse_env_text, read_env_file
from karajo.errors import ConfigError
from karajo.model import Environment, Job
from karajo.process import SANE_PATH, command_env
from tests.helpers import config_tree, write

SECRET = "s3cr3t-V4LUE"


def _secret_file(path: str, text: str, mode: int = 0o600) -> str:
    write(path, text)
    os.chmod(path, mode)
    return path


class ParseEnvTextTests(SynchronousTestCase):
    def test_lines(self) -> None:
        """NAME=VALUE lines; blank lines and comments are skipped; whitespace around both parts goes."""
        items = parse_env_text(
            "# a comment\n\nA=1\n  B = two words  \n\t# indented comment\nC=\nD=x=y\n", "f"
        )
        self.assertEqual(
            [(i.name, i.value, i.line) for i in items],
            [("A", "1", 3), ("B", "two words", 4), ("C", "", 6), ("D", "x=y", 7)],
        )
        self.assertTrue(all(i.filename == "f" for i in items))

    def test_quotes(self) -> None:
        """A value wholly in matching quotes loses them; nothing inside is interpreted."""
        items = parse_env_text(
            "A=\"a b\"\nB='c d'\nC=\"$HOME\\n\"\nD=\"unbalanced\nE='\nF=x # not a comment\nG=\"\"\n",
            "f",
        )
        self.assertEqual(
            [(i.name, i.value) for i in items],
            [("A", "a b"), ("B", "c d"), ("C", "$HOME\\n"), ("D", '"unbalanced'), ("E", "'"),
             ("F", "x # not a comment"), ("G", "")],
        )

    def test_crlf(self) -> None:
        """A file written on Windows reads the same."""
        items = parse_env_text("A=1\r\nB=2\r\n", "f")
        self.assertEqual([(i.name, i.value) for i in items], [("A", "1"), ("B", "2")])

    def test_no_equals(self) -> None:
        """A line without '=' names file and line, never its text (it may be a pasted token)."""
        with self.assertRaises(ConfigError) as e:
            parse_env_text("A=1\n" + SECRET + "\n", "/etc/x.env")
        self.assertEqual((e.exception.filename, e.exception.line), ("/etc/x.env", 2))
        self.assertIn("expected NAME=VALUE", str(e.exception))
        self.assertNotIn(SECRET, str(e.exception))

    def test_bad_name(self) -> None:
        """The text before '=' that is not a name is not shown either."""
        for line in ("1A=" + SECRET, "my " + SECRET + "=x", "=" + SECRET, "A-B=" + SECRET):
            with self.assertRaises(ConfigError) as e:
                parse_env_text(line + "\n", "f")
            self.assertEqual(e.exception.line, 1)
            self.assertIn("not a variable name", str(e.exception))
            self.assertNotIn(SECRET, str(e.exception))
            self.assertNotIn("my ", str(e.exception))

    def test_reserved(self) -> None:
        """KARAJO_* names are karajo's: an error naming the name (not the value) and the line."""
        with self.assertRaises(ConfigError) as e:
            parse_env_text("\nKARAJO_TRIGGER=" + SECRET + "\n", "f")
        self.assertEqual(e.exception.line, 2)
        self.assertIn("KARAJO_TRIGGER is reserved", str(e.exception))
        self.assertNotIn(SECRET, str(e.exception))
        # Only the upper-case prefix is reserved; KARAJO alone is a name like any other.
        self.assertEqual(len(parse_env_text("karajo_x=1\nKARAJO=2\n", "f")), 2)


class ParseAssignmentTests(SynchronousTestCase):
    def test_value_as_given(self) -> None:
        """An env line's value is everything after the first '=', spaces and quotes kept."""
        a = parse_assignment(" TOKEN = 'a=b' ", "k.conf", 7)
        self.assertEqual(a, Assignment("TOKEN", " 'a=b' ", "k.conf", 7))

    def test_errors(self) -> None:
        for text, reason in (
            (SECRET, "expected NAME=VALUE"),
            ("9x=" + SECRET, "not a variable name"),
            ("KARAJO_JOB_ID=" + SECRET, "KARAJO_JOB_ID is reserved"),
        ):
            with self.assertRaises(ConfigError) as e:
                parse_assignment(text, "k.conf", 7)
            self.assertEqual(str(e.exception).split(": ", 2)[:2], ["k.conf:7", "env"])
            self.assertIn(reason, str(e.exception))
            self.assertNotIn(SECRET, str(e.exception))


class MergeTests(SynchronousTestCase):
    def test_later_wins_env_over_file(self) -> None:
        """The env lines override the file (systemd's Environment= after EnvironmentFile=)."""
        warnings: list[str] = []
        pairs = merge(
            [Assignment("A", "file", "f", 1), Assignment("B", "file", "f", 2)],
            [Assignment("A", "line", "k.conf", 9)],
            warnings=warnings,
        )
        self.assertEqual(pairs, (("A", "line"), ("B", "file")))
        self.assertEqual(warnings, [])

    def test_duplicates_in_one_group_warn(self) -> None:
        """A name set twice in the file (or twice in env lines) warns with both places, no value."""
        warnings: list[str] = []
        pairs = merge(
            [Assignment("A", SECRET + "1", "f", 1), Assignment("A", SECRET + "2", "f", 4)],
            [Assignment("B", SECRET, "k.conf", 3), Assignment("B", SECRET + "x", "k.conf", 5)],
            warnings=warnings,
        )
        self.assertEqual(pairs, (("A", SECRET + "2"), ("B", SECRET + "x")))
        self.assertEqual(warnings, [
            "f:4: A is set again (first at f:1); the later value is used",
            "k.conf:5: B is set again (first at k.conf:3); the later value is used",
        ])

    def test_sorted(self) -> None:
        pairs = merge([Assignment("Z", "1", "f", 1), Assignment("A", "2", "f", 2)])
        self.assertEqual([n for n, _ in pairs], ["A", "Z"])


class ReadEnvFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def test_reads(self) -> None:
        path = _secret_file(os.path.join(self.dir, "a.env"), "TOKEN=" + SECRET + "\n")
        self.assertEqual(
            read_env_file(path, "k.conf", 3), [Assignment("TOKEN", SECRET, path, 1)]
        )

    def test_owner_only(self) -> None:
        """0600 and 0400 are fine; readable by the group or by others is a config error."""
        path = _secret_file(os.path.join(self.dir, "a.env"), "TOKEN=" + SECRET + "\n")
        for mode in (0o600, 0o400, 0o700, 0o620, 0o602):
            os.chmod(path, mode)
            read_env_file(path, "k.conf", 3)
        for mode in (0o604, 0o640, 0o644, 0o444):
            os.chmod(path, mode)
            with self.assertRaises(ConfigError) as e:
                read_env_file(path, "k.conf", 3)
            self.assertEqual((e.exception.filename, e.exception.line), ("k.conf", 3))
            self.assertIn(f"env_file: {path}: readable by others than its owner (mode {mode:04o})", str(e.exception))
            self.assertNotIn(SECRET, str(e.exception))

    def test_missing(self) -> None:
        """A missing file is a config error at the env_file line."""
        path = os.path.join(self.dir, "nope.env")
        with self.assertRaises(ConfigError) as e:
            read_env_file(path, "k.conf", 3)
        self.assertEqual(str(e.exception), f"k.conf:3: env_file: {path}: no such file")

    def test_not_regular(self) -> None:
        """A directory or a FIFO is refused (and a FIFO does not hang the load)."""
        os.mkfifo(os.path.join(self.dir, "fifo"), 0o600)
        for name in ("fifo", "."):
            with self.assertRaises(ConfigError) as e:
                read_env_file(os.path.join(self.dir, name), "k.conf", 3)
            self.assertIn("not a regular file", str(e.exception))

    def test_not_utf8(self) -> None:
        path = os.path.join(self.dir, "a.env")
        with open(path, "wb") as f:
            f.write(b"A=1\nB=\xff" + SECRET.encode() + b"\n")
        os.chmod(path, 0o600)
        with self.assertRaises(ConfigError) as e:
            read_env_file(path)
        self.assertEqual((e.exception.filename, e.exception.line), (path, 2))
        self.assertNotIn(SECRET, str(e.exception))


class CommandEnvTests(SynchronousTestCase):
    def test_exactly(self) -> None:
        """PATH, the job's env, the four KARAJO_* names; nothing else."""
        self.assertEqual(
            command_env(3, job_id="j", attempt=2, trigger="retry", env=(("A", "1"),)),
            {"PATH": SANE_PATH, "A": "1", "KARAJO_JOB_ID": "j", "KARAJO_JOB_COUNTER": "3",
             "KARAJO_RUN_ATTEMPT": "2", "KARAJO_TRIGGER": "retry"},
        )

    def test_precedence(self) -> None:
        """A job may set its own PATH; the KARAJO_* names always hold (even if code slipped one in)."""
        env = command_env(1, job_id="j", env=(("PATH", "/opt/bin"), ("KARAJO_JOB_ID", "x")))
        self.assertEqual(env["PATH"], "/opt/bin")
        self.assertEqual(env["KARAJO_JOB_ID"], "j")


class ConfigTests(SynchronousTestCase):
    """env and env_file in config files and in code-built environments."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())

    def load(self, job_text: str, files: dict[str, str] | None = None):
        return load_environment(config_tree(self.base, job_text, files))

    def test_file_then_lines(self) -> None:
        """env_file is relative to the main file's directory; env lines override it."""
        _secret_file(os.path.join(self.base, "etc", "karajo", "secrets", "j.env"),
                     "# the deploy token\nTOKEN='from-file'\nOTHER=kept\n")
        loaded = self.load("""
            [job "j"]
            command = true
            env_file = secrets/j.env
            env = TOKEN=from-line
            env = EXTRA=x y
        """)
        job = loaded.environment.jobs["j"]
        self.assertEqual(job.env_file, os.path.join(self.base, "etc", "karajo", "secrets", "j.env"))
        self.assertEqual(
            job.resolved_env, (("EXTRA", "x y"), ("OTHER", "kept"), ("TOKEN", "from-line"))
        )
        self.assertEqual(job.env_names, ["EXTRA", "OTHER", "TOKEN"])
        self.assertEqual(loaded.warnings, ())
        self.assertNotIn("from-line", repr(job))
        self.assertNotIn("from-file", repr(job))

    def test_job_d_relative_to_main(self) -> None:
        """A job in job.d/ names its env_file relative to the main file's directory too."""
        _secret_file(os.path.join(self.base, "etc", "karajo", "j.env"), "A=1\n")
        loaded = self.load("", {"job.d/j.conf": '[job "j"]\ncommand = true\nenv_file = j.env\n'})
        self.assertEqual(loaded.environment.jobs["j"].resolved_env, (("A", "1"),))

    def test_bad_env_line_points_at_it(self) -> None:
        """The third env line of a job is the one named; its value is not."""
        with self.assertRaises(ConfigError) as e:
            self.load(f"""
                [job "j"]
                command = true
                env = A=1
                env = B=2
                env = {SECRET}
            """)
        self.assertEqual(e.exception.line, 7)
        self.assertIn("env: expected NAME=VALUE", str(e.exception))
        self.assertNotIn(SECRET, str(e.exception))

    def test_reserved_in_config(self) -> None:
        with self.assertRaises(ConfigError) as e:
            self.load(f"""
                [job "j"]
                command = true
                env = KARAJO_JOB_COUNTER={SECRET}
            """)
        self.assertEqual(e.exception.line, 5)
        self.assertIn("KARAJO_JOB_COUNTER is reserved", str(e.exception))
        self.assertNotIn(SECRET, str(e.exception))

    def test_bad_file_line(self) -> None:
        """A bad line of the env_file is named by the env_file's own path and line."""
        path = _secret_file(os.path.join(self.base, "etc", "karajo", "j.env"),
                            f"A=1\n\n{SECRET}\n")
        with self.assertRaises(ConfigError) as e:
            self.load('[job "j"]\ncommand = true\nenv_file = j.env\n')
        self.assertEqual((e.exception.filename, e.exception.line), (path, 3))
        self.assertNotIn(SECRET, str(e.exception))

    def test_missing_and_open_file(self) -> None:
        """A missing or world-readable env_file fails the config at the env_file line."""
        with self.assertRaises(ConfigError) as e:
            self.load('[job "j"]\ncommand = true\nenv_file = none.env\n')
        self.assertEqual(e.exception.line, 5)
        self.assertIn("no such file", str(e.exception))
        _secret_file(os.path.join(self.base, "etc", "karajo", "open.env"), f"A={SECRET}\n", 0o644)
        with self.assertRaises(ConfigError) as e:
            self.load('[job "j"]\ncommand = true\nenv_file = open.env\n')
        self.assertIn("readable by others", str(e.exception))
        self.assertNotIn(SECRET, str(e.exception))

    def test_duplicate_warnings(self) -> None:
        """Twice in env lines, or twice in the file: a warning naming both lines and the name."""
        path = _secret_file(os.path.join(self.base, "etc", "karajo", "j.env"),
                            f"A={SECRET}1\nA={SECRET}2\n")
        loaded = self.load(f"""
            [job "j"]
            command = true
            env_file = j.env
            env = B={SECRET}3
            env = B={SECRET}4
        """)
        main = os.path.join(self.base, "etc", "karajo", "karajo.conf")
        self.assertEqual(loaded.warnings, (
            f"{path}:2: A is set again (first at {path}:1); the later value is used",
            f"{main}:7: B is set again (first at {main}:6); the later value is used",
        ))
        self.assertEqual(loaded.environment.jobs["j"].resolved_env,
                         (("A", SECRET + "2"), ("B", SECRET + "4")))

    def test_reread_on_load(self) -> None:
        """The file is read at each load: a reload sees its new content."""
        path = _secret_file(os.path.join(self.base, "etc", "karajo", "j.env"), "A=1\n")
        main = config_tree(self.base, '[job "j"]\ncommand = true\nenv_file = j.env\n')
        self.assertEqual(load_environment(main).environment.jobs["j"].resolved_env, (("A", "1"),))
        _secret_file(path, "A=2\n")
        self.assertEqual(load_environment(main).environment.jobs["j"].resolved_env, (("A", "2"),))

    def test_from_code(self) -> None:
        """Code may give env as a mapping; validate() checks and resolves it like a file's."""
        env, warnings = validate(Environment(secret="s", jobs={
            "j": Job(commands=["true"], env={"B": "2", "A": "1"}),
        }))
        self.assertEqual(env.jobs["j"].resolved_env, (("A", "1"), ("B", "2")))
        self.assertEqual(env.jobs["j"].env_names, ["A", "B"])
        self.assertEqual(warnings, ())
        with self.assertRaises(ConfigError):
            validate(Environment(secret="s", jobs={
                "j": Job(commands=["true"], env={"KARAJO_TRIGGER": SECRET}),
            }))

    def test_code_job_has_no_environment(self) -> None:
        """A callable is not a command: its env is not used, and validate says so."""
        env, warnings = validate(Environment(secret="s", jobs={
            "j": Job(call=lambda log, request: None, env={"A": SECRET}),
        }))
        self.assertEqual(env.jobs["j"].resolved_env, ())
        self.assertEqual(len(warnings), 1)
        self.assertIn("runs a callable, not commands: env and env_file are not used", warnings[0])
        self.assertNotIn(SECRET, warnings[0])
