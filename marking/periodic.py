"""A daemon thread that runs one job at a fixed interval (the backup scheduler, the ledger
chainer): start, stop, and whether it is running, in one place."""
from __future__ import annotations

import threading


class PeriodicThread:
    """Subclasses set ``name`` and ``interval_s`` and implement :meth:`tick`, which must not
    raise (a failed run is reported and the next one comes at the next interval)."""

    name = "periodic"
    interval_s: float = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self):  # pragma: no cover - subclasses implement it
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
