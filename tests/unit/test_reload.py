"""
Reloading (L{karajo.reload}): the pure plan of what changed, and its
application to a live server on a L{task.Clock}, with code jobs whose runs
the test ends by hand.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from karajo.config import Loaded, validate
from karajo.errors import ConfigError, JobBusy, JobPaused, ServerStopping
from karajo.kinds import JobKind
from karajo.model import Environment, Job, JobHttp, Origin, User
from karajo.reload import Reloader, plan
from karajo.service import build_job_services
from karajo.status import RunStatus
from karajo.users import Sessions
from karajo.web.access import RefusalLog
from karajo.web.metrics import Metrics
from karajo.web.site import build_site

HASH = "$2b$04$" + "a" * 53


def env_of(**kw: Any) -> Environment:
    env, _ = validate(Environment(dir_base=kw.pop("dir_base", "/tmp/kr"), secret="s", **kw))
    return env


class PlanTests(SynchronousTestCase):
    """L{plan}: pure, by (kind, job ID)."""

    def test_added_removed_changed(self) -> None:
        old = env_of(
            jobs={"a": Job(commands=("true",), interval=timedelta(minutes=1)),
                  "b": Job(commands=("true",)), "c": Job(commands=("true",))},
            http_jobs={"h": JobHttp(http_url="http://x/")},
        )
        new = env_of(
            jobs={"a": Job(commands=("false",), interval=timedelta(minutes=1)),
                  "c": Job(commands=("true",)), "d": Job(commands=("true",))},
            http_jobs={"h": JobHttp(http_url="http://x/")},
        )
        p = plan(old, new)
        self.assertEqual([j.id for j in p.added], ["d"])
        self.assertEqual(p.removed, ((JobKind.JOB, "b"),))
        self.assertEqual([j.id for j in p.changed], ["a"])
        self.assertEqual(p.restart, ())
        self.assertIs(p.env.jobs["a"], new.jobs["a"])

    def test_same_id_other_kind_is_another_job(self) -> None:
        old = env_of(jobs={"x": Job(commands=("true",))})
        new = env_of(http_jobs={"x": JobHttp(http_url="http://x/")})
        p = plan(old, new)
        self.assertEqual([(j.kind, j.id) for j in p.added], [(JobKind.JOB_HTTP, "x")])
        self.assertEqual(p.removed, ((JobKind.JOB, "x"),))

    def test_restart_keys_keep_running_values_and_warn(self) -> None:
        old = env_of(listen_address="127.0.0.1:1000", max_job_running=2)
        new = env_of(
            listen_address="127.0.0.1:2000", max_job_running=3, name="other",
            origin=Origin("/etc/karajo/karajo.conf", 1,
                          {"listen_address": 4, "max_job_running": 7}),
        )
        p = plan(old, new)
        self.assertEqual(p.env.listen_address, "127.0.0.1:1000")
        self.assertEqual(p.env.max_job_running, 2)
        self.assertEqual(p.env.name, "other")  # not a restart key: applied
        self.assertEqual(len(p.restart), 2)
        self.assertTrue(p.restart[0].startswith("/etc/karajo/karajo.conf:4: listen_address"))
        self.assertIn("next restart", p.restart[0])
        self.assertTrue(p.restart[1].startswith("/etc/karajo/karajo.conf:7: max_job_running"))

    def test_no_secret_keeps_the_running_one(self) -> None:
        old = env_of()
        new, _ = validate(Environment(dir_base="/tmp/kr"))
        self.assertEqual(plan(old, new).env.secret, "s")

    def test_http_jobs_change_with_the_global_secret(self) -> None:
        """A JobHttp signs with the global secret: its work is rebuilt."""
        old = env_of(http_jobs={"h": JobHttp(http_url="http://x/")},
                     jobs={"j": Job(commands=("true",))})
        new = evolve_env(old, secret="t")
        p = plan(old, new)
        self.assertEqual([j.id for j in p.changed], ["h"])

    def test_nothing_changed(self) -> None:
        old = env_of(jobs={"a": Job(commands=("true",))}, users={"u": User(password=HASH)})
        p = plan(old, env_of(jobs={"a": Job(commands=("true",))},
                             users={"u": User(password=HASH)}))
        self.assertEqual((p.added, p.removed, p.changed, p.restart), ((), (), (), ()))


def evolve_env(env: Environment, **kw: Any) -> Environment:
    from attrs import evolve

    return evolve(env, **kw)


class Runs:
    """A code job's callable whose runs the test ends: one Deferred per run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: list[defer.Deferred[None]] = []

    def __call__(self, log: Any, request: Any) -> defer.Deferred[None]:
        log.write(f"{self.name}\n".encode())
        d: defer.Deferred[None] = defer.Deferred()
        self.pending.append(d)
        return d

    def finish(self) -> None:
        self.pending.pop(0).callback(None)


class ApplyTests(SynchronousTestCase):
    """L{Reloader} on a started server, files replaced by a fake loader."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.old_a = Runs("old-a")
        self.b = Runs("b")
        env = self.env(
            a=Job(interval=timedelta(minutes=5), call=self.old_a),
            b=Job(path="/b", call=self.b),
        )
        self.service = build_job_services(Loaded(env, ()), self.clock, defer.maybeDeferred)
        self.sessions = Sessions(env.users, self.clock, check=lambda p, h: defer.succeed(True))
        self.site = build_site(self.service, self.clock, defer.maybeDeferred,
                               sessions=self.sessions)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        # "a" never ran: its first run is due at once.
        self.clock.advance(0)
        self.old_a.finish()
        self.next: Any = None
        self.reloader = Reloader(self.service, "/etc/karajo/karajo.conf", {}, load=self.load)

    def env(self, users: dict[str, User] | None = None, **jobs: Job) -> Environment:
        env, _ = validate(Environment(dir_base=self.base, secret="s", jobs=jobs,
                                      users=users or {}))
        return env

    def load(self, path: str, environ: Any) -> Loaded:
        if isinstance(self.next, Exception):
            raise self.next
        return Loaded(self.next, ("a warning",))

    def reload(self, env: Environment | Exception) -> bool:
        self.next = env
        return self.successResultOf(self.reloader.reload())

    def test_added_job_starts(self) -> None:
        c = Runs("c")
        ok = self.reload(self.env(
            a=self.service.env.jobs["a"], b=self.service.env.jobs["b"],
            c=Job(interval=timedelta(minutes=1), call=c),
        ))
        self.assertTrue(ok)
        svc = self.service.jobs["c"]
        self.assertIs(svc.parent, self.service)
        self.assertTrue(svc.running)
        self.assertEqual(list(self.service.jobs), ["a", "b", "c"])
        self.clock.advance(61)
        self.assertEqual(len(c.pending), 1)
        c.finish()
        self.assertEqual(svc.runner.counter, 1)
        self.assertEqual(self.service.reloads, {"success": 1, "failure": 0})

    def test_changed_job_keeps_its_runner_and_a_running_run(self) -> None:
        """The run in progress finishes with the old work; the next uses the new."""
        svc = self.service.jobs["a"]
        runner = svc.runner
        self.clock.advance(300)
        self.assertEqual(len(self.old_a.pending), 1)
        new_a = Runs("new-a")
        self.reload(self.env(
            a=Job(interval=timedelta(minutes=1), call=new_a, description="changed"),
            b=self.service.env.jobs["b"],
        ))
        self.assertIs(self.service.jobs["a"], svc)
        self.assertIs(svc.runner, runner)
        self.assertEqual(runner.job.description, "changed")
        self.assertTrue(runner.executing)  # not interrupted
        self.old_a.finish()
        self.assertEqual(runner.last_status, RunStatus.SUCCESS)
        self.assertEqual(runner.counter, 2)
        # The new timer: one minute after the last run.
        self.clock.advance(60)
        self.assertEqual(len(new_a.pending), 1)
        self.assertEqual(self.old_a.pending, [])
        new_a.finish()
        self.assertEqual(runner.counter, 3)  # counters continue

    def test_changed_job_json_changes(self) -> None:
        from karajo.web.documents import Documents

        docs = Documents(self.service, "v")
        before = docs.job(JobKind.JOB, self.service.jobs["a"]).json
        self.reload(self.env(
            a=Job(interval=timedelta(minutes=5), call=self.old_a, description="new words"),
            b=self.service.env.jobs["b"],
        ))
        after = docs.job(JobKind.JOB, self.service.jobs["a"]).json
        self.assertNotEqual(before, after)
        self.assertIn("new words", after)

    def test_removed_job_finishes_its_run_then_goes(self) -> None:
        svc = self.service.jobs["b"]
        svc.runner.trigger(None)
        self.assertEqual(len(self.b.pending), 1)
        self.reload(self.env(a=self.service.env.jobs["a"]))
        self.assertNotIn("b", self.service.jobs)
        self.assertIs(svc.parent, self.service)  # its run goes on
        self.assertRaises(ServerStopping, svc.runner.trigger, None)
        self.b.finish()
        self.assertEqual(svc.runner.last_status, RunStatus.SUCCESS)
        self.assertIsNone(svc.parent)
        self.assertFalse(svc.running)
        self.assertEqual([r.status for r in svc.runner.records()], [RunStatus.SUCCESS])

    def test_removed_idle_job_timer_stops(self) -> None:
        svc = self.service.jobs["a"]
        self.assertIsNotNone(svc.next_run)
        self.reload(self.env(b=self.service.env.jobs["b"]))
        self.assertIsNone(svc.parent)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertEqual(self.old_a.pending, [])

    def test_readded_while_finishing_keeps_the_runner(self) -> None:
        """Two runners never share a job's counter and logs."""
        svc = self.service.jobs["b"]
        svc.runner.trigger(None)
        b_env = self.service.env.jobs["b"]
        self.reload(self.env(a=self.service.env.jobs["a"]))
        self.reload(self.env(a=self.service.env.jobs["a"], b=b_env))
        self.assertIs(self.service.jobs["b"], svc)
        self.b.finish()
        self.assertIs(svc.parent, self.service)  # not taken out after all
        self.assertEqual(svc.runner.trigger(None), "started")
        self.b.finish()
        self.assertEqual(svc.runner.counter, 2)

    def test_error_keeps_the_running_configuration(self) -> None:
        before = dict(self.service.jobs)
        env = self.service.env
        ok = self.reload(ConfigError("/etc/karajo/job.d/x.conf", 3, "interval: bad"))
        self.assertFalse(ok)
        self.assertIs(self.service.env, env)
        self.assertEqual(self.service.jobs, before)
        self.assertEqual(self.service.reloads, {"success": 0, "failure": 1})
        errors = self.flushLoggedErrors()
        self.assertEqual(errors, [])

    def test_error_logged_as_file_line_reason(self) -> None:
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.reload(ConfigError("/etc/karajo/job.d/x.conf", 3, "interval: bad"))
        text = [formatEvent(e) for e in events]
        self.assertTrue(any("/etc/karajo/job.d/x.conf:3: interval: bad" in t for t in text), text)

    def test_metrics_count_reloads(self) -> None:
        from prometheus_client.exposition import generate_latest

        metrics = Metrics(self.service, RefusalLog(self.clock), self.sessions, self.clock)
        self.reload(self.env(a=self.service.env.jobs["a"], b=self.service.env.jobs["b"]))
        self.reload(ConfigError("/x", 1, "bad"))
        text = generate_latest(metrics.registry).decode()
        self.assertIn('karajo_config_reloads_total{result="success"} 1.0', text)
        self.assertIn('karajo_config_reloads_total{result="failure"} 1.0', text)

    def test_metrics_follow_added_and_removed_jobs(self) -> None:
        from prometheus_client.exposition import generate_latest

        metrics = Metrics(self.service, RefusalLog(self.clock), self.sessions, self.clock)
        c = Runs("c")
        self.reload(self.env(a=self.service.env.jobs["a"], c=Job(path="/c", call=c)))
        text = generate_latest(metrics.registry).decode()
        self.assertIn('karajo_runs_started_total{job="c",kind="job"} 0.0', text)
        self.assertNotIn('job="b"', text)

    def test_sessions_of_removed_users_end(self) -> None:
        jobs = {"a": self.service.env.jobs["a"], "b": self.service.env.jobs["b"]}
        self.reload(self.env(users={"ann": User(password=HASH), "bob": User(password=HASH)},
                             **jobs))
        ann = self.successResultOf(defer.ensureDeferred(self.sessions.login("ann", "x", "1.2.3.4")))
        bob = self.successResultOf(defer.ensureDeferred(self.sessions.login("bob", "x", "1.2.3.4")))
        self.reload(self.env(users={"ann": User(password=HASH)}, **jobs))
        self.assertIsNotNone(self.sessions.get(ann.token))
        self.assertIsNone(self.sessions.get(bob.token))
        self.assertTrue(self.sessions.enabled)

    def test_one_reload_at_a_time(self) -> None:
        """A SIGHUP during a reload makes one more reload follow it."""
        held: list[defer.Deferred] = []

        def thread(f: Any, *args: Any) -> defer.Deferred:
            d = defer.Deferred()
            held.append(d)
            d.addCallback(lambda _: f(*args))
            return d

        self.service.run_in_thread = thread
        self.next = self.env(a=self.service.env.jobs["a"], b=self.service.env.jobs["b"])
        first = self.reloader.reload()
        second = self.reloader.reload()
        self.assertIs(first, second)
        while held:
            held.pop(0).callback(None)
        self.assertTrue(self.successResultOf(first))
        self.assertEqual(self.service.reloads["success"], 2)

    def test_paused_changed_job_stays_paused(self) -> None:
        runner = self.service.jobs["b"].runner
        runner.pause()
        self.reload(self.env(a=self.service.env.jobs["a"],
                             b=Job(path="/b2", call=self.b)))
        self.assertTrue(runner.paused)
        self.assertRaises(JobPaused, runner.trigger, None)

    def test_overlap_change_applies_to_the_next_trigger(self) -> None:
        runner = self.service.jobs["b"].runner
        runner.trigger(None)
        self.reload(self.env(a=self.service.env.jobs["a"],
                             b=Job(path="/b", call=self.b, overlap="skip")))
        self.assertRaises(JobBusy, runner.trigger, None)
        self.b.finish()

    def test_environment_document_follows_the_name(self) -> None:
        from karajo.web.documents import Documents

        docs = Documents(self.service, "v")
        self.assertIn(b'"name":"karajo"', docs.environment())
        env = self.env(a=self.service.env.jobs["a"], b=self.service.env.jobs["b"])
        self.reload(evolve_env(env, name="renamed"))
        self.assertIn(b'"name":"renamed"', docs.environment())

    def test_reload_while_stopping_changes_nothing(self) -> None:
        self.successResultOf(defer.maybeDeferred(self.service.stopService))
        self.assertFalse(self.reload(self.env(a=self.service.env.jobs["a"])))
        self.assertIn("b", self.service.jobs)
        self.assertEqual(self.service.reloads, {"success": 0, "failure": 0})

    def test_sessions_of_a_user_with_a_new_password_end(self) -> None:
        jobs = {"a": self.service.env.jobs["a"], "b": self.service.env.jobs["b"]}
        self.reload(self.env(users={"ann": User(password=HASH)}, **jobs))
        ann = self.successResultOf(defer.ensureDeferred(self.sessions.login("ann", "x", "1.2.3.4")))
        self.reload(self.env(users={"ann": User(password=HASH)}, **jobs))
        self.assertIsNotNone(self.sessions.get(ann.token))  # unchanged: kept
        self.reload(self.env(users={"ann": User(password="$2b$04$" + "b" * 53)}, **jobs))
        self.assertIsNone(self.sessions.get(ann.token))

    def test_login_checked_during_a_reload_that_removed_the_user_fails(self) -> None:
        from karajo.users import LoginFailed

        held: defer.Deferred[bool] = defer.Deferred()
        sessions = Sessions({"ann": User(name="ann", password=HASH)}, self.clock,
                            check=lambda p, h: held)
        d = defer.ensureDeferred(sessions.login("ann", "x", "1.2.3.4"))
        sessions.replace_users({})
        held.callback(True)
        self.failureResultOf(d, LoginFailed)

    def test_first_notifs_make_a_notifier_every_runner_hears(self) -> None:
        from karajo.model import Notif

        self.assertIsNone(self.service.notifier)
        env, _ = validate(Environment(
            dir_base=self.base, secret="s",
            notifs={"ops": Notif(smtp_server="smtps://mail.example", sender="k@example",
                                 to=("ops@example",))},
            jobs={"a": self.service.env.jobs["a"], "b": self.service.env.jobs["b"]},
        ))
        self.reload(env)
        notifier = self.service.notifier
        self.assertIsNotNone(notifier)
        self.assertIs(notifier.parent, self.service)
        self.assertEqual(list(notifier.notifs), ["ops"])
        a = self.service.jobs["a"]
        self.assertEqual(a.runner.listeners.index(notifier), 1)  # after the timer
        self.assertEqual(self.service.jobs["b"].runner.listeners.index(notifier), 0)
        self.reload(evolve_env(env, notifs={}))
        self.assertIs(self.service.notifier, notifier)
        self.assertEqual(notifier.notifs, {})

    def test_job_http_added_then_changed_gets_new_work(self) -> None:
        jobs = {"a": self.service.env.jobs["a"], "b": self.service.env.jobs["b"]}

        def env(url: str) -> Environment:
            e, _ = validate(Environment(
                dir_base=self.base, secret="s", jobs=jobs,
                http_jobs={"ping": JobHttp(http_url=url, interval=timedelta(hours=1))}))
            return e

        self.reload(env("http://127.0.0.1:1/one"))
        svc = self.service.http_jobs["ping"]
        self.assertEqual(svc.runner._work.job.http_url, "http://127.0.0.1:1/one")
        self.reload(env("http://127.0.0.1:1/two"))
        self.assertIs(self.service.http_jobs["ping"], svc)
        self.assertEqual(svc.runner._work.job.http_url, "http://127.0.0.1:1/two")
        self.assertEqual(svc.runner.job.http_url, "http://127.0.0.1:1/two")

    def test_api_tokens_follow_a_reload(self) -> None:
        """A token added to user.conf works after SIGHUP, on the API and the metrics page alike."""
        from treq.testing import StubTreq

        from karajo.model import Token
        from karajo.tokens import hash_token, new_token

        token = new_token()
        client = StubTreq(self.site.resource)
        headers = {"Authorization": f"Bearer {token}"}

        def status(path: str) -> int:
            d = client.get("http://karajo.test" + path, headers=headers)
            client.flush()
            return self.successResultOf(d).code

        self.assertEqual(status("/karajo/api/environment"), 401)
        self.assertEqual(status("/karajo/metrics"), 401)
        env = self.env(a=self.service.env.jobs["a"], b=self.service.env.jobs["b"])
        env = evolve_env(env, tokens={"ci": Token(name="ci", hash=hash_token(token))})
        self.reload(env)
        self.assertEqual(status("/karajo/api/environment"), 200)
        self.assertEqual(status("/karajo/metrics"), 200)
        self.reload(self.env(a=self.service.env.jobs["a"], b=self.service.env.jobs["b"]))
        self.assertEqual(status("/karajo/metrics"), 401)
