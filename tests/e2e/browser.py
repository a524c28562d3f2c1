"""
A real headless Chromium for the web UI tests, driven by Playwright.

Playwright's sync API blocks, and trial's reactor must keep serving the
daemon under test meanwhile, so every browser call runs on one dedicated
thread (Playwright objects belong to the thread that made them) and comes
back to the test as a Deferred.

Chromium is Debian's (C{apt-get install -y chromium}); Playwright's own
browser download is not used.  L{skip_reason} says why the tests cannot
run when either is missing, so they are skipped rather than failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

CHROMIUM = os.environ.get("KARAJO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Screenshots land here (gitignored), outside trial's temporary directory.
ARTIFACTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "test-artifacts",
)

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set KARAJO_CHROMIUM)"
    return None


def assert_fits_phone(page) -> None:
    """The page opened at PHONE size does not scroll sideways."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"horizontal scroll at phone width: {width}"


def artifact(name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    return os.path.join(ARTIFACTS, name)


class Browser:
    """One Chromium on its own thread; L{call} runs a function there."""

    def __init__(self, reactor: Any, bypass_csp: bool = False) -> None:
        self._reactor = reactor
        #: let the test add its own inline scripts (axe-core through
        #: add_script_tag), which the pages' strict CSP would refuse
        self.bypass_csp = bypass_csp
        self._pool = ThreadPool(1, 1, name="playwright")
        self._pw: Any = None
        self.browser: Any = None
        self._profile = tempfile.mkdtemp(prefix="karajo-chromium-")
        #: console errors and page errors of every page, as text
        self.errors: list[str] = []
        self.console: list[str] = []

    def call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        return threads.deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)

    def start(self) -> defer.Deferred:
        self._pool.start()
        return self.call(self._launch)

    def _launch(self) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        # A fresh user-data dir per browser: no state leaks between tests.
        self.context = self._pw.chromium.launch_persistent_context(
            self._profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=DESKTOP,
            bypass_csp=self.bypass_csp,
        )
        self.context.set_default_timeout(15000)

    def new_page(self, viewport: dict | None = None, init_script: str | None = None) -> Any:
        """A new tab (call on the browser thread) that records console errors."""
        page = self.context.new_page()
        if viewport:
            page.set_viewport_size(viewport)
        if init_script:
            page.add_init_script(init_script)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        return page

    def _on_console(self, message: Any) -> None:
        text = f"{message.type}: {message.text}"
        self.console.append(text)
        if message.type == "error":
            self.errors.append(text)

    def stop(self) -> defer.Deferred:
        def close() -> None:
            try:
                if getattr(self, "context", None) is not None:
                    self.context.close()
            finally:
                if self._pw is not None:
                    self._pw.stop()

        d = self.call(close)

        def done(result: Any) -> Any:
            self._pool.stop()
            shutil.rmtree(self._profile, ignore_errors=True)
            return result

        return d.addBoth(done)
