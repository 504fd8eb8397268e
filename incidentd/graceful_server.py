"""The HTTP server of ``incidentd serve``: uvicorn's, with SIGTERM as a clean stop (exit 0)."""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn


class GracefulServer(uvicorn.Server):
    """uvicorn already stops gracefully on SIGTERM: the app's lifespan shutdown stops the scheduler after the
    running cycle, saves the learned baselines and closes the store. It then re-raises the signal, so the
    process dies of it (exit -15) and a supervisor reads a crash. Here SIGTERM ends with exit 0; Ctrl-C
    (SIGINT) keeps its usual meaning.
    """

    stopped_by: signal.Signals | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():   # signals reach the main thread only
            yield
            return
        original = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        if self.stopped_by is signal.SIGINT:
            signal.raise_signal(signal.SIGINT)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        if self.stopped_by is None:
            self.stopped_by = signal.Signals(sig)
        self.handle_exit(sig, frame)
