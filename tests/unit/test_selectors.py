"""
Selectors and trigger rules (L{karajo.selectors}), and their config keys
C{match} and C{payload_env} with their errors at FILE:LINE.
"""

from __future__ import annotations

import json
import os
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from karajo.config import load_environment
from karajo.errors import ConfigError
from karajo.process import command_env, env_safe
from karajo.selectors import (
    Request,
    SelectorError,
    first_failed,
    json_text,
    parse_rule,
    parse_selector,
    walk,
)
from tests.helpers import config_tree

PUSH = json.dumps({
    "ref": "refs/heads/main",
    "after": "abc",
    "created": False,
    "forced": None,
    "size": 3,
    "ratio": 1.5,
    "repository": {"full_name": "o/r", "topics": ["a", "b"]},
    "commits": [{"id": "c1", "message": "x"}, {"id": "c2"}],
    "10": "ten",
}).encode()
GH_HEADERS = {"X-Github-Event": "push", "Content-Type": "application/json"}


def value(selector: str, body: bytes = PUSH, headers=None) -> str:
    return parse_selector(selector).value(Request(headers if headers is not None else GH_HEADERS, body))


class SelectorTests(SynchronousTestCase):
    def test_json_strings_as_they_are(self) -> None:
        self.assertEqual(value("ref"), "refs/heads/main")
        self.assertEqual(value("repository.full_name"), "o/r")
        self.assertEqual(value("commits.1.id"), "c2")
        self.assertEqual(value("repository.topics.0"), "a")

    def test_json_scalars_as_json_text(self) -> None:
        self.assertEqual(value("created"), "false")
        self.assertEqual(value("forced"), "null")
        self.assertEqual(value("size"), "3")
        self.assertEqual(value("ratio"), "1.5")

    def test_json_containers_compact(self) -> None:
        self.assertEqual(value("repository.topics"), '["a","b"]')
        self.assertEqual(value("commits.1"), '{"id":"c2"}')

    def test_absent_is_empty(self) -> None:
        for selector in ("nope", "ref.x", "commits.2.id", "commits.x", "commits.-1",
                         "size.0", "header:X-Missing", "form:ref"):
            self.assertEqual(value(selector), "", selector)

    def test_integer_step_on_an_object_is_a_key(self) -> None:
        self.assertEqual(value("10"), "ten")

    def test_headers_any_case(self) -> None:
        self.assertEqual(value("header:x-github-event"), "push")
        self.assertEqual(value("header:X-GITHUB-EVENT"), "push")

    def test_form(self) -> None:
        body = b"ref=refs%2Fheads%2Fmain&ref=second&empty="
        self.assertEqual(value("form:ref", body), "refs/heads/main")
        self.assertEqual(value("form:empty", body), "")
        # A form body has no JSON paths.
        self.assertEqual(value("ref", body), "")

    def test_body_decides_not_content_type(self) -> None:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        self.assertEqual(value("ref", PUSH, headers), "refs/heads/main")

    def test_bad_selectors(self) -> None:
        for text in ("", "header:", "header:a b", "header:a:b", "form:", "a..b", ".a", "a.", "a b"):
            self.assertRaises(SelectorError, parse_selector, text)

    def test_walk_top_level_array(self) -> None:
        self.assertEqual(walk([1, [2]], ("1", "0")), (True, 2))
        self.assertEqual(walk("x", ("0",)), (False, None))
        self.assertEqual(walk({"a": 1}, ()), (True, {"a": 1}))

    def test_json_text(self) -> None:
        self.assertEqual(json_text("é"), "é")
        self.assertEqual(json_text({"k": "é"}), '{"k":"é"}')
        self.assertEqual(json_text(True), "true")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
_step = st.text(max_size=4).filter(lambda s: s and "." not in s and not any(c.isspace() for c in s))


class WalkerPropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(document=_json, path=st.lists(_step | st.integers(0, 5).map(str), min_size=1, max_size=5))
    def test_arbitrary_json_never_raises(self, document, path) -> None:
        """Any JSON body, any path: a string, never an exception."""
        body = json.dumps(document).encode()
        result = parse_selector(".".join(path)).value(Request({}, body))
        self.assertIsInstance(result, str)
        found, inner = walk(document, tuple(path))
        if found and isinstance(document, dict):
            self.assertEqual(result, inner if isinstance(inner, str) else json.dumps(
                inner, separators=(",", ":"), ensure_ascii=False))
        else:
            self.assertEqual(result, "")

    @settings(max_examples=200, deadline=None)
    @given(body=st.binary(max_size=200), path=st.lists(_step, min_size=1, max_size=3))
    def test_arbitrary_bytes_never_raise(self, body, path) -> None:
        for selector in (".".join(path), "form:" + path[0], "header:X"):
            self.assertIsInstance(parse_selector(selector).value(Request({}, body)), str)

    @settings(max_examples=300, deadline=None)
    @given(value=_json | st.floats() | st.integers(min_value=-10**50, max_value=10**50))
    def test_json_text_spells_as_json(self, value) -> None:
        """Every JSON value reads as the compact JSON text json.dumps gives it."""
        expected = value if isinstance(value, str) else json.dumps(
            value, separators=(",", ":"), ensure_ascii=False)
        self.assertEqual(json_text(value), expected)

    def test_json_text_of_an_unspellable_value(self) -> None:
        """An integer past Python's digit limit reads as absent, as before."""
        self.assertEqual(json_text(10**5000), "")

    def test_deep_nesting(self) -> None:
        body = b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}"
        self.assertEqual(value("a.0", body), "")


class RuleTests(SynchronousTestCase):
    def holds(self, text: str, body: bytes = PUSH, headers=None) -> bool:
        return parse_rule(text).holds(Request(headers if headers is not None else GH_HEADERS, body))

    def test_operators(self) -> None:
        self.assertTrue(self.holds("ref == refs/heads/main"))
        self.assertFalse(self.holds("ref == refs/heads/dev"))
        self.assertTrue(self.holds("ref != refs/heads/dev"))
        self.assertFalse(self.holds("ref != refs/heads/main"))
        self.assertTrue(self.holds("ref ~ ^refs/heads/(main|master)$"))
        self.assertTrue(self.holds("ref ~ heads"), "searched, not matched from the start")
        self.assertFalse(self.holds("ref ~ ^heads"))
        self.assertTrue(self.holds("header:X-GitHub-Event == push"))

    def test_value_keeps_inner_spaces(self) -> None:
        body = json.dumps({"m": "fix the  bug"}).encode()
        self.assertTrue(self.holds("m == fix the  bug", body))

    def test_empty_value_matches_absent(self) -> None:
        self.assertTrue(self.holds("nope =="))
        self.assertTrue(self.holds("nope !=") is False)

    def test_text_as_written(self) -> None:
        self.assertEqual(str(parse_rule("  ref   ==   refs/heads/main ")), "ref == refs/heads/main")

    def test_first_failed(self) -> None:
        rules = (parse_rule("header:X-GitHub-Event == push"), parse_rule("ref == refs/heads/dev"),
                 parse_rule("size == 4"))
        failed = first_failed(rules, Request(GH_HEADERS, PUSH))
        self.assertEqual(str(failed), "ref == refs/heads/dev")
        self.assertIsNone(first_failed(rules[:1], Request(GH_HEADERS, PUSH)))
        self.assertIsNone(first_failed((), Request({}, b"")))

    def test_bad_rules(self) -> None:
        for text, reason in (("ref", "expected SELECTOR OP VALUE"), ("ref = x", "not an operator"),
                             ("ref =~ x", "not an operator"), ("ref ~ (", "not a regular expression"),
                             ("a..b == x", "empty step")):
            err = self.assertRaises(SelectorError, parse_rule, text)
            self.assertIn(reason, str(err))


class ConfigTests(SynchronousTestCase):
    def load(self, main: str):
        return load_environment(config_tree(os.path.abspath(self.mktemp()), main), environ={})

    def assertConfigError(self, main: str, line: int, reason: str) -> None:
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, main)
        err = self.assertRaises(ConfigError, load_environment, path, {})
        self.assertEqual((err.filename, err.line), (path, line), str(err))
        self.assertIn(reason, err.reason)

    def test_parsed(self) -> None:
        env = self.load("""
            [job "deploy"]
            path = /deploy
            match = header:X-GitHub-Event == push
            match = ref ~ ^refs/heads/
            payload_env = REF=ref
            payload_env = EVENT = header:X-GitHub-Event
            command = true
        """)
        job = env.environment.jobs["deploy"]
        self.assertEqual([str(r) for r in job.rules],
                         ["header:X-GitHub-Event == push", "ref ~ ^refs/heads/"])
        self.assertEqual([(n, str(s)) for n, s in job.payload_vars],
                         [("REF", "ref"), ("EVENT", "header:X-GitHub-Event")])

    def test_bad_rule_at_its_line(self) -> None:
        main = """
            [job "deploy"]
            path = /deploy
            match = ref == refs/heads/main
            match = ref ~ (unclosed
            command = true
        """
        self.assertConfigError(main, 6, "match: '(unclosed' is not a regular expression")
        self.assertConfigError(main.replace("~ (unclosed", "=== x"), 6, "'===' is not an operator")
        self.assertConfigError(main.replace("ref ~ (unclosed", "header:a:b == x"), 6,
                               "is not a header name")

    def test_bad_payload_env(self) -> None:
        main = """
            [job "deploy"]
            path = /deploy
            env = TOKEN=x
            payload_env = REF=ref
            payload_env = {line}
            command = true
        """
        self.assertConfigError(main.format(line="KARAJO_REF=ref"), 7, "KARAJO_REF is reserved")
        self.assertConfigError(main.format(line="1X=ref"), 7, "not a variable name")
        self.assertConfigError(main.format(line="NOSEL"), 7, "expected NAME=VALUE")
        self.assertConfigError(main.format(line="X=a..b"), 7, "payload_env: X: 'a..b'")
        self.assertConfigError(main.format(line="X="), 7, "empty selector")
        self.assertConfigError(main.format(line="TOKEN=ref"), 7, "TOKEN is already set")
        self.assertConfigError(main.format(line="REF=after"), 7, "REF is already set")

    def test_match_without_path_warned(self) -> None:
        env = self.load("""
            [job "timed"]
            interval = 1m
            match = ref == x
            command = true
        """)
        self.assertTrue(any(re.search(r":5: 'timed' has no path", w) for w in env.warnings),
                        env.warnings)


class CommandEnvTests(SynchronousTestCase):
    def test_payload_names(self) -> None:
        env = command_env(3, job_id="j", env=[("A", "1")], payload_vars=[("REF", "x\0y\ud800")],
                          payload_file="/p", payload_type="application/json")
        self.assertEqual(env["REF"], "xy?")
        self.assertEqual((env["KARAJO_PAYLOAD_FILE"], env["KARAJO_PAYLOAD_TYPE"]),
                         ("/p", "application/json"))
        self.assertEqual(env["A"], "1")

    def test_no_payload_no_karajo_payload_names(self) -> None:
        env = command_env(3, payload_vars=[("REF", "")])
        self.assertEqual(env["REF"], "")
        self.assertNotIn("KARAJO_PAYLOAD_FILE", env)
        self.assertNotIn("KARAJO_PAYLOAD_TYPE", env)

    def test_env_safe(self) -> None:
        self.assertEqual(env_safe("é\0"), "é")
        self.assertEqual(env_safe("\udcff"), "?")
