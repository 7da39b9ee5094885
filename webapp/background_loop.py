"""A daemon thread that runs one check now and then, for the lifetime of the process.

The hot-swap watcher and the anomaly service both poll the database this way: a check
every `interval` seconds (or sooner when the check asks for it), at once after `wake()`,
and a failed check is logged, never fatal, so the loop outlives any single error.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class BackgroundLoop:
    """Subclasses implement `tick()`, returning how soon the next one is wanted (seconds;
    None: after `interval`)."""

    name = "background"

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def tick(self) -> float | None:
        raise NotImplementedError

    def on_start(self) -> None:
        """Run once in the loop's own thread before its first tick (e.g. to set its
        threads); a failure is logged and the loop runs anyway."""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def wake(self) -> None:
        """Run the next tick now instead of at the end of the interval."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        try:
            self.on_start()
        except Exception:
            log.exception("%s setup failed", self.name)
        while not self._stop.is_set():
            wait = self.interval
            try:
                wanted = self.tick()
                if wanted is not None:
                    wait = min(wait, wanted)
            except Exception:  # the loop must outlive any single failure
                log.exception("%s check failed", self.name)
            self._wake.wait(max(0.0, wait))
            self._wake.clear()
