"""Sign-in throttling for the UI's login form.

Every password check costs an Argon2 hash, so unthrottled guessing is both a way in and
a way to load the server. Failures are counted per user name and per client address;
a key with `max_failures` failures inside `window_s` is locked out, for longer each time
it happens again (`lockout_s`, doubling up to `max_lockout_s`). A successful sign-in
clears the user name's record (not the address's: one right password must not reset a
spray over many names).

Gradio's `/login` route only hands the auth function the user name and password, so
the throttle sits in front of that route as ASGI middleware, where the client address
is known; a locked-out attempt is answered with 429 before any password is hashed.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_FORM_BYTES = 64 * 1024  # a login form is a few hundred bytes


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures lock a key out, and for how long."""

    max_failures: int = 5
    window_s: float = 15 * 60
    lockout_s: float = 15 * 60
    max_lockout_s: float = 24 * 3600
    forget_s: float = 7 * 24 * 3600  # an idle key's lockout history is dropped after this
    max_keys: int = 100_000  # bounded memory under a spray of made-up names


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    lockouts: int = 0
    last_seen: float = 0.0


class LoginThrottle:
    """Thread-safe failure counts per key; `clock` (seconds, monotonic) is injectable."""

    def __init__(
        self, policy: ThrottlePolicy | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        """How many keys are remembered (bounded by `policy.max_keys`)."""
        with self._lock:
            return len(self._records)

    @staticmethod
    def keys(username: str, address: str | None) -> list[tuple[str, str]]:
        """The keys one attempt counts against (names compared case-insensitively)."""
        keys = [("user", username.strip().casefold())]
        if address:
            keys.append(("address", address))
        return keys

    def retry_after(self, username: str, address: str | None) -> float:
        """Seconds until `username` may try again from `address`; 0 when it may now."""
        now = self._clock()
        with self._lock:
            waits = [
                record.locked_until - now
                for key in self.keys(username, address)
                if (record := self._records.get(key)) is not None
            ]
        return max([0.0, *waits])

    def failure(self, username: str, address: str | None) -> None:
        """Count a failed sign-in; a key reaching the limit is locked out."""
        now = self._clock()
        p = self.policy
        with self._lock:
            for key in self.keys(username, address):
                record = self._touch(key, now)
                while record.failures and record.failures[0] <= now - p.window_s:
                    record.failures.popleft()
                record.failures.append(now)
                if len(record.failures) >= p.max_failures:
                    record.lockouts += 1
                    span = min(p.lockout_s * 2 ** (record.lockouts - 1), p.max_lockout_s)
                    record.locked_until = now + span
                    record.failures.clear()

    def success(self, username: str, address: str | None) -> None:
        """A right password: the user name starts afresh."""
        with self._lock:
            self._records.pop(self.keys(username, address)[0], None)

    def _touch(self, key: tuple[str, str], now: float) -> _Record:
        """The key's record, moved to the newest end; stale and excess records dropped."""
        record = self._records.pop(key, None)
        if record is None or now - record.last_seen > self.policy.forget_s:
            record = _Record()
        record.last_seen = now
        self._records[key] = record
        while len(self._records) > self.policy.max_keys:
            self._records.popitem(last=False)
        while self._records:
            oldest = next(iter(self._records.values()))
            if now - oldest.last_seen <= self.policy.forget_s:
                break
            self._records.popitem(last=False)
        return record


class LoginThrottleMiddleware:
    """ASGI middleware guarding `POST <path>` (Gradio's login route): answers 429 with
    Retry-After while the user name or client address is locked out, and records the
    route's answer (200 signed in, 400 wrong credentials) otherwise."""

    def __init__(self, app: ASGIApp, *, throttle: LoginThrottle, path: str = "/login") -> None:
        self.app = app
        self.throttle = throttle
        self.path = path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].rstrip("/") != self.path
        ):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            await _respond(send, 413, {"detail": "Login form too large."})
            return
        username = await _form_username(scope, body)
        address = scope["client"][0] if scope.get("client") else None
        wait = self.throttle.retry_after(username, address)
        if wait > 0:
            seconds = math.ceil(wait)
            detail = f"Too many failed sign-ins; try again in {_duration(seconds)}."
            await _respond(send, 429, {"detail": detail}, retry_after=seconds)
            return
        status: list[int] = []
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:  # the body read above, then the client's own events
            return pending.pop() if pending else await receive()

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, replay, watch)
        if status and status[0] == 200:
            self.throttle.success(username, address)
        elif status and status[0] == 400:
            self.throttle.failure(username, address)


def in_worker_thread(check: Callable[[str, str], bool]) -> Callable[[str, str], Awaitable[bool]]:
    """`check` as a coroutine function run in a worker thread. Gradio calls a plain auth
    function on the event loop, where each Argon2 hash stalls every other request; it
    awaits a coroutine function instead."""

    async def checked(username: str, password: str) -> bool:
        return bool(await anyio.to_thread.run_sync(check, username, password))

    return checked


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when it exceeds MAX_FORM_BYTES."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _form_username(scope: Scope, body: bytes) -> str:
    """The form's `username` (multipart or url-encoded); '' when there is none."""

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, receive).form()
    except Exception:  # a malformed form: the login route itself answers it
        return ""
    value = form.get("username")
    await form.close()
    return value.strip() if isinstance(value, str) else ""


async def _respond(
    send: Send, status: int, content: dict[str, Any], *, retry_after: int | None = None
) -> None:
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(content).encode()})


def _duration(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"
