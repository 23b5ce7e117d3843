"""``marking-centre demo``: set up and run a small centre on the embedded default.

SQLite file, local worker processes, no servers. Safe to run again: every step
checks what is already there. Demo passwords are fixed and printed; they exist
only in the demo environment.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from sqlalchemy import func, select

from marking import examspec, ledger, migrate, simulate, users
from marking.cli_commands import checkpoint_store
from marking.models import (ExamSession, Item, ItemDuty, Mark, Response, ScanBatch, StandardisationResponse,
                            Subject,
                            User)

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SPEC = REPO_ROOT / "examples" / "exam-2026-10.yaml"
DEMO_SESSION = "ZK-2026-10"

# username, display name, roles, qualification level, school, exclusions
DEMO_USERS = [
    ("admin", "系统管理员", ["admin"], 0, None, []),
    ("leader1", "张组长", ["team_leader", "marker"], 3, "S4599", []),
    ("leader2", "李组长", ["team_leader", "marker"], 3, "S4598", []),
    ("marker1", "王评卷员", ["marker"], 1, "S4590", []),
    ("marker2", "刘评卷员", ["marker"], 2, "S4591", []),
    ("marker3", "陈评卷员", ["marker"], 2, "S4503", [("school", "S4503")]),
    ("marker4", "杨评卷员", ["marker"], 2, "S4592", []),
    ("marker5", "黄评卷员", ["marker"], 1, "S4593", []),
    ("marker6", "赵助理", ["marker"], 0, "S4594", []),
    ("tech1", "周技术员", ["technician"], 0, None, []),
    ("tech2", "吴技术员", ["technician"], 0, None, []),
    ("keyofficer", "徐录入员", ["key_officer"], 0, None, []),
    ("reviewer", "孙核对员", ["key_officer"], 0, None, []),
    ("authority", "马考试院", ["authority_officer"], 0, None, []),
]
DEMO_PASSWORD = "demo-{username}-2026"


def _say(message: str) -> None:
    print(f"  • {message}", flush=True)


def ensure_users(db) -> int:
    created = 0
    with db.read() as session:
        existing = set(session.scalars(select(User.username)))
    for username, name, roles, level, school, exclusions in DEMO_USERS:
        if username in existing:
            continue
        users.add_user(db, users.NewUser(username=username, display_name=name, roles=roles,
                                         qualification_level=level, school_code=school,
                                         password=DEMO_PASSWORD.format(username=username),
                                         exclusions=exclusions))
        created += 1
    return created


def ensure_duties(db) -> int:
    """Markers on every subjective item they are qualified for; a leader per subject."""
    created = 0
    with db.write() as session:
        people = {u.username: u for u in session.scalars(select(User))}
        items = session.execute(
            select(Item, Subject.code).join(Subject).join(ExamSession)
            .where(ExamSession.code == DEMO_SESSION, Item.kind == "subjective")
        ).all()
        have = {(d.item_id, d.user_id, d.duty) for d in session.scalars(select(ItemDuty))}
        for item, subject_code in items:
            leader, other = (people["leader1"], people["leader2"]) if subject_code == "00015" else \
                (people["leader2"], people["leader1"])
            # The other subject's leader re-checks this one (R-MARK-5: a reviewer is never an original reader).
            wanted = [(leader, "team_leader"), (other, "reviewer")] + [
                (people[name], "marker") for name in ("marker1", "marker2", "marker3", "marker4", "marker5", "marker6")
            ]
            for user, duty in wanted:
                if (item.id, user.id, duty) not in have:
                    session.add(ItemDuty(item_id=item.id, user_id=user.id, duty=duty))
                    created += 1
    return created


def run_scanning(ctx, subject_code: str) -> None:
    """About 200 synthetic cards (faint marks, erasures, an ID error, a torn card) are
    ingested, read twice on two OMR nodes (two processes), keyed, scored and cut."""
    from omr.demo_batch import run_demo_batch
    with ctx.db.read() as session:
        scanned = session.scalar(select(ScanBatch.id).join(Subject).join(ExamSession).where(
            ExamSession.code == DEMO_SESSION, Subject.code == subject_code).limit(1))
    if scanned:
        _say(f"subject {subject_code} already scanned")
        return
    run_demo_batch(ctx.db, ctx.settings, subject_code=subject_code, say=_say)


def run_calibration(db, subject_code: str) -> None:
    """Trial marking, frozen scheme, standardisation sets, qualification, seeds, and a
    drifting marker suspended with their work re-queued (issue 7)."""
    from calibration.demo import run_demo as calibration_demo
    with db.read() as session:
        done = session.scalar(select(StandardisationResponse.id).join(Item, Item.id == StandardisationResponse.item_id)
                              .join(Subject).join(ExamSession)
                              .where(ExamSession.code == DEMO_SESSION, Subject.code == subject_code).limit(1))
    if done:
        _say(f"subject {subject_code} already calibrated")
        return
    summary = calibration_demo(db, subject_code, seed=7)
    with db.read() as session:
        names = dict(session.execute(select(User.id, User.username)).all())
    qualified = ", ".join(f"{names[u]} {outcome}" for u, outcome in summary["qualification"])
    dealt = summary["dealt"]
    _say(f"calibration of item {summary['item']}: {summary['trial_responses']} trial responses marked by the "
         f"team leader, scheme frozen; qualification: {qualified}")
    _say(f"seeded marking: {dealt['live']} live, {dealt['seed']} seeds, {dealt['self_check']} self-checks")
    for row in summary.get("suspensions", []):
        _say(f"{names[row['user_id']]} suspended ({row['cause']}); {row['requeued']} marks re-queued to others")


def run_marking(db, subject_code: str, seed: int = 2026) -> None:
    """Demo markers mark through the service API: agreements, third marks, an arbitration."""
    summary = simulate.simulate_marking(db, subject_code, seed=seed, session_code=DEMO_SESSION)
    with db.read() as session:
        by_kind = dict(session.execute(
            select(Mark.kind, func.count()).join(Response, Response.id == Mark.response_id)
            .join(Item, Item.id == Response.item_id).join(Subject, Subject.id == Item.subject_id)
            .join(ExamSession).where(ExamSession.code == DEMO_SESSION, Subject.code == subject_code)
            .group_by(Mark.kind)).all())
    marks = ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items()))
    outcomes = ", ".join(f"{n} {outcome}" for outcome, n in sorted(summary["outcomes"].items()))
    _say(f"marks on subject {subject_code} so far: {marks}")
    _say(f"final scores: {outcomes}; {summary['review_sampled']} re-checked (R-MARK-5), "
         f"{summary['scripts_totalled']} scripts totalled")


def run_demo(ctx, *, serve: bool, port: int) -> int:
    settings = ctx.settings
    print(f"Marking centre demo — data directory {settings.data_dir}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(ctx.db)
    _say(f"database ready ({ctx.db.dialect}, schema {migrate.current_revision(ctx.db)})")
    store = checkpoint_store(settings, create_key=True)
    ctx.reset_db()  # reopen so automatic checkpoints use the (possibly new) key
    _say(f"ledger checkpoint key at {settings.ledger_key_file}")

    with ctx.db.read() as session:
        imported = session.scalar(select(ExamSession.id).where(ExamSession.code == DEMO_SESSION))
    if imported:
        _say(f"exam session {DEMO_SESSION} already imported")
    else:
        summary = examspec.import_spec(ctx.db, EXAMPLE_SPEC, template_inspector=ctx.template_inspector)
        _say(f"imported {EXAMPLE_SPEC.name}: {summary['subjects']} subjects, {summary['items']} items, "
             f"{summary['candidates']} candidates")
    _say(f"demo users: {ensure_users(ctx.db)} created")
    _say(f"item duties: {ensure_duties(ctx.db)} created")

    run_scanning(ctx, "00015")
    run_calibration(ctx.db, "00015")
    run_marking(ctx.db, "00015")
    # Subject 03708 is scanned, keyed and scored but left for people: its essay item 21
    # waits in the browser for markers (marker2-4), third marks and leader2's arbitration.
    run_scanning(ctx, "03708")

    cp = ledger.checkpoint_now(ctx.db, store)
    result = ledger.verify(ctx.db, store)
    _say(f"ledger: {result.events} events, head {cp.seq}, verification {'OK' if result.ok else 'FAILED'}")

    print("\nDemo accounts (password = demo-<username>-2026):")
    for username, name, roles, level, _school, _ex in DEMO_USERS:
        print(f"  {username:<11} {', '.join(roles):<24} level {level}  {name}")
    if not result.ok:
        return 1
    if serve:
        from web import server
        print(f"\nServing the demo at http://127.0.0.1:{port}/ (Ctrl+C stops it)."
              + (" Two-factor sign-in is skipped in the demo environment." if settings.environment == "demo" else ""))
        return server.serve(ctx, host="127.0.0.1", port=port, threads=32, migrate_db=False)
    return 0


def cmd_demo(args, ctx) -> int:
    if "MC_ENV" not in os.environ:
        ctx.settings = ctx.settings.with_overrides(environment="demo")
    return run_demo(ctx, serve=not args.no_serve, port=args.port)


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="set up and run the demo centre on the embedded default")
    demo.add_argument("--no-serve", action="store_true", help="set up and run the batch work, then exit")
    demo.add_argument("--port", type=int, default=5000)
    demo.set_defaults(handler=cmd_demo)
