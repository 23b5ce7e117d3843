"""Wiring into the marking engine (which never imports calibration).

:func:`install` registers, idempotently:

* ``marking.dispatch.INJECTORS``      — :data:`calibration.seeds.INJECTOR` (seeds, self-checks);
* ``marking.submission.CALIBRATION_HOOKS`` — :func:`on_mark` (scores calibration marks,
  grades qualification attempts, checks validity/drift and suspends);
* ``marking.eligibility.FACT_CHECKS`` — :data:`calibration.scheme.SCHEME_CHECK`
  (live dispatch waits for a frozen scheme once one was started, R-MARK-9).

The qualification gate itself needs no hook: ``marking.eligibility`` reads the
``qualification`` rows calibration writes, and suspension works through
``ItemDuty.status``.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from marking import dispatch, eligibility, submission
from marking.models import Mark, MarkTask

from . import scheme, seeds, standardisation


def on_mark(session: Session, task: MarkTask, mark: Mark, now: dt.datetime) -> None:
    if task.slot in ("seed", "self_check"):
        seeds.on_calibration_mark(session, task, mark, now)
    elif task.slot in ("qualification", "practice"):
        standardisation.on_calibration_mark(session, task, mark, now)
    # ``trial`` marks are the team leader's; nothing to score.


def install() -> None:
    if seeds.INJECTOR not in dispatch.INJECTORS:
        dispatch.INJECTORS.append(seeds.INJECTOR)
    if on_mark not in submission.CALIBRATION_HOOKS:
        submission.CALIBRATION_HOOKS.append(on_mark)
    if scheme.SCHEME_CHECK not in eligibility.FACT_CHECKS:
        eligibility.FACT_CHECKS.append(scheme.SCHEME_CHECK)


def uninstall() -> None:
    for registry, fn in ((dispatch.INJECTORS, seeds.INJECTOR), (submission.CALIBRATION_HOOKS, on_mark),
                         (eligibility.FACT_CHECKS, scheme.SCHEME_CHECK)):
        while fn in registry:
            registry.remove(fn)
