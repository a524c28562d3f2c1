"""
The elements the pages are rendered from (L{twisted.web.template}, which
escapes every text and attribute value): the common layout, the
dashboard's cards, the job page and the log page.  Their templates are the
files of the same names in C{templates/}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.template import Element, Tag, renderer, tags

from karajo.kinds import JobKind
from karajo.redact import masked_url
from karajo.users import CSRF_HEADER
from karajo.web.chart import CHART_RUNS, chart, run_times
from karajo.web.description import sanitize_description, text_of
from karajo.web.views import JobView
from karajo.web.words import human_duration, human_time, iso_time, plural

if TYPE_CHECKING:
    from karajo.web.ui import WebUI

__all__ = ["CARD_RUNS", "CardElement", "Dashboard", "JobPage", "LogPage", "Page", "Simple"]

#: runs listed as links on a dashboard card
CARD_RUNS = 5

#: the one script module each page loads (it imports common.js itself)
_PAGE_SCRIPTS = {"dashboard": "dashboard.js", "job": "dashboard.js", "log": "log.js",
                 "login": "login.js"}
#: pages whose actions are signed in the browser when there are no users
_SIGNING_PAGES = ("dashboard", "job")


def time_tag(epoch: float | None, field: str, **extra: str) -> Tag:
    """A C{<time>} the page's script keeps current (relative, countdown, local)."""
    attributes: dict[bytes | str, Any] = {"data-field": field, "datetime": iso_time(epoch)}
    attributes.update(extra)
    return Tag("time", attributes=attributes)(human_time(epoch))


class Page(Element):
    """The common layout (templates/layout.html) around a page body."""

    def __init__(self, ui: WebUI, request: Any, title: str, body: Element,
                 page: str, session: Any = None) -> None:
        super().__init__(ui.loader("layout"))
        self.ui = ui
        self.title = title
        self.body = body
        self.page = page
        self.session = session

    @renderer
    def head(self, request: Any, tag: Tag) -> Tag:
        env = self.ui.env
        metas = [
            tags.meta(name="karajo-users", content="1" if self.ui.sessions.enabled else "0"),
            tags.meta(name="karajo-csrf", content=self.session.csrf if self.session else ""),
            tags.meta(name="karajo-csrf-header", content=CSRF_HEADER),
        ]
        static = self.ui.static
        scripts = []
        if self._signs():
            scripts.append(tags.script(src=static.url("sha256.js"), defer="defer"))
        module = _PAGE_SCRIPTS.get(self.page, "common.js")
        scripts.append(tags.script(src=static.url(module), type="module"))
        return tag.fillSlots(
            title=f"{self.title} · {env.name}" if self.title else env.name,
            css=static.url("app.css"),
            icon=static.url("favicon.svg"),
            metas=metas,
            scripts=scripts,
        )

    def _signs(self) -> bool:
        """Whether this page signs actions in the browser (no users: the global secret)."""
        return not self.ui.sessions.enabled and self.page in _SIGNING_PAGES

    @renderer
    def page_body(self, request: Any, tag: Tag) -> Tag:
        tag.attributes["data-page"] = self.page
        user = self.session.user if self.session is not None else ""
        return tag.fillSlots(
            app_name=self.ui.env.name,
            icon=self.ui.static.url("favicon.svg"),
            user=user,
            content=self.body,
        )

    @renderer
    def account(self, request: Any, tag: Tag) -> Any:
        if self.session is None:
            return ""
        return tag.fillSlots(user=self.session.user)

    @renderer
    def nosecret(self, request: Any, tag: Tag) -> Any:
        return tag if self._signs() else ""


class Simple(Element):
    """A body template filled with slots."""

    def __init__(self, loader: Any, **slots: Any) -> None:
        super().__init__(loader)
        self.slots = slots

    @renderer
    def fill(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(**self.slots)


class CardElement(Element):
    """One job's card (templates/card.html)."""

    def __init__(self, loader: Any, view: JobView) -> None:
        super().__init__(loader)
        self.view = view

    @renderer
    def card(self, request: Any, tag: Tag) -> Tag:
        v = self.view
        job = v.job
        description = sanitize_description(job.description)
        searchable = " ".join([v.name, v.id, v.kind, text_of(description)]).lower()
        tag.attributes.update({
            "data-kind": v.kind,
            "data-id": v.id,
            "data-api": v.kind.api,
            "data-table": v.kind.table,
            "data-search": searchable,
            "data-active": "1" if v.active else "",
            "id": f"{v.kind}-{v.id}",
        })
        runs = v.runs(CHART_RUNS)
        return tag.fillSlots(
            name=v.name,
            job_href=v.job_href(),
            kind_label=v.kind.label,
            status=v.status,
            status_class=f"status st-{v.status}",
            description=description,
            schedule=v.schedule_words,
            raw_schedule=v.raw_schedule,
            last_run=time_tag(v.last_run, "last_run", **{"class": "rel"}),
            next_run=time_tag(
                v.next_run, "next_run",
                **{"class": "countdown", "data-paused": "1" if v.status == "paused" else ""},
            ),
            chart=chart(runs),
            runs=[
                tags.li(tags.a(
                    f"#{r.counter}",
                    href=v.log_href(r.counter),
                    title=f"run {r.counter}: {r.status}"
                    + (f", {human_duration(r.duration)}" if r.duration is not None else ""),
                    **{"class": f"run st-{r.status}", "data-counter": str(r.counter)},
                ))
                for r in runs[:CARD_RUNS]
            ] or [tags.li("no runs yet", **{"class": "none"})],
            card_runs=str(CARD_RUNS),
            actions=self._actions(v),
        )

    def _actions(self, v: JobView) -> list[Tag]:
        def button(action: str, label: str, title: str, disabled: bool) -> Tag:
            attributes: dict[bytes | str, Any] = {"type": "button", "data-action": action, "title": title,
                          "class": f"btn btn-{action}"}
            if disabled:
                attributes["disabled"] = "disabled"
            return Tag("button", attributes=attributes)(label)

        out = [
            button("run", "Run now", "Run this job now", v.status == "paused"),
            button("pause", "Pause", "Stop starting new runs", v.status == "paused"),
            button("resume", "Resume", "Start runs again", v.status != "paused"),
        ]
        if v.kind is JobKind.JOB:
            out.append(button("cancel", "Cancel", "Stop the running run", not v.active))
        return out


class Dashboard(Element):
    def __init__(self, ui: WebUI, views: list[JobView]) -> None:
        super().__init__(ui.loader("dashboard"))
        self.ui = ui
        self.views = views

    @renderer
    def summary(self, request: Any, tag: Tag) -> Tag:
        counts: dict[str, int] = {}
        for v in self.views:
            counts[v.status] = counts.get(v.status, 0) + 1
        return tag.fillSlots(
            total=str(len(self.views)),
            counts=[
                tags.li(tags.span(status, **{"class": f"status st-{status}"}), f" {n}")
                for status, n in sorted(counts.items())
            ],
        )

    @renderer
    def jobs(self, request: Any, tag: Tag) -> Tag:
        if not self.views:
            return tag(tags.p("No jobs are configured.", **{"class": "empty"}))
        return tag([CardElement(self.ui.loader("card"), v) for v in self.views])


class JobPage(Element):
    def __init__(self, ui: WebUI, view: JobView) -> None:
        super().__init__(ui.loader("job"))
        self.ui = ui
        self.view = view

    @renderer
    def card(self, request: Any, tag: Tag) -> Any:
        return CardElement(self.ui.loader("card"), self.view)

    @renderer
    def details(self, request: Any, tag: Tag) -> Tag:
        job = self.view.job
        rows: list[Tag] = [tags.dt("ID"), tags.dd(tags.code(job.id))]
        if self.view.kind is JobKind.JOB:
            if job.path:
                rows += [tags.dt("Webhook"), tags.dd(
                    tags.code(f"POST /karajo/api/{JobKind.JOB.api}/run" + job.path),
                    f" ({job.auth_kind}, header {job.header_sign})" if job.auth_kind == "hmac-sha256"
                    else f" ({job.auth_kind})",
                )]
            if job.commands:
                rows += [tags.dt("Commands"), tags.dd(tags.ol(
                    [tags.li(tags.code(c)) for c in job.commands], **{"class": "commands"}
                ))]
            elif job.call is not None:
                rows += [tags.dt("Runs"), tags.dd("Python code")]
            if job.timeout is not None:
                rows += [tags.dt("Timeout"), tags.dd(human_duration(job.timeout.total_seconds()))]
        else:
            rows += [
                tags.dt("Request"),
                tags.dd(tags.code(f"{job.http_method} {masked_url(job.http_url)}"),
                        f" ({job.http_request_type})"),
            ]
        rows += [tags.dt("Keeps"), tags.dd(plural(job.log_retention, "log"))]
        return tag(rows)

    @renderer
    def runs(self, request: Any, tag: Tag) -> Any:
        v = self.view
        rows = []
        for r in v.runs():
            rows.append(tags.tr(
                tags.td(tags.a(f"#{r.counter}", href=v.log_href(r.counter))),
                tags.td(tags.span(r.status, **{"class": f"status st-{r.status}"})),
                tags.td(time_tag(r.start, "start")),
                tags.td(human_duration(r.duration) or "—", **{"data-field": "duration"}),
                **run_times(r),
            ))
        if not rows:
            rows.append(tags.tr(tags.td("no runs yet", colspan="4"), **{"class": "none"}))
        return tag(rows)


class LogPage(Element):
    def __init__(self, ui: WebUI, view: JobView, name: Any, status: str, text: str,
                 size: int) -> None:
        super().__init__(ui.loader("log"))
        self.view = view
        self.name = name
        self.counter = name.counter
        self.status = status
        self.text = text
        self.size = size

    @renderer
    def log(self, request: Any, tag: Tag) -> Tag:
        v = self.view
        tag.attributes.update({
            "data-kind": v.kind, "data-api": v.kind.api, "data-id": v.id,
            "data-counter": str(self.counter),
            "data-offset": str(self.size), "data-status": self.status,
        })
        run = v.run(self.counter)
        earlier = [c for c in v.counters if c < self.counter]
        prev = max(earlier) if earlier else None
        return tag.fillSlots(
            name=v.name,
            job_href=v.job_href(),
            counter=str(self.counter),
            status=self.status,
            status_class=f"status st-{self.status}",
            start=time_tag(run.start, "start"),
            duration=human_duration(run.duration) or "—",
            content=self.text,
            prev_href=v.log_href(prev) if prev else v.job_href(),
            prev_label=f"← #{prev}" if prev else "← runs",
            next=self._next(),
        )

    def _next(self) -> Any:
        later = [c for c in self.view.counters if c > self.counter]
        if not later:
            return ""
        counter = min(later)
        return tags.a(f"#{counter} →", href=self.view.log_href(counter),
                      **{"class": "btn btn-small"})
