"""The box token on the box's extra routes (the desktop's files and VNC socket, the kernel's
channels): one `Authorization: Bearer <token>` header, compared in constant time, never a
query; refusals are 403 `{"detail": ...}` answers that are not logged as faults."""

from __future__ import annotations

import hmac
import json
from typing import Any

import tornado.web


def check_bearer(request: Any, token: str) -> None:
    """Raise 403 unless the first Authorization header is `Bearer <token>`."""
    values = request.headers.get_list("Authorization")
    header = values[0] if values else ""
    given = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
    expected = token.encode("utf-8")
    if not (given and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected)):
        raise tornado.web.HTTPError(403, "Missing or invalid authorization header")


class BoxTokenMixin:
    """For handlers (plain or websocket) that `initialize` sets `box_token` on."""

    box_token: str

    def prepare(self) -> None:
        check_bearer(self.request, self.box_token)  # type: ignore[attr-defined]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        detail = self._reason  # type: ignore[attr-defined]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            detail = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        self.finish(json.dumps({"detail": detail}))  # type: ignore[attr-defined]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            return  # an answer (403, 404), not a fault; the access log has it
        super().log_exception(typ, value, tb)  # type: ignore[misc]

    def check_origin(self, origin: str) -> bool:
        # Websockets: the token comes in a header, which no browser can set on one, so only
        # the sandbox server opens these; the Origin it passes on names its own host.
        return True
