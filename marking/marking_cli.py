"""CLI commands of the marking engine, wired by the lead into ``marking-centre``.

``register(subparsers)`` adds ``results verify|export`` and ``mark next|submit``.
Each sub-parser sets ``handler`` (``args.handler(args, ctx) -> int``); ``ctx`` needs
only ``ctx.db`` and ``ctx.settings``.
"""
from __future__ import annotations

import json
import sys
import uuid


from . import course_results, dispatch, submission, totals
from .cli_commands import guard, subjective_item_id, user_id_by_name


def cmd_results_verify(args, ctx) -> int:
    findings = totals.verify_results(ctx.db, args.subject)
    for f in findings:
        print(f"{f.anon_code}\t{f.kind}\t{f.detail}")
    if findings:
        print(f"{len(findings)} problem(s) found", file=sys.stderr)
        return 1
    print("all results verify")
    return 0


def cmd_results_export(args, ctx) -> int:
    count = course_results.export_csv(ctx.db, args.subject, args.out)
    print(f"wrote {count} row(s) to {args.out}")
    return 0


def cmd_mark_next(args, ctx) -> int:
    user_id = user_id_by_name(ctx.db, args.user)
    view = dispatch.claim_next(ctx.db, user_id, subjective_item_id(ctx.db, args.item, args.subject), queue=args.queue)
    if view is None:
        print(json.dumps({"task": None}))
        return 3
    print(json.dumps(view.as_dict(), ensure_ascii=False, sort_keys=True))
    return 0


def cmd_mark_submit(args, ctx) -> int:
    result = submission.submit_mark(
        ctx.db, user_id_by_name(ctx.db, args.user), args.token, args.score, request_id=args.request_id or str(uuid.uuid4()),
        condition_code=args.code, flags=args.flag or ())
    print(json.dumps(result.__dict__, sort_keys=True))
    return 0


def register(subparsers) -> None:
    results = subparsers.add_parser("results", help="verify and export results")
    rsub = results.add_subparsers(dest="results_command", required=True)
    verify = rsub.add_parser("verify", help="scripts with items not marked, unresolved, or totals that do not recompute")
    verify.add_argument("--subject", help="subject code (default: all subjects)")
    verify.set_defaults(handler=guard(cmd_results_verify))
    export = rsub.add_parser("export", help="course results CSV (exam, process, composite, pass)")
    export.add_argument("--subject", required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(handler=guard(cmd_results_export))

    mark = subparsers.add_parser("mark", help="scripted marking (demo driving)")
    msub = mark.add_subparsers(dest="mark_command", required=True)
    nxt = msub.add_parser("next", help="claim the next task; prints what the marker sees (JSON)")
    nxt.add_argument("--user", required=True)
    nxt.add_argument("--item", required=True)
    nxt.add_argument("--subject")
    nxt.add_argument("--queue", default="marking", choices=sorted(dispatch.QUEUES))
    nxt.set_defaults(handler=guard(cmd_mark_next))
    sub = msub.add_parser("submit", help="submit a score for a claimed task")
    sub.add_argument("--user", required=True)
    sub.add_argument("--token", required=True)
    sub.add_argument("--score", help="points awarded, e.g. 7.5 (omit with --code)")
    sub.add_argument("--code", choices=["NR", "OT", "IL", "RF"], help="condition code (scores 0)")
    sub.add_argument("--flag", action="append", choices=list(submission.ABNORMAL_FLAGS))
    sub.add_argument("--request-id", help="client request id (idempotent retries)")
    sub.set_defaults(handler=guard(cmd_mark_submit))
