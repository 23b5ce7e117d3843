#!/usr/bin/env python
"""Claim cost against a marker's history (issue 8): is a claim dearer for a marker who
has marked a lot?

    .venv/bin/python scripts/bench_claim_history.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python scripts/bench_claim_history.py                  # SQLite in a temp dir

One double-marked item (``bench_marking.populate``, a fresh database dropped at the end).
The *veteran* gets ``--history`` past first reads spread evenly over ``--days`` centre
days up to today: ``mark_assignment`` and ``mark`` rows inserted with SQL, their tasks done,
with the self-checks such a history brings, as ten
days of marking leave them (400 a day is a full day's essay marking). The *newcomer* has
none. Then, from one thread with the calibration hooks installed (as the server runs),
the two claim and submit in turn, ``--claims`` times each; reported: each one's claim
p50 and the ratio veteran / newcomer. A claim that counted the marker's assignments
grows with the history; one that reads their tally (``marker_item_tally``) does not.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_marking import bulk_responses, fresh_database, populate  # noqa: E402
from sqlalchemy import text  # noqa: E402

from calibration.config import DEFAULTS  # noqa: E402
from marking import migrate  # noqa: E402
from marking.db import Database  # noqa: E402


def give_history(db: Database, item_id: int, marker_id: int, n: int, days: int) -> None:
    """``n`` first reads by ``marker_id`` on the item's lowest responses, ``n // days`` a
    day over the last ``days`` centre days: assignments dealt, marks made, tasks done,
    and the self-checks such a history brings (the schedule counts them; self-checks are
    drawn from the marks)."""
    pg = db.dialect == "postgresql"
    day = ("CURRENT_DATE - CAST((rn - 1) % :days AS integer)" if pg
           else "date('now', '-' || ((rn - 1) % :days) || ' days')")
    claimed = ("CAST(NOW() AS timestamp) - make_interval(days => CAST((rn - 1) % :days AS integer))" if pg
               else "datetime('now', '-' || ((rn - 1) % :days) || ' days')")
    with db.engine.begin() as conn:
        conn.execute(text(
            "CREATE TEMPORARY TABLE history AS SELECT id AS task_id, response_id, "
            "ROW_NUMBER() OVER (ORDER BY id) AS rn FROM mark_task "
            "WHERE item_id = :iid AND slot = 'first' ORDER BY id LIMIT :n"), {"iid": item_id, "n": n})
        conn.execute(text(
            "INSERT INTO mark_assignment (response_id, marker_id, item_id, task_id, slot, day, claimed_at) "
            f"SELECT response_id, :uid, :iid, task_id, 'first', {day}, {claimed} FROM history ORDER BY rn"),
            {"uid": marker_id, "iid": item_id, "days": days})
        conn.execute(text(
            "INSERT INTO mark (response_id, task_id, marker_id, kind, score_cp, flags, request_id, submitted_at) "
            f"SELECT response_id, task_id, :uid, 'first', 500, '[]', 'history-' || CAST(rn AS TEXT), {claimed} "
            "FROM history ORDER BY rn"), {"uid": marker_id, "days": days})
        conn.execute(text("UPDATE mark_task SET status = 'done' "
                          "WHERE response_id IN (SELECT response_id FROM history)"))
        conn.execute(text("UPDATE mark_task SET marker_id = :uid WHERE id IN (SELECT task_id FROM history)"),
                     {"uid": marker_id})
        # The self-checks those reads brought (self_check_pm per mille, done): without them
        # the schedule would owe the veteran dozens and deal one on every claim.
        checks = n * DEFAULTS["self_check_pm"] // 1000
        conn.execute(text(
            "INSERT INTO mark_task (response_id, item_id, slot, status, reserved_for, marker_id, created_at) "
            f"SELECT response_id, :iid, 'self_check', 'done', :uid, :uid, {claimed} FROM history "
            "WHERE rn % :every = 0 ORDER BY rn LIMIT :checks"),
            {"iid": item_id, "uid": marker_id, "days": days, "every": max(1, n // max(1, checks)),
             "checks": checks})
        conn.execute(text("DROP TABLE history"))
    if pg:
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()


def claim_times(db: Database, item_id: int, markers: dict[str, int], claims: int) -> dict[str, list[float]]:
    from marking import dispatch, submission
    times: dict[str, list[float]] = {name: [] for name in markers}
    for _ in range(claims):
        for name, uid in markers.items():
            t0 = time.perf_counter()
            view = dispatch.claim_next(db, uid, item_id)
            times[name].append((time.perf_counter() - t0) * 1000)
            submission.submit_mark(db, uid, view.token, "5", request_id=uuid.uuid4().hex)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database-url", help="PostgreSQL server URL (a fresh database is created on it); "
                                           "default: SQLite in a temp dir")
    ap.add_argument("--history", type=int, default=4000, help="the veteran's past first reads")
    ap.add_argument("--days", type=int, default=10, help="centre days they are spread over")
    ap.add_argument("--claims", type=int, default=300, help="claims measured per marker")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.history < 0 or args.days < 1 or args.claims < 1:
        ap.error("--history must be >= 0, --days and --claims >= 1")

    import calibration
    workdir = Path(tempfile.mkdtemp(prefix="mc-claim-history-"))
    url, drop = fresh_database(args.database_url, workdir)
    db = Database(url)
    try:
        migrate.upgrade(db)
        world = populate(db, markers=2, responses=0)
        bulk_responses(db, world, args.history + 2 * args.claims + 100, prefix="H")
        veteran, newcomer = world.markers
        give_history(db, world.item_id, veteran, args.history, args.days)
        calibration.install()
        claim_times(db, world.item_id, {"veteran": veteran, "newcomer": newcomer}, 20)   # warm
        times = claim_times(db, world.item_id, {"veteran": veteran, "newcomer": newcomer}, args.claims)
    finally:
        calibration.uninstall()
        db.dispose()
        drop()
        shutil.rmtree(workdir, ignore_errors=True)
    p50 = {name: round(statistics.median(values), 3) for name, values in times.items()}
    results = {"backend": "postgresql" if args.database_url else "sqlite", "history": args.history,
               "days": args.days, "claims": args.claims, "claim_p50_ms": p50,
               "ratio_veteran_newcomer": round(p50["veteran"] / p50["newcomer"], 2)}
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
