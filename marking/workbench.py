"""What the marker workbench does after each score: submit it and deal the next task.

One transaction for both (issue 8): the submit commits whether or not a next task can
be dealt — a refusal of the claim (no duty any more, unqualified, cap reached) is a
Python exception raised before the claim writes anything, so it is caught and
reported beside the saved mark, and the transaction commits the submit. A database
error in either part rolls back both and ``db.run`` retries both: the submit is
idempotent by request id, so a retry never makes a second mark.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

from sqlalchemy.orm import Session

from .access import NotAllowed
from .centre_time import now_or
from .dispatch import TaskView, claim_work
from .submission import SubmitResult, submit_work


@dataclass(frozen=True)
class SubmitAndNext:
    result: SubmitResult
    next: TaskView | None
    next_error: str | None = None   # why no next task was dealt (the mark is saved)


def submit_and_claim_next(db, user_id: int, token: str, score: str | int | Fraction | None, *,
                          request_id: str, item_id: int, queue: str = "marking",
                          condition_code: str | None = None, flags: Iterable[str] = (),
                          dwell_ms: int | None = None, now: dt.datetime | None = None,
                          lease_seconds: int | None = None) -> SubmitAndNext:
    now = now_or(now)
    submit = submit_work(user_id, token, score, request_id=request_id, condition_code=condition_code,
                         flags=flags, dwell_ms=dwell_ms, now=now)
    claim = claim_work(user_id, item_id, queue=queue, now=now, lease_seconds=lease_seconds)

    def fn(session: Session) -> SubmitAndNext:
        result = submit(session)
        try:
            return SubmitAndNext(result, claim(session))
        except NotAllowed as exc:
            return SubmitAndNext(result, None, str(exc))

    return db.run(fn)
