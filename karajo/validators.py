"""
What a notif and a user must be to work: pure checks that the config
loader needs at start-up and the services reuse.

They live here, below the config and above nothing but the model, so that
reading a configuration never imports a service: before, C{config.py}
imported them from C{notify.py} (which imports C{twisted.mail.smtp}) and
C{users.py} (bcrypt, threads), and loading a config pulled in Twisted's
mail client.  Nothing here touches a reactor, a socket or a thread.
"""

from __future__ import annotations

import email.utils
import re
from urllib.parse import urlsplit

from karajo.model import TOKEN_SCOPES, Notif, Token
from karajo.tokens import digest_of

__all__ = [
    "DEFAULT_PORTS",
    "NotifConfigError",
    "TokenConfigError",
    "addr_spec",
    "check_notif",
    "check_token",
    "is_bcrypt_hash",
    "normalize_hash",
    "parse_smtp_server",
]

# --- notifs --------------------------------------------------------------

DEFAULT_PORTS = {"smtps": 465, "smtp+starttls": 587}


class NotifConfigError(ValueError):
    """
    A notif that cannot work as configured (a start-up error).  C{key} is
    the model attribute at fault, so the config loader can name its line.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def parse_smtp_server(url: str) -> tuple[str, str, int]:
    """
    Split C{smtp_server} into C{(scheme, host, port)}.

    @raise NotifConfigError: not C{smtps://host[:port]} or
        C{smtp+starttls://host[:port]}.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise NotifConfigError(f"smtp_server {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise NotifConfigError(
            f"smtp_server {url!r}: must start with smtps:// or smtp+starttls://"
        )
    if not parts.hostname:
        raise NotifConfigError(f"smtp_server {url!r}: no host")
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise NotifConfigError(
            f"smtp_server {url!r}: only scheme://host[:port] is allowed"
            " (user and password go in smtp_user and smtp_password)"
        )
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]


def addr_spec(text: str) -> str:
    """The bare address of C{"Name <a@b>"} or C{"a@b"}."""
    return email.utils.parseaddr(text)[1]


def check_notif(notif: Notif) -> None:
    """
    Reject a notif that cannot work, so that a bad config is a start-up
    error rather than a string of failed mails.

    @raise NotifConfigError: with the reason.
    """
    where = f"notif {notif.name!r}"
    if notif.kind == "webhook":
        _check_webhook(notif, where)
        return
    if notif.kind != "email":
        raise NotifConfigError(
            f"{where}: kind {notif.kind!r} is not supported (email or webhook)", "kind")
    try:
        parse_smtp_server(notif.smtp_server)
    except NotifConfigError as e:
        raise NotifConfigError(f"{where}: {e}", "smtp_server") from None
    if notif.smtp_password and not notif.smtp_user:
        raise NotifConfigError(f"{where}: smtp_password is set but smtp_user is not", "smtp_password")
    texts = (notif.sender, notif.smtp_user, *notif.to)
    if any("\r" in t or "\n" in t for t in texts):
        raise NotifConfigError(f"{where}: a value holds a line break", None)
    if not _valid_address(notif.sender):
        raise NotifConfigError(f"{where}: from {notif.sender!r} is not an e-mail address", "sender")
    if not notif.to:
        raise NotifConfigError(f"{where}: needs at least one to", "to")
    for to in notif.to:
        if not _valid_address(to):
            raise NotifConfigError(f"{where}: to {to!r} is not an e-mail address", "to")


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_webhook(notif: Notif, where: str) -> None:
    """A webhook notif needs an C{http(s)://host} URL; headers without line breaks."""
    try:
        parts = urlsplit(notif.url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise NotifConfigError(f"{where}: url: {e}", "url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        # The URL is not repeated: it may hold a token (Slack's do).
        raise NotifConfigError(f"{where}: url must be http:// or https:// with a host", "url")
    if any(c in notif.url for c in "\r\n\0 "):
        raise NotifConfigError(f"{where}: url holds a space or a control character", "url")
    for name, value in notif.http_headers:
        if not _HEADER_NAME.fullmatch(name):
            raise NotifConfigError(f"{where}: {name!r} is not a header name", "http_headers")
        if any(c in value for c in "\r\n\0"):
            raise NotifConfigError(
                f"{where}: header {name} holds a line break", "http_headers")


def _valid_address(text: str) -> bool:
    spec = addr_spec(text)
    if not spec or "@" not in spec or not spec.isascii():
        return False
    local, _, domain = spec.rpartition("@")
    return bool(local and domain)


# --- users ---------------------------------------------------------------

# $2a$/$2b$/$2y$, two-digit cost, 22 characters of salt + 31 of hash.
_BCRYPT_HASH = re.compile(r"\A\$2([aby])\$(\d\d)\$[./A-Za-z0-9]{53}\Z")


def is_bcrypt_hash(hashed: str) -> bool:
    """Whether C{hashed} is a bcrypt hash karajo can check (C{$2a$}, C{$2b$}, C{$2y$})."""
    return normalize_hash(hashed) is not None


def normalize_hash(hashed: str) -> str | None:
    """
    The hash in a form the C{bcrypt} package accepts, or None if malformed.

    C{$2y$} (PHP, htpasswd) is the same algorithm as C{$2b$}; C{$2a$} is
    accepted as is.
    """
    match = _BCRYPT_HASH.match(hashed)
    if match is None or not 4 <= int(match.group(2)) <= 31:
        return None
    if match.group(1) == "y":
        return "$2b$" + hashed[4:]
    return hashed


# --- API tokens ----------------------------------------------------------


class TokenConfigError(NotifConfigError):
    """A token that cannot be used as configured; C{key} as for a notif."""


def check_token(token: Token) -> None:
    """
    A token's C{hash} must be C{sha256:<64 hex digits>} and its C{scope}
    one of L{TOKEN_SCOPES}; the message never repeats the hash.

    @raise TokenConfigError: with C{key} the attribute at fault.
    """
    where = f'[token "{token.name}"]'
    if digest_of(token.hash) is None:
        raise TokenConfigError(
            f"{where}: hash must be sha256:<64 hex digits> (see karajo token new)", "hash")
    if token.scope not in TOKEN_SCOPES:
        raise TokenConfigError(
            f"{where}: scope must be one of {', '.join(TOKEN_SCOPES)}, not {token.scope!r}",
            "scope")
