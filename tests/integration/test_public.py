"""
Tests for L{karajo.web.public}: dir_public under "/".

Requests go through C{treq.testing.StubTreq} against the real resource, and
a part of the traversal corpus also over a real loopback socket with a raw
client, so that the exact bytes of the request line reach the server
without any client-side URL normalisation.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from karajo.web.public import PublicFiles

SECRET = b"TOPSECRET"
NOT_FOUND = {"code": 404, "name": "ERR_NOT_FOUND", "message": "not found", "data": None}


def write(path: str, data: bytes) -> None:
    """Write C{data} to C{path}, creating parent directories."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def make_tree(base: str) -> str:
    """
    Lay out a public directory with secrets around it; return its path.

    base/
      secret.txt, pub-secret/secret.txt, public-secret/secret.txt   (outside)
      pub/
        hello.txt, style.css, data.json, archive.tar.gz
        nested/deep/file.json
        docs/index.html
        empty/                  (no index)
        .hidden, .git/config, nested/.env
        link-in -> hello.txt, dirlink-in -> nested       (inside → inside)
        link-out -> ../secret.txt, dirlink-out -> ../public-secret,
        sib -> ../pub-secret, abs-link -> /abs/base/secret.txt,
        index-out/index.html -> ../../secret.txt          (inside → outside)
        link-hidden -> .hidden                            (→ hidden)
        fifo                                              (not a regular file)
    """
    base = os.path.abspath(base)
    pub = os.path.join(base, "pub")
    write(os.path.join(base, "secret.txt"), SECRET + b"-1")
    write(os.path.join(base, "pub-secret", "secret.txt"), SECRET + b"-2")
    write(os.path.join(base, "public-secret", "secret.txt"), SECRET + b"-3")
    write(os.path.join(pub, "hello.txt"), b"hello, world\n")
    write(os.path.join(pub, "style.css"), b"body { color: red }\n")
    write(os.path.join(pub, "data.json"), b'{"a": 1}\n')
    write(os.path.join(pub, "archive.tar.gz"), b"\x1f\x8b not really")
    write(os.path.join(pub, "nested", "deep", "file.json"), b'{"deep": true}\n')
    write(os.path.join(pub, "docs", "index.html"), b"<h1>docs</h1>\n")
    os.makedirs(os.path.join(pub, "empty"))
    write(os.path.join(pub, ".hidden"), SECRET + b"-hidden")
    write(os.path.join(pub, ".git", "config"), SECRET + b"-git")
    write(os.path.join(pub, "nested", ".env"), SECRET + b"-env")
    os.symlink("hello.txt", os.path.join(pub, "link-in"))
    os.symlink("nested", os.path.join(pub, "dirlink-in"))
    os.symlink("../secret.txt", os.path.join(pub, "link-out"))
    os.symlink("../public-secret", os.path.join(pub, "dirlink-out"))
    os.symlink("../pub-secret", os.path.join(pub, "sib"))
    os.symlink(os.path.join(base, "secret.txt"), os.path.join(pub, "abs-link"))
    os.makedirs(os.path.join(pub, "index-out"))
    os.symlink("../../secret.txt", os.path.join(pub, "index-out", "index.html"))
    os.symlink(".hidden", os.path.join(pub, "link-hidden"))
    os.mkfifo(os.path.join(pub, "fifo"))
    return pub


def traversal_corpus(raw_backslash: bool = False) -> list[str]:
    """
    Request paths that try to leave the public directory or reach hidden
    files.  None of them exists inside it, so even a client that normalises
    dots cannot turn one into a legitimate request.
    """
    dots = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e", "%252E%252E", "%c0%ae%c0%ae"]
    seps = ["/", "%2f", "%2F", "%5c", "%5C", "%252f"]
    if raw_backslash:
        seps.append("\\")
    targets = ["secret.txt", "pub-secret/secret.txt", "public-secret/secret.txt"]
    paths = [f"/{d}{s}{t}" for d, s, t in itertools.product(dots, seps, targets)]
    paths += [f"/nested/{d}{s}{d}{s}secret.txt" for d, s in itertools.product(dots, seps)]
    paths += [
        "/../../../../../../etc/passwd",
        "/nested/deep/../../../secret.txt",
        "/hello.txt/../../secret.txt",
        "/..;/secret.txt",
        "/.hidden",
        "/%2ehidden",
        "/.git/config",
        "/%2Egit/config",
        "/nested/.env",
        "/link-hidden",
        "/link-out",
        "/abs-link",
        "/dirlink-out/secret.txt",
        "/sib/secret.txt",
        "/index-out/",
        "/index-out/index.html",
        "/%2fetc/passwd",
        "/%2F..%2F..%2Fsecret.txt",
        "/hello.txt%00",
        "/hello.txt%00.html",
        "/%00/secret.txt",
        "/hello.txt/",
        "/nested//deep/file.json",
        "/empty/",
        "/nested/",
        "/fifo",
        "/missing.txt",
        "/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    ]
    return paths


async def stub_request(stub: StubTreq, method: str, path: str) -> tuple[Any, bytes]:
    """
    Send one request through StubTreq and read the whole body.

    The file producer runs on the global cooperator, so the in-memory
    connection has to be flushed repeatedly while waiting.
    """
    loop = LoopingCall(stub.flush)
    loop.start(0.001)
    try:
        response = await stub.request(method, "http://example.com" + path, allow_redirects=False)
        body = await stub.content(response)
    finally:
        loop.stop()
    return response, body


class RawClient(Protocol):
    """Sends one raw request and collects the whole answer."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(self.received)


class PublicTestCase(TestCase):
    """A public tree per test and helpers to query it."""

    def setUp(self) -> None:
        self.pub = make_tree(self.mktemp())
        self.stub = StubTreq(PublicFiles(self.pub))

    async def get(self, path: str, method: str = "GET") -> tuple[Any, bytes]:
        """Status, headers and body for C{path} through StubTreq."""
        return await stub_request(self.stub, method, path)

    def assertNotFound(self, response: Any, body: bytes, path: str) -> None:
        """The uniform JSON 404, with no secret and no echo of the path."""
        self.assertEqual(response.code, 404, path)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        # An answer that is "not there" must not be cached as the page.
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"], path)
        self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        self.assertEqual(json.loads(body), NOT_FOUND, path)
        self.assertNotIn(SECRET, body)


class ServeTests(PublicTestCase):
    """What is meant to be public is served, with the right type."""

    async def test_file(self) -> None:
        """A top-level file: its exact bytes and content type."""
        response, body = await self.get("/hello.txt")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"hello, world\n")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain"])
        self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])

    async def test_sandboxed(self) -> None:
        """
        Every public file is sandboxed by its CSP: it shares the dashboard's
        origin, and an HTML file must not drive the API with an admin's
        session (the sandbox gives it an opaque origin, Origin: null).
        """
        for path in ("/hello.txt", "/docs/index.html", "/docs/", "/style.css"):
            response, _ = await self.get(path)
            self.assertEqual(response.code, 200, path)
            [csp] = response.headers.getRawHeaders("content-security-policy")
            directives = [d.strip() for d in csp.split(";")]
            self.assertEqual(directives[0], "sandbox", path)
            self.assertIn("default-src 'none'", directives)
            self.assertFalse(any("allow-" in d for d in directives), csp)
            self.assertFalse(any(d.startswith("script-src") for d in directives), csp)

    async def test_content_types(self) -> None:
        """Types follow the extension; archives are sent as they are."""
        for path, ctype in [
            ("/style.css", "text/css"),
            ("/data.json", "application/json"),
            ("/docs/index.html", "text/html"),
        ]:
            response, _ = await self.get(path)
            self.assertEqual(response.headers.getRawHeaders("content-type"), [ctype], path)
        response, body = await self.get("/archive.tar.gz")
        self.assertEqual(body, b"\x1f\x8b not really")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/gzip"])
        self.assertFalse(any(response.headers.getRawHeaders("content-encoding", [])))

    async def test_nested(self) -> None:
        """A file two directories down."""
        response, body = await self.get("/nested/deep/file.json")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b'{"deep": true}\n')

    async def test_encoded_name(self) -> None:
        """Percent-encoded ordinary characters are decoded once, as usual."""
        response, body = await self.get("/hello%2Etxt")
        self.assertEqual((response.code, body), (200, b"hello, world\n"))

    async def test_directory_index(self) -> None:
        """A directory is answered with its index.html."""
        response, body = await self.get("/docs/")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"<h1>docs</h1>\n")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/html"])

    async def test_directory_redirect(self) -> None:
        """Without the trailing slash a directory redirects, relatively."""
        response, _ = await self.get("/docs")
        self.assertEqual(response.code, 301)
        self.assertEqual(response.headers.getRawHeaders("location"), ["docs/"])

    async def test_directory_without_index(self) -> None:
        """No index.html: 404, never a listing."""
        for path in ["/empty/", "/nested/", "/nested/deep/", "/"]:
            response, body = await self.get(path)
            self.assertNotFound(response, body, path)
            self.assertNotIn(b"file.json", body)

    async def test_root_index(self) -> None:
        """The root directory serves its own index.html."""
        write(os.path.join(self.pub, "index.html"), b"home")
        response, body = await self.get("/")
        self.assertEqual((response.code, body), (200, b"home"))

    async def test_symlink_inside(self) -> None:
        """Symlinks that stay inside the directory are followed."""
        response, body = await self.get("/link-in")
        self.assertEqual((response.code, body), (200, b"hello, world\n"))
        response, body = await self.get("/dirlink-in/deep/file.json")
        self.assertEqual((response.code, body), (200, b'{"deep": true}\n'))

    async def test_symlink_outside(self) -> None:
        """Symlinks that resolve outside, relative or absolute, are refused."""
        for path in ["/link-out", "/abs-link", "/dirlink-out/secret.txt", "/sib/secret.txt", "/index-out/"]:
            response, body = await self.get(path)
            self.assertNotFound(response, body, path)

    async def test_head(self) -> None:
        """HEAD gives the headers without the body."""
        response, body = await self.get("/hello.txt", method="HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")
        self.assertEqual(response.headers.getRawHeaders("content-length"), ["13"])

    async def test_other_methods(self) -> None:
        """Public files are read-only: other methods are a JSON 405."""
        response, body = await self.get("/hello.txt", method="POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])
        self.assertEqual(json.loads(body)["name"], "ERR_METHOD_NOT_ALLOWED")

    async def test_missing_directory(self) -> None:
        """A dir_public that does not exist serves nothing (404), no crash."""
        stub = StubTreq(PublicFiles(os.path.join(self.pub, "does-not-exist")))
        response, body = await stub_request(stub, "GET", "/hello.txt")
        self.assertNotFound(response, body, "/hello.txt")

    async def test_unreadable_file(self) -> None:
        """
        A file that cannot be opened for a reason Twisted does not handle
        itself (an I/O error, a file removed between the checks and the
        open) reaches our own handler in C{_File.render_GET}: the JSON 404,
        not a 500 with a traceback.
        """
        import errno

        from karajo.web import public

        for code in (errno.EIO, errno.ENOENT, errno.ELOOP):

            def refuse(self: Any, code: int = code) -> Any:
                raise OSError(code, os.strerror(code))

            self.patch(public._File, "openForReading", refuse)
            for method in ("GET", "HEAD"):
                response, body = await self.get("/hello.txt", method)
                if method == "GET":
                    self.assertNotFound(response, body, "/hello.txt")
                else:
                    self.assertEqual(response.code, 404, errno.errorcode[code])

    async def test_forbidden_file(self) -> None:
        """
        A file the server may not read (EACCES, which Twisted answers with
        its C{forbidden} resource) is the same JSON 404, not Twisted's HTML
        403 (simulated: the tests may run as root).
        """
        import errno

        from karajo.web import public

        def refuse(self: Any) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied")

        self.patch(public._File, "openForReading", refuse)
        response, body = await self.get("/hello.txt")
        self.assertNotFound(response, body, "/hello.txt")

    async def test_nested_directory_redirect(self) -> None:
        """
        A directory further down redirects to its own name with a slash,
        relative to where the client is (C{/nested/deep} -> C{deep/}), and
        the name is percent-encoded.
        """
        response, body = await self.get("/nested/deep")
        self.assertEqual(response.code, 301)
        self.assertEqual(response.headers.getRawHeaders("location"), ["deep/"])
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(json.loads(body), {"code": 301, "message": "moved", "data": None})
        os.makedirs(os.path.join(self.pub, "nested", "a b?&"))
        response, _ = await self.get("/nested/a%20b%3F%26")
        self.assertEqual(response.code, 301)
        self.assertEqual(response.headers.getRawHeaders("location"), ["a%20b%3F%26/"])
        response, _ = await self.get("/dirlink-in/deep")
        self.assertEqual(response.headers.getRawHeaders("location"), ["deep/"])

    async def test_nested_directory_redirect_target(self) -> None:
        """Following the relative redirect of a nested directory serves its index."""
        write(os.path.join(self.pub, "nested", "deep", "index.html"), b"deep index")
        response, _ = await self.get("/nested/deep")
        self.assertEqual(response.headers.getRawHeaders("location"), ["deep/"])
        response, body = await self.get("/nested/deep/")
        self.assertEqual((response.code, body), (200, b"deep index"))


class EdgeTests(PublicTestCase):
    """Cases the mutation run found no test for (tests/MUTATION.md)."""

    async def test_default_type(self) -> None:
        """A file whose name says nothing about its type is an octet stream."""
        write(os.path.join(self.pub, "blob"), b"\x00\x01")
        response, body = await self.get("/blob")
        self.assertEqual((response.code, body), (200, b"\x00\x01"))
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/octet-stream"]
        )

    async def test_redirect_body_bytes(self) -> None:
        """The redirect's JSON body, byte for byte (compact, like every answer)."""
        response, body = await self.get("/docs")
        self.assertEqual(body, b'{"code":301,"message":"moved","data":null}')

    async def test_not_found_headers(self) -> None:
        """The JSON 404 carries nosniff, like the files."""
        response, _ = await self.get("/missing.txt")
        self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        response, _ = await self.get("/hello.txt", "POST")
        self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])

    async def test_single_dot_segment(self) -> None:
        """
        An encoded C{.} segment (which no client normalises away) is
        refused, although it would resolve to a served file.
        """
        for path in ("/%2e/hello.txt", "/nested/%2e/deep/file.json", "/docs/%2E/"):
            response, body = await self.get(path)
            self.assertNotFound(response, body, path)

    async def test_symlink_to_nested_hidden(self) -> None:
        """A symlink to a hidden file further down is refused too."""
        os.symlink(os.path.join("nested", ".env"), os.path.join(self.pub, "envlink"))
        response, body = await self.get("/envlink")
        self.assertNotFound(response, body, "/envlink")

    async def test_working_directory_irrelevant(self) -> None:
        """The hidden-name check is relative to the directory, not to the cwd."""
        elsewhere = os.path.join(os.path.dirname(self.pub), "elsewhere")
        os.makedirs(elsewhere)
        cwd = os.getcwd()
        os.chdir(elsewhere)
        self.addCleanup(os.chdir, cwd)
        response, body = await self.get("/nested/deep/file.json")
        self.assertEqual((response.code, body), (200, b'{"deep": true}\n'))

    async def test_filesystem_root(self) -> None:
        """A directory that is C{/} itself serves what is below it."""
        with open("/etc/passwd", "rb") as f:
            expected = f.read()
        stub = StubTreq(PublicFiles("/"))
        response, body = await stub_request(stub, "GET", "/etc/passwd")
        self.assertEqual((response.code, body), (200, expected))

    async def test_mounted_without_trailing_slash(self) -> None:
        """
        Mounted under a path (no segment left after it), the directory
        itself is asked for: its index.html.
        """
        from twisted.web.resource import Resource

        write(os.path.join(self.pub, "index.html"), b"home")
        root = Resource()
        root.putChild(b"pub", PublicFiles(self.pub))
        response, body = await stub_request(StubTreq(root), "GET", "/pub")
        self.assertEqual((response.code, body), (200, b"home"))

    async def test_refusal_logged(self) -> None:
        """A path resolving outside is logged at debug level, with the directory."""
        from twisted.logger import globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        await self.get("/link-out")
        (event,) = [e for e in events if e.get("log_namespace") == "karajo.web.public"]
        self.assertEqual(event["log_format"], "refused a public path resolving outside {root}")
        self.assertEqual(event["root"], os.path.realpath(self.pub))
        self.assertEqual(event["log_level"].name, "debug")


class TraversalTests(PublicTestCase):
    """Nothing outside the directory, nothing hidden, through StubTreq."""

    def test_corpus_size(self) -> None:
        """The corpus is large enough to be meaningful."""
        self.assertGreaterEqual(len(traversal_corpus()), 30)

    async def test_corpus(self) -> None:
        """Every path of the corpus is the JSON 404 and leaks no secret."""
        for path in traversal_corpus():
            response, body = await self.get(path)
            self.assertNotFound(response, body, path)
            self.assertNotIn(b"script", body)


class LoopbackTests(PublicTestCase):
    """
    The corpus over a real socket with a raw client: the request line is
    sent byte for byte, raw backslashes and all.
    """

    def setUp(self) -> None:
        super().setUp()
        self.port = reactor.listenTCP(0, Site(PublicFiles(self.pub)), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    async def raw_get(self, target: bytes) -> tuple[int, bytes, bytes]:
        """Status code, head and body for a raw request target."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        client = RawClient(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await connectProtocol(endpoint, client)
        raw = await client.done
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), head, body

    async def test_file(self) -> None:
        """A normal file over the socket."""
        code, head, body = await self.raw_get(b"/nested/deep/file.json")
        self.assertEqual((code, body), (200, b'{"deep": true}\n'))

    async def test_corpus(self) -> None:
        """The corpus plus raw-backslash and absolute-form targets: all 404."""
        targets = [p.encode() for p in traversal_corpus(raw_backslash=True)]
        targets += [
            b"/..\\..\\secret.txt",
            b"/nested\\..\\..\\secret.txt",
            b"http://x/../secret.txt",
            b"/%2e%2e%5c%2e%2e%5csecret.txt",
        ]
        self.assertGreaterEqual(len(targets), 30)
        for target in targets:
            code, head, body = await self.raw_get(target)
            self.assertEqual(code, 404, target)
            self.assertEqual(json.loads(body), NOT_FOUND, target)
            self.assertNotIn(SECRET, head + body)
            self.assertNotIn(b"<script", head + body)

    async def test_raw_non_ascii(self) -> None:
        """
        Raw non-ASCII bytes in the request line (overlong UTF-8 dots, Latin-1)
        are refused by Twisted's parser (400) or by us (404), never served.
        """
        for target in [b"/\xc0\xae\xc0\xae/secret.txt", b"/caf\xe9/secret.txt", b"/\xff/../secret.txt"]:
            code, head, body = await self.raw_get(target)
            self.assertIn(code, (400, 404), target)
            self.assertNotIn(SECRET, head + body)
