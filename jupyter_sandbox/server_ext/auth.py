"""Bearer-token authentication for every sandbox route.

The `SandboxApp.bearer_token` is the one credential clients need. Inside Jupyter, the
Jupyter server's own authentication (its token or login cookie) is accepted too. Tokens are
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac

AUTH_SCHEME = "bearer"


def bearer_from_header(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != AUTH_SCHEME or not token.strip():
        return None
    return token.strip()


def token_matches(given: str | None, expected: str) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
