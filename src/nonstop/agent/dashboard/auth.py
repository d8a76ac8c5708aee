"""Login links and sessions of the dashboard: no I/O, the clock comes in as an argument.

A login link carries a one-time token: ``LoginTokens.issue(now)`` makes one (only its SHA-256
is kept), ``redeem(token, now)`` accepts it once, before it expires. A redeemed token makes a
session: a random id (the cookie) and a CSRF token the page sends back with every action.
Sessions live in the agent's memory only, so an agent restart logs everyone out.

Worked example (login_ttl 120 s, session_ttl 3600 s)::

    t=0     issue() -> "k3..."          a link valid until t=120
    t=5     redeem("k3...") -> True      session s1 (csrf c1), idle deadline t=3605
    t=6     redeem("k3...") -> False     used once already
    t=3000  touch(s1) -> session         the deadline moves to t=6600
    t=7000  touch(s1) -> None            idle for longer than session_ttl: gone
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

MAX_PENDING_LOGINS = 32
"""Login links not yet used; issuing more drops the oldest."""
MAX_SESSIONS = 64
"""Sessions kept at once; a new one past this ends the least recently used."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginTokens:
    """One-time login tokens: each works once, within ``ttl`` seconds of being issued."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._expires: dict[str, float] = {}

    def issue(self, now: float) -> str:
        self._forget_expired(now)
        while len(self._expires) >= MAX_PENDING_LOGINS:
            del self._expires[next(iter(self._expires))]
        token = secrets.token_urlsafe(32)
        self._expires[_digest(token)] = now + self.ttl
        return token

    def redeem(self, token: str, now: float) -> bool:
        """True once for a token issued less than ``ttl`` ago; it is spent either way."""
        if not token or len(token) > 128:
            return False
        expires = self._expires.pop(_digest(token), None)
        return expires is not None and now < expires

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, expires in self._expires.items() if expires <= now]:
            del self._expires[key]


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    created_at: float
    last_seen: float

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class Sessions:
    """Sessions by id, ended after ``ttl`` seconds without a request."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._by_id: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, now: float) -> Session:
        if len(self._by_id) >= MAX_SESSIONS:
            oldest = min(self._by_id.values(), key=lambda s: s.last_seen)
            del self._by_id[oldest.id]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        self._by_id[session.id] = session
        return session

    def touch(self, session_id: str | None, now: float) -> Session | None:
        """The live session with this id, its idle deadline moved on; None when there is none
        (unknown, or idle past ``ttl``: then it is forgotten)."""
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        if now - session.last_seen > self.ttl:
            del self._by_id[session.id]
            return None
        session.last_seen = now
        return session

    def end(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)
