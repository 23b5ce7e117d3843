"""Helpers for the fault tests: marker threads that retry, and the after-the-fact checks."""
from __future__ import annotations

import collections
import threading
import time

from sqlalchemy import func, select

from marking import ledger
from marking.models import LedgerEvent, Mark


def wait_for(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


class MarkerLoop:
    """Marker threads over HTTP that remember acknowledged submits and retry the rest.

    A submit is retried with the SAME request id (and token) until the server answers
    200 (acknowledged) or refuses it for good (4xx); connection errors and 5xx are
    retried. ``acked`` maps (marker user id, request id) → mark id.
    """

    def __init__(self, port: int, item_id: int, sessions, user_ids, *, submit_delay: float = 0.0):
        self.port, self.item_id = port, item_id
        self.sessions, self.user_ids = sessions, user_ids
        self.stop = threading.Event()
        self.acked: dict[tuple[int, str], int] = {}
        self.replayed = 0
        self.errors = collections.Counter()
        self.refused: list[tuple[int, str, int, object]] = []
        self.lock = threading.Lock()
        self.submit_delay = submit_delay
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(len(sessions))]

    def _call(self, fn):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - connection refused/reset while the server is down
            with self.lock:
                self.errors[type(exc).__name__] += 1
            return None, None

    def _run(self, i: int):
        s, uid = self.sessions[i], self.user_ids[i]
        n = 0
        while not self.stop.is_set():
            status, data = self._call(lambda: s.post_json(f"/api/v1/items/{self.item_id}/claim", {}))
            if status != 200 or not data or not data.get("task"):
                with self.lock:
                    self.errors[f"claim {status}"] += 1
                time.sleep(0.05)
                continue
            token = data["task"]["token"]
            n += 1
            rid = f"u{uid}-{n}"
            time.sleep(self.submit_delay)
            # Once sent, a submit is never abandoned: retry with the same id until answered.
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                status, out = self._call(lambda: s.post_json("/api/v1/tasks/submit",
                                                             {"token": token, "score": "5", "request_id": rid}))
                if status == 200:
                    with self.lock:
                        self.acked[(uid, rid)] = out["result"]["mark_id"]
                        self.replayed += bool(out["result"]["replayed"])
                    break
                if status is not None and 400 <= status < 500:
                    with self.lock:
                        self.refused.append((uid, rid, status, out))
                    break
                with self.lock:
                    self.errors[f"submit {status}"] += 1
                time.sleep(0.1)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout: float = 120):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "marker threads did not finish"


def check_marks(db, loop: MarkerLoop) -> dict:
    """Every acknowledged mark exists exactly once; no duplicates; the ledger verifies."""
    ledger.chain_pending(db)   # servers on PostgreSQL chain deferred: count what they committed
    with db.read() as s:
        rows = s.execute(select(Mark.id, Mark.marker_id, Mark.request_id, Mark.task_id)).all()
        dup_rid = s.execute(select(Mark.marker_id, Mark.request_id, func.count()).group_by(
            Mark.marker_id, Mark.request_id).having(func.count() > 1)).all()
        dup_task = s.execute(select(Mark.task_id, func.count()).group_by(Mark.task_id)
                             .having(func.count() > 1)).all()
        events = s.execute(select(func.count()).select_from(LedgerEvent)
                           .where(LedgerEvent.action == "mark.submitted")).scalar_one()
    by_key = collections.Counter((m, r) for _i, m, r, _t in rows)
    ids = {(m, r): i for i, m, r, _t in rows}
    lost = [k for k in loop.acked if by_key[k] == 0]
    wrong = [k for k, mid in loop.acked.items() if ids.get(k) != mid]
    assert not lost, f"acknowledged marks lost: {lost[:5]}"
    assert not wrong, f"acknowledged mark ids differ from the stored ones: {wrong[:5]}"
    assert not dup_rid and not dup_task, (dup_rid[:5], dup_task[:5])
    assert events == len(rows), f"{events} mark.submitted ledger events for {len(rows)} marks"
    result = ledger.verify(db, None)
    assert result.ok, result
    return {"marks": len(rows), "acked": len(loop.acked)}
