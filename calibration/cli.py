"""CLI of the calibration package; the lead wires ``register(subparsers)`` into ``marking-centre``.

``calibration stats|qualify|whatif|suspend|resume|monitor`` and ``report item-analysis``.
Handlers are ``handler(args, ctx) -> int`` using only ``ctx.db`` and ``ctx.settings``.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

from marking.cli_commands import guard, subjective_item_id, user_id_by_name

from . import analysis, monitor, standardisation, stats, suspension, whatif


def cmd_stats(args, ctx) -> int:
    data = stats.marker_statistics(ctx.db, subjective_item_id(ctx.db, args.item, args.subject))
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    return 0


def cmd_qualify(args, ctx) -> int:
    item_id = subjective_item_id(ctx.db, args.item, args.subject)
    if args.start:
        qid = standardisation.start_attempt(ctx.db, user_id_by_name(ctx.db, args.start), item_id)
        print(json.dumps({"qualification_id": qid}))
        return 0
    print(json.dumps(standardisation.qualification_status(ctx.db, item_id), ensure_ascii=False, indent=2))
    return 0


def cmd_whatif(args, ctx) -> int:
    thresholds = [Fraction(t) for t in args.threshold] if args.threshold else None
    result = whatif.run(ctx.db, subjective_item_id(ctx.db, args.item, args.subject), thresholds=thresholds,
                        reps=args.reps, seed=args.seed, target_third_rate=args.target)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def cmd_suspend(args, ctx) -> int:
    sid = suspension.suspend(ctx.db, user_id_by_name(ctx.db, args.by), user_id_by_name(ctx.db, args.user),
                             subjective_item_id(ctx.db, args.item, args.subject), note=args.note or "")
    print(json.dumps({"suspension_id": sid}))
    return 0


def cmd_resume(args, ctx) -> int:
    suspension.resume(ctx.db, user_id_by_name(ctx.db, args.by), user_id_by_name(ctx.db, args.user),
                      subjective_item_id(ctx.db, args.item, args.subject), note=args.note or "")
    print("resumed: the marker must pass a new qualification attempt")
    return 0


def cmd_monitor(args, ctx) -> int:
    checks = monitor.check_item(ctx.db, subjective_item_id(ctx.db, args.item, args.subject))
    print(json.dumps([c.__dict__ for c in checks], default=str, indent=2))
    return 0


def cmd_item_analysis(args, ctx) -> int:
    paths = analysis.export_report(ctx.db, args.subject, Path(args.out), args.session)
    for kind, path in paths.items():
        print(f"{kind}\t{path}")
    return 0


def register(subparsers) -> None:
    cal = subparsers.add_parser("calibration", help="marker calibration: statistics, qualification, what-if")
    sub = cal.add_subparsers(dest="calibration_command", required=True)

    def item_args(p):
        p.add_argument("--item", required=True, help="item code")
        p.add_argument("--subject", help="subject code (when the item code is ambiguous)")

    p = sub.add_parser("stats", help="marker statistics for an item (JSON)")
    item_args(p)
    p.set_defaults(handler=guard(cmd_stats))
    p = sub.add_parser("qualify", help="qualification status of an item, or --start USER to open an attempt")
    item_args(p)
    p.add_argument("--start", metavar="USER")
    p.set_defaults(handler=guard(cmd_qualify))
    p = sub.add_parser("whatif", help="predict third-marking and arbitration rates per threshold and policy")
    item_args(p)
    p.add_argument("--threshold", action="append", help="candidate T in points (repeatable)")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=0.10, help="target third-marking rate for the suggestion")
    p.set_defaults(handler=guard(cmd_whatif))
    for name, fn, help_ in (("suspend", cmd_suspend, "suspend a marker (re-queues their recent marks)"),
                            ("resume", cmd_resume, "let a suspended marker re-qualify")):
        p = sub.add_parser(name, help=help_)
        item_args(p)
        p.add_argument("--user", required=True)
        p.add_argument("--by", required=True, help="the acting team leader")
        p.add_argument("--note")
        p.set_defaults(handler=guard(fn))
    p = sub.add_parser("monitor", help="check validity/drift of every active marker (suspends on alarms)")
    item_args(p)
    p.set_defaults(handler=guard(cmd_monitor))

    report = subparsers.add_parser("report", help="reports")
    rsub = report.add_subparsers(dest="report_command", required=True)
    p = rsub.add_parser("item-analysis", help="item analysis (HTML, PDF, JSON) for a subject")
    p.add_argument("--subject", required=True)
    p.add_argument("--session")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=guard(cmd_item_analysis))
