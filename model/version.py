"""The code version recorded in checkpoints."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def code_version() -> str:
    """Installed distribution version of heatprompt, or 'unknown'."""
    try:
        return version("heatprompt")
    except PackageNotFoundError:
        return "unknown"
