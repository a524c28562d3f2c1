"""
Replay protection for signed requests (beyond the original karajo).

A valid signature only proves the secret's holder produced the bytes once;
anyone who captured them can send them again.  L{ReplayGuard} refuses:

  - a payload whose C{_karajo_epoch} is further than C{max_age} from the
    server clock (stale or pre-dated);
  - the same signed payload carrying C{_karajo_epoch} a second time while its
    epoch is still acceptable;
  - a repeated delivery id (GitHub C{X-GitHub-Delivery}, SourceHut
    C{X-Payload-Nonce}).

A request carrying none of these is accepted, as the original accepts it:
nothing distinguishes a replay from a fresh identical request.

The guard is pure: time comes from an injected clock and nothing is
scheduled; expired entries are dropped lazily while checking.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

from karajo.payload import json_object, looks_like_json_object, parse_pairs

__all__ = ["DELIVERY_MIN_TTL", "FULL", "InvalidEpoch", "ReplayGuard", "extract_epoch"]

#: How long a delivery id is remembered at least, in seconds.  Delivery ids
#: carry no timestamp, so any window is a compromise: a longer one catches
#: more replays and costs only memory, which max_entries bounds anyway.
#: A day covers GitHub's and SourceHut's retry schedules.
DELIVERY_MIN_TTL = 24 * 60 * 60.0

_EPOCH_FIELD = "_karajo_epoch"

#: The reason L{ReplayGuard.check} gives when it has no room left to
#: remember a request: refusing is the only answer that cannot let a replay
#: in.
FULL = "replay memory full; try again later"
# Go's strconv.ParseInt-style integer: optional sign, ASCII digits only
# (str.isdigit would accept other scripts' digits), bounded so int() cannot
# hit Python's digit limit.
_INT_RE = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)


def _format_seconds(seconds: float) -> str:
    """C{300.0} -> C{"300"}; keeps a fractional part only when there is one."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return repr(float(seconds))


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.define
class ReplayGuard:
    """
    Remembers recently accepted signed payloads and delivery ids.

    Memory is bounded by C{max_entries} whatever the request rate, and no
    live entry is ever evicted to make room: forgetting an entry before it
    expires would let its replay in (a flood of accepted requests could
    otherwise flush the table).  When the table is full of live entries, a
    request that would need a new entry is refused (L{FULL}) until some
    expire.  Keys are stored as SHA-256 digests so each entry costs the same
    whatever the caller passes.

    A signed payload is remembered until its epoch leaves the window
    (C{epoch + max_age}): after that the epoch check alone refuses it, so
    the entry has nothing left to guard.  Delivery ids carry no time and
    are remembered for C{max(max_age, delivery_ttl)}.

    Callers should only call L{check} after the signature verified, so an
    unauthenticated client cannot flood the table to evict real entries.

    @ivar max_age: seconds, the C{[karajo] sign_max_age} (default 300).
    @ivar clock: seconds since the epoch (C{reactor.seconds} in production).
    @ivar max_entries: most entries kept.
    @ivar delivery_ttl: least time a delivery id is remembered.
    """

    max_age: float = attrs.field(validator=_positive)
    clock: Callable[[], float]
    max_entries: int = attrs.field(
        default=100_000, validator=attrs.validators.ge(1)
    )
    delivery_ttl: float = attrs.field(default=DELIVERY_MIN_TTL, validator=_positive)
    # digest -> expiry time; insertion order == age order.
    _seen: OrderedDict[bytes, float] = attrs.field(
        factory=OrderedDict, init=False, repr=False
    )

    def __len__(self) -> int:
        """Entries currently held (expired ones may linger until purged)."""
        return len(self._seen)

    def check(
        self,
        payload_epoch: int | None,
        signature_key: bytes | None,
        delivery_key: bytes | None,
    ) -> str | None:
        """
        Accept (record and return None) or refuse (return the reason).

        @param payload_epoch: the payload's C{_karajo_epoch}, if any.
        @param signature_key: what identifies this signed payload, e.g. the
            verified signature plus the body (or its hash).  Only used when
            C{payload_epoch} is given: without an epoch two identical
            requests may both be legitimate.
        @param delivery_key: L{Verdict.replay_key}, if any.
        """
        now = self.clock()
        if payload_epoch is not None:
            # int/float comparison is exact in Python, so an absurd epoch
            # cannot overflow here.
            if (
                payload_epoch < now - self.max_age
                or payload_epoch > now + self.max_age
            ):
                return (
                    f"{_EPOCH_FIELD} is too old or too far in the future "
                    f"(max {_format_seconds(self.max_age)}s)"
                )
        self._purge(now)

        sig = None
        if signature_key is not None and payload_epoch is not None:
            sig = hashlib.sha256(b"signature\0" + bytes(signature_key)).digest()
            if self._alive(sig, now):
                return "replayed request"
        delivery = None
        if delivery_key is not None:
            delivery = hashlib.sha256(b"delivery\0" + bytes(delivery_key)).digest()
            if self._alive(delivery, now):
                return "replayed delivery"

        needed = (sig is not None) + (delivery is not None)
        if needed and len(self._seen) + needed > self.max_entries:
            self._purge_all(now)
            if len(self._seen) + needed > self.max_entries:
                return FULL
        # Record only once everything passed, so a refused request leaves no
        # trace that could block a later legitimate one.
        if sig is not None and payload_epoch is not None:
            self._record(sig, payload_epoch + self.max_age)
        if delivery is not None:
            self._record(delivery, now + max(self.max_age, self.delivery_ttl))
        return None

    def forget(self, signature_key: bytes | None, delivery_key: bytes | None) -> None:
        """
        Undo what an accepting L{check} recorded, when the request was then
        refused for another reason (job paused, busy): the client may send
        the same signed payload again once the job can take it.
        """
        for prefix, key in ((b"signature\0", signature_key), (b"delivery\0", delivery_key)):
            if key is not None:
                self._seen.pop(hashlib.sha256(prefix + bytes(key)).digest(), None)

    def _alive(self, digest: bytes, now: float) -> bool:
        """Whether C{digest} was seen and has not expired yet."""
        expiry = self._seen.get(digest)
        return expiry is not None and now <= expiry

    def _record(self, digest: bytes, expiry: float) -> None:
        """Remember C{digest} until C{expiry}; L{check} made room first."""
        self._seen.pop(digest, None)  # an expired leftover moves to the end
        self._seen[digest] = expiry

    def _purge_all(self, now: float) -> None:
        """
        Drop every expired entry, wherever it sits: O(n), but only run when
        the table is full, which only authenticated callers can cause.
        """
        for digest in [d for d, expiry in self._seen.items() if now > expiry]:
            del self._seen[digest]

    def _purge(self, now: float) -> None:
        """
        Drop expired entries from the old end.  Expiries are not strictly in
        insertion order (two TTLs), so an expired entry behind a live one
        waits; L{_alive} ignores it meanwhile and the size bound still holds.
        """
        while self._seen:
            digest, expiry = next(iter(self._seen.items()))
            if now <= expiry:
                break
            del self._seen[digest]


class InvalidEpoch(ValueError):
    """
    A payload carries C{_karajo_epoch}, but not as an integer Unix time, or
    it starts like a JSON object that cannot be read (so its epoch cannot).
    """


def _coerce_epoch(value: object) -> int:
    """
    An int, or a string of ASCII digits, as an int.

    Anything else is refused, not ignored: ignoring it would turn the
    replay check off for that payload.  Floats are refused like the
    original (Go unmarshals into int64), and so are booleans, which Python
    would otherwise treat as 0 and 1.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        value = value.strip()
        if _INT_RE.fullmatch(value):
            return int(value)
    raise InvalidEpoch(f"{_EPOCH_FIELD} must be an integer Unix time")


#: L{extract_epoch}'s "parse the body yourself".
_PARSE: Any = object()


def extract_epoch(
    body: bytes, query: bytes | None = None, *, body_document: Any = _PARSE
) -> int | None:
    """
    The C{_karajo_epoch} of a signed body (see L{karajo.payload.payload_fields}), or else
    of the raw query string; C{None} when neither carries one.

    Pass C{query} only where the signature covers the query string
    (C{job_http} pause/resume), otherwise a client could attach an
    unsigned epoch.

    A source that starts like a JSON object (C{{}) but does not parse as
    one (a trailing comma, a 4,300-digit number, 5,000-deep nesting, bad
    UTF-8) is refused: read as a form instead, it would hide its epoch and
    so skip the expiry and replay checks.  The rule looks at the shape of
    the bytes, not at whether they mention C{_karajo_epoch}, because JSON
    can spell the name with escapes (C{"\\u005fkarajo_epoch"}).

    @param body_document: what L{karajo.payload.json_object} made of
        C{body} already (the webhook's trigger rules read it too), so the
        handler parses the body once for both.

    @raise InvalidEpoch: the field is there but not an integer, or the
        source starts like a JSON object and is not one.
    """
    for source, document in ((body, body_document), (query, _PARSE)):
        if source:
            source = bytes(source)
            if document is _PARSE:
                document = json_object(source)
            if document is None and looks_like_json_object(source):
                raise InvalidEpoch("the body is not a JSON object")
            fields = document if document is not None else parse_pairs(source)
            if _EPOCH_FIELD in fields:
                return _coerce_epoch(fields[_EPOCH_FIELD])
    return None
