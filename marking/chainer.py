"""The ledger chainer: a daemon thread that chains deferred ledger entries.

With ``MC_LEDGER_CHAINING=deferred`` score changes commit their ledger events as
``ledger_entry`` rows and leave the hash chain to this thread (``marking.ledger``).
Every web server runs one; several processes need no election, because a run that
finds the head row locked skips (``chain_pending(wait=False)``) and the next run
picks up whatever is left. The chain therefore trails the commits by about one
interval (``MC_LEDGER_CHAIN_INTERVAL_MS``, default 500 ms); verification, checkpoints
and backups chain what is pending before they read the chain.
"""
from __future__ import annotations

import logging

from . import ledger
from .periodic import PeriodicThread

log = logging.getLogger("marking.chainer")


class LedgerChainer(PeriodicThread):
    name = "ledger-chainer"

    def __init__(self, db, *, interval_s: float = 0.5):
        if interval_s <= 0:
            raise ValueError("the chain interval must be positive")
        super().__init__()
        self.db = db
        self.interval_s = interval_s
        self.chained = 0
        self._failing = False

    def run_once(self) -> int:
        try:
            count = ledger.chain_pending(self.db, wait=False)
        except Exception:  # noqa: BLE001 - a database hiccup must not stop the thread
            if not self._failing:
                log.exception("ledger chaining failed; entries stay pending and are retried")
                self._failing = True
            return 0
        if self._failing:
            log.warning("ledger chaining recovered")
            self._failing = False
        self.chained += count
        return count

    tick = run_once

    def stop(self, timeout: float = 10) -> None:
        """Stop, then chain what is left (a clean shutdown leaves nothing pending)."""
        super().stop(timeout)
        self.run_once()
