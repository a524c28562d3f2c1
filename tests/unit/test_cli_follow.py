"""The events-stream reader of C{karajo trigger --follow} (L{karajo.follow_client.events})."""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase

from karajo import follow_client


class EventsParserTests(SynchronousTestCase):
    def test_events_comments_and_blank_lines(self) -> None:
        body = (
            b": following\n\n"
            b'event: log\ndata: {"offset":0,"text":"a\\n"}\n\n'
            b": ping\n\n"
            b'event: log\r\ndata: {"offset":2,"text":"\xe2\x82\xac\\n"}\r\n\r\n'
            b'event: end\ndata: {"status":"canceled"}\n\n'
        )
        self.assertEqual(list(follow_client.events(io.BytesIO(body))), [
            ("log", {"offset": 0, "text": "a\n"}),
            ("log", {"offset": 2, "text": "€\n"}),
            ("end", {"status": "canceled"}),
        ])

    def test_a_cut_stream_ends_without_its_last_event(self) -> None:
        body = b'event: log\ndata: {"offset":0,"text":"a"}\n\nevent: end\ndata: {"sta'
        self.assertEqual(list(follow_client.events(io.BytesIO(body))),
                         [("log", {"offset": 0, "text": "a"})])

    def test_exit_status_by_run_status(self) -> None:
        self.assertEqual(
            [follow_client.RUN_EXIT[s] for s in ("success", "failed", "canceled")], [0, 1, 3])
