"""`serve --share` without a network says so plainly instead of failing."""

from webapp.server import share_link_status


def test_unreachable_share_server_gives_a_clear_message() -> None:
    message = share_link_status(7860, server="share.invalid")  # .invalid never resolves
    assert message.startswith("share link unavailable")
    assert "need internet access" in message and "runs locally" in message
