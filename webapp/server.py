"""Running the app with uvicorn, and Gradio share links."""

from __future__ import annotations

import logging
import socket

import uvicorn

from webapp.app import create_app
from webapp.settings import Settings

log = logging.getLogger(__name__)

SHARE_SERVER = "api.gradio.app"


def share_link_status(port: int, *, server: str = SHARE_SERVER) -> str:
    """Try to open a Gradio share tunnel to `port`; say plainly when there is no network."""
    try:
        socket.create_connection((server, 443), timeout=3).close()
    except OSError as exc:
        return (
            f"share link unavailable: cannot reach {server} ({exc.__class__.__name__}); "
            "share links need internet access. The app runs locally as usual."
        )
    try:
        from gradio.networking import setup_tunnel

        url = setup_tunnel(
            "127.0.0.1",
            port,
            share_token=None,
            share_server_address=None,
            share_server_tls_certificate=None,
        )
    except Exception as exc:  # the share service answered, but no tunnel was opened
        return f"share link unavailable: {exc}. The app runs locally as usual."
    return f"share link: {url}"


def serve(settings: Settings, *, share: bool = False, scheduler: bool = True) -> int:
    """Build the app and serve it until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(settings, scheduler=scheduler)
    if not scheduler:
        log.info("web process only: retraining runs in `heatprompt worker`")
    print(f"HeatPrompt on http://{settings.host}:{settings.port}/ (API: /api, docs: /api/docs)")
    if share:
        print(share_link_status(settings.port))
    from webapp.inbox import InboxWatcher

    inbox = InboxWatcher(app.services, settings.inbox_dir).start()
    print(f"watching {settings.inbox_dir} for new images")
    try:
        uvicorn.run(app.api, host=settings.host, port=settings.port, log_level="warning")
    finally:
        inbox.stop()
        app.stop()
    return 0
