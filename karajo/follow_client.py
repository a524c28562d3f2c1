"""
Following a run from the command line (C{karajo trigger --follow} and
C{--wait}): its events stream (docs/http-api.md, "Following a run") read
with C{urllib}, resumed at the byte offset reached when the connection is
lost, and the exit status the run's end gives.  Standard library only:
the C{karajo} command is a short-lived process without a reactor.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any


class FollowError(Exception):
    """The run could not be followed to its end; the message says why."""


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """The signed payload goes to the URL given and nowhere else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


#: Exit status of C{--follow}/C{--wait} by how the run ended.
RUN_EXIT = {"success": 0, "failed": 1, "canceled": 3}
#: Connections a follow may lose before giving up (each resumes at its offset).
FOLLOW_RETRIES = 5


def follow(url: str, token: str | None, *, show: bool, timeout: float) -> int:
    """
    Read the run's events stream (docs/http-api.md, "Following a run"),
    printing the log's text when C{show}; a lost connection resumes at
    the byte offset reached.  The exit status says how the run ended.
    """
    headers = {"Accept": "text/event-stream", "User-Agent": "karajo-cli"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    opener = urllib.request.build_opener(NoRedirects)
    offset, lost = 0, 0
    while True:
        request = urllib.request.Request(f"{url}&offset={offset:d}", headers=headers)
        try:
            with opener.open(request, timeout=timeout) as response:
                for event, data in events(response):
                    if event == "log":
                        text = str(data["text"])
                        if show:
                            sys.stdout.buffer.write(text.encode("utf-8"))
                            sys.stdout.flush()
                        offset = int(data["offset"]) + len(text.encode("utf-8"))
                    elif event == "end":
                        status = str(data["status"])
                        return RUN_EXIT.get(status, 1)
        except urllib.error.HTTPError as e:
            raise FollowError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            why = getattr(e, "reason", None) or e
            lost += 1
            if lost > FOLLOW_RETRIES:
                raise FollowError(f"lost {url}: {why}") from None
        else:
            lost += 1
            if lost > FOLLOW_RETRIES:
                raise FollowError(f"lost {url}: the stream closed before the run ended")
        time.sleep(1.0)


def events(response: Any) -> Any:
    """The C{(event, data)} pairs of a Server-Sent Events body, as they arrive."""
    event, data = "message", list[str]()
    while True:
        line = response.readline()
        if not line:
            return
        line = line.rstrip(b"\r\n").decode("utf-8", "replace")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
