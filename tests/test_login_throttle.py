"""Sign-in throttling: the limiter on a settable clock, and the middleware in front of a
real Gradio login route served over HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from storage.accounts import Accounts
from storage.engine import make_engine, sqlite_url
from storage.migrate import upgrade
from tests.webapp_fixtures import PASSWORD, RunningApp
from webapp.login_throttle import (
    LoginThrottle,
    LoginThrottleMiddleware,
    ThrottlePolicy,
    in_worker_thread,
)

MINUTE = 60.0
POLICY = ThrottlePolicy(
    max_failures=5, window_s=15 * MINUTE, lockout_s=10 * MINUTE, max_lockout_s=30 * MINUTE
)


class Clock:
    """Seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(POLICY, clock=clock)


def fail(throttle: LoginThrottle, times: int, user: str = "ops", address: str = "10.0.0.1") -> None:
    for _ in range(times):
        throttle.failure(user, address)


def test_five_failures_lock_the_user_out_for_the_lockout(throttle, clock) -> None:  # type: ignore[no-untyped-def]
    fail(throttle, 4)
    assert throttle.retry_after("ops", "10.0.0.1") == 0
    fail(throttle, 1)
    assert throttle.retry_after("ops", "10.0.0.1") == 10 * MINUTE
    assert throttle.retry_after("OPS ", "10.9.9.9") == 10 * MINUTE  # any address, any case
    clock.now += 10 * MINUTE - 1
    assert throttle.retry_after("ops", "10.9.9.9") == 1
    clock.now += 1
    assert throttle.retry_after("ops", "10.9.9.9") == 0


def test_failures_outside_the_window_do_not_add_up(throttle, clock) -> None:  # type: ignore[no-untyped-def]
    fail(throttle, 4)
    clock.now += 15 * MINUTE
    fail(throttle, 4)
    assert throttle.retry_after("ops", "10.0.0.1") == 0
    fail(throttle, 1)
    assert throttle.retry_after("ops", "10.0.0.1") > 0


def test_each_further_lockout_lasts_twice_as_long_up_to_the_cap(throttle, clock) -> None:  # type: ignore[no-untyped-def]
    spans = []
    for _ in range(4):
        fail(throttle, 5)
        spans.append(throttle.retry_after("ops", None))
        clock.now += spans[-1]
    assert spans == [10 * MINUTE, 20 * MINUTE, 30 * MINUTE, 30 * MINUTE]


def test_an_idle_key_is_forgotten(clock) -> None:  # type: ignore[no-untyped-def]
    throttle = LoginThrottle(ThrottlePolicy(lockout_s=MINUTE, forget_s=3600), clock=clock)
    fail(throttle, 5)
    clock.now += 3601
    fail(throttle, 5)
    assert throttle.retry_after("ops", None) == MINUTE  # first lockout again, not doubled


def test_one_address_spraying_many_names_is_locked_out(throttle) -> None:  # type: ignore[no-untyped-def]
    for name in ("ada", "bob", "cy", "dan", "eve"):
        throttle.failure(name, "10.0.0.66")
    assert throttle.retry_after("zoe", "10.0.0.66") == 10 * MINUTE
    assert throttle.retry_after("zoe", "10.0.0.7") == 0
    assert throttle.retry_after("ada", "10.0.0.7") == 0  # one failure each: names unlocked


def test_success_clears_the_user_name_but_not_the_address(throttle) -> None:  # type: ignore[no-untyped-def]
    fail(throttle, 4, address="10.0.0.1")
    throttle.success("ops", "10.0.0.1")
    fail(throttle, 4, address="10.0.0.2")
    assert throttle.retry_after("ops", "10.0.0.2") == 0
    fail(throttle, 1, user="other", address="10.0.0.1")
    assert throttle.retry_after("ops", "10.0.0.1") == 10 * MINUTE  # address: 5 failures


def test_memory_stays_bounded(clock) -> None:  # type: ignore[no-untyped-def]
    throttle = LoginThrottle(ThrottlePolicy(max_keys=100), clock=clock)
    for i in range(1000):
        throttle.failure(f"name-{i}", None)
    assert len(throttle) == 100


def test_concurrent_failures_are_all_counted(clock) -> None:  # type: ignore[no-untyped-def]
    throttle = LoginThrottle(ThrottlePolicy(max_failures=800), clock=clock)
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        fail(throttle, 100)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert throttle.retry_after("ops", None) > 0  # exactly 800 failures reached the limit


# --------------------------------------------------------------------------- over HTTP
@dataclass
class Server:
    url: str
    checks: list[str]  # user names the password check actually ran for

    def login(self, user: str, password: str, *, address: str = "127.0.0.1") -> httpx.Response:
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(transport=transport, timeout=30) as client:
            return client.post(
                f"{self.url}/login", files={"username": (None, user), "password": (None, password)}
            )


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> Iterator[Server]:
    """A FastAPI app with a Gradio UI behind a login checked by real accounts, the
    throttle installed in front of it, served by uvicorn on a pre-bound socket (requests
    wait in its backlog until the server accepts them)."""
    engine = make_engine(sqlite_url(tmp_path / "heatprompt.db"))
    upgrade(engine)
    accounts = Accounts(engine)
    accounts.add_user("ops", "right password", role="admin")
    checks: list[str] = []

    def check_login(username: str, password: str) -> bool:
        checks.append(username)
        return accounts.authenticate(username, password) is not None

    with gr.Blocks() as blocks:
        gr.Markdown("inside")
    app = gr.mount_gradio_app(FastAPI(), blocks, path="", auth=in_worker_thread(check_login))
    app.add_middleware(LoginThrottleMiddleware, throttle=LoginThrottle(POLICY, clock=clock))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{port}", checks)
    uv.should_exit = True
    thread.join(timeout=30)
    sock.close()
    engine.dispose()


def test_the_login_route_locks_out_after_five_failures(server: Server, clock: Clock) -> None:
    for _ in range(5):
        assert server.login("ops", "wrong password").status_code == 400
    locked = server.login("ops", "right password")
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "600"
    assert "try again in 10 min" in locked.json()["detail"]
    assert server.checks == ["ops"] * 5  # no password was hashed for the locked attempt
    clock.now += 10 * MINUTE
    signed_in = server.login("ops", "right password")
    assert signed_in.status_code == 200 and signed_in.json() == {"success": True}


def test_the_login_route_counts_per_client_address(server: Server) -> None:
    for name in ("ada", "bob", "cy", "dan", "eve"):
        assert server.login(name, "guess", address="127.0.0.2").status_code == 400
    assert server.login("ops", "right password", address="127.0.0.2").status_code == 429
    assert server.login("ops", "right password", address="127.0.0.3").status_code == 200


def test_a_success_resets_the_user_name_over_http(server: Server) -> None:
    for _ in range(4):
        assert server.login("ops", "wrong password", address="127.0.0.4").status_code == 400
    assert server.login("ops", "right password", address="127.0.0.5").status_code == 200
    for _ in range(4):
        assert server.login("ops", "wrong password", address="127.0.0.6").status_code == 400
    assert server.login("ops", "right password", address="127.0.0.7").status_code == 200


def test_the_served_app_locks_out_a_name_after_five_failed_sign_ins(
    running_app: RunningApp,
) -> None:
    """The application as `serve` builds it has the throttle in front of Gradio's login."""

    def sign_in(password: str) -> int:
        form = {"username": (None, "viewer"), "password": (None, password)}
        with running_app.client() as c:
            return c.post("/login", files=form).status_code

    assert [sign_in("wrong-password") for _ in range(5)] == [400] * 5
    assert sign_in(PASSWORD) == 429  # locked out: even the right password is not checked
