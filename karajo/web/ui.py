"""
The web UI under C{/karajo/}: login page, dashboard, job pages, log pages
and their static files (SPEC section 5).

L{karajo.web.site} mounts L{WebUI.resource} for every path under
C{/karajo/} except C{/karajo/api/}, with the C{karajo} segment consumed, so
C{request.postpath} here is::

    [b""]                       /karajo/          login page, or redirect
    [b"app", b""]               /karajo/app/      dashboard
    [b"app", b"job"]            /karajo/app/job?kind=job|job_http&id=ID
    [b"app", b"log"]            /karajo/app/log?kind=..&id=..&counter=N
    [b"static", NAME]           /karajo/static/NAME  (CSS, JS, icon)

Design notes:

  - Pages are rendered on the server from the templates of
    L{karajo.resources.templates_dir} with L{twisted.web.template}, which
    escapes every text and attribute value; the page is complete without
    JavaScript.  The scripts then keep it live by polling the JSON API and
    only ever set text (C{textContent}), never HTML.
  - A job's description may hold simple HTML.  It goes through C{nh3}
    (ammonia) with a small allow-list, and the sanitized HTML is then parsed
    into template tags (again keeping only the allow-listed tags and
    http/https links), so even a sanitizer bug cannot put raw markup in the
    page.  Descriptions do not change while the daemon runs, so the
    scripts never touch them.
  - Every response carries a strict Content-Security-Policy (no inline
    script or style at all), C{nosniff} and C{no-referrer}.
  - With users, the pages need a session; the session's CSRF token is put
    in a C{<meta>} element for the scripts (pages are C{no-store}).
    Without users, the scripts ask for the secret once per browser tab and
    sign requests with it in the browser.
"""

from __future__ import annotations

import datetime
import hashlib
import html.parser
import mimetypes
import os
import re
from typing import Any
from urllib.parse import quote

from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.template import Element, Tag, XMLFile, flattenString, renderer, tags

from karajo import resources
from karajo.twisted_private import request_gone
from karajo.users import CSRF_HEADER
from karajo.web.params import query_params

__all__ = [
    "CSP",
    "SECURITY_HEADERS",
    "WebUI",
    "describe_schedule",
    "sanitize_description",
]

log = Logger()

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)

ZERO_TIME = "0001-01-01T00:00:00Z"
FINAL_STATUSES = ("success", "failed", "canceled")
KINDS = ("job", "job_http")
#: runs listed as links on a dashboard card, and bars in its chart
CARD_RUNS = 5
CHART_RUNS = 20

_API_KIND = {"job": "job_exec", "job_http": "job_http"}

# --- descriptions ------------------------------------------------------------

ALLOWED_TAGS = frozenset({"b", "i", "em", "strong", "code", "a", "br", "p", "ul", "ol", "li"})
_VOID = frozenset({"br"})
_SAFE_HREF = re.compile(r"\Ahttps?://", re.IGNORECASE)


class _DescriptionParser(html.parser.HTMLParser):
    """Turn (already sanitized) HTML into template tags, allow-list only."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Tag("")
        self._stack: list[Tag] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            return
        element = Tag(tag)
        if tag == "a":
            href = dict(attrs).get("href") or ""
            if _SAFE_HREF.match(href.strip()):
                element.attributes["href"] = href.strip()
                element.attributes["rel"] = "noopener noreferrer nofollow"
        self._stack[-1].children.append(element)
        if tag not in _VOID:
            self._stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in ALLOWED_TAGS and tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in ALLOWED_TAGS or tag in _VOID:
            return
        for depth in range(len(self._stack) - 1, 0, -1):
            if self._stack[depth].tagName == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(data)


def sanitize_description(text: str) -> Tag:
    """
    A description as template tags: b, i, em, strong, code, a (http/https
    only), br, p, ul, ol, li are kept; other tags are dropped (their text
    stays, except the content of script and style); all text is escaped
    when the page is rendered.
    """
    import nh3

    clean = nh3.clean(
        text or "",
        tags=set(ALLOWED_TAGS),
        attributes={"a": {"href"}},
        url_schemes={"http", "https"},
        link_rel=None,
        strip_comments=True,
    )
    parser = _DescriptionParser()
    parser.feed(clean)
    parser.close()
    return parser.root


def _text_of(node: Any) -> str:
    """The text inside a tag tree."""
    if isinstance(node, str):
        return node
    return "".join(_text_of(child) for child in getattr(node, "children", ()))


# --- words ---------------------------------------------------------------------

_DAYS = {
    "sun": "Sunday", "mon": "Monday", "tue": "Tuesday", "wed": "Wednesday",
    "thu": "Thursday", "fri": "Friday", "sat": "Saturday",
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_interval(seconds: float) -> str:
    """C{every 1 hour 30 minutes} for 5400 s."""
    total = int(seconds)
    if total <= 0:
        return "continuously"
    parts = []
    for size, word in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if total >= size:
            parts.append(_plural(total // size, word))
            total %= size
    if parts in (["1 day"], ["1 hour"], ["1 minute"], ["1 second"]):
        return "every " + parts[0][2:]
    return "every " + " ".join(parts)


def _times(text: str) -> str:
    return ", ".join(t.strip() for t in text.split(",") if t.strip())


def describe_schedule(schedule: str | None, interval: datetime.timedelta | None,
                      timezone: str | None = None) -> str:
    """A job's schedule or interval in words (the raw value when unsure)."""
    if schedule:
        text = schedule.strip()
        words = _schedule_words(text)
        zone = timezone or "UTC"
        return f"{words} ({zone})" if words != "only on request" else words
    if interval is not None:
        return describe_interval(interval.total_seconds())
    return "only on request"


def _schedule_words(text: str) -> str:
    if any(c.isspace() for c in text):
        return f"cron {text}"
    kind, _, rest = text.partition("@")
    kind = kind.lower()
    args = rest.split("@") if rest else []
    try:
        if kind == "minutely" and not args:
            return "every minute"
        if kind == "hourly" and len(args) <= 1:
            minutes = [int(m) for m in (args[0].split(",") if args else ["0"]) if m.strip()]
            return "every hour at " + ", ".join(f":{m:02d}" for m in minutes)
        if kind == "daily" and len(args) <= 1:
            return "every day at " + (_times(args[0]) if args else "00:00")
        if kind == "weekly" and len(args) <= 2:
            days = args[0] if args else "Sunday"
            names = [_DAYS.get(d.strip()[:3].lower(), d.strip()) for d in days.split(",")]
            at = _times(args[1]) if len(args) > 1 else "00:00"
            return "every " + ", ".join(names) + " at " + at
        if kind == "monthly" and len(args) <= 2:
            days = _times(args[0]) if args else "1"
            at = _times(args[1]) if len(args) > 1 else "00:00"
            return f"on day {days} of every month at {at}"
    except ValueError:
        pass
    return text


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return ZERO_TIME
    try:
        when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return ZERO_TIME
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _human_time(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def human_duration(seconds: float | None) -> str:
    """C{1h 02m 03s}, C{4m 05s}, C{7s}; empty when unknown."""
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


# --- run durations from log timestamps -----------------------------------------

_STAMP = re.compile(rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC ")


def _stamp(line: bytes) -> float | None:
    m = _STAMP.match(line)
    if m is None:
        return None
    try:
        when = datetime.datetime.strptime(m.group(1).decode("ascii"), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.UTC).timestamp()


def log_span(path: str) -> tuple[float | None, float | None]:
    """
    The times of the first and last lines of a log file (every line starts
    with a UTC timestamp); reads only its head and its tail.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            tail = f.read()
    except OSError:
        return None, None
    start = _stamp(head)
    end = None
    for line in reversed(tail.splitlines()):
        end = _stamp(line)
        if end is not None:
            break
    return start, end


# --- views of jobs -------------------------------------------------------------


class _RunView:
    __slots__ = ("counter", "status", "start", "end")

    def __init__(self, counter: int, status: str, start: float | None, end: float | None):
        self.counter = counter
        self.status = status
        self.start = start
        self.end = end

    @property
    def duration(self) -> float | None:
        if self.status not in FINAL_STATUSES or self.start is None or self.end is None:
            return None
        return max(0.0, self.end - self.start)


class _JobView:
    """What the pages show of one job, taken from its service."""

    def __init__(self, ui: WebUI, kind: str, svc: Any) -> None:
        runner = svc.runner
        job = runner.job
        self.kind = kind
        self.job = job
        self.id = job.id
        self.name = job.name
        self.status = runner.status
        self.last_run = runner.last_run
        self.next_run = svc.next_run
        self.logs = list(runner.logs())
        #: a run is going on (its log is the newest, not final yet), as the
        #: page's script tells it from the API's logs
        self.active = bool(self.logs) and self.logs[-1].status is None
        self.schedule_words = describe_schedule(job.schedule, job.interval, job.timezone)
        self.raw_schedule = job.schedule or (
            f"interval {int(job.interval.total_seconds())}s" if job.interval is not None else ""
        )
        self._ui = ui
        self._store = runner.store

    def runs(self, limit: int | None = None) -> list[_RunView]:
        """The newest C{limit} runs, newest first, with their times."""
        names = sorted(self.logs, key=lambda n: n.counter, reverse=True)
        if limit is not None:
            names = names[:limit]
        return [self._ui._run_view(self._store, self.kind, name) for name in names]

    def log_href(self, counter: int) -> str:
        return f"/karajo/app/log?kind={self.kind}&id={quote(self.id)}&counter={counter}"

    def job_href(self) -> str:
        return f"/karajo/app/job?kind={self.kind}&id={quote(self.id)}"


# --- template elements ---------------------------------------------------------

_SVG_W, _SVG_H, _BAR_W, _BAR_GAP = 200, 40, 8, 2


def chart(runs: list[_RunView]) -> Tag:
    """
    An inline SVG of the runs (oldest left): one bar per run, its height the
    duration relative to the longest, its colour the outcome.  The page's
    script redraws it the same way.
    """
    runs = list(reversed(runs))
    durations = [r.duration for r in runs if r.duration is not None]
    longest = max(durations) if durations else 0.0
    svg = Tag("svg", attributes={
        "class": "chart", "viewBox": f"0 0 {_SVG_W} {_SVG_H}", "width": str(_SVG_W),
        "height": str(_SVG_H), "role": "img",
        "aria-label": "last runs: bar height is the duration, colour the outcome",
        "xmlns": "http://www.w3.org/2000/svg",
    })
    svg.children.append(Tag("line", attributes={
        "class": "axis", "x1": "0", "y1": str(_SVG_H - 0.5), "x2": str(_SVG_W),
        "y2": str(_SVG_H - 0.5),
    }))
    for index, run in enumerate(runs[-CHART_RUNS:]):
        duration = run.duration
        if duration is not None and longest > 0:
            height = max(3.0, (_SVG_H - 2) * duration / longest)
        elif run.status in FINAL_STATUSES and duration is not None:
            height = 3.0
        else:
            height = _SVG_H - 2 if run.status == "running" else 6.0
        x = index * (_BAR_W + _BAR_GAP)
        label = f"#{run.counter} {run.status}"
        if duration is not None:
            label += f", {human_duration(duration)}"
        rect = Tag("rect", attributes={
            "class": f"bar st-{run.status}", "x": str(x), "y": f"{_SVG_H - 1 - height:.1f}",
            "width": str(_BAR_W), "height": f"{height:.1f}",
            "data-counter": str(run.counter),
            "data-duration": "" if duration is None else f"{duration:.0f}",
            "data-start": "" if run.start is None else f"{run.start:.0f}",
        })
        rect.children.append(Tag("title")(label))
        svg.children.append(rect)
    return svg


def _time_tag(epoch: float | None, field: str, **extra: str) -> Tag:
    attributes: dict[bytes | str, Any] = {"data-field": field, "datetime": _iso(epoch)}
    attributes.update(extra)
    return Tag("time", attributes=attributes)(_human_time(epoch))


class CardElement(Element):
    """One job's card (templates/card.html)."""

    def __init__(self, loader: Any, view: _JobView, ui: WebUI, detail: bool = False) -> None:
        super().__init__(loader)
        self.view = view
        self.ui = ui
        self.detail = detail

    @renderer
    def card(self, request: Any, tag: Tag) -> Tag:
        v = self.view
        job = v.job
        description = sanitize_description(job.description)
        searchable = " ".join([v.name, v.id, v.kind, _text_of(description)]).lower()
        tag.attributes.update({
            "data-kind": v.kind,
            "data-id": v.id,
            "data-search": searchable,
            "data-path": getattr(job, "path", "") or "",
            "data-auth": getattr(job, "auth_kind", "") or "",
            "data-sign-header": getattr(job, "header_sign", "") or "",
            "data-run-now": "1",
            "data-active": "1" if v.active else "",
            "id": f"{v.kind}-{v.id}",
        })
        runs = v.runs(CHART_RUNS)
        return tag.fillSlots(
            name=v.name,
            job_href=v.job_href(),
            kind_label="HTTP job" if v.kind == "job_http" else "job",
            status=v.status,
            status_class=f"status st-{v.status}",
            description=description,
            schedule=v.schedule_words,
            raw_schedule=v.raw_schedule,
            last_run=_time_tag(v.last_run, "last_run", **{"class": "rel"}),
            next_run=_time_tag(
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
            actions=self._actions(v),
        )

    def _actions(self, v: _JobView) -> list[Tag]:
        def button(action: str, label: str, title: str, disabled: bool) -> Tag:
            attributes: dict[bytes | str, Any] = {
                "type": "button", "data-action": action, "title": title, "class": f"btn btn-{action}",
            }
            if disabled:
                attributes["disabled"] = "disabled"
            return Tag("button", attributes=attributes)(label)

        out = [
            button("run", "Run now", "Run this job now", v.status == "paused"),
            button("pause", "Pause", "Stop starting new runs", v.status == "paused"),
            button("resume", "Resume", "Start runs again", v.status != "paused"),
        ]
        if v.kind == "job":
            out.append(button("cancel", "Cancel", "Stop the running run", not v.active))
        return out


class _Page(Element):
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
            tags.meta(name="karajo-run-now", content=" ".join(self.ui.run_now_kinds)),
        ]
        return tag.fillSlots(
            title=f"{self.title} · {env.name}" if self.title else env.name,
            css=self.ui.static_url("app.css"),
            icon=self.ui.static_url("favicon.svg"),
            sha=self.ui.static_url("sha256.js"),
            js=self.ui.static_url("app.js"),
            metas=metas,
        )

    @renderer
    def page_body(self, request: Any, tag: Tag) -> Tag:
        tag.attributes["data-page"] = self.page
        user = self.session.user if self.session is not None else ""
        return tag.fillSlots(
            app_name=self.ui.env.name,
            icon=self.ui.static_url("favicon.svg"),
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
        if self.ui.sessions.enabled or self.page not in ("dashboard", "job"):
            return ""
        return tag


class _Simple(Element):
    """A body template filled with slots."""

    def __init__(self, loader: Any, **slots: Any) -> None:
        super().__init__(loader)
        self.slots = slots

    @renderer
    def fill(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(**self.slots)


class _Dashboard(Element):
    def __init__(self, ui: WebUI, views: list[_JobView]) -> None:
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
        return tag([CardElement(self.ui.loader("card"), v, self.ui) for v in self.views])


class _JobPage(Element):
    def __init__(self, ui: WebUI, view: _JobView) -> None:
        super().__init__(ui.loader("job"))
        self.ui = ui
        self.view = view

    @renderer
    def card(self, request: Any, tag: Tag) -> Any:
        return CardElement(self.ui.loader("card"), self.view, self.ui, detail=True)

    @renderer
    def details(self, request: Any, tag: Tag) -> Tag:
        job = self.view.job
        rows: list[Tag] = [tags.dt("ID"), tags.dd(tags.code(job.id))]
        if self.view.kind == "job":
            if job.path:
                rows += [tags.dt("Webhook"), tags.dd(
                    tags.code("POST /karajo/api/job_exec/run" + job.path),
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
            from karajo.redact import masked_url

            rows += [
                tags.dt("Request"),
                tags.dd(tags.code(f"{job.http_method} {masked_url(job.http_url)}"),
                        f" ({job.http_request_type})"),
            ]
        rows += [tags.dt("Keeps"), tags.dd(_plural(job.log_retention, "log"))]
        return tag(rows)

    @renderer
    def runs(self, request: Any, tag: Tag) -> Any:
        v = self.view
        rows = []
        for r in v.runs():
            rows.append(tags.tr(
                tags.td(tags.a(f"#{r.counter}", href=v.log_href(r.counter))),
                tags.td(tags.span(r.status, **{"class": f"status st-{r.status}"})),
                tags.td(_time_tag(r.start, "start")),
                tags.td(human_duration(r.duration) or "—", **{"data-field": "duration"}),
                **{"data-counter": str(r.counter)},
            ))
        if not rows:
            rows.append(tags.tr(tags.td("no runs yet", colspan="4"), **{"class": "none"}))
        return tag(rows)


# --- the resource ----------------------------------------------------------------

_STATIC_TYPES = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
}


class _Static:
    __slots__ = ("body", "etag", "content_type")

    def __init__(self, body: bytes, content_type: bytes) -> None:
        self.body = body
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode("ascii") + b'"'
        self.content_type = content_type


def _load_static(directory: str) -> dict[str, _Static]:
    """Every regular file directly in C{directory}, read once."""
    found: dict[str, _Static] = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isfile(path) or os.path.islink(path):
            continue
        ext = os.path.splitext(name)[1].lower()
        content_type = _STATIC_TYPES.get(ext)
        if content_type is None:
            guessed = mimetypes.guess_type(name)[0]
            content_type = (guessed or "application/octet-stream").encode("ascii")
        with open(path, "rb") as f:
            found[name] = _Static(f.read(), content_type)
    return found


_NEXT_OK = re.compile(r"\A/karajo/app/[A-Za-z0-9_./?&=%-]*\Z")


def safe_next(value: str | None) -> str:
    """Where to go after login: a dashboard URL, never another site."""
    if value and _NEXT_OK.match(value) and "//" not in value and ".." not in value:
        return value
    return "/karajo/app/"


class _UIResource(Resource):
    isLeaf = True

    def __init__(self, ui: WebUI) -> None:
        super().__init__()
        self.ui = ui

    def render(self, request: Any) -> Any:
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return self.ui.error_page(request, 405, "Method not allowed",
                                      "This page only answers GET.")
        return self.ui.route(request, list(request.postpath))


class WebUI:
    """
    The dashboard of a L{karajo.service.KarajoService}.

    @param service: the server whose jobs are shown.
    @param sessions: its L{karajo.users.Sessions}.
    @param templates: the templates directory (default: the installed one).
    """

    def __init__(self, service: Any, sessions: Any, *, templates: str | None = None) -> None:
        self.service = service
        self.sessions = sessions
        self.env = service.env
        self._dir = templates or resources.templates_dir()
        self._loaders: dict[str, XMLFile] = {}
        self._static = _load_static(os.path.join(self._dir, "static"))
        self._durations: dict[tuple, tuple[float | None, float | None]] = {}
        # Both kinds have a run_now call in the API (session + CSRF, or the
        # global secret's signature); the page uses it for every job.
        self.run_now_kinds = ("job_exec", "job_http")

    def resource(self) -> IResource:
        return _UIResource(self)

    # --- helpers ------------------------------------------------------------

    def loader(self, name: str) -> XMLFile:
        loader = self._loaders.get(name)
        if loader is None:
            loader = XMLFile(FilePath(os.path.join(self._dir, name + ".html")))
            self._loaders[name] = loader
        return loader

    def static_url(self, name: str) -> str:
        entry = self._static.get(name)
        version = entry.etag.strip(b'"')[:10].decode("ascii") if entry else "0"
        return f"/karajo/static/{name}?v={version}"

    def _run_view(self, store: Any, kind: str, name: Any) -> _RunView:
        status = name.status or "running"
        key = (kind, name.job_id, name.counter, status)
        span = self._durations.get(key)
        if span is None:
            span = log_span(store.path_of(name))
            if name.status is not None:
                if len(self._durations) > 20000:
                    self._durations.clear()
                self._durations[key] = span
        return _RunView(name.counter, status, span[0], span[1] if name.status else None)

    def _session(self, request: Any) -> Any:
        return self.sessions.from_request(request)

    def _views(self) -> list[_JobView]:
        views = [_JobView(self, "job", svc) for svc in self.service.jobs.values()]
        views += [_JobView(self, "job_http", svc) for svc in self.service.http_jobs.values()]
        return views

    # --- responses ------------------------------------------------------------

    def _render(self, request: Any, element: Element, code: int = 200) -> Any:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        d = flattenString(request, element)

        def written(body: bytes) -> None:
            if not request_gone(request):
                request.setHeader(b"content-length", b"%d" % (len(body) + 16))
                request.write(b"<!DOCTYPE html>\n" + body)
                request.finish()

        def failed(failure: Any) -> None:
            log.failure("rendering {path} failed", failure,
                        path=request.path[:200].decode("latin-1"))
            if not request_gone(request):
                request.setResponseCode(500)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                request.setHeader(b"content-length", b"22")
                request.write(b"internal server error\n")
                request.finish()

        d.addCallbacks(written, failed)
        return NOT_DONE_YET

    def page(self, request: Any, title: str, page: str, body: Element,
             session: Any = None, code: int = 200) -> Any:
        return self._render(request, _Page(self, request, title, body, page, session), code)

    def error_page(self, request: Any, code: int, title: str, message: str,
                   session: Any = None) -> Any:
        body = _Simple(self.loader("error"), title=title, message=message, code=str(code))
        return self.page(request, title, "error", body, session, code)

    def redirect(self, request: Any, location: str) -> bytes:
        request.setResponseCode(302)
        request.setHeader(b"location", location.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b""

    # --- routing ----------------------------------------------------------------

    def route(self, request: Any, path: list[bytes]) -> Any:
        if path == []:
            return self.redirect(request, "/karajo/")
        if path == [b""]:
            return self.login(request)
        if path[0] == b"static" and len(path) == 2:
            return self.static(request, path[1])
        if path[0] == b"app":
            if path == [b"app"]:
                return self.redirect(request, "/karajo/app/")
            session = self._session(request)
            if self.sessions.enabled and session is None:
                target = request.uri.decode("latin-1")
                return self.redirect(request, "/karajo/?next=" + quote(safe_next(target), safe=""))
            if path == [b"app", b""]:
                return self.dashboard(request, session)
            if path == [b"app", b"job"]:
                return self.job_page(request, session)
            if path == [b"app", b"log"]:
                return self.log_page(request, session)
        return self.error_page(request, 404, "Not found", "There is no such page.",
                               self._session(request))

    def login(self, request: Any) -> Any:
        nxt = safe_next(query_params(request).get("next"))
        if not self.sessions.enabled or self._session(request) is not None:
            return self.redirect(request, nxt)
        body = _Simple(self.loader("login"), app_name=self.env.name, next=nxt)
        return self.page(request, "Log in", "login", body)

    def dashboard(self, request: Any, session: Any) -> Any:
        return self.page(request, "Dashboard", "dashboard", _Dashboard(self, self._views()), session)

    def _find(self, request: Any, session: Any) -> tuple[_JobView | None, Any]:
        query = query_params(request)
        kind = query.get("kind", "job")
        if kind not in KINDS:
            return None, self.error_page(request, 400, "Bad request",
                                         "kind must be job or job_http.", session)
        table = self.service.jobs if kind == "job" else self.service.http_jobs
        svc = table.get(query.get("id", ""))
        if svc is None:
            return None, self.error_page(request, 404, "No such job",
                                         "There is no job with this ID.", session)
        return _JobView(self, kind, svc), None

    def job_page(self, request: Any, session: Any) -> Any:
        view, failed = self._find(request, session)
        if view is None:
            return failed
        return self.page(request, view.name, "job", _JobPage(self, view), session)

    def log_page(self, request: Any, session: Any) -> Any:
        view, failed = self._find(request, session)
        if view is None:
            return failed
        counter_text = query_params(request).get("counter", "")

        def show(found: Any) -> Any:
            if found is None:
                return self.error_page(request, 404, "No such log",
                                       "This run has no log (old logs are deleted).", session)
            name, content = found
            status = name.status or "running"
            text = content.decode("utf-8", errors="replace")
            body = _LogPage(self, view, name, status, text, len(content))
            return self.page(request, f"{view.name} #{name.counter}", "log", body, session)

        if not (re.fullmatch(r"[0-9]{1,18}", counter_text) and int(counter_text) >= 1):
            return show(None)
        store = self.service.job_service(view.kind, view.id).runner.store
        # A log may be 10 MiB: read it off the reactor thread, then render.
        d = store.run_in_thread(store.read, int(counter_text))
        d.addCallback(show)

        def read_failed(f: Any) -> Any:
            log.failure("log page failed", f)
            return self.error_page(request, 500, "Error", "The log could not be read.", session)

        d.addErrback(read_failed)
        return NOT_DONE_YET

    def static(self, request: Any, name: bytes) -> Any:
        entry = self._static.get(name.decode("latin-1"))
        if entry is None:
            return self.error_page(request, 404, "Not found", "There is no such file.")
        request.setHeader(b"content-type", entry.content_type)
        request.setHeader(b"etag", entry.etag)
        request.setHeader(b"cache-control", b"no-cache")
        if request.getHeader(b"if-none-match") == entry.etag:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-length", b"%d" % len(entry.body))
        return entry.body


class _LogPage(Element):
    def __init__(self, ui: WebUI, view: _JobView, name: Any, status: str, text: str,
                 size: int) -> None:
        super().__init__(ui.loader("log"))
        self.ui = ui
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
            "data-kind": v.kind, "data-id": v.id, "data-counter": str(self.counter),
            "data-offset": str(self.size), "data-status": self.status,
        })
        run = self.ui._run_view(v._store, v.kind, self.name)
        earlier = [n.counter for n in v.logs if n.counter < self.counter]
        prev = max(earlier) if earlier else None
        return tag.fillSlots(
            name=v.name,
            job_href=v.job_href(),
            counter=str(self.counter),
            status=self.status,
            status_class=f"status st-{self.status}",
            start=_time_tag(run.start, "start"),
            duration=human_duration(run.duration) or "—",
            content=self.text,
            prev_href=v.log_href(prev) if prev else v.job_href(),
            prev_label=f"← #{prev}" if prev else "← runs",
            next=self._next(),
        )

    def _next(self) -> Any:
        later = [n.counter for n in self.view.logs if n.counter > self.counter]
        if not later:
            return ""
        counter = min(later)
        return tags.a(f"#{counter} →", href=self.view.log_href(counter),
                      **{"class": "btn btn-small"})
