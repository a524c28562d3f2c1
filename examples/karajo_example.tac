"""
Code-defined jobs next to the file-defined ones of etc/karajo/.

Run from the top of a checkout (after `pip install .`):

    twistd -ny examples/karajo_example.tac

It loads the example configuration, adds the jobs of the original
README's code examples, and serves them all on 127.0.0.1:31937.
"""

from datetime import timedelta

from attrs import evolve
from twisted.application.service import Application

from karajo import Job, JobHttp, load_environment, make_service


def hello_world_from_interval(log, request):
    log.write("Hello world from interval with code\n")


def hello_world_from_schedule(log, request):
    log.write("Hello world from schedule\n")


async def webhook_with_github(log, request):
    # A coroutine works too; `request` is a karajo.TriggerRequest.
    log.write(f"Hello world from Webhook github ({len(request.body)} bytes)\n")


env = load_environment("etc/karajo/karajo.conf").environment
env = evolve(
    env,
    jobs={
        **env.jobs,
        "interval-1m-code": Job(
            description="Job with interval 1 minute, initialize by code.",
            interval=timedelta(minutes=1),
            path="/interval-1m-code",
            call=hello_world_from_interval,
        ),
        "schedule-hourly-5m-code": Job(
            description="Job with schedule every hour at minutes 5.",
            schedule="hourly@0,5,10,15,20,25,30,35,40,45,50,55",
            path="/schedule-hourly-5m-code",
            call=hello_world_from_schedule,
        ),
        "webhook-github-code": Job(
            description="Webhook using github authentication",
            auth_kind="github",
            secret="s3cret",
            path="/webhook-github-code",
            call=webhook_with_github,
        ),
    },
    http_jobs={
        **env.http_jobs,
        "schedule-6m-code": JobHttp(
            description="Trigger our webhook-github-code by schedule every 6m.",
            schedule="hourly@0,6,12,18,24,30,36,42,48,54",
            secret="s3cret",
            header_sign="X-Hub-Signature-256",
            http_method="POST",
            http_url="/karajo/api/job_exec/run/webhook-github-code",
            http_request_type="json",
        ),
    },
)

application = Application("karajo")
make_service(env).setServiceParent(application)
