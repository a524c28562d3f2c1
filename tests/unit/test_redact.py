"""
Tests for L{karajo.redact}: passwords in URLs and credential headers never
reach a page, a terminal or a log.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from karajo.redact import MASK, masked_headers, masked_url


class MaskTests(SynchronousTestCase):
    def test_mask(self) -> None:
        """The mask is fixed: scripts and docs show it."""
        self.assertEqual(MASK, "********")


class MaskedHeadersTests(SynchronousTestCase):
    def test_credentials_masked(self) -> None:
        """Every name that looks like a credential, in any case."""
        for name in (
            "Authorization", "authorization", "Proxy-Authorization", "Cookie", "Set-Cookie",
            "X-Token", "X-Auth-Token", "X-Secret", "Password", "X-Passwd-Hint", "X-Api-Key",
            "Api_Key", "apikey", "X-Auth",
        ):
            self.assertEqual(masked_headers([(name, "v4lue")]), [f"{name}: ********"], name)

    def test_others_shown(self) -> None:
        self.assertEqual(
            masked_headers([("Content-Type", "application/json"), ("X-Request-Id", "7")]),
            ["Content-Type: application/json", "X-Request-Id: 7"],
        )

    def test_order_and_repeats_kept(self) -> None:
        self.assertEqual(
            masked_headers([("A", "1"), ("Cookie", "c"), ("A", "2")]),
            ["A: 1", "Cookie: ********", "A: 2"],
        )

    def test_empty(self) -> None:
        self.assertEqual(masked_headers([]), [])


class MaskedUrlTests(SynchronousTestCase):
    def test_password_masked(self) -> None:
        self.assertEqual(
            masked_url("https://user:pw@example.com:8443/p?q=1#f"),
            "https://user:********@example.com:8443/p?q=1#f",
        )

    def test_password_with_at_sign(self) -> None:
        """Everything up to the last @ is userinfo."""
        self.assertEqual(masked_url("https://u:p@ss@host/x"), "https://u:********@host/x")

    def test_empty_password_and_empty_user(self) -> None:
        """A present but empty password is masked too (its length is not shown)."""
        self.assertEqual(masked_url("https://u:@host"), "https://u:********@host")
        self.assertEqual(masked_url("https://:pw@host"), "https://:********@host")

    def test_no_password_unchanged(self) -> None:
        for url in ("https://u@host/x", "https://host/x", "not a url", "", "http://[::1]:80/"):
            self.assertEqual(masked_url(url), url)

    def test_malformed_url(self) -> None:
        """URLs urlsplit refuses are masked by pattern."""
        self.assertEqual(masked_url("http://u:pw@[::1"), "http://u:********@[::1")
        self.assertEqual(masked_url("http://u:pw@[bad/x"), "http://u:********@[bad/x")

    def test_malformed_url_password_with_at_sign(self) -> None:
        """
        In a URL urlsplit refuses, the password also runs to the last @
        before the path, as it does for a well-formed one: no piece of it
        is left in the output.
        """
        self.assertEqual(masked_url("http://u:p@ss@[::1"), "http://u:********@[::1")
        self.assertEqual(masked_url("http://u:p@ss@[::1/x@y"), "http://u:********@[::1/x@y")

    def test_bad_port_still_masked(self) -> None:
        self.assertEqual(masked_url("http://u:pw@host:99999/"), "http://u:********@host:99999/")
