"""
The elements the pages are rendered from (L{twisted.web.template}, which
escapes every text and attribute value): the common layout, the
dashboard's cards, the job page and the log page.  Their templates are the
files of the same names in C{templates/}.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from twisted.internet.task import deferLater
from twisted.web.template import Element, Tag, renderer, tags

from karajo.kinds import JobKind
from karajo.policywords import policy_rows
from karajo.redact import masked_url
from karajo.users import CSRF_HEADER
from karajo.web.chart import CHART_RUNS, chart, history_chart, run_times
from karajo.web.description import sanitize_description, text_of
from karajo.web.views import JobView
from karajo.web.words import human_duration, human_time, iso_time, plural

if TYPE_CHECKING:
    from karajo.web.ui import WebUI

__all__ = ["CARD_RUNS", "CardElement", "Dashboard", "JobPage", "LogPage", "Page", "Simple", "curl_template"]

#: runs listed as links on a dashboard card
CARD_RUNS = 5
#: cards of the dashboard's first chunk, and of each next one
FIRST_CARDS, MORE_CARDS = 40, 100

#: the one script module each page loads (it imports common.js itself)
_PAGE_SCRIPTS = {"dashboard": "dashboard.js", "job": "dashboard.js", "log": "log.js",
                 "login": "login.js"}
#: pages whose actions are signed in the browser when there are no users
_SIGNING_PAGES = ("dashboard", "job")


def time_tag(epoch: float | None, field: str, **extra: str) -> Tag:
    """A C{<time>} the page's script keeps current (relative, countdown, local)."""
    attributes: dict[bytes | str, Any] = {"data-field": field, "datetime": iso_time(epoch),
                                          "title": human_time(epoch)}
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
            "data-name": v.name.lower(),
            "data-next": "" if v.next_run is None else f"{v.next_run:.0f}",
            "data-failure": "" if v.last_failure is None else f"{v.last_failure:.0f}",
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
    def cluster_warning(self, request: Any, tag: Tag) -> Tag | str:
        """
        In cluster mode (docs/cluster.md): that this node cannot reach the
        database, or which nodes were started from other configuration files.
        """
        cluster = getattr(self.ui.service, "cluster", None)
        if cluster is None:
            return ""
        if not cluster.connected:
            return tag(f"Node {cluster.me} cannot reach the cluster database: no scheduled "
                       "run starts here, triggers are answered 503 until it is back.")
        others = cluster.mismatched()
        if not others:
            return ""
        return tag(f"Cluster nodes started from another configuration than this node "
                   f"({cluster.me}): {', '.join(others)}. Start every node from the same files.")

    @renderer
    def jobs(self, request: Any, tag: Tag) -> Tag:
        if not self.views:
            return tag(tags.p("No jobs are configured.", **{"class": "empty"}))
        return tag(self._cards())

    def _cards(self) -> Generator[Any, None, None]:
        """
        The cards, the first L{FIRST_CARDS} at once, then L{MORE_CARDS} at a
        time, each group after a turn of the reactor: the streamed page's
        top reaches the browser before the last card is rendered, and the
        reactor serves other requests meanwhile.
        """
        loader = self.ui.loader("card")
        clock = self.ui.clock
        start, size = 0, FIRST_CARDS
        while start < len(self.views):
            group = [CardElement(loader, v) for v in self.views[start:start + size]]
            yield group if start == 0 or clock is None else deferLater(clock, 0, lambda g=group: g)
            start, size = start + size, MORE_CARDS


#: runs the job page's success rates count back over
SUCCESS_WINDOWS = (10, 100)
#: timer fires the job page lists
NEXT_FIRES = 5

#: what the job page calls each policy row of L{policy_rows}
_POLICY_LABELS = {
    "retry": "Retries", "overlap": "Overlap", "catch_up": "Catch-up",
    "random_delay": "Random delay", "timeout": "Timeout",
    "on_success": "On success", "on_failed": "On failure",
}

_TRIGGER_WORDS = {None: "—"}


def curl_template(job: Any) -> str | None:
    """
    A copyable signed C{curl} for a job's webhook, as in the README: the
    secret is never in it (C{$SECRET}, set by whoever runs it) and the
    site's address is C{$KARAJO_URL} (the page's script puts the browser's
    in).  None for SourceHut's signatures, which only SourceHut can make.
    """
    url = f"\"$KARAJO_URL/karajo/api/{JobKind.JOB.api}/run{job.path}\""
    if job.auth_kind == "hmac-sha256":
        header, prefix = job.header_sign, ""
    elif job.auth_kind == "github":
        header, prefix = "X-Hub-Signature-256", "sha256="
    else:
        return None
    return (
        'PAYLOAD="{\\"_karajo_epoch\\":$(date +%s)}"\n'
        'SIGN=$(printf %s "$PAYLOAD" | openssl dgst -sha256 -hmac "$SECRET" -hex | sed \'s/.* //\')\n'
        f'curl -H "{header}: {prefix}$SIGN" --json "$PAYLOAD" {url}\n'
    )


class JobPage(Element):
    """
    A job's page: its card (live, with the buttons), details, policies in
    words, next fires, success rates, webhook, and page C{number} of its
    run history with a chart of that page's durations.
    """

    def __init__(self, ui: WebUI, view: JobView, number: int = 1, now: float = 0.0) -> None:
        super().__init__(ui.loader("job"))
        self.ui = ui
        self.view = view
        self.pages = view.pages()
        self.number = min(max(1, number), self.pages)
        self.now = now

    @renderer
    def card(self, request: Any, tag: Tag) -> Any:
        return CardElement(self.ui.loader("card"), self.view)

    @renderer
    def details(self, request: Any, tag: Tag) -> Tag:
        job = self.view.job
        rows: list[Tag] = [tags.dt("ID"), tags.dd(tags.code(job.id))]
        if self.view.kind is JobKind.JOB:
            if job.commands:
                rows += [tags.dt("Commands"), tags.dd(tags.ol(
                    [tags.li(tags.code(c)) for c in job.commands], **{"class": "commands"}
                ))]
            elif job.call is not None:
                rows += [tags.dt("Runs"), tags.dd("Python code")]
        else:
            rows += [
                tags.dt("Request"),
                tags.dd(tags.code(f"{job.http_method} {masked_url(job.http_url)}"),
                        f" ({job.http_request_type})"),
            ]
        rows += [tags.dt("Schedule"), tags.dd(self.view.schedule_words)]
        rows += [tags.dt("Keeps"), tags.dd(plural(job.log_retention, "log"))]
        return tag(rows)

    @renderer
    def policies(self, request: Any, tag: Tag) -> Tag:
        job = self.view.job
        rows: list[Tag] = []
        for key, words in policy_rows(job):
            label = _POLICY_LABELS.get(key, key)
            targets = getattr(job, key, ()) if key in ("on_success", "on_failed") else ()
            if targets:
                links: list[Any] = ["triggers "]
                for i, target in enumerate(targets):
                    if i:
                        links.append(", ")
                    links.append(tags.a(target, href=JobView.href_of(JobKind.JOB, target)))
                when = "succeeds" if key == "on_success" else "fails"
                rows += [tags.dt(label),
                         tags.dd(f"when a run {when} (after its last retry), ", links)]
            else:
                rows += [tags.dt(label), tags.dd(words)]
        if self.view.kind is JobKind.JOB and job.env_names:
            rows += [tags.dt("Environment"),
                     tags.dd([tags.code(name) for name in job.env_names],
                             **{"class": "env-names"})]
        return tag(rows)

    @renderer
    def fires(self, request: Any, tag: Tag) -> Any:
        fires = self.view.next_fires(NEXT_FIRES, self.now)
        if not fires:
            return tags.p("No timer: this job runs only when triggered.", **{"class": "empty"})
        head = tags.tr(tags.th("UTC", scope="col"),
                       tags.th("Your time ", tags.span(**{"id": "tz-name", "class": "tz"}),
                               scope="col"))
        rows = [tags.tr(
            tags.td(human_time(t)),
            tags.td(time_tag(t, "fire", **{"class": "local"})),
        ) for t in fires]
        return tags.div(tags.table(tags.thead(head), tags.tbody(rows),
                                   **{"class": "run-table fires", "id": "fires"}),
                        **{"class": "table-wrap"})

    @renderer
    def rates(self, request: Any, tag: Tag) -> Tag:
        rows: list[Tag] = []
        for window in SUCCESS_WINDOWS:
            ok, finished = self.view.success_rate(window)
            if finished:
                words = f"{round(100 * ok / finished)} % ({ok} of {finished})"
            else:
                words = "no finished run yet"
            rows += [tags.dt(f"Last {window} runs"),
                     tags.dd(words, **{"data-window": str(window)})]
        return tag(rows)

    @renderer
    def webhook(self, request: Any, tag: Tag) -> Any:
        job = self.view.job
        if self.view.kind is not JobKind.JOB or not job.path:
            return ""
        auth = (f"{job.auth_kind}, signature in {job.header_sign}"
                if job.auth_kind == "hmac-sha256" else job.auth_kind)
        body: list[Any] = [
            tags.h2("Webhook", id="webhook-title"),
            tags.dl(
                tags.dt("Path"), tags.dd(tags.code(f"POST /karajo/api/{JobKind.JOB.api}/run{job.path}")),
                tags.dt("Auth"), tags.dd(auth, f", {'its own' if job.secret else 'the global'} secret"),
                **{"class": "details"},
            ),
        ]
        template = curl_template(job)
        if template is None:
            body.append(tags.p("SourceHut signs these requests with its own key.",
                               **{"class": "empty"}))
        else:
            body += [
                tags.div(
                    tags.span("Signed curl; set ", tags.code("SECRET"), " first:",
                              id="curl-label"),
                    tags.button("Copy", type="button", id="copy-curl",
                                **{"class": "btn btn-small", "aria-describedby": "curl-label"}),
                    **{"class": "curl-head"},
                ),
                tags.pre(template, id="curl", tabindex="0",
                         **{"class": "curl", "aria-labelledby": "curl-label"}),
            ]
        return tags.section(body, **{"class": "panel", "aria-labelledby": "webhook-title"})

    @renderer
    def history(self, request: Any, tag: Tag) -> Any:
        v = self.view
        runs = v.page(self.number)
        rows = []
        for r in runs:
            rows.append(tags.tr(
                tags.td(tags.a(f"#{r.counter}", href=v.log_href(r.counter))),
                tags.td(r.trigger or "—"),
                tags.td(str(r.attempt)),
                tags.td(r.node or "—"),
                tags.td(time_tag(r.start, "start", **{"class": "rel"})),
                tags.td(human_duration(r.duration) or "—", **{"data-field": "duration"}),
                tags.td(tags.span(r.status, **{"class": f"status st-{r.status}"}),
                        **{"data-field": "status"}),
                **run_times(r),
            ))
        if not rows:
            rows.append(tags.tr(tags.td("no runs yet", colspan="7"), **{"class": "none"}))
        out: list[Any] = []
        if runs:
            out.append(tags.div(history_chart(runs), **{"class": "history-box"}))
        out.append(tags.p(
            f"{plural(len(v.records), 'run')} kept; page {self.number} of {self.pages}, newest first.",
            tags.a("Newer runs have started: show them", href=v.job_href(), id="newer", hidden="hidden"),
            **{"class": "history-info", "id": "history-info"},
        ))
        out.append(tags.div(tags.table(
            tags.thead(tags.tr([tags.th(h, scope="col") for h in (
                "Run", "Trigger", "Attempt", "Node", "Started", "Duration", "Status")])),
            tags.tbody(rows, id="run-rows",
                       **{"data-page": str(self.number), "data-newest": str(v.counters[-1] if v.records else 0)}),
            **{"class": "run-table"},
        ), **{"class": "table-wrap"}))
        if self.pages > 1:
            out.append(self._pager())
        return out

    def _pager(self) -> Tag:
        v, n, last = self.view, self.number, self.pages

        def link(number: int, text: str, rel: str | None = None) -> Tag:
            attributes: dict[str, str] = {"href": f"{v.job_href()}&page={number}", "class": "btn btn-small"}
            if rel:
                attributes["rel"] = rel
            if number == n:
                attributes["aria-current"] = "page"
            return tags.a(text, **attributes)

        items: list[Tag] = []
        if n > 1:
            items.append(tags.li(link(n - 1, "← Newer", "prev")))
        for number in sorted({1, n - 1, n, n + 1, last}):
            if 1 <= number <= last:
                items.append(tags.li(link(number, str(number))))
        if n < last:
            items.append(tags.li(link(n + 1, "Older →", "next")))
        return tags.nav(tags.ul(items, **{"class": "pager-list"}),
                        **{"class": "pager", "aria-label": "run history pages"})


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
