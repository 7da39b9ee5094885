"""Request-body limits, enforced before the framework reads a body.

FastAPI spools a multipart body to disk (and Gradio to its upload folder) before a route
or its auth dependency runs, so the checks sit in a pure ASGI middleware in front of both:

* a declared Content-Length over the limit is answered 413 before a byte is read;
* a streamed (chunked) body is counted as it arrives and answered 413 once past the limit;
* a request with a body to an `/api/` route other than the open ones, without an
  `Authorization: Bearer` header, is answered 401 before a byte is read (the token itself
  is still checked by the route).

Refusals are JSON `{"error": ...}` like every API error. A refusal made before reading
closes the connection, so a client is not left pushing a body nobody will read.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIX = "/api/"
OPEN_API_PATHS = frozenset({"/api/health"})


async def send_error(send: Send, status: int, message: str, *, close: bool = False) -> None:
    """A JSON error response `{"error": message}`."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def _has_bearer(scope: Scope) -> bool:
    value = (_header(scope, b"authorization") or b"").strip()
    scheme, _, token = value.partition(b" ")
    return scheme.lower() == b"bearer" and bool(token.strip())


class RequestLimits:
    """ASGI middleware bounding request bodies to `max_body_bytes` (see module docstring)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length_header = _header(scope, b"content-length")
        try:
            declared = int(length_header) if length_header is not None else None
        except ValueError:
            await send_error(send, 400, "Content-Length is not a number", close=True)
            return
        chunked = _header(scope, b"transfer-encoding") is not None
        has_body = chunked or bool(declared)
        path = scope.get("path", "")
        if (
            has_body
            and path.startswith(API_PREFIX)
            and path not in OPEN_API_PATHS
            and not _has_bearer(scope)
        ):
            message = "missing bearer token (Authorization: Bearer <token>)"
            await send_error(send, 401, message, close=True)
            return
        if declared is not None and declared > self.max_body_bytes:
            await send_error(send, 413, self._too_large(declared), close=True)
            return
        await self._capped(scope, receive, send)

    def _too_large(self, size: int | None = None) -> str:
        said = "" if size is None else f" ({size} bytes)"
        return f"request body{said} is over the limit of {self.max_body_bytes} bytes"

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app on a receive channel that stops at the limit; past it, whatever the
        app answers is replaced by 413 (the rest of the body is drained by the server)."""
        received = 0
        over = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await send_error(send, 413, self._too_large())
