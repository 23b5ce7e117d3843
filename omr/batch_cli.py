"""Scanner-batch sub-commands of ``marking-centre`` (``register(subparsers)``).

batch trial --subject S --user U [--synthetic N | --cards DIR --expected FILE]
                                                   R-OMR-1 trial run before live reading
batch ingest PATH --subject S [--scanner ID]      ingest with a progress bar
batch status [BATCH]                               batches, OMR queue, nodes last seen
batch settle BATCH                                 assemble scripts, item images → marking
batch reconcile --subject S                        expected vs received
batch score --subject S                            objective scoring with the locked key
omr-worker --node NAME                             one long-lived OMR node
omr-nodes [--nodes omr-a,omr-b]                    two local nodes as two processes
key enter/sign/lock/show                           answer key workflow (R-OMR-2)
exceptions list/propose/confirm/id-correct/id-confirm/rescan   (R-OMR-5, R-OMR-7)
spotcheck sample/record/status                     (R-OMR-6)
export bag --subject S --out DIR / export verify PACKAGE       (BagIt, RFC 8493)

Handlers are ``handler(args, ctx) -> exit code``; ``ctx.db`` and ``ctx.settings``.
Acting people are named with ``--user USERNAME`` (two-person rules are enforced in the
services, whoever calls them).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sqlalchemy import select

from marking.cli_commands import user_id_by_name

PERMISSION_EXIT = 3


def _print(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str))


def _user_id(ctx, username: str | None) -> int | None:
    if username is None:
        return None
    try:
        return user_id_by_name(ctx.db, username)
    except LookupError as exc:
        raise SystemExit(f"error: {exc}") from None


def _batch_id(ctx, ref: str) -> int:
    from marking.models import ScanBatch
    with ctx.db.read() as session:
        if ref.isdigit():
            row = session.get(ScanBatch, int(ref))
        else:
            row = session.scalar(select(ScanBatch).where(ScanBatch.code == ref))
    if row is None:
        raise SystemExit(f"error: no batch {ref!r}")
    return row.id


def _guard(fn):
    """Turn domain refusals into messages and exit codes instead of tracebacks."""
    def wrapper(args, ctx) -> int:
        from marking.access import NotAllowed
        from marking.answer_keys import KeyIntegrityError
        from marking.batches import BatchError
        try:
            return int(fn(args, ctx) or 0)
        except NotAllowed as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return PERMISSION_EXIT
        except KeyIntegrityError as exc:
            print(f"INTEGRITY FAILURE: {exc}", file=sys.stderr)
            return 4
        except (BatchError, FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    wrapper.__name__ = fn.__name__
    return wrapper


class ProgressBar:
    """A plain-text progress bar on stderr (no extra dependency)."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream, self.width, self.start = stream, width, time.monotonic()

    def __call__(self, event: dict[str, Any]) -> None:
        total = max(1, event.get("files_total", 1))
        done = event.get("files_done", 0)
        fill = int(self.width * done / total)
        rate = event.get("pages", 0) / max(1e-6, time.monotonic() - self.start)
        self.stream.write(f"\r[{'#' * fill}{'.' * (self.width - fill)}] {done}/{total} files, "
                          f"{event.get('accepted', 0)} accepted, {event.get('rejected', 0)} rejected, "
                          f"{event.get('duplicates', 0)} duplicate  {rate:.1f} pages/s")
        if event.get("done"):
            self.stream.write("\n")
        self.stream.flush()


# --------------------------------------------------------------------------- batch

@_guard
def cmd_ingest(args, ctx) -> int:
    from .ingest import ingest_path
    report = ingest_path(ctx.db, ctx.settings, args.path, args.subject, scanner_id=args.scanner,
                         progress=None if args.quiet else ProgressBar(), actor_id=_user_id(ctx, args.user),
                         batch_code=args.code, pdf_dpi=args.pdf_dpi)
    summary = report.as_dict()
    summary.pop("new_cards", None)
    _print(summary)
    return 0


@_guard
def cmd_trial(args, ctx) -> int:
    """R-OMR-1: read a trial deck with both methods, compare with its truth, record it."""
    from .trial import describe, run_trial
    if (args.cards is None) != (args.expected is None):
        raise ValueError("--cards DIR and --expected FILE go together (a scanned trial deck)")
    if args.cards is not None and args.synthetic is not None:
        raise ValueError("give either --cards/--expected or --synthetic N, not both")

    def progress(event: dict[str, Any]) -> None:
        if not args.quiet:
            print(f"\r[trial] {event['done']}/{event['total']} cards read, last {event['card']}: "
                  f"{'ok' if event['ok'] else 'MISMATCH'}", end="\n" if event["done"] == event["total"] else "",
                  file=sys.stderr, flush=True)

    report = run_trial(ctx.db, args.subject, actor_id=_user_id(ctx, args.user), cards_dir=args.cards,
                       expected_file=args.expected, synthetic=args.synthetic, seed=args.seed, dpi=args.dpi,
                       progress=progress)
    if args.json:
        _print(report.as_dict())
        return 0 if report.passed else 1
    print(f"trial run {report.trial_id} of subject {report.subject} ({report.source} deck, {len(report.cards)} cards)")
    print(f"  card template {report.template_hash}")
    print(f"  recognition   {report.recognition_version}, settings {report.settings_hash}")
    if report.declared_doubts:
        print(f"  {report.declared_doubts} deliberate doubt(s) declared by the deck, each to be flagged by both methods")
    if report.passed:
        print(f"PASSED: every card was read correctly by both methods; live batches of {report.subject} may be "
              "ingested with this template and these settings (R-OMR-1)")
        return 0
    print(f"FAILED: {len(report.failed_cards)} of {len(report.cards)} cards differ from their truth "
          f"({report.mismatches} mismatches):")
    for card in report.cards:
        for m in card["mismatches"]:
            print(f"  {describe(card['card'], m)}")
    print("no live batch can be ingested until a trial of this template and these settings passes (R-OMR-1)")
    return 1


@_guard
def cmd_status(args, ctx) -> int:
    from marking.batches import batch_status
    status = batch_status(ctx.db, _batch_id(ctx, args.batch) if args.batch else None)
    if args.json:
        _print(status)
        return 0
    for b in status["batches"]:
        print(f"{b['code']} [{b['status']}] subject {b['subject']}: pages {b['pages']}, cards {b['cards']}, "
              f"open exceptions {b['open_exceptions']}, scripts {b['scripts']}")
    q = status["queue"]
    print(f"reads: {q['reads']}  expired leases: {q['expired_leases']}")
    for n in q["nodes"]:
        print(f"  node {n['node']:<10} {n['state']:<8} last seen {n['seconds_since_seen']} s ago, "
              f"{n['reads_done']} reads")
    if q["message"]:
        print(f"NOTE: {q['message']}")
    return 0


@_guard
def cmd_settle(args, ctx) -> int:
    from marking.batches import settle_batch
    _print(settle_batch(ctx.db, _batch_id(ctx, args.batch), actor_id=_user_id(ctx, args.user)))
    return 0


@_guard
def cmd_reconcile(args, ctx) -> int:
    from marking.batches import reconcile
    _print(reconcile(ctx.db, args.subject))
    return 0


@_guard
def cmd_score(args, ctx) -> int:
    from marking.answer_keys import score_subject
    _print(score_subject(ctx.db, args.subject, actor_id=_user_id(ctx, args.user)))
    return 0


def cmd_worker(args, ctx) -> int:
    from .worker import run_from_args
    return run_from_args(args, ctx.settings)


def cmd_nodes(args, ctx) -> int:
    from .worker import spawn_nodes, stop_nodes
    names = [n.strip() for n in args.nodes.split(",") if n.strip()]
    procs = spawn_nodes(ctx.settings.database_url, ctx.settings.image_store, names,
                        exit_when_idle=args.exit_when_idle)
    print(f"started {', '.join(f'{n} (pid {p.pid})' for n, p in zip(names, procs))}; Ctrl-C stops them")
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        codes = stop_nodes(procs)
    return max(codes or [0])


# --------------------------------------------------------------------------- key

@_guard
def cmd_key_enter(args, ctx) -> int:
    from marking.answer_keys import enter_key, parse_key_file
    key = enter_key(ctx.db, args.subject, _user_id(ctx, args.user), parse_key_file(args.file))
    print(f"key {key.id} (version {key.version}) entered as a draft; content hash {key.content_hash}")
    print("it needs sign-off by two other people, one of them the authority's officer, then `key lock`")
    return 0


@_guard
def cmd_key_sign(args, ctx) -> int:
    from marking.answer_keys import sign_key
    sign_key(ctx.db, args.key, _user_id(ctx, args.user), args.as_role, expected_hash=args.hash)
    print(f"key {args.key} signed by {args.user} as {args.as_role}")
    return 0


@_guard
def cmd_key_lock(args, ctx) -> int:
    from marking.answer_keys import lock_key
    _print(lock_key(ctx.db, args.key, _user_id(ctx, args.user)))
    return 0


@_guard
def cmd_key_show(args, ctx) -> int:
    from marking.answer_keys import show_keys
    keys = show_keys(ctx.db, args.subject)
    _print(keys)
    return 0 if all(k["intact"] for k in keys) else 4


# --------------------------------------------------------------------------- exceptions

@_guard
def cmd_ex_list(args, ctx) -> int:
    from marking.batches import list_exceptions
    rows = list_exceptions(ctx.db, batch_id=_batch_id(ctx, args.batch) if args.batch else None,
                           subject_code=args.subject)
    _print([r.as_dict() for r in rows])
    return 0


@_guard
def cmd_ex_propose(args, ctx) -> int:
    from marking.batches import propose_resolution
    resolution: dict[str, Any] = {"action": args.action}
    if args.answer:
        resolution["answers"] = dict(a.split("=", 1) for a in args.answer)
    if args.candidate:
        resolution["candidate_number"] = args.candidate
    if args.absent is not None:
        resolution["absent"] = args.absent == "yes"
    if args.rescan_card:
        resolution["rescan_card_id"] = args.rescan_card
    propose_resolution(ctx.db, args.entry, _user_id(ctx, args.user), resolution, note=args.note)
    print(f"entry {args.entry}: proposal recorded; a second technician confirms it")
    return 0


@_guard
def cmd_ex_confirm(args, ctx) -> int:
    from marking.batches import confirm_resolution
    print(f"entry {args.entry}: confirmed ({confirm_resolution(ctx.db, args.entry, _user_id(ctx, args.user))})")
    return 0


@_guard
def cmd_ex_idcorrect(args, ctx) -> int:
    from marking.batches import propose_id_correction
    entry = propose_id_correction(ctx.db, args.card, _user_id(ctx, args.user), args.candidate, note=args.note)
    print(f"ID correction registered as entry {entry}; a second person confirms it")
    return 0


@_guard
def cmd_ex_idconfirm(args, ctx) -> int:
    from marking.batches import confirm_id_correction
    confirm_id_correction(ctx.db, args.entry, _user_id(ctx, args.user))
    print(f"ID correction {args.entry} confirmed")
    return 0


@_guard
def cmd_ex_rescan(args, ctx) -> int:
    from .ingest import ingest_rescan
    card = ingest_rescan(ctx.db, ctx.settings, args.path, args.card, _user_id(ctx, args.user), kind=args.kind)
    print(f"re-scan of card {args.card} added as card {card}; it is read twice like any card")
    return 0


# --------------------------------------------------------------------------- spot check

@_guard
def cmd_spot_sample(args, ctx) -> int:
    from marking.spotcheck import sample_spot_check
    _print(sample_spot_check(ctx.db, args.subject, actor_id=_user_id(ctx, args.user), rate_pm=args.rate_pm,
                             minimum=args.minimum, seed=args.seed))
    return 0


@_guard
def cmd_spot_record(args, ctx) -> int:
    from marking.spotcheck import record_spot_check
    record_spot_check(ctx.db, args.card, _user_id(ctx, args.user), args.outcome, note=args.note)
    print(f"card {args.card}: {args.outcome}")
    return 0


@_guard
def cmd_spot_status(args, ctx) -> int:
    from marking.spotcheck import spot_check_status
    _print(spot_check_status(ctx.db, args.subject))
    return 0


# --------------------------------------------------------------------------- export

@_guard
def cmd_export_bag(args, ctx) -> int:
    from marking.archive import export_bag, verify_export
    from marking.storage import open_store
    bag = export_bag(ctx.db, args.subject, args.out, actor_id=_user_id(ctx, args.user),
                     store=open_store(ctx.settings), include_images=args.with_images)
    result = verify_export(bag)
    print(f"{bag}: {'verified' if result.ok else 'VERIFICATION FAILED'} ({result.files} payload files)")
    return 0 if result.ok else 1


def cmd_export_verify(args, ctx) -> int:
    from marking.archive import verify_export
    result = verify_export(args.package)
    _print(result.as_dict())
    return 0 if result.ok else 1


# --------------------------------------------------------------------------- registration

def register(sub: argparse._SubParsersAction) -> None:
    batch = sub.add_parser("batch", help="scanner batches").add_subparsers(dest="batch_command", required=True)
    p = batch.add_parser("trial", help="R-OMR-1 trial run: read a deck with known markings before live reading",
                         description="Read a trial deck with both recognition methods and compare every field "
                                     "with the known truth; record the result. Exit 0 passed, 1 failed, "
                                     "2 bad arguments or deck. A live batch needs a passed trial for its "
                                     "subject's current card template and recognition settings (R-OMR-1).")
    p.add_argument("--subject", required=True)
    p.add_argument("--user", required=True, help="the technician running the trial")
    p.add_argument("--cards", help="folder of scanned test cards (with --expected)")
    p.add_argument("--expected", help="expected-answers JSON file for --cards (see docs/batches.md)")
    p.add_argument("--synthetic", type=int, metavar="N",
                   help="render N cards from the template with known markings (default when no --cards: 4)")
    p.add_argument("--seed", type=int, default=1, help="synthetic deck seed")
    p.add_argument("--dpi", type=float, default=150, help="synthetic deck scan resolution")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_trial)
    p = batch.add_parser("ingest", help="ingest a folder or file of scans as a new batch")
    p.add_argument("path")
    p.add_argument("--subject", required=True)
    p.add_argument("--scanner")
    p.add_argument("--code", help="batch code (default <subject>-<date>-<n>)")
    p.add_argument("--user")
    p.add_argument("--pdf-dpi", type=float, default=200)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_ingest)
    p = batch.add_parser("status", help="batches, OMR reads and nodes (last seen)")
    p.add_argument("batch", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)
    p = batch.add_parser("settle", help="assemble scripts and hand item images to marking")
    p.add_argument("batch")
    p.add_argument("--user")
    p.set_defaults(handler=cmd_settle)
    p = batch.add_parser("reconcile", help="expected (roll) vs received scripts")
    p.add_argument("--subject", required=True)
    p.set_defaults(handler=cmd_reconcile)
    p = batch.add_parser("score", help="score objective items with the locked key (verified first)")
    p.add_argument("--subject", required=True)
    p.add_argument("--user")
    p.set_defaults(handler=cmd_score)

    from .worker import add_arguments
    w = sub.add_parser("omr-worker", help="run one OMR worker node (stable --node name)")
    add_arguments(w)
    w.set_defaults(handler=cmd_worker)
    n = sub.add_parser("omr-nodes", help="run local OMR nodes as separate processes")
    n.add_argument("--nodes", default="omr-a,omr-b")
    n.add_argument("--exit-when-idle", action="store_true")
    n.set_defaults(handler=cmd_nodes)

    key = sub.add_parser("key", help="answer keys (R-OMR-2)").add_subparsers(dest="key_command", required=True)
    p = key.add_parser("enter", help="enter a key from CSV: item,answer[,points]")
    p.add_argument("--subject", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--user", required=True)
    p.set_defaults(handler=cmd_key_enter)
    p = key.add_parser("sign", help="sign off a draft key")
    p.add_argument("key", type=int)
    p.add_argument("--user", required=True)
    p.add_argument("--as", dest="as_role", choices=("reviewer", "authority_officer"), required=True)
    p.add_argument("--hash", help="the content hash you checked")
    p.set_defaults(handler=cmd_key_sign)
    p = key.add_parser("lock", help="lock a signed-off key (rescoring if it replaces one)")
    p.add_argument("key", type=int)
    p.add_argument("--user", required=True)
    p.set_defaults(handler=cmd_key_lock)
    p = key.add_parser("show", help="key versions, sign-offs and integrity")
    p.add_argument("--subject", required=True)
    p.set_defaults(handler=cmd_key_show)

    ex = sub.add_parser("exceptions", help="OMR exception register (R-OMR-5, R-OMR-7)").add_subparsers(
        dest="ex_command", required=True)
    p = ex.add_parser("list")
    p.add_argument("--batch")
    p.add_argument("--subject")
    p.set_defaults(handler=cmd_ex_list)
    p = ex.add_parser("propose", help="propose a resolution (a second technician confirms)")
    p.add_argument("entry", type=int)
    p.add_argument("--user", required=True)
    p.add_argument("--action", choices=("accept", "void", "rescan"), required=True)
    p.add_argument("--answer", action="append", help="ITEM=OPTIONS as seen on the image, e.g. 12=B (repeat)")
    p.add_argument("--candidate")
    p.add_argument("--absent", choices=("yes", "no"))
    p.add_argument("--rescan-card", type=int)
    p.add_argument("--note", default="")
    p.set_defaults(handler=cmd_ex_propose)
    p = ex.add_parser("confirm")
    p.add_argument("entry", type=int)
    p.add_argument("--user", required=True)
    p.set_defaults(handler=cmd_ex_confirm)
    p = ex.add_parser("id-correct", help="register a candidate-number correction (before/after)")
    p.add_argument("card", type=int)
    p.add_argument("--candidate", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--note", default="")
    p.set_defaults(handler=cmd_ex_idcorrect)
    p = ex.add_parser("id-confirm")
    p.add_argument("entry", type=int)
    p.add_argument("--user", required=True)
    p.set_defaults(handler=cmd_ex_idconfirm)
    p = ex.add_parser("rescan", help="add a re-scan/transcription of a card (original kept)")
    p.add_argument("card", type=int)
    p.add_argument("path")
    p.add_argument("--user", required=True)
    p.add_argument("--kind", choices=("rescan", "transcription"), default="rescan")
    p.set_defaults(handler=cmd_ex_rescan)

    sc = sub.add_parser("spotcheck", help="spot check of objective results (R-OMR-6)").add_subparsers(
        dest="spot_command", required=True)
    p = sc.add_parser("sample")
    p.add_argument("--subject", required=True)
    p.add_argument("--rate-pm", type=int, default=20, help="per-mille (20 = 2 %%)")
    p.add_argument("--minimum", type=int, default=20)
    p.add_argument("--seed")
    p.add_argument("--user")
    p.set_defaults(handler=cmd_spot_sample)
    p = sc.add_parser("record")
    p.add_argument("card", type=int)
    p.add_argument("--user", required=True)
    p.add_argument("--outcome", choices=("confirmed", "discrepancy"), required=True)
    p.add_argument("--note", default="")
    p.set_defaults(handler=cmd_spot_record)
    p = sc.add_parser("status")
    p.add_argument("--subject", required=True)
    p.set_defaults(handler=cmd_spot_status)

    exp = sub.add_parser("export", help="archival export (BagIt)").add_subparsers(dest="export_command", required=True)
    p = exp.add_parser("bag", help="write a subject's BagIt package and verify it")
    p.add_argument("--subject", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--with-images", action="store_true")
    p.add_argument("--user")
    p.set_defaults(handler=cmd_export_bag)
    p = exp.add_parser("verify", help="verify a BagIt package")
    p.add_argument("package")
    p.set_defaults(handler=cmd_export_verify)
