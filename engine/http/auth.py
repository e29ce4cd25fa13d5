"""API authentication and authorization: bearer tokens, stored hashed, with roles.

- ``viewer`` may read; ``operator`` may also act (POST). Tokens are compared by SHA-256 in constant
  time; the plain token is never stored or logged. The token's *name* is the actor recorded with
  every mutation.
- Without configured tokens, reads are open (the default listener is loopback) and every mutation
  is refused with 403 naming what to configure.
- The status page also takes HTTP Basic credentials (any user name, the token as password), so a
  browser can log in; its 401 asks for them.
- Peers never use tokens: ``/v1/peer/*`` carries HMAC-signed verdicts (and optionally mTLS).
- Mutations are rate limited per token (a token bucket refilled every minute).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from engine.config.model import ApiConfig
from engine.http.guards import authorization_problem


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


class AuthError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class Authenticator:
    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last refill time)
        # header -> principal for headers that matched a token: a dashboard polling with the same token
        # need not be hashed again per request (bounded; wrong tokens are never remembered)
        self._known: dict[str, Principal] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.config.tokens)

    def identify(self, authorization: str | None) -> Principal | None:
        """The principal for an ``Authorization`` header; None when absent; AuthError when wrong."""
        if not authorization:
            return None
        problem = authorization_problem(authorization)
        if problem is not None:
            raise AuthError(401, "unauthorized", problem)
        known = self._known.get(authorization)
        if known is not None:
            return known
        principal = self._identify(authorization)
        if principal is not None:
            if len(self._known) >= 256:
                self._known.clear()
            self._known[authorization] = principal
        return principal

    def _identify(self, authorization: str) -> Principal | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "basic":  # browsers on the status page: any user name, the token as password
            try:
                token = base64.b64decode(token.strip(), validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                raise AuthError(401, "unauthorized", "malformed basic credentials") from None
        elif scheme.lower() != "bearer":
            raise AuthError(401, "unauthorized", "use 'Authorization: Bearer <token>'")
        if not token.strip():
            raise AuthError(401, "unauthorized", "use 'Authorization: Bearer <token>'")
        digest = hash_token(token.strip())
        match = None
        for candidate in self.config.tokens:
            if hmac.compare_digest(candidate.sha256, digest):
                match = candidate
        if match is None:
            raise AuthError(401, "unauthorized", "unknown token")
        return Principal(match.name, match.role)

    def authorize(self, authorization: str | None, *, mutation: bool, now: float) -> Principal | None:
        principal = self.identify(authorization)
        if not self.enabled:
            if mutation:
                raise AuthError(403, "forbidden", "mutations need an operator token: configure api.tokens "
                                "(failover-engine hash-token)")
            return principal
        if principal is None:
            raise AuthError(401, "unauthorized", "a bearer token is required")
        if mutation:
            if not principal.can_act:
                raise AuthError(403, "forbidden", f"token {principal.name!r} is a viewer; acting needs an operator")
            self._take(principal.name, now)
        return principal

    def _take(self, name: str, now: float) -> None:
        rate = self.config.mutations_per_minute
        tokens, last = self._buckets.get(name, (float(rate), now))
        tokens = min(float(rate), tokens + (now - last) * rate / 60.0)
        if tokens < 1.0:
            self._buckets[name] = (tokens, now)
            raise AuthError(429, "rate_limited", f"more than {rate} mutations a minute from {name!r}")
        self._buckets[name] = (tokens - 1.0, now)
